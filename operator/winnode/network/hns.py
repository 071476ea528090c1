"""The HNS networks of a node and the addresses they reserve in the node's pod subnet.

Each node gets one pod network, named HNS_NETWORK_NAME, of type L2Bridge (mode l2bridge) or
Overlay (mode overlay, VXLAN). In the node's pod subnet:
  .0        network address
  .1        gateway of the HNS network
  .2        kube-proxy's source VIP (overlay: the address SNAT'd service traffic leaves with)
  .3 ...    pod addresses (CNI host-local range)

Before it, the persistent network EXTERNAL_NETWORK_NAME is created once and never replaced: the first
L2Bridge or Overlay network on an adapter creates the vSwitch and moves the host's address to a
vEthernet adapter (a connection blip); while another network holds the vSwitch, the pod network can
be deleted and created again without that (microsoft/SDN Kubernetes/windows/helper.v2.psm1
CreateExternalNetwork, at 242fb0c3: 192.168.255.0/30, gateway .1, VSID 9999 for Overlay).

The request HNS receives is rendered here, in the API the host's HNS speaks: hcn (v2) from HNS 9.2 on,
as flannel's Windows vxlan backend creates its network (pkg/backend/vxlan/device_windows.go,
newVXLANDevice), HNSCall's v1 HNSNetwork before. hack/upstreamtypes decodes both with hcsshim's types.
"""

from __future__ import annotations

import ipaddress
import json
from dataclasses import dataclass
from typing import Any

from winnode.api.windowsnetwork import VXLAN_DEFAULT_PORT, NetworkMode, WindowsNetworkSpec
from winnode.host.actions import FactsResult, HnsApi, HnsNetworkEnsureParams, HnsNetworkType

HNS_NETWORK_NAME = "winnode"
# The CNI network (and kube-proxy's --network-name) is the HNS network itself.
CNI_NETWORK_NAME = HNS_NETWORK_NAME
EXTERNAL_NETWORK_NAME = "External"
EXTERNAL_PREFIX = "192.168.255.0/30"
EXTERNAL_GATEWAY = "192.168.255.1"
EXTERNAL_VSID = 9999

# Feature versions of HNS, restated from hcsshim hcn/hcnglobals.go at v0.12.9 (the version the pinned
# CNI plugins are built with): V2ApiSupport 9.2+, VxlanPortVersion 10.3+. hack/upstreamtypes checks
# every request against the upstream ranges themselves.
V2_API_MIN = (9, 2)
VXLAN_PORT_MIN = (10, 3)


class HnsRequestError(ValueError):
    """The network asked for cannot be expressed in the API the host's HNS speaks."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class HnsHost:
    """What the request depends on, from the host's facts."""

    version: tuple[int, int] | None = None
    # The adapter holding the IPv4 default route (sent when the WindowsNetwork names none).
    default_adapter: str | None = None
    # (Name, InterfaceDescription) of each adapter.
    adapters: tuple[tuple[str, str], ...] = ()

    @classmethod
    def from_facts(cls, facts: FactsResult) -> HnsHost:
        version = (facts.hns_version.major, facts.hns_version.minor) if facts.hns_version else None
        return cls(
            version=version,
            default_adapter=facts.default_route_adapter,
            adapters=tuple((a.name, a.description) for a in facts.net_adapters),
        )

    def adapter_aliases(self, adapter: str | None) -> frozenset[str]:
        """The forms in which HNS may report `adapter` (casefolded): its name and its InterfaceDescription
        (HNS names a network's adapter by the description, which Microsoft's scripts compare with
        Get-NetAdapter's InterfaceDescription)."""
        if adapter is None:
            return frozenset()
        out = {adapter.casefold()}
        for name, description in self.adapters:
            if adapter.casefold() in (name.casefold(), description.casefold()):
                out |= {name.casefold(), description.casefold()} - {""}
        return frozenset(out)

    @property
    def api(self) -> HnsApi:
        return HnsApi.V2 if self.version is not None and self.version >= V2_API_MIN else HnsApi.V1

    def describe(self) -> str:
        return "unknown" if self.version is None else f"{self.version[0]}.{self.version[1]}"


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


def _v1_request(
    name: str, type_: HnsNetworkType, prefix: str, gateway: str, adapter: str | None, vsid: int | None
) -> dict[str, Any]:
    # hcsshim internal/hns/hnsnetwork.go HNSNetwork; subnet policies as hnspolicy.go VsidPolicy (flat).
    subnet: dict[str, Any] = {"AddressPrefix": prefix, "GatewayAddress": gateway}
    if vsid is not None:
        subnet["Policies"] = [{"Type": "VSID", "VSID": vsid}]
    request: dict[str, Any] = {"Name": name, "Type": str(type_), "Subnets": [subnet]}
    if adapter is not None:
        request["NetworkAdapterName"] = adapter
    return request


def _v2_request(
    name: str,
    type_: HnsNetworkType,
    prefix: str,
    gateway: str,
    adapter: str | None,
    vsid: int | None,
    vxlan_port: int | None,
) -> dict[str, Any]:
    # hcsshim hcn/hcnnetwork.go HostComputeNetwork: a Static ipam whose subnet routes 0.0.0.0/0 via the
    # gateway, the VSID as a subnet policy and the adapter as a NetAdapterName network policy (flannel
    # device_windows.go newVXLANDevice / addNetAdapterName); VxlanPort as hcnpolicy.go VxlanPortPolicySetting.
    subnet: dict[str, Any] = {
        "IpAddressPrefix": prefix,
        "Routes": [{"NextHop": gateway, "DestinationPrefix": "0.0.0.0/0"}],
    }
    if vsid is not None:
        subnet["Policies"] = [{"Type": "VSID", "Settings": {"IsolationId": vsid}}]
    policies: list[dict[str, Any]] = []
    if adapter is not None:
        policies.append({"Type": "NetAdapterName", "Settings": {"NetworkAdapterName": adapter}})
    if vxlan_port is not None:
        policies.append({"Type": "VxlanPort", "Settings": {"Port": vxlan_port}})
    request: dict[str, Any] = {
        "Name": name,
        "Type": str(type_),
        "Ipams": [{"Type": "Static", "Subnets": [subnet]}],
        "SchemaVersion": {"Major": 2, "Minor": 0},
    }
    if policies:
        request["Policies"] = policies
    return request


def network_params(
    host: HnsHost,
    *,
    name: str,
    type_: HnsNetworkType,
    prefix: str,
    gateway: str,
    adapter: str | None = None,
    vsid: int | None = None,
    vxlan_port: int | None = None,
    keep_existing: bool = False,
) -> HnsNetworkEnsureParams:
    """An HNS network to ensure, with its request rendered in the API `host`'s HNS speaks.
    Raises HnsRequestError for what that HNS has no way to express."""
    api = host.api
    if vxlan_port is not None and (api is HnsApi.V1 or (host.version or (0, 0)) < VXLAN_PORT_MIN):
        raise HnsRequestError(
            reason="VxlanPortUnsupported",
            message=f"spec.vxlan.port {vxlan_port}: HNS {host.describe()} on this host has no VxlanPort network "
            f"policy (it needs HNS {VXLAN_PORT_MIN[0]}.{VXLAN_PORT_MIN[1]} or later, not Windows Server "
            f"2019) and always listens on {VXLAN_DEFAULT_PORT}; set spec.vxlan.port to {VXLAN_DEFAULT_PORT} "
            "(and the Linux side's VXLAN port with it)",
        )
    if api is HnsApi.V2:
        request = _v2_request(name, type_, prefix, gateway, adapter, vsid, vxlan_port)
    else:
        request = _v1_request(name, type_, prefix, gateway, adapter, vsid)
    return HnsNetworkEnsureParams(
        name=name,
        type=type_,
        address_prefix=prefix,
        gateway=gateway,
        adapter_name=adapter,
        vsid=vsid,
        vxlan_port=vxlan_port,
        api=api,
        request=json.dumps(request, separators=(",", ":")),
        keep_existing=keep_existing,
    )


def _network_type(spec: WindowsNetworkSpec) -> HnsNetworkType:
    return HnsNetworkType.OVERLAY if spec.mode is NetworkMode.OVERLAY else HnsNetworkType.L2BRIDGE


def hns_network_params(spec: WindowsNetworkSpec, subnet: str, host: HnsHost) -> HnsNetworkEnsureParams:
    """The pod network to ensure on a node of `spec` holding pod subnet `subnet`. Raises HnsRequestError."""
    plan = plan_subnet(subnet)
    vxlan = spec.effective_vxlan
    return network_params(
        host,
        name=HNS_NETWORK_NAME,
        type_=_network_type(spec),
        prefix=plan.subnet,
        gateway=plan.gateway,
        adapter=spec.adapter_name or host.default_adapter,
        vsid=vxlan.vni if vxlan else None,
        # HNS listens on 4789 unless told otherwise; the VxlanPort policy exists only in hcn (v2) from
        # HNS 10.3, so it is sent only for another port.
        vxlan_port=vxlan.port if vxlan and vxlan.port != VXLAN_DEFAULT_PORT else None,
    )


def external_network_params(spec: WindowsNetworkSpec, host: HnsHost) -> HnsNetworkEnsureParams:
    """The persistent External network (see module doc): created once, never replaced."""
    overlay = spec.mode is NetworkMode.OVERLAY
    return network_params(
        host,
        name=EXTERNAL_NETWORK_NAME,
        type_=_network_type(spec),
        prefix=EXTERNAL_PREFIX,
        gateway=EXTERNAL_GATEWAY,
        adapter=spec.adapter_name or host.default_adapter,
        vsid=EXTERNAL_VSID if overlay else None,
        keep_existing=True,
    )
