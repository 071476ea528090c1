"""Pods route across nodes in both modes, with no agent on the Windows hosts.

The operator programs every emulated host with routes to every peer (Windows and a Linux Node whose
flannel published its lease in annotations, as flanneld does), publishes the Windows nodes'
leases for flannel, and removes a deleted node's subnet from every peer. Whether pods reach each
other is then judged by testing.reachability from what the hosts actually hold.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from winnode.network.hns import HNS_NETWORK_NAME
from winnode.network.routes import BACKEND_DATA, BACKEND_TYPE, PUBLIC_IP, VTEP_MAC_ANNOTATION, peer_from_node
from winnode.settings import Settings
from winnode.testing.cluster import ControlPlane
from winnode.testing.demo import World
from winnode.testing.emulator import EmulatedHost
from winnode.testing.reachability import Cluster, LinuxNodeView, WindowsHostView

TIMEOUT = 120.0
# Per mode: clusterCIDR, serviceCIDR, the Linux node's pod CIDR and address, its flannel lease.
MODES = {
    "overlay": ("10.221.0.0/16", "10.231.0.0/16", "10.221.200.0/24", "127.200.0.5", "vxlan"),
    "l2bridge": ("10.222.0.0/16", "10.232.0.0/16", "10.222.200.0/24", "127.200.0.6", "host-gw"),
}
LINUX_VTEP = "aa:bb:cc:00:00:05"


@pytest.fixture(scope="module")
def world(control_plane: ControlPlane) -> Iterator[World]:
    with World(
        control_plane, settings=Settings(metrics_port=0, drift_interval_s=5.0), namespace="wn-routes"
    ) as w:
        yield w


@pytest.fixture
def linux_nodes(world: World) -> Iterator[list[str]]:
    """Names of the Linux Nodes a test made; deleted after it, so later modules do not route to them."""
    names: list[str] = []
    yield names
    for name in names:
        world.cp.kubectl("delete", "node", name, "--ignore-not-found", "--wait=false")


def linux_node(world: World, name: str, mode: str) -> dict[str, Any]:
    """A Linux Node as kubelet and flanneld leave it: pod CIDR, InternalIP, flannel's lease."""
    _, _, pod_cidr, address, backend = MODES[mode]
    data = {"VNI": 4096, "VtepMAC": LINUX_VTEP} if backend == "vxlan" else None
    node = {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "labels": {"kubernetes.io/os": "linux"},
            "annotations": {
                BACKEND_TYPE: backend,
                BACKEND_DATA: json.dumps(data),
                PUBLIC_IP: address,
                "flannel.alpha.coreos.com/kube-subnet-manager": "true",
            },
        },
        "spec": {"podCIDR": pod_cidr, "podCIDRs": [pod_cidr]},
    }
    world.apply(node)
    status = {"status": {"addresses": [{"type": "InternalIP", "address": address}]}}
    world.cp.kubectl("patch", "node", name, "--subresource=status", "--type=merge", "-p", json.dumps(status))
    return world.must_get("node", name)


def cluster_ip_with_one_backend(world: World, name: str, backend: str) -> str:
    """A Service without a selector and an EndpointSlice of ours (kcm leaves it alone); its ClusterIP."""
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"ports": [{"name": "http", "port": 80, "protocol": "TCP"}]},
    }
    endpoints = {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": f"{name}-1",
            "namespace": "default",
            "labels": {"kubernetes.io/service-name": name, "endpointslice.kubernetes.io/managed-by": "tests"},
        },
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
        "endpoints": [{"addresses": [backend], "conditions": {"ready": True}}],
    }
    world.apply(service, endpoints)
    return str(world.must_get("service", name, "default")["spec"]["clusterIP"])


def lease(world: World, name: str) -> dict[str, str] | None:
    """The Node's annotations once it carries a flannel lease."""
    annotations = world.must_get("node", name)["metadata"].get("annotations") or {}
    return annotations if BACKEND_TYPE in annotations else None


def routes_on(host: EmulatedHost) -> dict[str, str]:
    """Destination prefix -> next hop / provider address, as the host holds them."""

    def read(m: Any) -> dict[str, str]:
        net = m.hns_networks.get(HNS_NETWORK_NAME)
        out = dict(m.net_routes)
        if net is not None:
            out.update(
                {r["DestinationPrefix"]: r["ProviderAddress"] for r in net.policies_of("RemoteSubnetRoute")}
            )
        return out

    return host.call(read)


def subnet_of(world: World, name: str) -> str:
    return str(world.must_get("windowsnode", name)["status"]["subnet"])


@pytest.mark.parametrize("mode", sorted(MODES))
def test_pods_route_between_windows_and_linux_nodes(world: World, mode: str, linux_nodes: list[str]) -> None:
    cluster_cidr, service_cidr, linux_cidr, linux_ip, backend = MODES[mode]
    network = f"routes-{mode}"
    world.apply(world.network(network, mode=mode, clusterCIDR=cluster_cidr, serviceCIDR=service_cidr))
    linux_nodes.append(f"linux-{mode}")
    linux = linux_node(world, f"linux-{mode}", mode)
    hosts = {f"{mode}-w{i}": world.add_host() for i in range(3)}
    for name, host in hosts.items():
        world.apply(world.windows_node(host, name=name, network=network))
    for name in hosts:
        world.wait_for(
            f"{name} Ready",
            lambda name=name: world.must_get("windowsnode", name)["status"].get("phase") == "Ready",
            TIMEOUT,
        )
    subnets = {name: subnet_of(world, name) for name in hosts}
    addresses = {name: host.address for name, host in hosts.items()}

    # Every host routes to every peer: the other Windows nodes and the Linux node.
    for name, host in hosts.items():
        expected = {s: addresses[n] for n, s in subnets.items() if n != name} | {linux_cidr: linux_ip}
        world.wait_for(
            f"{name} routes to every peer",
            lambda host=host, expected=expected: expected.items() <= routes_on(host).items(),
            TIMEOUT,
        )

    # flannel's Linux agent finds a lease of its own backend on every Windows Node. A host publishes
    # its lease after its own route sync, which may end after its peers already route to it.
    for name in hosts:
        annotations = world.wait_for(f"{name}'s flannel lease", lambda name=name: lease(world, name), TIMEOUT)
        assert annotations[BACKEND_TYPE] == backend
        assert annotations[PUBLIC_IP] == addresses[name]
        data = json.loads(annotations[BACKEND_DATA])
        if backend == "vxlan":
            assert data["VNI"] == 4096
            assert data["VtepMAC"] == annotations[VTEP_MAC_ANNOTATION].replace("-", ":").lower()
        else:
            assert data is None

    # Pods: one on each of two Windows hosts (their sandboxes get addresses by the plugins' rules),
    # one on the Linux node.
    names = sorted(hosts)
    pod_a = hosts[names[0]].call(lambda m: m.run_sandbox("pod-a"))
    pod_b = hosts[names[1]].call(lambda m: m.run_sandbox("pod-b"))
    assert pod_a.ip.endswith(".3")
    assert pod_a.gateway.endswith(".2" if mode == "l2bridge" else ".1")
    linux_pod = linux_cidr.replace(".0/24", ".5")

    def view() -> Cluster:
        present = [n for n in hosts if world.get("windowsnode", n) is not None]
        windows = [WindowsHostView(n, addresses[n], hosts[n].call(lambda m: m)) for n in present]
        peer = peer_from_node(world.must_get("node", linux["metadata"]["name"]))
        assert peer is not None
        nodes = [world.must_get("node", n) for n in (*present, linux["metadata"]["name"])]
        return Cluster(windows, [LinuxNodeView(peer=peer, pods={linux_pod})], nodes)

    c = view()
    assert c.reach(pod_a.ip, pod_b.ip), c.reach(pod_a.ip, pod_b.ip).why
    assert c.reach(pod_a.ip, linux_pod), c.reach(pod_a.ip, linux_pod).why
    assert c.reach(linux_pod, pod_b.ip), c.reach(linux_pod, pod_b.ip).why
    # Not a rubber stamp: an address with no pod behind it is not reached.
    missing = pod_b.ip.rsplit(".", 1)[0] + ".200"
    assert not c.reach(pod_a.ip, missing)

    # A ClusterIP whose only backend is on another node, through the load balancer the source
    # host's kube-proxy programmed from the Service and its EndpointSlice.
    vip = cluster_ip_with_one_backend(world, f"web-{mode}", pod_b.ip)
    world.wait_for(
        f"{names[0]}'s kube-proxy to program {vip}",
        lambda: hosts[names[0]].call(lambda m: f"{vip}:80/TCP" in m.hns_load_balancers),
        TIMEOUT,
    )
    assert c.reach_service(pod_a.ip, vip, 80), c.reach_service(pod_a.ip, vip, 80).why
    assert not c.reach_service(pod_a.ip, vip, 81), "no load balancer for that port"

    # A node leaves: no peer keeps a route to its subnet, and flannel no longer sees its lease.
    leaving = names[2]
    world.cp.kubectl("delete", "windowsnode", leaving, "--wait=false")
    world.wait_for(f"{leaving} gone", lambda: world.get("windowsnode", leaving) is None, TIMEOUT)
    for name in names[:2]:
        world.wait_for(
            f"{name} forgets {leaving}",
            lambda name=name: subnets[leaving] not in routes_on(hosts[name]),
            TIMEOUT,
        )
    assert world.get("node", leaving) is None
    assert view().reach(pod_a.ip, pod_b.ip), "the remaining nodes still route to each other"
