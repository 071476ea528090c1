"""WindowsNetwork admission through the real apiserver: the CRD schema and CEL refuse a bad spec
naming the field; `winnode webhook` (running as its service account with the shipped RBAC) refuses a
network overlapping another and the deletion of a network WindowsNodes still name, listing them."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from winnode.deploy.crdgen import render_all
from winnode.testing.admission import AdmissionEnv, SyncApi, free_port
from winnode.testing.cluster import ControlPlane

SERVICE_CIDR = "10.0.0.0/24"
# WindowsNetworks the tests leave for the fixture to delete (while the webhook still answers).
CREATED: list[str] = []


@pytest.fixture(scope="module")
def env(control_plane: ControlPlane, tmp_path_factory: pytest.TempPathFactory) -> Iterator[AdmissionEnv]:
    control_plane.kubectl("apply", "-f", "-", input="---\n".join(render_all().values()))
    control_plane.kubectl(
        "wait", "--for=condition=established", "--timeout=60s", "crd/windowsnodes.winnode.io",
        "crd/windowsnetworks.winnode.io",
    )  # fmt: skip
    api = SyncApi.from_kubeconfig(control_plane.kubeconfig)
    e = AdmissionEnv(api, uuid.uuid4().hex[:6], tmp_path_factory.mktemp("network-admission"))
    try:
        e.setup_namespaces()
        e.setup_rbac()
        port = free_port()
        e.setup_webhook_config(port)
        kubeconfig = control_plane.user_kubeconfig(e.service_account_user, ["system:serviceaccounts"])
        e.webhook = e.start_webhook(kubeconfig, port=port)
        yield e
    finally:
        if CREATED:
            control_plane.kubectl("delete", "windowsnetwork", *CREATED, "--ignore-not-found", "--wait=false")
        try:
            e.teardown()
        finally:
            if e.webhook is not None:
                e.webhook.stop()
            api.close()


def network(name: str, cluster_cidr: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "winnode.io/v1alpha1",
        "kind": "WindowsNetwork",
        "metadata": {"name": name},
        "spec": {"mode": "overlay", "clusterCIDR": cluster_cidr, "serviceCIDR": SERVICE_CIDR, **spec},
    }


def windows_node(name: str, network_name: str, address: str = "192.0.2.20", **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "winnode.io/v1alpha1",
        "kind": "WindowsNode",
        "metadata": {"name": name},
        "spec": {
            **spec,
            "address": address,
            "network": network_name,
            "winrm": {"credentialsSecretRef": {"namespace": "default", "name": "none"}},
        },
    }


def kubectl(cp: ControlPlane, *args: str, obj: dict[str, Any] | None = None) -> tuple[int, str]:
    result = cp.kubectl(*args, input=json.dumps(obj) if obj else None, check=False)
    return result.returncode, result.stdout + result.stderr


def create(cp: ControlPlane, obj: dict[str, Any]) -> tuple[int, str]:
    # The webhook configuration takes a moment to reach the apiserver's admission chain.
    deadline = time.monotonic() + 30
    while True:
        code, out = kubectl(cp, "create", "-f", "-", obj=obj)
        if code == 0 or "denied the request" in out or "Invalid value" in out or time.monotonic() > deadline:
            return code, out
        time.sleep(0.5)


def test_invalid_networks_are_refused_naming_the_field(
    control_plane: ControlPlane, env: AdmissionEnv
) -> None:
    code, out = create(control_plane, network("adm-vni", "10.240.0.0/16", vxlan={"vni": 100}))
    assert code != 0
    assert "spec.vxlan.vni" in out
    assert "4096" in out
    code, out = create(control_plane, network("adm-svc", "10.0.0.0/16"))
    assert code != 0
    assert "spec.serviceCIDR" in out
    assert "must not overlap clusterCIDR" in out
    code, out = create(control_plane, network("adm-prefix", "10.240.0.0/26"))
    assert code != 0
    assert "spec.nodeSubnetPrefixLength" in out


def test_overlapping_another_network_is_refused_by_the_webhook(
    control_plane: ControlPlane, env: AdmissionEnv
) -> None:
    first = network(f"adm-a-{env.suffix}", "10.231.0.0/16")
    code, out = create(control_plane, first)
    assert code == 0, out
    CREATED.append(first["metadata"]["name"])
    code, out = create(control_plane, network(f"adm-b-{env.suffix}", "10.231.128.0/17"))
    assert code != 0
    assert "denied the request" in out
    assert (
        f"spec.clusterCIDR 10.231.128.0/17 overlaps spec.clusterCIDR 10.231.0.0/16 of WindowsNetwork {first['metadata']['name']}"
        in out
    )
    # Disjoint ranges (the Service range is shared by design) are fine.
    second = network(f"adm-c-{env.suffix}", "10.232.0.0/16")
    code, out = create(control_plane, second)
    assert code == 0, out
    CREATED.append(second["metadata"]["name"])


def test_deleting_a_network_in_use_is_refused_listing_the_nodes(
    control_plane: ControlPlane, env: AdmissionEnv
) -> None:
    name = f"adm-used-{env.suffix}"
    code, out = create(control_plane, network(name, "10.233.0.0/16"))
    assert code == 0, out
    holders = [f"adm-n1-{env.suffix}", f"adm-n2-{env.suffix}"]
    for i, holder in enumerate(holders):
        code, out = create(control_plane, windows_node(holder, name, f"192.0.2.{21 + i}"))
        assert code == 0, out
    code, out = kubectl(control_plane, "delete", "windowsnetwork", name)
    assert code != 0
    assert f"WindowsNetwork {name} is used by 2 WindowsNode(s): {holders[0]}, {holders[1]}" in out
    assert control_plane.kubectl("get", "windowsnetwork", name, "-o", "name").stdout.strip()
    kubectl(control_plane, "delete", "windowsnode", *holders)
    code, out = kubectl(control_plane, "delete", "windowsnetwork", name)
    assert code == 0, out


def test_a_second_windows_node_for_one_host_is_refused(
    control_plane: ControlPlane, env: AdmissionEnv
) -> None:
    first = f"adm-host-a-{env.suffix}"
    code, out = create(control_plane, windows_node(first, "any", "2001:db8::7"))
    assert code == 0, out
    try:
        # The same host spelled differently is still the same host.
        code, out = create(
            control_plane, windows_node(f"adm-host-b-{env.suffix}", "any", "2001:0db8:0:0::0007")
        )
        assert code != 0
        assert "denied the request" in out
        assert (
            f"spec.address 2001:0db8:0:0::0007 is already the host of WindowsNode {first}; one host can be "
            f"one node only" in out
        )
        # Another Node name on the same host is no way around it; nor is one Node name for two hosts.
        code, out = create(
            control_plane, windows_node(f"adm-host-c-{env.suffix}", "any", "192.0.2.40", nodeName=first)
        )
        assert code != 0
        assert f"Node name {first} is already used by WindowsNode {first}" in out
        # Moving an existing WindowsNode onto a taken address is refused as well.
        other = f"adm-host-d-{env.suffix}"
        code, out = create(control_plane, windows_node(other, "any", "192.0.2.41"))
        assert code == 0, out
        patch = json.dumps({"spec": {"address": "2001:db8::7"}})
        code, out = kubectl(control_plane, "patch", "windowsnode", other, "--type=merge", "-p", patch)
        assert code != 0
        assert f"is already the host of WindowsNode {first}" in out
        # Writes that keep the address (labels, the operator's own metadata) never reach the webhook.
        code, out = kubectl(control_plane, "label", "windowsnode", other, "example.com/rack=r1")
        assert code == 0, out
        kubectl(control_plane, "delete", "windowsnode", other)
    finally:
        kubectl(control_plane, "delete", "windowsnode", first)
