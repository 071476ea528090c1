"""The catalogue of host actions: for each, its parameters and its result, as typed models.

This is the one description of what a script may do on a host. Templates in host/templates/
(one `<action>.ps1` each) implement it on Windows; the emulator implements it on its host
model; the lifecycle code calls it through the transport. A field marked secret is redacted in
dry-runs and never logged.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Params(_Model):
    action: ClassVar[str]
    mutating: ClassVar[bool] = True
    # Names of fields whose values are secrets (redacted in dry-runs).
    secret_fields: ClassVar[frozenset[str]] = frozenset()


class Result(BaseModel):
    # Hosts may add fields over time; we keep what we know and ignore the rest.
    model_config = ConfigDict(extra="ignore", frozen=True)


class ServiceState(StrEnum):
    RUNNING = "Running"
    STOPPED = "Stopped"
    START_PENDING = "StartPending"
    STOP_PENDING = "StopPending"


class StartType(StrEnum):
    AUTOMATIC = "Automatic"
    MANUAL = "Manual"
    DISABLED = "Disabled"


class HnsNetworkType(StrEnum):
    L2BRIDGE = "L2Bridge"
    OVERLAY = "Overlay"


class HnsApi(StrEnum):
    """How a network is created: HNSCall's JSON API (v1, vmcompute.dll) or hcn (v2, computenetwork.dll)."""

    V1 = "v1"
    V2 = "v2"


# --- facts -------------------------------------------------------------------------------------


class FactsParams(Params):
    action = "facts"
    mutating = False


class ContainerdFacts(Result):
    installed: bool
    running: bool
    version: str | None = None
    # `containerd config dump` (its effective configuration, TOML); None when it could not run.
    config_dump: str | None = None


class HnsVersion(Result):
    """The Host Network Service's version (HNSCall GET /globals/version), e.g. 9.5 on Server 2019."""

    major: int
    minor: int


class NetAdapterFacts(Result):
    name: str
    description: str = Field("", description="InterfaceDescription (HNS may report an adapter by it)")


class FactsResult(Result):
    hostname: str
    os_build: int = Field(description="CurrentBuildNumber, e.g. 17763, 20348, 26100")
    os_ubr: int = Field(0, description="update build revision")
    os_caption: str
    edition: str
    features: dict[str, bool] = Field(default_factory=dict, description="Windows feature name -> installed")
    containerd: ContainerdFacts
    system_drive_free_bytes: int
    addresses: list[str] = Field(default_factory=list)
    default_route_ipv4: str | None = Field(
        None, description="IPv4 address of the interface holding the IPv4 default route (the node's IP)"
    )
    # The adapters Get-NetAdapter lists (physical and virtual), and the one holding the IPv4 default route
    # (the adapter an HNS network binds to unless the WindowsNetwork names one).
    net_adapters: list[NetAdapterFacts] = Field(default_factory=list)
    default_route_adapter: str | None = None
    hns_version: HnsVersion | None = Field(None, description="None when HNS is absent or did not answer")
    reboot_pending: bool
    boot_id: str = Field(description="changes on every boot (last boot time)")
    utc_now: str = Field(description="host clock, ISO 8601 UTC")
    powershell_version: str


# --- files -------------------------------------------------------------------------------------


class EnsureDirectoriesParams(Params):
    action = "ensure_directories"
    paths: list[str]


class EnsureDirectoriesResult(Result):
    created: list[str]


class FetchFileParams(Params):
    action = "fetch_file"
    url: str
    path: str
    sha256: str | None = Field(None, pattern=r"^[0-9a-f]{64}$")


class FileWriteResult(Result):
    changed: bool
    sha256: str
    size: int


class CopyFileParams(Params):
    """Copy a file already on the host (a staged download, a kept previous binary) to `path`."""

    action = "copy_file"
    source: str
    path: str
    sha256: str | None = Field(None, pattern=r"^[0-9a-f]{64}$", description="expected hash of `source`")


class WriteFileParams(Params):
    action = "write_file"
    secret_fields = frozenset({"content"})
    path: str
    content: str = Field(description="UTF-8 text, written without a byte-order mark")
    secret: bool = Field(False, description="restrict the file's ACL to SYSTEM and Administrators")


class StatFilesParams(Params):
    action = "stat_files"
    mutating = False
    paths: list[str]


class FileStat(Result):
    exists: bool
    sha256: str | None = None
    size: int | None = None


class StatFilesResult(Result):
    files: dict[str, FileStat]


class RemovePathParams(Params):
    action = "remove_path"
    path: str
    recurse: bool = False
    # A directory with anything in it stays (removed: false) instead of failing the action.
    if_empty: bool = False


class RemovedResult(Result):
    removed: bool


# --- services ----------------------------------------------------------------------------------


class ServiceEnsureParams(Params):
    action = "service_ensure"
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,80}$")
    binary_path: str = Field(description="the full command line the Service Control Manager runs")
    display_name: str
    description: str
    dependencies: list[str] = Field(default_factory=list)
    start_type: StartType = StartType.AUTOMATIC
    recovery_restart_delay_ms: int = Field(10_000, ge=0)
    recovery_reset_period_s: int = Field(86_400, ge=0)


class ServiceEnsureResult(Result):
    created: bool
    changed: bool


class ServiceControlParams(Params):
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,80}$")
    timeout_s: int = Field(60, ge=1, le=3600)


class ServiceStartParams(ServiceControlParams):
    action = "service_start"


class ServiceStopParams(ServiceControlParams):
    action = "service_stop"


class ServiceStateResult(Result):
    state: ServiceState | None
    changed: bool


class ServiceRemoveParams(Params):
    action = "service_remove"
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,80}$")


class ServiceQueryParams(Params):
    action = "service_query"
    mutating = False
    names: list[str]


class ServiceInfo(Result):
    exists: bool
    state: ServiceState | None = None
    start_type: StartType | None = None
    binary_path: str | None = None
    description: str | None = None
    dependencies: list[str] = Field(default_factory=list)


class ServiceQueryResult(Result):
    services: dict[str, ServiceInfo]


# --- networking --------------------------------------------------------------------------------


class HnsNetworkEnsureParams(Params):
    action = "hns_network_ensure"
    name: str
    type: HnsNetworkType
    address_prefix: str = Field(description="this node's pod subnet, CIDR")
    gateway: str
    adapter_name: str | None = None
    # External: VSID 9999 as microsoft/SDN's helper.v2.psm1 CreateExternalNetwork gives it (below 4096).
    vsid: int | None = Field(None, ge=1, le=16_777_215, description="VXLAN network id (Overlay)")
    vxlan_port: int | None = Field(None, ge=1, le=65_535)
    api: HnsApi = HnsApi.V1
    request: str = Field(description="the JSON HNS receives (HNSNetwork for v1, HostComputeNetwork for v2)")
    # Only create the network when it is missing; never replace it (the persistent External network).
    keep_existing: bool = False


class HnsNetworkEnsureResult(Result):
    id: str
    created: bool
    changed: bool


class HnsNetworkRemoveParams(Params):
    action = "hns_network_remove"
    name: str


class HnsNetworkQueryParams(Params):
    action = "hns_network_query"
    mutating = False
    names: list[str]


class HnsNetworkInfo(Result):
    exists: bool
    id: str | None = None
    type: HnsNetworkType | None = None
    address_prefix: str | None = None
    gateway: str | None = None
    adapter_name: str | None = None
    vsid: int | None = None


class HnsNetworkQueryResult(Result):
    networks: dict[str, HnsNetworkInfo]


class RemoteSubnetRoute(_Model):
    """hcn RemoteSubnetRoutePolicySetting (hcsshim hcn/hcnpolicy.go): a peer's pod subnet behind the
    VXLAN tunnel to its provider address, reached through its distributed router MAC."""

    destination_prefix: str
    provider_address: str
    distributed_router_mac: str = Field(description="HNS form, e.g. 0E-2A-0A-00-00-05")
    isolation_id: int = Field(ge=4096, le=16_777_215)


class NetRoute(_Model):
    """A host route (New-NetRoute) to a peer's pod subnet through the peer's address (l2bridge)."""

    destination_prefix: str
    next_hop: str


class HnsRoutesSyncParams(Params):
    """Make the routes of the pod network `network` to its peers exactly these (idempotent).

    overlay: the network's RemoteSubnetRoute policies inside `managed_prefixes` become
    `remote_subnet_routes`; `host_route` adds the HostRoute policy (the host reaches its own pods).
    l2bridge: a host-attached endpoint at `bridge_endpoint_ip` (the pods' gateway .2), forwarding
    on the pod network's host interface and the external one, and NetRoutes inside
    `managed_prefixes` become `net_routes`.
    """

    action = "hns_routes_sync"
    network: str
    managed_prefixes: list[str] = Field(description="routes to subnets inside these are ours to remove")
    remote_subnet_routes: list[RemoteSubnetRoute] = Field(default_factory=list)
    host_route: bool = False
    bridge_endpoint_ip: str | None = None
    net_routes: list[NetRoute] = Field(default_factory=list)


class HnsRoutesSyncResult(Result):
    added: list[str]
    removed: list[str]
    # The overlay network's distributed router MAC (what peers send this host's pods to) and the
    # address VXLAN leaves from; None for l2bridge.
    distributed_router_mac: str | None = None
    provider_address: str | None = None


class FirewallRuleEnsureParams(Params):
    action = "firewall_rule_ensure"
    name: str
    display_name: str
    protocol: str = Field(pattern=r"^(TCP|UDP)$")
    local_port: int = Field(ge=1, le=65_535)
    direction: str = Field("Inbound", pattern=r"^(Inbound|Outbound)$")


class ChangedResult(Result):
    changed: bool


class DefenderExclusionsEnsureParams(Params):
    """Microsoft Defender process exclusions (Add-MpPreference / Remove-MpPreference -ExclusionProcess)."""

    action = "defender_exclusions_ensure"
    processes: list[str]
    present: bool = True


class DefenderExclusionsResult(Result):
    defender_running: bool
    changed: bool
    excluded: list[str] = Field(default_factory=list)


class FirewallRuleRemoveParams(Params):
    action = "firewall_rule_remove"
    name: str


# --- power -------------------------------------------------------------------------------------


class RebootParams(Params):
    action = "reboot"
    reason: str
    delay_s: int = Field(5, ge=0, le=600)


class RebootResult(Result):
    boot_id: str = Field(description="the boot id before the reboot; a new one proves it happened")


# --- ownership ---------------------------------------------------------------------------------
# One host, one WindowsNode: the owning WindowsNode's UID is kept in the host's registry (not under
# C:\k, which deconfigure removes), and the host's identity is its MachineGuid, which survives
# renames and address changes.


class HostOwnerQueryParams(Params):
    action = "host_owner_query"
    mutating = False


class HostOwnerResult(Result):
    machine_guid: str = Field(description="HKLM\\SOFTWARE\\Microsoft\\Cryptography MachineGuid")
    owner_uid: str | None = Field(None, description="UID of the owning WindowsNode, absent when unowned")
    owner_name: str | None = Field(None, description="name of the owning WindowsNode, for messages")
    changed: bool = False


class HostOwnerSetParams(Params):
    """Set (or, with owner_uid null, clear) the owner, only while the current owner is `expected_uid`.

    The compare-and-set runs on the host, so two operators racing for one host cannot both win."""

    action = "host_owner_set"
    owner_uid: str | None = Field(None, pattern=r"^[0-9a-fA-F-]{1,64}$")
    owner_name: str | None = Field(None, max_length=253)
    expected_uid: str | None = Field(None, pattern=r"^[0-9a-fA-F-]{1,64}$")


# --- probe -------------------------------------------------------------------------------------


class ProbeParams(Params):
    """What the host itself can reach, and which paths exist on it: `winnode check-host`'s view from
    the host (the apiserver and the mirror must be reachable from there, not only from the admin)."""

    action = "probe"
    mutating = False
    paths: list[str] = Field(default_factory=list, description="files or directories that should exist")
    tcp: list[str] = Field(default_factory=list, description="TCP endpoints to connect to, host:port")
    http: list[str] = Field(default_factory=list, description="http(s) URLs to GET")
    timeout_s: int = Field(5, ge=1, le=60)


class TcpProbe(Result):
    ok: bool
    error: str | None = None


class HttpProbe(Result):
    status: int | None = None
    error: str | None = None


class ProbeResult(Result):
    paths: dict[str, bool]
    tcp: dict[str, TcpProbe] = Field(description="keyed as asked")
    http: dict[str, HttpProbe]


# --- observe -----------------------------------------------------------------------------------
# One read of everything a drift check compares with the desired state (lifecycle/observe.py), so a
# healthy node costs one command per check. Each part is read by the same template helpers as the
# single-purpose read above it; an empty list skips its part.


class ObserveParams(Params):
    action = "observe"
    mutating = False
    files: list[str] = Field(default_factory=list, description="paths to stat (existence, SHA-256)")
    services: list[str] = Field(default_factory=list)
    hns_networks: list[str] = Field(default_factory=list)
    firewall_rules: list[str] = Field(default_factory=list, description="firewall rule names (-Name)")
    defender_processes: list[str] = Field(default_factory=list, description="processes to find excluded")
    owner: bool = Field(True, description="read the owner marker (host_owner_query)")


class FirewallRuleInfo(Result):
    exists: bool
    display_name: str | None = None
    direction: str | None = None
    action: str | None = None
    enabled: bool | None = None
    protocol: str | None = None
    local_port: str | None = Field(None, description="LocalPort as the port filter lists it, comma-joined")


class DefenderState(Result):
    running: bool
    excluded: list[str] = Field(default_factory=list, description="those asked for that are excluded")


class ObserveResult(Result):
    facts: FactsResult = Field(description="as the facts action returns them, boot_id included")
    owner: HostOwnerResult | None = None
    files: dict[str, FileStat] = Field(default_factory=dict)
    services: dict[str, ServiceInfo] = Field(default_factory=dict)
    hns_networks: dict[str, HnsNetworkInfo] | None = Field(
        None, description="None when not asked or HNS failed"
    )
    hns_error: str | None = Field(None, description="why HNS could not be read")
    firewall_rules: dict[str, FirewallRuleInfo] = Field(default_factory=dict)
    defender: DefenderState | None = None

    @property
    def boot_id(self) -> str:
        return self.facts.boot_id


# --- registry ----------------------------------------------------------------------------------

ACTIONS: dict[str, tuple[type[Params], type[Result]]] = {
    p.action: (p, r)
    for p, r in (
        (FactsParams, FactsResult),
        (EnsureDirectoriesParams, EnsureDirectoriesResult),
        (FetchFileParams, FileWriteResult),
        (WriteFileParams, FileWriteResult),
        (CopyFileParams, FileWriteResult),
        (StatFilesParams, StatFilesResult),
        (RemovePathParams, RemovedResult),
        (ServiceEnsureParams, ServiceEnsureResult),
        (ServiceStartParams, ServiceStateResult),
        (ServiceStopParams, ServiceStateResult),
        (ServiceRemoveParams, RemovedResult),
        (ServiceQueryParams, ServiceQueryResult),
        (HnsNetworkEnsureParams, HnsNetworkEnsureResult),
        (HnsNetworkRemoveParams, RemovedResult),
        (HnsNetworkQueryParams, HnsNetworkQueryResult),
        (HnsRoutesSyncParams, HnsRoutesSyncResult),
        (FirewallRuleEnsureParams, ChangedResult),
        (FirewallRuleRemoveParams, RemovedResult),
        (DefenderExclusionsEnsureParams, DefenderExclusionsResult),
        (RebootParams, RebootResult),
        (HostOwnerQueryParams, HostOwnerResult),
        (HostOwnerSetParams, HostOwnerResult),
        (ProbeParams, ProbeResult),
        (ObserveParams, ObserveResult),
    )
}


def params_for(action: str, raw: dict[str, Any]) -> Params:
    """Validate raw (decoded) parameters against the action's model."""
    try:
        model, _ = ACTIONS[action]
    except KeyError:
        raise KeyError(f"unknown action {action!r}; known: {', '.join(sorted(ACTIONS))}") from None
    return model.model_validate(raw)
