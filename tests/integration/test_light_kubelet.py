"""Light hosts (testing.kubelet.light), as the fleet benchmark runs them for N > 200: the operator
brings one to a Ready WindowsNode, the Node looks as the full kubelet would register it, the node's
writes are judged as the node's own, and deleting the WindowsNode stops the light kubelet."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from winnode.settings import Settings
from winnode.testing.cluster import ControlPlane
from winnode.testing.demo import World
from winnode.testing.emulator import EmulatedHost, HostSpec, LightKubeletHook
from winnode.testing.kubelet.api import ApiError
from winnode.testing.kubelet.light import LightKubelet, LightKubelets

TIMEOUT = 180.0
NETWORK = "light-net"


@pytest.fixture(scope="module")
def world(control_plane: ControlPlane) -> Iterator[World]:
    with World(
        control_plane,
        settings=Settings(metrics_port=0),
        namespace="wn-light",
        light_kubelets=True,
    ) as w:
        w.apply(w.network(NETWORK, clusterCIDR="10.219.0.0/16"))
        yield w


def csrs_of(world: World, node: str) -> list[str]:
    items = json.loads(world.cp.kubectl("get", "csr", "-o", "json").stdout)["items"]
    return [
        c["metadata"]["name"]
        for c in items
        if c["spec"].get("username") == f"system:node:{node}"
        or f"system:node:{node}" in str(c["spec"].get("request"))
    ]


def test_light_host_becomes_a_ready_windows_node(world: World) -> None:
    host: EmulatedHost = world.add_host(HostSpec.server2022(hostname="light-a"))
    name = "light-a"
    assert isinstance(host.kubelet_hook, LightKubeletHook)
    assert host.kube_proxy_hook is None
    world.apply(world.windows_node(host, name, network=NETWORK))

    obj = world.wait_phase(name, "Ready", TIMEOUT)
    conditions = {c["type"]: c for c in obj["status"]["conditions"]}
    for type_ in ("ServicesRunning", "NodeRegistered", "NodeReady", "NetworkConfigured"):
        assert conditions[type_]["status"] == "True", (type_, conditions[type_])
    kubelet = host.kubelet
    assert isinstance(kubelet, LightKubelet)
    assert kubelet.state == "ready"
    assert kubelet.config.heartbeat_interval_s == 10.0, "kubelet's own renewal: leaseDuration 40 s x 0.25"

    node = world.must_get("node", name)
    labels = node["metadata"]["labels"]
    assert labels["kubernetes.io/os"] == "windows"
    assert labels["kubernetes.io/hostname"] == name
    assert labels["node.kubernetes.io/windows-build"] == "10.0.20348"
    assert node["status"]["nodeInfo"]["kubeletVersion"] == world.version
    assert {"type": "InternalIP", "address": host.address} in node["status"]["addresses"]
    assert node["spec"]["podCIDR"] == obj["status"]["subnet"]
    ready = next(c for c in node["status"]["conditions"] if c["type"] == "Ready")
    assert ready["status"] == "True"
    lease = world.must_get("lease", name, "kube-node-lease")
    assert lease["spec"]["holderIdentity"] == name
    assert lease["metadata"]["ownerReferences"][0]["uid"] == node["metadata"]["uid"]
    # Route sync (debounced, beside configure) publishes what peers need once the Node has its pod CIDR
    # and InternalIP, both of which the light kubelet's Node must carry.
    world.wait_for(
        "route sync to publish the node's VTEP",
        lambda: "winnode.io/vtep-mac" in (world.must_get("node", name)["metadata"].get("annotations") or {}),
        timeout=60.0,
    )
    assert csrs_of(world, name) == [], "a light kubelet makes no CSR"

    # The hub's requests are judged as the node's: NodeRestriction refuses it another node's Node.
    assert world.emulator is not None
    hub = host.kubelet_hook.hub
    assert isinstance(hub, LightKubelets)

    async def create_other() -> int:
        api = hub.node_client(name, "test")
        other = {"apiVersion": "v1", "kind": "Node", "metadata": {"name": "light-intruder"}}
        try:
            await api.request("POST", "/api/v1/nodes", body=other)
        except ApiError as exc:
            return exc.status
        return 201

    assert world.emulator.run(create_other()) == 403

    world.cp.kubectl("delete", "windowsnode", name, "--wait=false")
    world.wait_for("WindowsNode deleted", lambda: world.get("windowsnode", name) is None, TIMEOUT)
    assert host.kubelet is None, "deconfigure stopped the kubelet service, and with it the light kubelet"
    assert world.get("node", name) is None
