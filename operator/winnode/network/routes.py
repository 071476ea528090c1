"""Routes between nodes' pod subnets, computed from the cluster's Node objects. Pure.

No agent runs on a Windows host: the operator programs each host with a route to every peer Node's
pod subnet (Node.spec.podCIDR, through the Node's InternalIP), Windows and Linux alike:

- overlay (VXLAN): one RemoteSubnetRoute per peer: its subnet, its provider address and its VTEP
  (distributed router) MAC, with the network's VNI. A Windows peer's MAC is the one its own HNS
  reports (winnode records it in the peer's flannel annotation); a Linux peer's is the VtepMAC its
  flannel agent published. As flannel's Windows vxlan backend does
  (flannel pkg/backend/vxlan/vxlan_network_windows.go, handleSubnetEvents).
- l2bridge: a host route per peer subnet via the peer's address (flannel
  pkg/backend/hostgw/hostgw_windows.go), plus the host endpoint at .2 the pods use as gateway.

For the Linux side the operator writes the annotations flannel's Linux agent reads on each Windows
Node (flannel pkg/subnet/kube/annotations.go: backend-type, backend-data, public-ip;
kube-subnet-manager), in the shape of flannel's lease (pkg/lease: LeaseAttrs; the vxlan backend's
data is {"VNI": n, "VtepMAC": "aa:bb:..."}, host-gw has none).
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from winnode.api.windowsnetwork import LinuxCNI, NetworkMode, WindowsNetworkSpec
from winnode.host.actions import HnsRoutesSyncParams, NetRoute, RemoteSubnetRoute
from winnode.network.hns import HNS_NETWORK_NAME, plan_subnet

FLANNEL_PREFIX = "flannel.alpha.coreos.com"
BACKEND_TYPE = f"{FLANNEL_PREFIX}/backend-type"
BACKEND_DATA = f"{FLANNEL_PREFIX}/backend-data"
PUBLIC_IP = f"{FLANNEL_PREFIX}/public-ip"
KUBE_SUBNET_MANAGER = f"{FLANNEL_PREFIX}/kube-subnet-manager"
# The distributed router MAC a Windows host's HNS gave its Overlay network (HNS form), recorded by
# winnode whatever the Linux CNI, so Windows peers can tunnel to it.
VTEP_MAC_ANNOTATION = "winnode.io/vtep-mac"
# Changes whenever winnode re-creates the node's HNS network (which drops its routes): route sync
# programs the new one again.
POD_NETWORK_ANNOTATION = "winnode.io/pod-network"
FLANNEL_ANNOTATIONS = (BACKEND_TYPE, BACKEND_DATA, PUBLIC_IP, KUBE_SUBNET_MANAGER)
BACKEND_FOR_MODE = {NetworkMode.OVERLAY: "vxlan", NetworkMode.L2BRIDGE: "host-gw"}


@dataclass(frozen=True)
class Peer:
    """What routing needs of one Node."""

    name: str
    pod_cidr: str
    address: str  # InternalIP (IPv4)
    windows: bool
    backend_type: str | None = None  # from the flannel annotations, if any
    vtep_mac: str | None = None  # HNS form (0E-2A-...), if known
    vni: int | None = None


def hns_mac(mac: str) -> str:
    """aa:bb:cc:dd:ee:ff (flannel, Linux) -> AA-BB-CC-DD-EE-FF (HNS)."""
    return mac.replace(":", "-").upper()


def flannel_mac(mac: str) -> str:
    """AA-BB-CC-DD-EE-FF (HNS) -> aa:bb:cc:dd:ee:ff (flannel's hardwareAddr JSON)."""
    return mac.replace("-", ":").lower()


def _ipv4(value: str) -> str | None:
    try:
        ip = ipaddress.ip_address(value)
    except ValueError:
        return None
    return str(ip) if ip.version == 4 else None


def peer_from_node(node: Mapping[str, Any]) -> Peer | None:
    """The routing view of a Node object; None while it has no IPv4 pod CIDR or InternalIP yet."""
    meta = node.get("metadata") or {}
    spec = node.get("spec") or {}
    status = node.get("status") or {}
    cidrs = [spec.get("podCIDR"), *(spec.get("podCIDRs") or [])]
    pod_cidr = next((c for c in cidrs if isinstance(c, str) and ":" not in c), None)
    annotations = meta.get("annotations") or {}
    address = _ipv4(str(annotations.get(PUBLIC_IP, "")))
    if address is None:
        address = next(
            (
                ip
                for a in status.get("addresses") or []
                if a.get("type") == "InternalIP" and (ip := _ipv4(str(a.get("address")))) is not None
            ),
            None,
        )
    if pod_cidr is None or address is None:
        return None
    labels = meta.get("labels") or {}
    backend_type = annotations.get(BACKEND_TYPE)
    vtep_mac: str | None = None
    vni: int | None = None
    if annotations.get(VTEP_MAC_ANNOTATION):
        vtep_mac = hns_mac(str(annotations[VTEP_MAC_ANNOTATION]))
    elif backend_type == "vxlan":
        try:
            data = json.loads(annotations.get(BACKEND_DATA) or "null") or {}
        except ValueError:
            data = {}
        if isinstance(data, dict) and isinstance(data.get("VtepMAC"), str):
            vtep_mac = hns_mac(data["VtepMAC"])
            vni = data.get("VNI") if isinstance(data.get("VNI"), int) else None
    return Peer(
        name=str(meta.get("name")),
        pod_cidr=str(ipaddress.IPv4Network(pod_cidr, strict=False)),
        address=address,
        windows=labels.get("kubernetes.io/os") == "windows",
        backend_type=backend_type,
        vtep_mac=vtep_mac,
        vni=vni,
    )


def peers_from_nodes(nodes: Iterable[Mapping[str, Any]]) -> list[Peer]:
    peers = [p for n in nodes if (p := peer_from_node(n)) is not None]
    return sorted(peers, key=lambda p: p.name)


def managed_prefixes(spec: WindowsNetworkSpec, peers: Iterable[Peer]) -> list[str]:
    """Where routes are ours: the clusterCIDR, and every peer subnet outside it (Linux nodes whose pod
    CIDRs come from another range)."""
    cluster = ipaddress.IPv4Network(spec.cluster_cidr)
    out = [str(cluster)]
    for peer in peers:
        if not ipaddress.IPv4Network(peer.pod_cidr).subnet_of(cluster) and peer.pod_cidr not in out:
            out.append(peer.pod_cidr)
    return out


def routes_for(
    node_name: str, spec: WindowsNetworkSpec, subnet: str, peers: Iterable[Peer]
) -> HnsRoutesSyncParams:
    """The routes host `node_name` (pod subnet `subnet`) should hold towards `peers`."""
    others = [p for p in peers if p.name != node_name and p.pod_cidr != subnet]
    scopes = managed_prefixes(spec, others)
    if spec.mode is NetworkMode.OVERLAY:
        vxlan = spec.effective_vxlan
        assert vxlan is not None
        routes = [
            RemoteSubnetRoute(
                destination_prefix=p.pod_cidr,
                provider_address=p.address,
                distributed_router_mac=p.vtep_mac,
                isolation_id=vxlan.vni,
            )
            for p in others
            # A peer without a known VTEP (a Linux node without flannel, a Windows host not synced
            # yet) cannot be reached through the tunnel; it is added once its MAC is published.
            if p.vtep_mac is not None
        ]
        return HnsRoutesSyncParams(
            network=HNS_NETWORK_NAME, managed_prefixes=scopes, remote_subnet_routes=routes, host_route=True
        )
    return HnsRoutesSyncParams(
        network=HNS_NETWORK_NAME,
        managed_prefixes=scopes,
        bridge_endpoint_ip=plan_subnet(subnet).source_vip,
        net_routes=[NetRoute(destination_prefix=p.pod_cidr, next_hop=p.address) for p in others],
    )


def flannel_annotations(
    spec: WindowsNetworkSpec, public_ip: str, vtep_mac: str | None
) -> dict[str, str | None]:
    """The annotations flannel's Linux agent reads on a Windows Node (a merge patch: None removes)."""
    if spec.linux_cni is LinuxCNI.NONE:
        return dict.fromkeys(FLANNEL_ANNOTATIONS)
    data: dict[str, Any] | None = None
    if spec.mode is NetworkMode.OVERLAY:
        vxlan = spec.effective_vxlan
        assert vxlan is not None
        data = {"VNI": vxlan.vni, "VtepMAC": flannel_mac(vtep_mac) if vtep_mac else None}
    return {
        BACKEND_TYPE: BACKEND_FOR_MODE[spec.mode],
        BACKEND_DATA: json.dumps(data, separators=(",", ":")),
        PUBLIC_IP: public_ip,
        KUBE_SUBNET_MANAGER: "true",
    }
