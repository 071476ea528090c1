"""The host side of a node: its desired state, and idempotent steps that make a host match it.

`desired_host(...)` is a pure function from the WindowsNode (and its network, subnet, version,
checksums, cluster address) to everything that should be on the host: directories, files with
their SHA-256, the HNS network, services, firewall rules. `planned_actions(desired)` lists the
mutating actions configure runs for it, in order; `winnode render` prints the same list.

Each `ensure_*` step reads the host first and changes only what differs, returning a line per
change. Configure runs them all; the drift check runs them again on a Ready node and reports what
it had to put back. Interrupting any of them at any point is harmless: the next run reads again.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass

from winnode import timeouts
from winnode.api import WindowsNode
from winnode.api.windowsnetwork import NetworkMode, WindowsNetworkSpec
from winnode.host.actions import (
    ChangedResult,
    DefenderExclusionsEnsureParams,
    DefenderExclusionsResult,
    EnsureDirectoriesParams,
    EnsureDirectoriesResult,
    FetchFileParams,
    FileStat,
    FileWriteResult,
    FirewallRuleEnsureParams,
    HnsNetworkEnsureParams,
    HnsNetworkEnsureResult,
    HnsNetworkInfo,
    HnsNetworkQueryParams,
    HnsNetworkQueryResult,
    Params,
    RemovedResult,
    RemovePathParams,
    ServiceEnsureParams,
    ServiceEnsureResult,
    ServiceInfo,
    ServiceQueryParams,
    ServiceQueryResult,
    ServiceStartParams,
    ServiceState,
    ServiceStateResult,
    ServiceStopParams,
    StartType,
    StatFilesParams,
    StatFilesResult,
    WriteFileParams,
)
from winnode.host.errors import HostError, HostProtocolError, HostUnreachableError
from winnode.lifecycle import kubelet_config as kc
from winnode.lifecycle.context import ClusterInfo, HostApi, call, run_action
from winnode.lifecycle.status import C, StepFailure, host_failure
from winnode.network.cni import render_cni_config
from winnode.network.cni_plugins import CNI_PLUGINS, CNI_PLUGINS_VERSION, cni_plugin_url
from winnode.network.containerd import DEFAULT_LAYOUT, CniLayout
from winnode.network.hns import HnsHost, HnsRequestError, external_network_params, hns_network_params


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class DesiredFile:
    """One file on the host: downloaded from `url` or written from `content`, identified by its hash."""

    label: str
    path: str
    sha256: str
    content: str | None = None
    url: str | None = None
    secret: bool = False
    # The service that uses the file: stopped while the file is replaced, started again afterwards.
    service: str | None = None

    @property
    def is_binary(self) -> bool:
        return self.url is not None

    def params(self) -> Params:
        if self.url is not None:
            return FetchFileParams(url=self.url, path=self.path, sha256=self.sha256)
        return WriteFileParams(path=self.path, content=self.content or "", secret=self.secret)

    def __repr__(self) -> str:  # content may be a secret (the bootstrap kubeconfig)
        return f"DesiredFile({self.label!r}, {self.path!r}, sha256={self.sha256[:12]}...)"


@dataclass(frozen=True)
class DesiredHost:
    windows_node: str
    node_name: str
    version: str
    directories: tuple[str, ...]
    files: tuple[DesiredFile, ...]
    hns: HnsNetworkEnsureParams
    services: tuple[ServiceEnsureParams, ...]
    firewall: tuple[FirewallRuleEnsureParams, ...]
    defender: DefenderExclusionsEnsureParams | None = None
    # The persistent External network, created once before the pod network (network/hns.py).
    external: HnsNetworkEnsureParams | None = None
    # The forms in which HNS may report the pod network's adapter: its name and InterfaceDescription.
    adapter_aliases: frozenset[str] = frozenset()

    @property
    def binaries(self) -> tuple[DesiredFile, ...]:
        return tuple(f for f in self.files if f.is_binary)

    def without_bootstrap(self) -> DesiredHost:
        """The state to keep once the node has joined (the bootstrap kubeconfig is no longer checked)."""
        files = tuple(f for f in self.files if f.path != kc.BOOTSTRAP_KUBECONFIG)
        return DesiredHost(
            self.windows_node,
            self.node_name,
            self.version,
            self.directories,
            files,
            self.hns,
            self.services,
            self.firewall,
            self.defender,
            self.external,
            self.adapter_aliases,
        )


def desired_host(
    node: WindowsNode,
    network: WindowsNetworkSpec,
    subnet: str,
    version: str,
    checksums: Mapping[str, str],
    cluster: ClusterInfo,
    *,
    bootstrap_token: str | None,
    host_address: str | None,
    kube_proxy_token: str | None = None,
    cluster_dns: Sequence[str] | None = None,
    cni_layout: CniLayout = DEFAULT_LAYOUT,
    hns_host: HnsHost | None = None,
) -> DesiredHost:
    """Everything that should be on the host of `node`. `checksums` maps binary file names
    (kubelet.exe, kube-proxy.exe and the CNI plugins) to their SHA-256; `bootstrap_token` is None
    once the node joined; `cni_layout` is where the host's containerd looks for CNI files."""
    spec = node.spec
    name = node.metadata.name
    node_name = node.node_name
    base_url = spec.artifacts.base_url if spec.artifacts else kc.DEFAULT_ARTIFACTS_URL
    files: list[DesiredFile] = []
    for binary in kc.BINARIES:
        files.append(
            DesiredFile(
                label=binary,
                path=kc.BINARY_PATHS[binary],
                sha256=checksums[binary],
                url=kc.artifact_url(base_url, version, binary),
                service=kc.BINARY_SERVICE[binary],
            )
        )
    for plugin in CNI_PLUGINS:
        # containerd runs a plugin per sandbox operation: replacing one needs no service stop.
        files.append(
            DesiredFile(
                label=f"CNI plugin {plugin} {CNI_PLUGINS_VERSION}",
                path=cni_layout.plugin_path(plugin),
                sha256=checksums[plugin],
                url=cni_plugin_url(base_url, CNI_PLUGINS_VERSION, plugin),
            )
        )

    def text(label: str, path: str, content: str, *, service: str | None, secret: bool = False) -> None:
        files.append(
            DesiredFile(
                label=label,
                path=path,
                sha256=sha256_text(content),
                content=content,
                secret=secret,
                service=service,
            )
        )

    text("cluster CA certificate", kc.CA_CERT, cluster.ca_pem, service=kc.KUBELET_SERVICE)
    if bootstrap_token is not None:
        text(
            "bootstrap kubeconfig",
            kc.BOOTSTRAP_KUBECONFIG,
            kc.bootstrap_kubeconfig(cluster.server, cluster.ca_pem, bootstrap_token),
            service=None,
            secret=True,
        )
    text(
        "kubelet configuration",
        kc.KUBELET_CONFIG,
        kc.kubelet_configuration(spec.kubelet, spec.taints, network, cluster_dns),
        service=kc.KUBELET_SERVICE,
    )
    text(
        "kube-proxy kubeconfig",
        kc.KUBE_PROXY_KUBECONFIG,
        kc.kube_proxy_kubeconfig(cluster.server, cluster.ca_pem),
        service=kc.KUBE_PROXY_SERVICE,
    )
    if kube_proxy_token is not None:
        # Rewritten in place on renewal; kube-proxy re-reads it (no restart).
        text("kube-proxy token", kc.KUBE_PROXY_TOKEN, kube_proxy_token, service=None, secret=True)
    text(
        "kube-proxy configuration",
        kc.KUBE_PROXY_CONFIG,
        kc.kube_proxy_configuration(node_name, network, subnet),
        service=kc.KUBE_PROXY_SERVICE,
    )
    text(
        "CNI configuration",
        cni_layout.conf_file,
        render_cni_config(network, subnet, host_address),
        service=None,
    )
    services = (
        ServiceEnsureParams(
            name=kc.KUBELET_SERVICE,
            binary_path=kc.kubelet_command_line(node_name, spec.kubelet, host_address),
            display_name="Kubernetes kubelet",
            description=kc.service_description(name, "Kubernetes node agent"),
            dependencies=[kc.CONTAINERD_SERVICE],
            start_type=StartType.AUTOMATIC,
        ),
        ServiceEnsureParams(
            name=kc.KUBE_PROXY_SERVICE,
            binary_path=kc.kube_proxy_command_line(),
            display_name="Kubernetes kube-proxy",
            description=kc.service_description(name, "Kubernetes network proxy"),
            dependencies=[kc.KUBELET_SERVICE],
            start_type=StartType.AUTOMATIC,
        ),
    )
    firewall = [
        FirewallRuleEnsureParams(
            name=kc.FIREWALL_KUBELET,
            display_name="Kubernetes kubelet API (winnode)",
            protocol="TCP",
            local_port=kc.KUBELET_PORT,
        )
    ]
    vxlan = network.effective_vxlan
    if network.mode is NetworkMode.OVERLAY and vxlan is not None:
        firewall.append(
            FirewallRuleEnsureParams(
                name=kc.FIREWALL_VXLAN,
                display_name="Kubernetes pod overlay, VXLAN (winnode)",
                protocol="UDP",
                local_port=vxlan.port,
            )
        )
    hns_host = hns_host or HnsHost()
    try:
        hns = hns_network_params(network, subnet, hns_host)
        external = external_network_params(network, hns_host)
    except HnsRequestError as exc:
        raise StepFailure(exc.reason, str(exc), condition=C.NETWORK_CONFIGURED, admin=True) from exc
    return DesiredHost(
        windows_node=name,
        node_name=node_name,
        version=version,
        directories=(*kc.BASE_DIRECTORIES, cni_layout.conf_dir, cni_layout.bin_dir),
        files=tuple(files),
        hns=hns,
        services=services,
        firewall=tuple(firewall),
        defender=DefenderExclusionsEnsureParams(processes=list(kc.DEFENDER_EXCLUDED_PROCESSES)),
        external=external,
        adapter_aliases=hns_host.adapter_aliases(hns.adapter_name),
    )


def planned_actions(desired: DesiredHost) -> list[Params]:
    """Every mutating action a first configure runs on an empty host, in order."""
    actions: list[Params] = [EnsureDirectoriesParams(paths=list(desired.directories))]
    actions.extend(f.params() for f in desired.files)
    if desired.external is not None:
        actions.append(desired.external)
    actions.append(desired.hns)
    actions.extend(desired.services)
    actions.extend(desired.firewall)
    if desired.defender is not None:
        actions.append(desired.defender)
    actions.extend(
        ServiceStartParams(name=s.name, timeout_s=timeouts.SERVICE_CONTROL) for s in desired.services
    )
    return actions


# --- steps ---------------------------------------------------------------------------------------


async def remove_bootstrap_kubeconfig(host: HostApi) -> list[str]:
    """Remove the bootstrap kubeconfig (a secret file) once the kubelet holds its own certificate."""
    removed = await call(
        host,
        RemovePathParams(path=kc.BOOTSTRAP_KUBECONFIG),
        RemovedResult,
        "remove the bootstrap kubeconfig",
        C.NODE_REGISTERED,
    )
    return [f"removed {kc.BOOTSTRAP_KUBECONFIG}"] if removed.removed else []


async def ensure_directories(host: HostApi, desired: DesiredHost) -> list[str]:
    result = await call(
        host,
        EnsureDirectoriesParams(paths=list(desired.directories)),
        EnsureDirectoriesResult,
        "create winnode's directories",
        C.BINARIES_INSTALLED,
    )
    return [f"created directory {d}" for d in result.created]


async def query_services(
    host: HostApi, names: Sequence[str], condition: str | None
) -> dict[str, ServiceInfo]:
    result = await call(
        host, ServiceQueryParams(names=list(names)), ServiceQueryResult, "query services", condition
    )
    lowered = {k.casefold(): v for k, v in result.services.items()}
    return {n: lowered.get(n.casefold(), ServiceInfo(exists=False)) for n in names}


async def stop_service(host: HostApi, name: str, condition: str | None = C.SERVICES_RUNNING) -> bool:
    result = await call(
        host,
        ServiceStopParams(name=name, timeout_s=timeouts.SERVICE_CONTROL),
        ServiceStateResult,
        f"stop service {name}",
        condition,
    )
    return result.changed


def lookup_stat(stats: Mapping[str, FileStat], path: str) -> FileStat | None:
    """The stat of `path` (NTFS paths compare without case); None when `stats` does not cover it."""
    if path in stats:
        return stats[path]
    folded = {k.casefold(): v for k, v in stats.items()}
    return folded.get(path.casefold())


async def ensure_files(
    host: HostApi,
    desired: DesiredHost,
    *,
    files: Sequence[DesiredFile] | None = None,
    stats: Mapping[str, FileStat] | None = None,
    services: Mapping[str, ServiceInfo] | None = None,
) -> list[str]:
    """Download or write every file whose hash differs; services using a file being replaced are
    stopped first (the start step brings them back). `stats` and `services`: what was read from the
    host already (the drift check's observation); what they do not cover is read here."""
    wanted = list(desired.files if files is None else files)
    if not wanted:
        return []
    known = dict(stats or {})
    unread = [f.path for f in wanted if lookup_stat(known, f.path) is None]
    if unread:
        read = await call(
            host,
            StatFilesParams(paths=unread),
            StatFilesResult,
            "read the state of winnode's files",
            C.BINARIES_INSTALLED,
        )
        known.update(read.files)
    stale = [(f, lookup_stat(known, f.path) or FileStat(exists=False)) for f in wanted]
    stale = [(f, st) for f, st in stale if not (st.exists and st.sha256 and st.sha256.lower() == f.sha256)]
    if not stale:
        return []
    users = sorted({f.service for f, st in stale if f.service and st.exists})
    running: dict[str, ServiceInfo] = {}
    if users:
        given = {n: services[n] for n in users if n in services} if services is not None else {}
        running = given if len(given) == len(users) else await query_services(host, users, C.SERVICES_RUNNING)
    changes: list[str] = []
    stopped: set[str] = set()
    for f, st in stale:
        if f.service and st.exists and f.service not in stopped:
            info = running.get(f.service)
            if info is not None and info.exists and info.state is not ServiceState.STOPPED:
                await stop_service(host, f.service)
                changes.append(f"stopped service {f.service} to replace {f.path}")
            stopped.add(f.service)
        condition = C.BINARIES_INSTALLED if f.is_binary else None
        doing = (
            f"download {f.label} from {f.url} to {f.path}"
            if f.is_binary
            else f"write the {f.label} to {f.path}"
        )
        result = await call(host, f.params(), FileWriteResult, doing, condition)
        if result.sha256.lower() != f.sha256:
            raise StepFailure(
                "ChecksumMismatch",
                f"{f.path} on the host has SHA-256 {result.sha256} after writing it, expected {f.sha256}",
                condition=condition,
                admin=True,
            )
        verb = "replaced" if st.exists else "created"
        changes.append(f"{verb} {f.label} ({f.path})")
    return changes


def hns_differs(
    info: HnsNetworkInfo, want: HnsNetworkEnsureParams, aliases: frozenset[str] = frozenset()
) -> bool:
    if not info.exists:
        return True
    if want.keep_existing:
        return False
    if (
        info.type is not want.type
        or info.address_prefix != want.address_prefix
        or info.gateway != want.gateway
    ):
        return True
    if want.vsid is not None and info.vsid != want.vsid:
        return True
    # HNS may report the adapter by its InterfaceDescription rather than the name it was given.
    known = aliases | {want.adapter_name.casefold()} if want.adapter_name is not None else aliases
    return want.adapter_name is not None and (info.adapter_name or "").casefold() not in known


async def ensure_network(
    host: HostApi,
    desired: DesiredHost,
    before_recreate: Callable[[str], Awaitable[None]] | None = None,
    *,
    known: Mapping[str, HnsNetworkInfo] | None = None,
) -> list[str]:
    """Create the External network when missing, then create or re-create the pod network;
    `before_recreate(name)` runs first when an existing pod network must be replaced
    (lifecycle.network_disruption drains a node with pods). `known`: the networks as already read
    (the drift check's observation); read here unless it covers every wanted network."""
    wanted = [n for n in (desired.external, desired.hns) if n is not None]
    if known is not None and all(n.name in known for n in wanted):
        networks: Mapping[str, HnsNetworkInfo] = known
    else:
        found = await call(
            host,
            HnsNetworkQueryParams(names=[n.name for n in wanted]),
            HnsNetworkQueryResult,
            f"read HNS networks {', '.join(n.name for n in wanted)}",
            C.NETWORK_CONFIGURED,
        )
        networks = found.networks
    changes: list[str] = []
    for want in wanted:
        info = networks.get(want.name, HnsNetworkInfo(exists=False))
        if not hns_differs(info, want, desired.adapter_aliases):
            continue
        verb = "created" if not info.exists else "re-created"
        if info.exists and before_recreate is not None:
            await before_recreate(want.name)
        try:
            await run_action(host, want, HnsNetworkEnsureResult)
        except (HostUnreachableError, HostProtocolError) as exc:
            # The first network on the adapter moves the host's address to a new vEthernet adapter:
            # the connection drops with the answer lost (and a connection-bound NTLM session with it,
            # so the client's resend is refused as garbage). Reconnect and judge by what HNS holds now.
            if not await hns_network_settled(host, want, desired.adapter_aliases):
                raise host_failure(exc, f"create HNS network {want.name}", C.NETWORK_CONFIGURED) from exc
            verb += " (the connection dropped while HNS moved the host's address; reconnected)"
        except HostError as exc:
            raise host_failure(exc, f"create HNS network {want.name}", C.NETWORK_CONFIGURED) from exc
        changes.append(f"{verb} HNS network {want.name} ({want.type}, {want.address_prefix}, HNS {want.api})")
    return changes


async def hns_network_settled(
    host: HostApi, want: HnsNetworkEnsureParams, aliases: frozenset[str] = frozenset()
) -> bool:
    """After a dropped connection: poll HNS until the network is as wanted; False if it never is."""
    poll = timeouts.HNS_NETWORK_BLIP
    deadline = time.monotonic() + poll.deadline
    while True:
        await asyncio.sleep(poll.interval)
        try:
            found = await run_action(host, HnsNetworkQueryParams(names=[want.name]), HnsNetworkQueryResult)
        except HostUnreachableError:
            found = None
        except HostError:
            # Anything else (a stalled host, a failing script) is not the blip: report the failure.
            return False
        if found is not None:
            info = found.networks.get(want.name, HnsNetworkInfo(exists=False))
            return not hns_differs(info, want, aliases)
        if time.monotonic() >= deadline:
            return False


def service_differs(info: ServiceInfo, want: ServiceEnsureParams) -> bool:
    return (
        not info.exists
        or info.binary_path != want.binary_path
        or info.description != want.description
        or [d.casefold() for d in info.dependencies] != [d.casefold() for d in want.dependencies]
        or info.start_type is not want.start_type
    )


async def ensure_services(
    host: HostApi, desired: DesiredHost, *, known: Mapping[str, ServiceInfo] | None = None
) -> list[str]:
    """Register or update the services; `known`: their state as already read (else read here)."""
    names = [s.name for s in desired.services]
    infos = _known_or(known, names) or await query_services(host, names, C.SERVICES_RUNNING)
    changes: list[str] = []
    for want in desired.services:
        info = infos[want.name]
        if info.exists and not kc.is_ours(info.description):
            raise StepFailure(
                "ForeignServiceExists",
                f"a service named {want.name} already exists on the host and was not installed by winnode "
                f"(its description does not say '{kc.SERVICE_MARKER}'); remove it "
                f"(`Stop-Service {want.name}; sc.exe delete {want.name}`) so winnode can install its own",
                condition=C.SERVICES_RUNNING,
                admin=True,
            )
        if not service_differs(info, want):
            continue
        if info.exists and info.binary_path != want.binary_path and info.state is not ServiceState.STOPPED:
            # The Service Control Manager applies a new command line at the next start.
            await stop_service(host, want.name)
        result = await call(
            host, want, ServiceEnsureResult, f"register service {want.name}", C.SERVICES_RUNNING
        )
        changes.append(f"{'registered' if result.created else 'updated'} service {want.name}")
    return changes


async def ensure_defender(host: HostApi, desired: DesiredHost) -> list[str]:
    """Defender process exclusions, added when Defender runs and repaired when removed."""
    if desired.defender is None:
        return []
    result = await call(
        host, desired.defender, DefenderExclusionsResult, "set Defender process exclusions", None
    )
    if result.changed:
        return ["Defender process exclusions for " + ", ".join(desired.defender.processes)]
    return []


async def ensure_firewall(
    host: HostApi, desired: DesiredHost, *, rules: Sequence[FirewallRuleEnsureParams] | None = None
) -> list[str]:
    """Each rule of `desired` (or only `rules` of it) created or brought to its settings."""
    changes: list[str] = []
    for rule in desired.firewall if rules is None else rules:
        result = await call(
            host,
            rule,
            ChangedResult,
            f"open firewall port {rule.protocol}/{rule.local_port}",
            C.NETWORK_CONFIGURED,
        )
        if result.changed:
            changes.append(f"opened firewall {rule.protocol}/{rule.local_port} ({rule.name})")
    return changes


def _known_or(known: Mapping[str, ServiceInfo] | None, names: Sequence[str]) -> dict[str, ServiceInfo] | None:
    if known is None or any(n not in known for n in names):
        return None
    return {n: known[n] for n in names}


async def start_services(
    host: HostApi, names: Sequence[str], *, known: Mapping[str, ServiceInfo] | None = None
) -> list[str]:
    """Start those of `names` that do not run; `known`: their state as already read (else read here)."""
    infos = _known_or(known, names) or await query_services(host, names, C.SERVICES_RUNNING)
    changes: list[str] = []
    for name in names:
        info = infos[name]
        if info.exists and info.state is ServiceState.RUNNING:
            continue
        result = await call(
            host,
            ServiceStartParams(name=name, timeout_s=timeouts.SERVICE_CONTROL),
            ServiceStateResult,
            f"start service {name}",
            C.SERVICES_RUNNING,
        )
        if result.changed:
            changes.append(f"started service {name}")
    return changes
