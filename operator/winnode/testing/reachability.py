"""Does pod A reach pod B (or a ClusterIP)? Answered from what the hosts hold, never from what the
operator meant to program.

Windows hosts: their HNS networks (type, subnet, VSID, distributed router MAC), endpoints (pods, the
l2bridge gateway), RemoteSubnetRoute policies, host routes, forwarding and kube-proxy's load
balancers, read from each emulated host's model. Linux nodes: the routes flannel's Linux agent
derives from the Node annotations (flannel pkg/backend/vxlan/vxlan_network.go handleSubnetEvents:
one route per lease of the same backend type, through the lease's public IP and, for vxlan, its
VtepMAC with the local VNI; pkg/backend/hostgw: a route via the public IP), plus routes a test adds
by hand (linuxCNI none).

A packet gets through when every hop has what it needs: the source's gateway exists (l2bridge: a
host-attached endpoint at .2 with forwarding on), a route covers the destination, the tunnel's far
end matches (provider address, MAC and VNI of the host owning the subnet), and the destination pod
exists. A connection needs the reply path too, so `reach` checks both directions.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from winnode.network.routes import Peer, peer_from_node
from winnode.testing.hostmodel import HnsNetwork, HostModel

VXLAN_FIREWALL_RULE = "winnode-vxlan"


@dataclass
class WindowsHostView:
    node_name: str
    address: str
    model: HostModel
    network: str = "winnode"


@dataclass
class LinuxNodeView:
    """A Linux node as its flannel sees itself: its lease (from its Node annotations) and its pods."""

    peer: Peer
    pods: set[str] = field(default_factory=set)
    # Routes added by hand (linuxCNI none): destination prefix -> next hop.
    manual_routes: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Verdict:
    ok: bool
    hops: tuple[str, ...]
    why: str = ""

    def __bool__(self) -> bool:
        return self.ok


def _in(ip: str, prefix: str) -> bool:
    return ipaddress.IPv4Address(ip) in ipaddress.IPv4Network(prefix)


def _longest(ip: str, prefixes: Iterable[str]) -> str | None:
    matches = [p for p in prefixes if _in(ip, p)]
    return max(matches, key=lambda p: ipaddress.IPv4Network(p).prefixlen) if matches else None


class Cluster:
    """The pod network of a cluster, as built from emulated Windows hosts and Linux Node objects."""

    def __init__(
        self,
        windows: Iterable[WindowsHostView],
        linux: Iterable[LinuxNodeView],
        nodes: Iterable[Mapping[str, Any]],
    ) -> None:
        self.windows = {w.node_name: w for w in windows}
        self.linux = {node.peer.name: node for node in linux}
        # Every Node's flannel lease (Windows ones carry winnode's annotations).
        self.leases = {p.name: p for p in (peer_from_node(n) for n in nodes) if p is not None}

    # --- where an address lives ---------------------------------------------------------------

    def _network(self, host: WindowsHostView) -> HnsNetwork | None:
        return host.model.hns_networks.get(host.network)

    def _owner(self, ip: str) -> str | None:
        for name, host in self.windows.items():
            net = self._network(host)
            if net is not None and _in(ip, net.address_prefix):
                return name
        for name, node in self.linux.items():
            if _in(ip, node.peer.pod_cidr):
                return name
        return None

    def _by_address(self, address: str) -> str | None:
        for name, host in self.windows.items():
            if host.address == address:
                return name
        for name, node in self.linux.items():
            if node.peer.address == address:
                return name
        return None

    # --- one direction --------------------------------------------------------------------------

    def forward(self, src: str, dst: str) -> Verdict:
        owner = self._owner(src)
        if owner is None:
            return Verdict(False, (), f"{src} is in no node's pod subnet")
        if owner in self.windows:
            return self._from_windows(owner, src, dst)
        return self._from_linux(owner, dst)

    def _from_windows(self, name: str, src: str, dst: str) -> Verdict:
        host = self.windows[name]
        net = self._network(host)
        if net is None:
            return Verdict(False, (name,), f"{name} has no HNS network {host.network}")
        if src not in net.endpoints:
            return Verdict(False, (name,), f"{src} has no endpoint on {name}")
        if _in(dst, net.address_prefix):
            ok = dst in net.endpoints
            return Verdict(ok, (name,), "" if ok else f"no endpoint {dst} on {name}")
        if net.type.value == "Overlay":
            routes = {r["DestinationPrefix"]: r for r in net.policies_of("RemoteSubnetRoute")}
            prefix = _longest(dst, routes)
            if prefix is None:
                return Verdict(False, (name,), f"{name} has no RemoteSubnetRoute covering {dst}")
            route = routes[prefix]
            return self._tunnel_in(
                (name,),
                route["ProviderAddress"],
                route["DistributedRouterMacAddress"],
                route["IsolationId"],
                dst,
            )
        # L2Bridge: the pod's gateway is the host endpoint win-bridge named (.2), routed by the host.
        gateway = net.endpoints[src].get("gateway")
        gw = net.endpoints.get(str(gateway)) if gateway else None
        if gw is None or not gw.get("host_attached"):
            return Verdict(
                False, (name,), f"{name}: the pods' gateway {gateway} is no host-attached endpoint"
            )
        if not {f"vEthernet ({host.network}_host)", "external"} <= host.model.forwarding:
            return Verdict(False, (name,), f"{name}: forwarding is off")
        prefix = _longest(dst, host.model.net_routes)
        if prefix is None:
            return Verdict(False, (name,), f"{name} has no route covering {dst}")
        return self._routed_in((name,), host.model.net_routes[prefix], dst)

    def _from_linux(self, name: str, dst: str) -> Verdict:
        node = self.linux[name]
        if _in(dst, node.peer.pod_cidr):
            ok = dst in node.pods
            return Verdict(ok, (name,), "" if ok else f"no pod {dst} on {name}")
        prefix = _longest(dst, node.manual_routes)
        if prefix is not None:
            return self._routed_in((name,), node.manual_routes[prefix], dst)
        own = self.leases.get(name)
        for lease in self.leases.values():
            if lease.name == name or not _in(dst, lease.pod_cidr):
                continue
            if own is None or lease.backend_type != own.backend_type:
                return Verdict(
                    False,
                    (name,),
                    f"flannel on {name} ignores the {lease.backend_type} lease of {lease.name}",
                )
            if own.backend_type == "vxlan":
                if lease.vtep_mac is None or own.vni is None:
                    return Verdict(False, (name,), f"lease of {lease.name} has no VtepMAC")
                return self._tunnel_in((name,), lease.address, lease.vtep_mac, own.vni, dst)
            return self._routed_in((name,), lease.address, dst)
        return Verdict(False, (name,), f"{name} has no route covering {dst}")

    # --- arriving ---------------------------------------------------------------------------------

    def _tunnel_in(self, hops: tuple[str, ...], provider: str, mac: str, vni: int, dst: str) -> Verdict:
        target = self._by_address(provider)
        if target is None:
            return Verdict(False, hops, f"no node has provider address {provider}")
        hops = (*hops, target)
        if target in self.linux:
            lease = self.leases.get(target)
            if lease is None or lease.backend_type != "vxlan" or lease.vtep_mac != mac or lease.vni != vni:
                return Verdict(False, hops, f"{target}'s flannel VTEP is not {mac} with VNI {vni}")
            return self._deliver_linux(target, dst, hops)
        host = self.windows[target]
        net = self._network(host)
        if net is None or net.type.value != "Overlay":
            return Verdict(False, hops, f"{target} has no Overlay network")
        if VXLAN_FIREWALL_RULE not in host.model.firewall_rules:
            return Verdict(False, hops, f"{target}'s firewall drops VXLAN")
        own_mac = [p["Address"] for p in net.policies_of("DrMacAddress")]
        if net.vsid != vni or own_mac != [mac]:
            return Verdict(False, hops, f"{target} answers VNI {net.vsid} MAC {own_mac}, not {vni} {mac}")
        ok = _in(dst, net.address_prefix) and dst in net.endpoints
        return Verdict(ok, hops, "" if ok else f"no endpoint {dst} on {target}")

    def _routed_in(self, hops: tuple[str, ...], next_hop: str, dst: str) -> Verdict:
        target = self._by_address(next_hop)
        if target is None:
            return Verdict(False, hops, f"next hop {next_hop} is no node")
        hops = (*hops, target)
        if target in self.linux:
            return self._deliver_linux(target, dst, hops)
        host = self.windows[target]
        net = self._network(host)
        if net is None or net.type.value != "L2Bridge" or not _in(dst, net.address_prefix):
            return Verdict(False, hops, f"{target} does not bridge {dst}")
        if "external" not in host.model.forwarding:
            return Verdict(False, hops, f"{target}: forwarding is off")
        ok = dst in net.endpoints
        return Verdict(ok, hops, "" if ok else f"no endpoint {dst} on {target}")

    def _deliver_linux(self, target: str, dst: str, hops: tuple[str, ...]) -> Verdict:
        node = self.linux[target]
        ok = _in(dst, node.peer.pod_cidr) and dst in node.pods
        return Verdict(ok, hops, "" if ok else f"no pod {dst} on {target}")

    # --- questions --------------------------------------------------------------------------------

    def reach(self, src: str, dst: str) -> Verdict:
        """A connection from pod `src` to pod `dst`: there and back."""
        there = self.forward(src, dst)
        if not there:
            return there
        back = self.forward(dst, src)
        if not back:
            return Verdict(False, there.hops + back.hops, f"reply path: {back.why}")
        return Verdict(True, there.hops + back.hops)

    def reach_service(self, src: str, vip: str, port: int, protocol: str = "TCP") -> Verdict:
        """Pod `src` (on a Windows host) to ClusterIP `vip`:`port`, through the source host's load
        balancer (kube-proxy programs one on every host) to any backend it reaches."""
        owner = self._owner(src)
        if owner is None or owner not in self.windows:
            return Verdict(False, (), f"{src} is on no Windows host")
        lb = self.windows[owner].model.hns_load_balancers.get(f"{vip}:{port}/{protocol}")
        if lb is None:
            return Verdict(False, (owner,), f"{owner} has no load balancer for {vip}:{port}/{protocol}")
        reasons = []
        for backend in lb.backends:
            verdict = self.reach(src, backend.rsplit(":", 1)[0])
            if verdict:
                return verdict
            reasons.append(f"{backend}: {verdict.why}")
        return Verdict(False, (owner,), "; ".join(reasons) or f"{vip}:{port} has no backends")
