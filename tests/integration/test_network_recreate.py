"""Re-creating the pod network of a node that runs pods cordons and drains it first (under the
upgrades' disruption budget); the same repair on an idle node does not. Either way the new network
gets its routes to the peers back."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from winnode.network.hns import HNS_NETWORK_NAME
from winnode.settings import Settings
from winnode.testing.cluster import ControlPlane
from winnode.testing.demo import World

TIMEOUT = 120.0
NETWORK = "recreate"


@pytest.fixture(scope="module")
def world(control_plane: ControlPlane) -> Iterator[World]:
    with World(
        control_plane,
        settings=Settings(metrics_port=0, drift_interval_s=2.0, namespace="wn-recreate", max_unavailable=2),
        namespace="wn-recreate",
    ) as w:
        w.apply(w.network(NETWORK, clusterCIDR="10.215.0.0/16", serviceCIDR="10.216.0.0/16"))
        yield w


def hns(host: Any) -> tuple[str, str, frozenset[str]]:
    """The pod network's id, gateway and the destinations of its RemoteSubnetRoutes."""

    def read(m: Any) -> tuple[str, str, frozenset[str]]:
        net = m.hns_networks[HNS_NETWORK_NAME]
        routes = frozenset(str(r["DestinationPrefix"]) for r in net.policies_of("RemoteSubnetRoute"))
        return net.id, net.gateway, routes

    result: tuple[str, str, frozenset[str]] = host.call(read)
    return result


def routes_to_peer(world: World, host: Any, peer: str) -> bool:
    # Other Linux Nodes the cluster holds are peers too: look for this peer's subnet only.
    subnet = world.must_get("windowsnode", peer)["status"].get("subnet")
    return subnet is not None and subnet in hns(host)[2]


def test_recreating_the_network_drains_a_busy_node_only(world: World) -> None:
    busy_host, idle_host = world.add_host(), world.add_host()
    for name, host in (("busy", busy_host), ("idle", idle_host)):
        world.apply(world.windows_node(host, name=name, network=NETWORK))
    for name in ("busy", "idle"):
        world.wait_for(f"{name} Ready", lambda name=name: world.phase(name) == "Ready", TIMEOUT)
    peers = ((busy_host, "idle"), (idle_host, "busy"))
    for host, peer in peers:
        world.wait_for(
            "routes to the peer", lambda host=host, peer=peer: routes_to_peer(world, host, peer), TIMEOUT
        )
    namespace = world.namespace
    world.wait_for("default ServiceAccount", lambda: world.get("serviceaccount", "default", namespace), 60)
    world.apply(
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "app", "namespace": namespace},
            "spec": {
                "nodeName": "busy",
                "os": {"name": "windows"},
                "automountServiceAccountToken": False,
                "terminationGracePeriodSeconds": 0,
                "containers": [{"name": "app", "image": "mcr.microsoft.com/windows/nanoserver:ltsc2022"}],
            },
        }
    )
    world.wait_for(
        "pod Running",
        lambda: ((world.get("pod", "app", namespace) or {}).get("status") or {}).get("phase") == "Running",
        60,
    )
    before = {name: hns(host) for name, host in (("busy", busy_host), ("idle", idle_host))}

    # Someone changes the networks by hand: drift repair must re-create them.
    def tamper(m: Any) -> None:
        m.hns_networks[HNS_NETWORK_NAME].gateway = m.hns_networks[HNS_NETWORK_NAME].address_prefix.replace(
            ".0/24", ".9"
        )

    busy_host.call(tamper)
    idle_host.call(tamper)
    for name, host in (("busy", busy_host), ("idle", idle_host)):
        try:
            world.wait_for(
                f"{name}'s network re-created",
                lambda host=host, name=name: (
                    hns(host)[0] != before[name][0] and hns(host)[1] == before[name][1]
                ),
                TIMEOUT,
            )
        except TimeoutError as exc:
            status = world.must_get("windowsnode", name)["status"]
            raise AssertionError(
                f"{exc}: {status.get('phase')} {status.get('lastError')} {hns(host)}"
            ) from None
    assert world.events("busy", "Cordoned"), "the busy node is cordoned first"
    assert world.events("busy", "Drained")
    assert world.get("pod", "app", namespace) is None, "its pod was evicted before the network went away"
    world.wait_for(
        "busy uncordoned", lambda: not world.must_get("node", "busy")["spec"].get("unschedulable"), TIMEOUT
    )
    assert not world.events("idle", "Cordoned"), "an idle node is not drained"
    assert not world.events("idle", "Drained")
    # The new networks have no routes of their own: route sync programs them again.
    for host, peer in peers:
        world.wait_for(
            "routes back on the new network",
            lambda host=host, peer=peer: routes_to_peer(world, host, peer),
            TIMEOUT,
        )
