"""Host Network Service: its networks, the checker that decodes every request, and the HNS actions
(networks, their policies and the host routes to peers) as the real HNS answers them."""

from __future__ import annotations

import ipaddress
import json
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from winnode.host import actions as A
from winnode.testing.hostmodel.errors import ActionFailed

if TYPE_CHECKING:
    from winnode.testing.hostmodel.model import HostModel


@dataclass
class HnsNetwork:
    id: str
    name: str
    type: A.HnsNetworkType
    address_prefix: str
    gateway: str
    adapter_name: str | None = None
    vsid: int | None = None
    vxlan_port: int | None = None
    # hcn network policies as HNS reports them ({"Type": ..., "Settings": {...}}): RemoteSubnetRoute,
    # HostRoute, and the DrMacAddress / ProviderAddress the host assigns to an Overlay network.
    policies: list[dict[str, Any]] = field(default_factory=list)
    # Endpoints by IP address: {"name", "host_attached": bool}; pods' sandboxes and the l2bridge gateway.
    endpoints: dict[str, dict[str, Any]] = field(default_factory=dict)

    def policies_of(self, type_: str) -> list[dict[str, Any]]:
        return [dict(p["Settings"]) for p in self.policies if p.get("Type") == type_]

    def info(self) -> A.HnsNetworkInfo:
        return A.HnsNetworkInfo(
            exists=True,
            id=self.id,
            type=self.type,
            address_prefix=self.address_prefix,
            gateway=self.gateway,
            adapter_name=self.adapter_name,
            vsid=self.vsid,
        )


class HnsRequestChecker(Protocol):
    """Would HNS decode this request (a testing.upstreamtypes.Kind value such as "hns-v2-network", JSON
    text) at this version? None: yes; else why not."""

    def __call__(self, kind: str, request: str, version: tuple[int, int]) -> str | None: ...


def _default_hns_checker() -> HnsRequestChecker:
    from winnode.testing.upstreamtypes import Case, Kind, check

    def verdict(kind: str, request: str, version: tuple[int, int]) -> str | None:
        found = check(Case(Kind(kind), request, version))
        return None if found.ok else found.error

    return verdict


# The HNS version of a fully updated host of each build (GET /globals/version), as hcsshim's feature
# ranges place them (hcn/hcnglobals.go at v0.12.9): Server 2019 speaks hcn (V2ApiSupport 9.2+) but has
# no VxlanPort (10.3+); 2022 and 2025 have both.
HNS_VERSION_BY_BUILD: dict[int, tuple[int, int]] = {17763: (9, 5), 20348: (13, 2), 26100: (15, 4)}


# --- the HNS actions -------------------------------------------------------------------------


def _require_hns(host: HostModel) -> None:
    if not host.features.get("Containers"):
        raise ActionFailed(
            "The Host Network Service (hns) is not available: the Containers feature is not installed "
            "(Install-WindowsFeature -Name Containers, then reboot)."
        )


def api_version(host: HostModel) -> tuple[int, int]:
    return host.hns_version or HNS_VERSION_BY_BUILD.get(host.os_build, (13, 2))


def adapter_description(host: HostModel, adapter: str) -> str:
    if adapter in host.adapter_descriptions:
        return host.adapter_descriptions[adapter]
    index = host.adapters.index(adapter) if adapter in host.adapters else 0
    return "Microsoft Hyper-V Network Adapter" + (f" #{index + 1}" if index else "")


def _refuse(host: HostModel, p: A.HnsNetworkEnsureParams, why: str) -> ActionFailed:
    if p.api is A.HnsApi.V2:
        return ActionFailed(f"HcnCreateNetwork({p.name}) failed with HRESULT 0x80070057: {why}")
    return ActionFailed(
        f"HNS POST /networks/ failed: HNS failed with error : The parameter is incorrect. ({why})"
    )


def _decode_request(host: HostModel, p: A.HnsNetworkEnsureParams) -> HnsNetwork:
    """The network HNS would create from the request itself (never from the action's other fields):
    refused as the real HNS would when hcsshim's types at this host's version do not decode it."""
    version = api_version(host)
    if host.hns_checker is None:
        raise ActionFailed("the emulated HNS has no request checker: it cannot tell what HNS would do")
    kind = "hns-v2-network" if p.api is A.HnsApi.V2 else "hns-v1-network"
    refusal = host.hns_checker(kind, p.request, version)
    if refusal is not None:
        raise _refuse(host, p, refusal)
    body = json.loads(p.request)
    adapter: str | None = None
    vsid: int | None = None
    port: int | None = None
    if p.api is A.HnsApi.V2:
        subnets = [sub for ipam in body.get("Ipams") or [] for sub in ipam.get("Subnets") or []]
        if len(subnets) != 1:
            raise _refuse(host, p, f"winnode's networks have one subnet, this request has {len(subnets)}")
        prefix = str(subnets[0]["IpAddressPrefix"])
        gateways = [
            r["NextHop"] for r in subnets[0].get("Routes") or [] if r.get("DestinationPrefix") == "0.0.0.0/0"
        ]
        gateway = str(gateways[0]) if gateways else ""
        for policy in subnets[0].get("Policies") or []:
            if policy["Type"] == "VSID":
                vsid = int(policy["Settings"]["IsolationId"])
        for policy in body.get("Policies") or []:
            if policy["Type"] == "NetAdapterName":
                adapter = str(policy["Settings"]["NetworkAdapterName"])
            elif policy["Type"] == "VxlanPort":
                port = int(policy["Settings"]["Port"])
    else:
        subnets = body.get("Subnets") or []
        if len(subnets) != 1:
            raise _refuse(host, p, f"winnode's networks have one subnet, this request has {len(subnets)}")
        prefix = str(subnets[0].get("AddressPrefix", ""))
        gateway = str(subnets[0].get("GatewayAddress", ""))
        for policy in subnets[0].get("Policies") or []:
            if policy["Type"] == "VSID":
                vsid = int(policy["VSID"])
        adapter = body.get("NetworkAdapterName")
    try:
        subnet = ipaddress.ip_network(prefix, strict=True)
        gateway_ip = ipaddress.ip_address(gateway)
    except ValueError as exc:
        raise _refuse(host, p, str(exc)) from None
    if gateway_ip not in subnet:
        raise _refuse(host, p, f"gateway {gateway} is outside {prefix}")
    type_ = A.HnsNetworkType(str(body["Type"]))
    if type_ is A.HnsNetworkType.OVERLAY and vsid is None:
        raise _refuse(host, p, "an Overlay network needs a VSID")
    reported: str | None = None
    if adapter is not None:
        match = [
            a
            for a in host.adapters
            if adapter.casefold() in (a.casefold(), adapter_description(host, a).casefold())
        ]
        if not match:
            raise _refuse(host, p, f"no network adapter {adapter!r} on this host")
        # HNS reports the adapter a network is bound to by its InterfaceDescription.
        reported = adapter_description(host, match[0])
    return HnsNetwork(
        id="",
        name=str(body["Name"]),
        type=type_,
        address_prefix=str(subnet),
        gateway=str(gateway_ip),
        adapter_name=reported,
        vsid=vsid,
        vxlan_port=port,
    )


async def network_ensure(host: HostModel, p: A.HnsNetworkEnsureParams) -> A.HnsNetworkEnsureResult:
    _require_hns(host)
    if p.adapter_name is not None and p.adapter_name.casefold() not in (a.casefold() for a in host.adapters):
        # hns_network_ensure.ps1 looks the adapter up by name before sending anything.
        raise ActionFailed(
            f"HNS network {p.name}: no network adapter is named '{p.adapter_name}' (Get-NetAdapter); set "
            f"spec.adapterName of the WindowsNetwork to one of: {', '.join(host.adapters)}."
        )
    if p.type == A.HnsNetworkType.OVERLAY and p.vsid is None:
        raise ActionFailed(f"HNS network {p.name}: an Overlay network needs a VSID (VXLAN network id).")
    existing = host.hns_networks.get(p.name)
    if existing is not None:
        # The script's own comparison: the reported adapter matches by name or InterfaceDescription.
        same = p.keep_existing or (
            existing.type == p.type
            and existing.address_prefix == p.address_prefix
            and existing.gateway == p.gateway
            and (p.type != A.HnsNetworkType.OVERLAY or existing.vsid == p.vsid)
            and (
                p.adapter_name is None
                or (existing.adapter_name or "").casefold()
                in (p.adapter_name.casefold(), adapter_description(host, p.adapter_name).casefold())
            )
            and (p.vxlan_port is None or existing.vxlan_port == p.vxlan_port)
        )
        if same:
            return A.HnsNetworkEnsureResult(id=existing.id, created=False, changed=False)
        # HNS networks cannot be modified in place: the script removes and re-creates it, and
        # with it go its policies (routes to peers) and endpoints (every pod's, the gateway's).
        del host.hns_networks[p.name]
    desired = _decode_request(host, p)
    desired.id = str(uuid.uuid4()).upper()
    host.hns_networks[desired.name] = desired
    return A.HnsNetworkEnsureResult(id=desired.id, created=existing is None, changed=True)


async def network_remove(host: HostModel, p: A.HnsNetworkRemoveParams) -> A.RemovedResult:
    _require_hns(host)
    return A.RemovedResult(removed=host.hns_networks.pop(p.name, None) is not None)


async def network_query(host: HostModel, p: A.HnsNetworkQueryParams) -> A.HnsNetworkQueryResult:
    _require_hns(host)
    found = {
        name: host.hns_networks[name].info() if name in host.hns_networks else A.HnsNetworkInfo(exists=False)
        for name in p.names
    }
    return A.HnsNetworkQueryResult(networks=found)


def _overlay_identity(host: HostModel, network: HnsNetwork) -> None:
    """The DR MAC and provider address HNS gives an Overlay network (emulated: from the host's
    first address, as 0E-2A-<address bytes>); the operator reads them, it never derives them."""
    if network.type != A.HnsNetworkType.OVERLAY or network.policies_of("DrMacAddress"):
        return
    provider = host.addresses[0] if host.addresses else "0.0.0.0"
    octets = ipaddress.IPv4Address(provider).packed
    mac = "0E-2A-" + "-".join(f"{b:02X}" for b in octets)
    network.policies.append({"Type": "DrMacAddress", "Settings": {"Address": mac}})
    network.policies.append({"Type": "ProviderAddress", "Settings": {"ProviderAddress": provider}})


def _check_call(host: HostModel, kind: str, request: dict[str, Any], call: str) -> None:
    """Refuse, as HNS would, a request hcsshim's types at this host's version do not decode. The
    requests are the ones hns_routes_sync.ps1 builds from the same parameters."""
    if host.hns_checker is None:
        raise ActionFailed("the emulated HNS has no request checker: it cannot tell what HNS would do")
    refusal = host.hns_checker(kind, json.dumps(request), api_version(host))
    if refusal is not None:
        raise ActionFailed(f"{call} failed with HRESULT 0x80070057: {refusal}")


async def routes_sync(host: HostModel, p: A.HnsRoutesSyncParams) -> A.HnsRoutesSyncResult:
    _require_hns(host)
    network = host.hns_networks.get(p.network)
    if network is None:
        raise ActionFailed(
            f"HNS network {p.network} does not exist on this host (found 0); winnode creates it when "
            "it configures the node."
        )
    scopes = [ipaddress.IPv4Network(c) for c in p.managed_prefixes]

    def managed(prefix: str) -> bool:
        net = ipaddress.IPv4Network(prefix)
        return any(net.subnet_of(scope) for scope in scopes)

    added: list[str] = []
    removed: list[str] = []
    if network.type == A.HnsNetworkType.OVERLAY:
        _overlay_identity(host, network)
        want = {
            r.destination_prefix: {
                "DestinationPrefix": r.destination_prefix,
                "IsolationId": r.isolation_id,
                "ProviderAddress": r.provider_address,
                "DistributedRouterMacAddress": r.distributed_router_mac,
            }
            for r in p.remote_subnet_routes
        }
        kept: list[dict[str, Any]] = []
        dropped: list[dict[str, Any]] = []
        for policy in network.policies:
            if policy.get("Type") != "RemoteSubnetRoute":
                kept.append(policy)
                continue
            prefix = policy["Settings"]["DestinationPrefix"]
            if want.get(prefix) == policy["Settings"]:
                kept.append(policy)
                del want[prefix]
            elif managed(prefix):
                dropped.append(policy)
                removed.append(f"RemoteSubnetRoute {prefix}")
            else:
                kept.append(policy)
        fresh: list[dict[str, Any]] = []
        for prefix in sorted(want):
            fresh.append({"Type": "RemoteSubnetRoute", "Settings": want[prefix]})
            added.append(f"RemoteSubnetRoute {prefix} via {want[prefix]['ProviderAddress']}")
        if p.host_route and not network.policies_of("HostRoute"):
            fresh.append({"Type": "HostRoute", "Settings": {}})
            added.append("HostRoute")
        # HcnModifyNetwork, Remove then Add: hcn ModifyNetworkSettingRequest over a PolicyNetworkRequest.
        for request_type, policies in (("Remove", dropped), ("Add", fresh)):
            if policies:
                request = {
                    "ResourceType": "Policy",
                    "RequestType": request_type,
                    "Settings": {"Policies": policies},
                }
                _check_call(
                    host, "hns-v2-modify", request, f"HcnModifyNetwork({p.network}, {request_type} policies)"
                )
        network.policies = kept + fresh
        mac = network.policies_of("DrMacAddress")[0]["Address"]
        provider = network.policies_of("ProviderAddress")[0]["ProviderAddress"]
        return A.HnsRoutesSyncResult(
            added=added, removed=removed, distributed_router_mac=mac, provider_address=provider
        )
    if p.bridge_endpoint_ip is None:
        raise ActionFailed(f"HNS network {p.network} is an L2Bridge network: the host endpoint IP is missing")
    ip = ipaddress.IPv4Address(p.bridge_endpoint_ip)
    if ip not in ipaddress.IPv4Network(network.address_prefix) or str(ip) == network.gateway:
        raise ActionFailed(
            f"HNS failed with error : The parameter is incorrect. (endpoint {ip} on network "
            f"{network.address_prefix} with gateway {network.gateway})"
        )
    if str(ip) not in network.endpoints:
        endpoint = {"Name": f"{p.network}_host", "VirtualNetwork": network.id, "IPAddress": str(ip)}
        _check_call(host, "hns-v1-endpoint", endpoint, "HNS POST /endpoints/")
        attach = {"SystemType": "Host", "CompartmentId": 1}
        _check_call(host, "hns-v1-attach", attach, "HNS POST /endpoints/<id>/attach")
        network.endpoints[str(ip)] = {"name": f"{p.network}_host", "host_attached": True}
        added.append(f"host endpoint {ip}")
    for alias in (f"vEthernet ({p.network}_host)", "external"):
        if alias not in host.forwarding:
            host.forwarding.add(alias)
            added.append(f"forwarding on {alias}")
    want_routes = {r.destination_prefix: r.next_hop for r in p.net_routes}
    for prefix, hop in list(host.net_routes.items()):
        if want_routes.get(prefix) == hop:
            del want_routes[prefix]
        elif managed(prefix):
            del host.net_routes[prefix]
            removed.append(f"route {prefix}")
    for prefix in sorted(want_routes):
        host.net_routes[prefix] = want_routes[prefix]
        added.append(f"route {prefix} via {want_routes[prefix]}")
    return A.HnsRoutesSyncResult(added=added, removed=removed)
