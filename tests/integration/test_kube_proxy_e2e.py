"""kube-proxy on every Windows host, as the emulated kube-proxy does it with the credentials the
operator wrote there: a Service with two endpoints becomes an HNS load balancer on each host, and
deleting a WindowsNode revokes its kube-proxy token (the old token then gets 401)."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from winnode.kube import proxy_identity as pi
from winnode.lifecycle import kubelet_config as kc
from winnode.settings import Settings
from winnode.testing.cluster import ControlPlane
from winnode.testing.demo import World
from winnode.testing.emulator import EmulatedHost, HostSpec

TIMEOUT = 120.0
NAMES = ("kp-a", "kp-b")


@pytest.fixture(scope="module")
def world(control_plane: ControlPlane) -> Iterator[World]:
    with World(
        control_plane, settings=Settings(metrics_port=0, drift_interval_s=2.0), namespace="wn-kp"
    ) as w:
        w.apply(w.network())
        yield w


@pytest.fixture(scope="module")
def hosts(world: World) -> dict[str, EmulatedHost]:
    out = {}
    for name in NAMES:
        host = world.add_host(HostSpec.server2022(hostname=name))
        world.apply(world.windows_node(host, name))
        out[name] = host
    for name in NAMES:
        world.wait_phase(name, "Ready", TIMEOUT)
    return out


SERVICE = {
    "apiVersion": "v1",
    "kind": "Service",
    "metadata": {"name": "web", "namespace": "default"},
    # No selector: the endpoints are ours (below), so kcm's EndpointSlice controller leaves them alone.
    "spec": {"ports": [{"name": "http", "port": 80, "protocol": "TCP"}]},
}
SLICE = {
    "apiVersion": "discovery.k8s.io/v1",
    "kind": "EndpointSlice",
    "metadata": {
        "name": "web-1",
        "namespace": "default",
        "labels": {"kubernetes.io/service-name": "web", "endpointslice.kubernetes.io/managed-by": "tests"},
    },
    "addressType": "IPv4",
    "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
    "endpoints": [
        {"addresses": ["10.244.7.10"], "conditions": {"ready": True}},
        {"addresses": ["10.244.8.11"], "conditions": {"ready": True}},
    ],
}


def test_a_service_with_two_endpoints_is_a_load_balancer_on_every_host(
    world: World, hosts: dict[str, EmulatedHost]
) -> None:
    world.apply(SERVICE, SLICE)
    vip = world.must_get("service", "web", "default")["spec"]["clusterIP"]

    for name, host in hosts.items():

        def programmed(m: Any) -> Any:
            lb = m.hns_load_balancers.get(f"{vip}:80/TCP")
            return lb if lb is not None and len(lb.backends) == 2 else None

        lb = world.wait_for(f"the load balancer of web on {name}", lambda h=host: h.call(programmed), TIMEOUT)
        assert lb.service == "default/web"
        assert lb.backends == ("10.244.7.10:8080", "10.244.8.11:8080")

        def identity(m: Any) -> tuple[str, str, str]:
            conf = yaml.safe_load(m.file(kc.KUBE_PROXY_CONFIG).text)
            kubeconfig = yaml.safe_load(m.file(kc.KUBE_PROXY_KUBECONFIG).text)
            return (
                conf["clientConnection"]["kubeconfig"],
                kubeconfig["users"][0]["user"]["tokenFile"],
                m.file(kc.KUBE_PROXY_TOKEN).text,
            )

        kubeconfig_path, token_file, token = host.call(identity)
        assert kubeconfig_path == kc.KUBE_PROXY_KUBECONFIG, "kube-proxy no longer runs as the kubelet's node"
        assert token_file == kc.KUBE_PROXY_TOKEN
        who = world.cp.kubectl(
            "auth",
            "whoami",
            "-o",
            "yaml",
            f"--token={token}",
            "--kubeconfig=/dev/null",
            f"--server={world.cp.server}",
            f"--certificate-authority={world.cp.ca_cert_path}",
            check=False,
        )
        assert yaml.safe_load(who.stdout)["status"]["userInfo"]["username"] == (
            f"system:serviceaccount:{pi.NAMESPACE}:{pi.account_name(name)}"
        )

    # An endpoint goes away: every host follows through its watch.
    world.cp.kubectl("patch", "endpointslice", "web-1", "-n", "default", "--type=json",
                     "-p", '[{"op": "remove", "path": "/endpoints/1"}]')  # fmt: skip
    for name, host in hosts.items():
        world.wait_for(
            f"one backend left on {name}",
            lambda h=host: h.call(lambda m: len(m.hns_load_balancers[f"{vip}:80/TCP"].backends) == 1) or None,
            TIMEOUT,
        )


def _raw(world: World, token: str) -> subprocess.CompletedProcess[str]:
    return world.cp.kubectl(
        "get", "--raw", "/api/v1/services?limit=1", f"--token={token}", "--kubeconfig=/dev/null",
        f"--server={world.cp.server}", f"--certificate-authority={world.cp.ca_cert_path}", check=False,
    )  # fmt: skip


def test_deleting_the_windows_node_revokes_kube_proxy_credentials(
    world: World, hosts: dict[str, EmulatedHost]
) -> None:
    name = NAMES[1]
    token = hosts[name].call(lambda m: m.file(kc.KUBE_PROXY_TOKEN).text)
    assert _raw(world, token).returncode == 0
    world.cp.kubectl("delete", "windowsnode", name, "--wait=false")
    world.wait_for("the WindowsNode to go", lambda: world.get("windowsnode", name) is None or None, TIMEOUT)
    assert world.get("serviceaccount", pi.account_name(name), pi.NAMESPACE) is None
    assert world.get("secret", pi.account_name(name), pi.NAMESPACE) is None
    # The token authenticator sees the deletion through its informer: a moment later at most.
    after = world.wait_for(
        "the old kube-proxy token to be refused",
        lambda: ((done := _raw(world, token)).returncode != 0 and done) or None,
        30.0,
    )
    assert "Unauthorized" in after.stderr, after.stderr
