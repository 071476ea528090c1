"""A WindowsNode end to end: apply -> Ready Node, delete -> clean host and cluster.

Real apiserver + kcm, the emulated Windows host over real WS-Management, the emulated kubelet doing
a real TLS bootstrap, and the operator running in-process in a background thread.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from functools import partial
from typing import Any

import pytest

from winnode.lifecycle import kubelet_config as kc
from winnode.network.cni_plugins import CNI_PLUGINS, CNI_PLUGINS_VERSION, cni_plugin_url
from winnode.network.hns import HNS_NETWORK_NAME, plan_subnet
from winnode.settings import Settings
from winnode.testing.artifacts import cni_plugins_release
from winnode.testing.cluster import ControlPlane
from winnode.testing.demo import NETWORK_NAME, World
from winnode.testing.emulator import EmulatedHost, HostSpec

TIMEOUT = 120.0
CNI_DIRS = {kc.CNI_CONF_DIR.lower(), kc.CNI_BIN_DIR.lower(), "c:\\program files\\containerd\\cni"}


@pytest.fixture(scope="module")
def world(control_plane: ControlPlane) -> Iterator[World]:
    with World(
        control_plane, settings=Settings(metrics_port=0, drift_interval_s=2.0), namespace="wn-e2e"
    ) as w:
        w.apply(w.network())
        yield w


def snapshot(host: EmulatedHost) -> dict[str, Any]:
    def take(m: Any) -> dict[str, Any]:
        return {
            "services": {k: s.binary_path for k, s in m.services.items()},
            "files": set(m.files),
            "dirs": set(m.directories),
            "hns": set(m.hns_networks),
            "firewall": set(m.firewall_rules),
        }

    return host.call(take)


def gone(world: World, name: str) -> bool:
    return world.get("windowsnode", name) is None


def token_secrets(world: World, node: str) -> list[str]:
    out = world.cp.kubectl(
        "get", "secrets", "-n", "kube-system", "-l", f"winnode.io/node={node}", "-o", "name"
    ).stdout
    return out.split()


def test_apply_ready_then_delete_clean(world: World) -> None:
    host = world.add_host(HostSpec.server2022(hostname="e2e-a"))
    before = snapshot(host)
    name = "e2e-a"
    world.apply(world.windows_node(host, name, labels={"example.com/rack": "r12"}))

    obj = world.wait_phase(name, "Ready", TIMEOUT)
    status = obj["status"]
    conditions = {c["type"]: c for c in status["conditions"]}
    for type_ in (
        "CredentialsAvailable",
        "Reachable",
        "Authenticated",
        "PrerequisitesMet",
        "VersionCompatible",
        "BinariesInstalled",
        "NetworkConfigured",
        "ServicesRunning",
        "NodeRegistered",
        "NodeReady",
    ):
        assert conditions[type_]["status"] == "True", (type_, conditions[type_])
    assert status["observedGeneration"] == obj["metadata"]["generation"]
    assert status["installed"] == {
        "kubelet": world.version,
        "kubeProxy": world.version,
        "cniPlugins": CNI_PLUGINS_VERSION,
    }
    assert status["host"]["osBuild"] == 20348
    assert status["nodeName"] == name
    assert "lastError" not in status
    assert obj["metadata"]["finalizers"] == ["winnode.io/finalizer"]

    def annotations() -> dict[str, str] | None:
        found = world.must_get("windowsnode", name)["metadata"].get("annotations") or {}
        return found if "winnode.io/last-handled-configuration" in found else None

    # kopf records the handled spec once the handler returned; all its keys carry our prefix.
    keys = world.wait_for("kopf's diff base", annotations, TIMEOUT)
    ours = [k for k in keys if not k.startswith("kubectl.kubernetes.io/")]
    assert all(k.startswith("winnode.io/") for k in ours), keys
    subnet = status["subnet"]
    assert subnet.startswith("10.244.")
    assert subnet.endswith("/24")

    node = world.must_get("node", name)
    labels = node["metadata"]["labels"]
    assert labels["kubernetes.io/os"] == "windows"
    assert labels["example.com/rack"] == "r12"
    assert "winnode.io/demo" not in labels, "spec.labels replaced the default labels of the fixture"
    assert {"key": "os", "value": "windows", "effect": "NoSchedule"} in node["spec"]["taints"]
    assert node["spec"]["podCIDR"] == subnet
    assert node["status"]["nodeInfo"]["kubeletVersion"] == world.version
    ready = next(c for c in node["status"]["conditions"] if c["type"] == "Ready")
    assert ready["status"] == "True"

    network = world.must_get("windowsnetwork", NETWORK_NAME)
    assert {"node": name, "subnet": subnet, "sourceVIP": plan_subnet(subnet).source_vip} in network["status"][
        "allocations"
    ]
    assert token_secrets(world, name) == [], "the bootstrap token must be revoked once the node joined"
    assert world.events(name, "Configured"), "a Normal Event says the node is configured"

    def on_host(m: Any) -> dict[str, Any]:
        kubelet = m.service("kubelet")
        return {
            "kubelet": (kubelet.state.value, kubelet.description, kubelet.dependencies, kubelet.binary_path),
            "proxy": m.service("kube-proxy").state.value,
            "hns": m.hns_networks[HNS_NETWORK_NAME].address_prefix,
            "bootstrap": m.file(kc.BOOTSTRAP_KUBECONFIG),
            "config": m.file(kc.KUBELET_CONFIG).text,
            "cni": json.loads(m.file(kc.CNI_CONF).text),
            "firewall": sorted(m.firewall_rules),
            "plugins": {p: m.file(f"{kc.CNI_BIN_DIR}\\{p}") for p in CNI_PLUGINS},
            "network": m.cni_network_error(),
        }

    state = host.call(on_host)
    state_kubelet, description, dependencies, binary_path = state["kubelet"]
    assert state_kubelet == "Running"
    assert state["proxy"] == "Running"
    assert description.startswith("Managed by winnode")
    assert dependencies == ["containerd"]
    assert "--windows-service" in binary_path
    assert f"--hostname-override={name}" in binary_path
    assert state["hns"] == subnet
    assert state["bootstrap"] is None, "the bootstrap kubeconfig leaves the host once the node joined"
    token_id = str(host.kubelet.config.bootstrap_kubeconfig).split("token: ")[1].split(".")[0]
    assert world.get("secret", f"bootstrap-token-{token_id}", "kube-system") is None, "its token is revoked"
    assert "cgroupsPerQOS: false" in state["config"]
    assert "npipe:////./pipe/containerd-containerd" in state["config"]
    assert state["cni"]["type"] == "win-overlay"
    assert state["cni"]["ipam"]["subnet"] == subnet
    assert state["firewall"] == [kc.FIREWALL_KUBELET, kc.FIREWALL_VXLAN]
    # The pinned CNI plugins where containerd looks, from the mirror, and containerd's network is up.
    for plugin, entry in state["plugins"].items():
        assert entry is not None, plugin
        assert entry.content == cni_plugins_release()[cni_plugin_url("", CNI_PLUGINS_VERSION, plugin)]
    assert state["network"] is None

    # Delete: drain, clean the host, remove the Node, token and subnet, then the finalizer.
    world.cp.kubectl("delete", "windowsnode", name, "--wait=false")
    world.wait_for("WindowsNode gone", lambda: world.get("windowsnode", name) is None, TIMEOUT)
    assert world.get("node", name) is None
    assert token_secrets(world, name) == []
    network = world.must_get("windowsnetwork", NETWORK_NAME)
    assert all(a["node"] != name for a in (network.get("status") or {}).get("allocations") or [])
    after = snapshot(host)
    assert after["services"] == before["services"]
    assert after["files"] == before["files"]
    assert after["hns"] == before["hns"] == set()
    assert after["firewall"] == before["firewall"]
    assert after["dirs"] - before["dirs"] <= CNI_DIRS, "only containerd's CNI directories may stay"
    world.emulator.assert_no_leaked_shells()  # type: ignore[union-attr]


def test_concurrent_nodes_get_distinct_subnets_and_2019_joins(world: World) -> None:
    hosts = [
        world.add_host(HostSpec.server2019(hostname="e2e-b")),
        world.add_host(HostSpec.server2022(hostname="e2e-c")),
        world.add_host(HostSpec.server2025(hostname="e2e-d")),
    ]
    names = [h.hostname for h in hosts]
    world.apply(*(world.windows_node(h, n) for h, n in zip(hosts, names, strict=True)))
    subnets = {world.wait_phase(n, "Ready", TIMEOUT)["status"]["subnet"] for n in names}
    assert len(subnets) == 3
    builds = {
        n: world.must_get("node", n)["metadata"]["labels"]["node.kubernetes.io/windows-build"] for n in names
    }
    assert builds == {"e2e-b": "10.0.17763", "e2e-c": "10.0.20348", "e2e-d": "10.0.26100"}
    world.cp.kubectl("delete", "windowsnode", *names, "--wait=false")
    for n in names:
        world.wait_for(f"{n} gone", partial(gone, world, n), TIMEOUT)
        assert world.get("node", n) is None
