"""Routes computed from Nodes (pure), and the reachability model refusing what a real network drops."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from winnode.api import WindowsNode
from winnode.api.windowsnetwork import LinuxCNI, WindowsNetworkSpec
from winnode.host import actions as A
from winnode.lifecycle.route_sync import RoutedHost, plan_hosts, plan_routes
from winnode.network.hns import HnsHost, network_params
from winnode.network.routes import (
    BACKEND_DATA,
    BACKEND_TYPE,
    PUBLIC_IP,
    flannel_annotations,
    peer_from_node,
    peers_from_nodes,
    routes_for,
)
from winnode.testing.hostmodel import ActionFailed, HostModel, new_host_model
from winnode.testing.reachability import Cluster, LinuxNodeView, WindowsHostView

# The HNS of a fully updated Server 2022 host (the emulator's default build).
HNS_2022 = HnsHost(version=(13, 2))

OVERLAY = WindowsNetworkSpec.model_validate(
    {"mode": "overlay", "clusterCIDR": "10.244.0.0/16", "serviceCIDR": "10.96.0.0/12"}
)
L2BRIDGE = OVERLAY.model_copy(update={"mode": "l2bridge"})


def node(name: str, cidr: str | None, ip: str, *, os: str = "windows", **annotations: str) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "labels": {"kubernetes.io/os": os}, "annotations": annotations},
        "spec": {"podCIDR": cidr} if cidr else {},
        "status": {
            "addresses": [{"type": "InternalIP", "address": ip}, {"type": "Hostname", "address": name}]
        },
    }


LINUX = node(
    "lin",
    "10.244.9.0/24",
    "10.0.0.9",
    os="linux",
    **{
        BACKEND_TYPE: "vxlan",
        BACKEND_DATA: json.dumps({"VNI": 4096, "VtepMAC": "aa:bb:cc:dd:ee:09"}),
        PUBLIC_IP: "10.0.0.9",
    },
)


def test_peers_need_a_pod_cidr_and_an_address() -> None:
    peers = peers_from_nodes([node("w1", "10.244.1.0/24", "10.0.0.1"), node("w2", None, "10.0.0.2"), LINUX])
    assert [p.name for p in peers] == ["lin", "w1"]
    lin = peer_from_node(LINUX)
    assert lin is not None
    assert (lin.vtep_mac, lin.vni, lin.windows) == ("AA-BB-CC-DD-EE-09", 4096, False)


def test_overlay_routes_every_peer_with_a_known_vtep() -> None:
    w2 = node("w2", "10.244.2.0/24", "10.0.0.2", **{"winnode.io/vtep-mac": "0E-2A-0A-00-00-02"})
    w3 = node("w3", "10.244.3.0/24", "10.0.0.3")  # not synced yet: no MAC
    params = routes_for("w1", OVERLAY, "10.244.1.0/24", peers_from_nodes([w2, w3, LINUX]))
    assert params.host_route
    assert [
        (r.destination_prefix, r.provider_address, r.distributed_router_mac, r.isolation_id)
        for r in params.remote_subnet_routes
    ] == [
        ("10.244.9.0/24", "10.0.0.9", "AA-BB-CC-DD-EE-09", 4096),
        ("10.244.2.0/24", "10.0.0.2", "0E-2A-0A-00-00-02", 4096),
    ]


def test_l2bridge_routes_via_peer_addresses_and_a_gateway_at_dot_2() -> None:
    params = routes_for(
        "w1", L2BRIDGE, "10.244.1.0/24", peers_from_nodes([node("w2", "10.244.2.0/24", "10.0.0.2"), LINUX])
    )
    assert params.bridge_endpoint_ip == "10.244.1.2"
    assert {(r.destination_prefix, r.next_hop) for r in params.net_routes} == {
        ("10.244.2.0/24", "10.0.0.2"),
        ("10.244.9.0/24", "10.0.0.9"),
    }


def test_flannel_annotations_per_mode() -> None:
    vx = flannel_annotations(OVERLAY, "10.0.0.1", "0E-2A-0A-00-00-01")
    assert vx[BACKEND_TYPE] == "vxlan"
    assert json.loads(vx[BACKEND_DATA] or "") == {"VNI": 4096, "VtepMAC": "0e:2a:0a:00:00:01"}
    assert flannel_annotations(L2BRIDGE, "10.0.0.1", None)[BACKEND_TYPE] == "host-gw"
    none = flannel_annotations(OVERLAY.model_copy(update={"linux_cni": LinuxCNI.NONE}), "10.0.0.1", None)
    assert set(none.values()) == {None}, "linuxCNI none removes them"


def windows_node(
    name: str, network: str, subnet: str, phase: str = "Ready", deleting: bool = False
) -> WindowsNode:
    meta: dict[str, Any] = {"name": name}
    if deleting:
        meta["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    return WindowsNode.model_validate(
        {
            "metadata": meta,
            "spec": {
                "address": "10.0.0.1",
                "network": network,
                "winrm": {"credentialsSecretRef": {"namespace": "n", "name": "s"}},
            },
            "status": {"phase": phase, "subnet": subnet},
        }
    )


def test_a_deleting_node_is_nobodys_peer_and_other_networks_do_not_mix() -> None:
    nodes = [node(n, f"10.244.{i}.0/24", f"10.0.0.{i}") for i, n in ((1, "w1"), (2, "w2"), (3, "w3"))]
    other = node("x1", "10.250.1.0/24", "10.0.1.1")
    wns = [
        windows_node("w1", "net", "10.244.1.0/24"),
        windows_node("w2", "net", "10.244.2.0/24"),
        windows_node("w3", "net", "10.244.3.0/24", deleting=True),
        windows_node("x1", "other", "10.250.1.0/24"),
        windows_node("w4", "net", "10.244.4.0/24", phase="Installing"),
    ]
    plan = plan_routes([*nodes, other], [w.to_dict() for w in wns], {"net": L2BRIDGE, "other": L2BRIDGE})
    assert set(plan) == {"w1", "w2", "x1"}
    assert [r.destination_prefix for r in plan["w1"].net_routes] == ["10.244.2.0/24"]


def test_hosts_of_a_network_share_their_peers_and_a_host_own_node_leaves_its_key_alone() -> None:
    subnets = {f"w{i}": f"10.244.{i}.0/24" for i in range(1, 6)}
    nodes = [node(n, cidr, f"10.0.0.{i}") for i, (n, cidr) in enumerate(subnets.items(), 1)]
    wns = [windows_node(n, "net", cidr).to_dict() for n, cidr in subnets.items()]
    hosts = [RoutedHost.of(w) for w in wns]
    plans = plan_hosts(peers_from_nodes(nodes), hosts, {"net": L2BRIDGE})
    # One tuple of peers for the whole network, not one route list per host (memory in N, not N²).
    assert len({id(p.peers) for p in plans.values()}) == 1
    assert {n: p.params() for n, p in plans.items()} == plan_routes(nodes, wns, {"net": L2BRIDGE})

    # w1's own Node changes (its address): every other host's routes change, w1's do not.
    moved = [node("w1", subnets["w1"], "10.0.9.9"), *nodes[1:]]
    again = plan_hosts(peers_from_nodes(moved), hosts, {"net": L2BRIDGE})
    assert again["w1"].key == plans["w1"].key
    assert again["w1"].params() == plans["w1"].params()
    for name in ("w2", "w3", "w4", "w5"):
        assert again[name].key != plans[name].key
        assert again[name].params() != plans[name].params()
    assert plan_hosts(peers_from_nodes(nodes), hosts, {"net": L2BRIDGE})["w3"].key == plans["w3"].key


def _overlay_host(name: str, address: str, subnet: str, vsid: int = 4096) -> HostModel:
    model = new_host_model(name, addresses=[address])
    asyncio.run(
        model.execute(
            network_params(
                HNS_2022,
                name="winnode",
                type_=A.HnsNetworkType.OVERLAY,
                prefix=subnet,
                gateway=subnet.replace(".0/24", ".1"),
                vsid=vsid,
            )
        )
    )
    model.firewall_rules["winnode-vxlan"] = None  # type: ignore[assignment]
    return model


def _sync(model: HostModel, params: A.HnsRoutesSyncParams) -> A.HnsRoutesSyncResult:
    result = asyncio.run(model.execute(params))
    assert isinstance(result, A.HnsRoutesSyncResult)
    return result


def test_reachability_refuses_a_wrong_mac_vni_or_missing_route() -> None:
    h1 = _overlay_host("w1", "10.0.0.1", "10.244.1.0/24")
    h2 = _overlay_host("w2", "10.0.0.2", "10.244.2.0/24")
    mac1 = _sync(
        h1, A.HnsRoutesSyncParams(network="winnode", managed_prefixes=["10.244.0.0/16"])
    ).distributed_router_mac
    mac2 = _sync(
        h2, A.HnsRoutesSyncParams(network="winnode", managed_prefixes=["10.244.0.0/16"])
    ).distributed_router_mac
    assert mac1 == "0E-2A-0A-00-00-01"
    h1.hns_networks["winnode"].endpoints["10.244.1.3"] = {"name": "a", "host_attached": False}
    h2.hns_networks["winnode"].endpoints["10.244.2.3"] = {"name": "b", "host_attached": False}

    def cluster() -> Cluster:
        return Cluster([WindowsHostView("w1", "10.0.0.1", h1), WindowsHostView("w2", "10.0.0.2", h2)], [], [])

    def route(to: str, via: str, mac: str | None, vni: int = 4096) -> A.RemoteSubnetRoute:
        return A.RemoteSubnetRoute(
            destination_prefix=to, provider_address=via, distributed_router_mac=mac or "", isolation_id=vni
        )

    assert "no RemoteSubnetRoute" in cluster().reach("10.244.1.3", "10.244.2.3").why
    _sync(
        h1,
        A.HnsRoutesSyncParams(
            network="winnode",
            managed_prefixes=["10.244.0.0/16"],
            remote_subnet_routes=[route("10.244.2.0/24", "10.0.0.2", mac2)],
        ),
    )
    assert "reply path" in cluster().reach("10.244.1.3", "10.244.2.3").why, "one-way routes are no connection"
    _sync(
        h2,
        A.HnsRoutesSyncParams(
            network="winnode",
            managed_prefixes=["10.244.0.0/16"],
            remote_subnet_routes=[route("10.244.1.0/24", "10.0.0.1", "0E-2A-00-00-00-00")],
        ),
    )
    assert not cluster().reach("10.244.1.3", "10.244.2.3"), "wrong MAC"
    _sync(
        h2,
        A.HnsRoutesSyncParams(
            network="winnode",
            managed_prefixes=["10.244.0.0/16"],
            remote_subnet_routes=[route("10.244.1.0/24", "10.0.0.1", mac1, vni=5000)],
        ),
    )
    assert not cluster().reach("10.244.1.3", "10.244.2.3"), "wrong VNI"
    result = _sync(
        h2,
        A.HnsRoutesSyncParams(
            network="winnode",
            managed_prefixes=["10.244.0.0/16"],
            remote_subnet_routes=[route("10.244.1.0/24", "10.0.0.1", mac1)],
        ),
    )
    assert result.removed == ["RemoteSubnetRoute 10.244.1.0/24"], "a changed route is replaced"
    assert cluster().reach("10.244.1.3", "10.244.2.3")
    del h2.firewall_rules["winnode-vxlan"]
    assert "firewall" in cluster().reach("10.244.1.3", "10.244.2.3").why


def test_l2bridge_pods_need_their_gateway_endpoint() -> None:
    model = new_host_model("w1", addresses=["10.0.0.1"])
    asyncio.run(
        model.execute(
            network_params(
                HNS_2022,
                name="winnode",
                type_=A.HnsNetworkType.L2BRIDGE,
                prefix="10.244.1.0/24",
                gateway="10.244.1.1",
            )
        )
    )
    net = model.hns_networks["winnode"]
    net.endpoints["10.244.1.3"] = {"name": "a", "host_attached": False, "gateway": "10.244.1.2"}
    lin = peer_from_node(LINUX)
    assert lin is not None
    model.net_routes["10.244.9.0/24"] = "10.0.0.9"
    c = Cluster([WindowsHostView("w1", "10.0.0.1", model)], [LinuxNodeView(lin, pods={"10.244.9.5"})], [])
    assert "gateway 10.244.1.2 is no host-attached endpoint" in c.forward("10.244.1.3", "10.244.9.5").why
    _sync(
        model,
        A.HnsRoutesSyncParams(
            network="winnode", managed_prefixes=["10.244.0.0/16"], bridge_endpoint_ip="10.244.1.2"
        ),
    )
    assert model.net_routes == {}, "a route not wanted any more inside the managed range is removed"
    _sync(
        model,
        A.HnsRoutesSyncParams(
            network="winnode",
            managed_prefixes=["10.244.0.0/16"],
            bridge_endpoint_ip="10.244.1.2",
            net_routes=[A.NetRoute(destination_prefix="10.244.9.0/24", next_hop="10.0.0.9")],
        ),
    )
    assert c.forward("10.244.1.3", "10.244.9.5")


def test_server_2019_hns_refuses_a_vxlan_port_policy() -> None:
    """A request built for a 2022 host (hcn, VxlanPort) sent to a 2019 host's HNS (9.5: hcn, no
    VxlanPort) is refused by hcsshim's own version ranges; winnode never builds it for 2019."""
    params = network_params(
        HNS_2022,
        name="winnode",
        type_=A.HnsNetworkType.OVERLAY,
        prefix="10.244.1.0/24",
        gateway="10.244.1.1",
        vsid=4096,
        vxlan_port=4790,
    )
    with pytest.raises(ActionFailed, match="VxlanPortVersion"):
        asyncio.run(new_host_model("w2019", os_build=17763).execute(params))
    assert asyncio.run(new_host_model("w2022", os_build=20348).execute(params))
