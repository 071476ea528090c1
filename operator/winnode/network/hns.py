"""The HNS network of a node and the addresses it reserves in the node's pod subnet.

Each node gets one HNS network, named HNS_NETWORK_NAME, of type L2Bridge (mode l2bridge) or
Overlay (mode overlay, VXLAN). In the node's pod subnet:
  .0        network address
  .1        gateway of the HNS network
  .2        kube-proxy's source VIP (overlay: the address SNAT'd service traffic leaves with)
  .3 ...    pod addresses (CNI host-local range)
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from winnode.api.windowsnetwork import VXLAN_DEFAULT_PORT, NetworkMode, WindowsNetworkSpec
from winnode.host.actions import HnsNetworkEnsureParams, HnsNetworkType

HNS_NETWORK_NAME = "winnode"
# The CNI network (and kube-proxy's --network-name) is the HNS network itself.
CNI_NETWORK_NAME = HNS_NETWORK_NAME


@dataclass(frozen=True)
class SubnetPlan:
    subnet: str
    gateway: str
    source_vip: str
    range_start: str
    range_end: str


def plan_subnet(subnet: str) -> SubnetPlan:
    net = ipaddress.IPv4Network(subnet, strict=True)
    if net.num_addresses < 8:
        raise ValueError(f"node subnet {subnet} is too small (needs at least a /29)")
    first = net.network_address
    last = net.broadcast_address
    return SubnetPlan(
        subnet=str(net),
        gateway=str(first + 1),
        source_vip=str(first + 2),
        range_start=str(first + 3),
        range_end=str(last - 1),
    )


def hns_network_params(spec: WindowsNetworkSpec, subnet: str) -> HnsNetworkEnsureParams:
    """The HNS network to ensure on a node of `spec` holding pod subnet `subnet`."""
    plan = plan_subnet(subnet)
    vxlan = spec.effective_vxlan
    return HnsNetworkEnsureParams(
        name=HNS_NETWORK_NAME,
        type=HnsNetworkType.OVERLAY if spec.mode is NetworkMode.OVERLAY else HnsNetworkType.L2BRIDGE,
        address_prefix=plan.subnet,
        gateway=plan.gateway,
        adapter_name=spec.adapter_name,
        vsid=vxlan.vni if vxlan else None,
        # HNS listens on 4789 unless told otherwise; the VxlanPort policy exists only in the hcn v2
        # API (HNS 10.3+, not Windows Server 2019), so it is sent only for another port.
        vxlan_port=vxlan.port if vxlan and vxlan.port != VXLAN_DEFAULT_PORT else None,
    )
