"""A typed model of one Windows host, and the executors of every action in `winnode.host.actions`.

The model is plain data plus the rules a real host enforces (NTFS paths are case-insensitive, a
running service's executable cannot be replaced, a service cannot start without its binary, a full
disk refuses writes...). It does no I/O of its own except downloading in `fetch_file`, through a
pluggable fetcher. `run_script` is the entry point the emulator uses: it reads the action named in a
script's header, checks the header against the script body, executes it and answers the same
`##RESULT##` line and exit code a real host would.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
import ntpath
import re
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import ValidationError

from winnode.host import actions as A
from winnode.host.protocol import ProtocolError, extract_params, fill_secrets, format_result, parse_header
from winnode.testing.containerd import (
    PRESETS,
    ContainerdConfig,
    HostFiles,
    SandboxError,
    SandboxNetwork,
    loaded_config,
    network_error,
    sandbox_network,
)
from winnode.testing.hostmodel import files, firewall, hns, scm
from winnode.testing.hostmodel.errors import CRLF, GIB, NOT_ENOUGH_SPACE, ActionFailed
from winnode.testing.hostmodel.faults import Faults
from winnode.testing.hostmodel.fetch import Fetcher, FetchError, urllib_fetch
from winnode.testing.hostmodel.files import FileEntry
from winnode.testing.hostmodel.firewall import FirewallRule
from winnode.testing.hostmodel.hns import (
    HnsNetwork,
    HnsRequestChecker,
    _default_hns_checker,
)
from winnode.testing.hostmodel.paths import normalize_path, parent_path, path_key, split_command_line
from winnode.testing.hostmodel.releases import release_for
from winnode.testing.hostmodel.scm import ServiceChecker, ServiceHook, ServiceRecord, _default_checker
from winnode.testing.hostmodel.scripts import (
    ScriptOutcome,
    _canonical_script,
    _first_difference,
    _load_renderer,
    _render_expected,
    redact,
)

if TYPE_CHECKING:
    from winnode.testing.kubeproxy import HnsLoadBalancer

# The package name, so log records keep the logger they had before the package was split.
log = logging.getLogger("winnode.testing.hostmodel")


SYSTEM_DIRECTORIES = (
    "C:\\Windows",
    "C:\\Windows\\System32",
    "C:\\Windows\\Temp",
    "C:\\Program Files",
    "C:\\ProgramData",
    "C:\\Users\\Administrator",
)
CONTAINERD_EXE = "C:\\Program Files\\containerd\\bin\\containerd.exe"


def _utc_now() -> datetime:
    return datetime.now(UTC)


def _iso(ts: datetime) -> str:
    return ts.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


@dataclass(eq=False)
class HostModel:
    """One Windows host: identity, OS, disk, files, services, networking, power state."""

    hostname: str
    os_build: int = 20348
    os_ubr: int = 0
    os_caption: str = ""
    edition: str = "ServerDatacenter"
    powershell_version: str = ""
    features: dict[str, bool] = field(default_factory=lambda: {"Containers": True})
    addresses: list[str] = field(default_factory=list)
    adapters: list[str] = field(default_factory=lambda: ["Ethernet"])
    # Per adapter, its addresses (vEthernet, NAT and IPv6 ones included); empty: all of `addresses`
    # belong to the first adapter. The IPv4 default route goes through `default_route_adapter`
    # (default: the first adapter).
    adapter_addresses: dict[str, list[str]] = field(default_factory=dict)
    default_route_adapter: str | None = None
    free_disk_bytes: int = 100 * GIB
    containerd_version: str | None = "2.1.4"
    # containerd's effective configuration (set by install_containerd; see testing.containerd).
    containerd_config: ContainerdConfig | None = None
    reboot_pending: bool = False
    clock_skew_s: float = 0.0
    strict: bool = True
    faults: Faults = field(default_factory=Faults)
    service_hooks: dict[str, ServiceHook] = field(default_factory=dict)  # keyed by casefolded service name
    # Would the service's process start? The real components' verdict (testing/conformance.py); a
    # refused service stays stopped, as when a Windows service process exits at once.
    service_checker: ServiceChecker | None = field(default_factory=_default_checker)
    fetcher: Fetcher = urllib_fetch
    fetch_timeout_s: float = 60.0
    clock: Callable[[], datetime] = _utc_now
    # Asked to reboot after a delay (the `reboot` action); the emulator drops connections and
    # restarts the model. Without one, reboot requests are only recorded in `pending_reboot_delay_s`.
    on_reboot_requested: Callable[[float], None] | None = None
    pending_reboot_delay_s: float | None = None
    booted_at: datetime = field(default_factory=_utc_now)
    boot_count: int = 1
    files: dict[str, FileEntry] = field(default_factory=dict)
    directories: dict[str, str] = field(default_factory=dict)
    services: dict[str, ServiceRecord] = field(default_factory=dict)
    hns_networks: dict[str, HnsNetwork] = field(default_factory=dict)
    # HNS's version; None: HNS_VERSION_BY_BUILD of os_build. Every network request is decoded by
    # `hns_checker` (hcsshim's own types at that version, testing/upstreamtypes.py) before it is applied.
    hns_version: tuple[int, int] | None = None
    hns_checker: HnsRequestChecker | None = field(default_factory=_default_hns_checker)
    # InterfaceDescription per adapter name; missing: "Microsoft Hyper-V Network Adapter[ #n]".
    adapter_descriptions: dict[str, str] = field(default_factory=dict)
    # What kube-proxy (winkernel) programmed: testing/kubeproxy.py HnsLoadBalancer by "vip:port/proto".
    hns_load_balancers: dict[str, HnsLoadBalancer] = field(default_factory=dict)
    firewall_rules: dict[str, FirewallRule] = field(default_factory=dict)
    # HKLM\SOFTWARE\Microsoft\Cryptography MachineGuid: set at install, kept across reboots and renames.
    machine_guid: str = field(default_factory=lambda: str(uuid.uuid4()))
    # HKLM\SOFTWARE\winnode OwnerUid / OwnerName (host_owner_set); None while the key is absent.
    owner_uid: str | None = None
    owner_name: str | None = None
    # Microsoft Defender: running (Get-MpComputerStatus AMServiceEnabled) and its process exclusions.
    defender_running: bool = True
    defender_exclusions: list[str] = field(default_factory=list)
    # IPv4 host routes (New-NetRoute on the external interface): destination prefix -> next hop.
    net_routes: dict[str, str] = field(default_factory=dict)
    # Interfaces with IPv4 forwarding enabled (Set-NetIPInterface -Forwarding Enabled).
    forwarding: set[str] = field(default_factory=set)

    SHUTDOWN_ORDER_LIMIT: ClassVar[int] = 64

    def __post_init__(self) -> None:
        release = release_for(self.os_build)
        if not self.os_ubr:
            self.os_ubr = release.ubr
        if not self.os_caption:
            self.os_caption = release.caption
        if not self.powershell_version:
            self.powershell_version = f"5.1.{self.os_build}.{self.os_ubr}"
        self.directories.setdefault("c:\\", "C:\\")
        for d in SYSTEM_DIRECTORIES:
            self.make_dirs(d)

    # --- identity -----------------------------------------------------------------------------

    @property
    def product_name(self) -> str:
        return self.os_caption.removeprefix("Microsoft ")

    @property
    def boot_id(self) -> str:
        return _iso(self.booted_at)

    def now(self) -> datetime:
        return self.clock() + timedelta(seconds=self.clock_skew_s)

    # --- files --------------------------------------------------------------------------------

    def file(self, path: str) -> FileEntry | None:
        return self.files.get(path_key(path))

    def is_dir(self, path: str) -> bool:
        return path_key(path) in self.directories

    def exists(self, path: str) -> bool:
        key = path_key(path)
        return key in self.files or key in self.directories

    def make_dirs(self, path: str) -> list[str]:
        """Create a directory and its missing parents; returns the ones created (display form)."""
        norm = normalize_path(path)
        chain: list[str] = []
        current: str | None = norm
        while current is not None and path_key(current) not in self.directories:
            chain.append(current)
            current = parent_path(current)
        created: list[str] = []
        for d in reversed(chain):
            key = path_key(d)
            if key in self.files:
                raise ActionFailed(f"An item with the specified name {d} already exists.")
            self.directories[key] = d
            created.append(d)
        return created

    def _children(self, path: str) -> tuple[list[str], list[str]]:
        prefix = path_key(path).rstrip("\\") + "\\"
        files = [k for k in self.files if k.startswith(prefix)]
        dirs = [k for k in self.directories if k.startswith(prefix)]
        return files, dirs

    def _in_use_by(self, key: str) -> ServiceRecord | None:
        for service in self.services.values():
            if service.state != A.ServiceState.STOPPED and service.executable:
                for image in service.images:
                    try:
                        if path_key(image) == key:
                            return service
                    except ActionFailed:
                        continue
        return None

    def _check_not_in_use(self, path: str) -> None:
        key = path_key(path)
        if self._in_use_by(key):
            raise ActionFailed(
                f"The process cannot access the file '{normalize_path(path)}' because it is being used by another process."
            )

    def write_bytes(
        self, path: str, content: bytes, *, secret: bool = False, system: bool = False
    ) -> FileEntry:
        """Write a file (creating missing parent directories), honouring disk space and file locks."""
        norm = normalize_path(path)
        key = path_key(norm)
        if key in self.directories:
            raise ActionFailed(f"Access to the path '{norm}' is denied.")
        existing = self.files.get(key)
        if existing is not None:
            self._check_not_in_use(norm)
        growth = len(content) - (existing.size if existing and not existing.system else 0)
        if not system and (self.faults.disk_full or growth > self.free_disk_bytes):
            raise ActionFailed(f"{NOT_ENOUGH_SPACE} : '{norm}'")
        parent = parent_path(norm)
        if parent:
            self.make_dirs(parent)
        entry = FileEntry(
            path=existing.path if existing else norm, content=content, secret=secret, system=system
        )
        self.files[key] = entry
        if not system:
            self.free_disk_bytes -= growth
        return entry

    def remove(self, path: str, *, recurse: bool = False, if_empty: bool = False) -> bool:
        norm = normalize_path(path)
        key = path_key(norm)
        if key in self.files:
            self._check_not_in_use(norm)
            self._drop_file(key)
            return True
        if key not in self.directories:
            return False
        if len(norm) <= 3:
            raise ActionFailed(f"Remove-Item: refusing to remove the root of drive {norm}")
        files, dirs = self._children(norm)
        if (files or dirs) and if_empty and not recurse:
            return False
        if (files or dirs) and not recurse:
            raise ActionFailed(
                f"The item at {norm} has children and the Recurse parameter was not specified. "
                "If you continue, all children will be removed with the item."
            )
        for k in files:
            if self._in_use_by(k):
                raise ActionFailed(
                    f"Cannot remove item {self.files[k].path}: The process cannot access the file "
                    f"'{self.files[k].path}' because it is being used by another process."
                )
        for k in files:
            self._drop_file(k)
        for k in dirs:
            del self.directories[k]
        del self.directories[key]
        return True

    def _drop_file(self, key: str) -> None:
        entry = self.files.pop(key)
        if not entry.system:
            self.free_disk_bytes += entry.size

    # --- services -----------------------------------------------------------------------------

    def service(self, name: str) -> ServiceRecord | None:
        return self.services.get(name.casefold())

    def _require_service(self, name: str) -> ServiceRecord:
        service = self.service(name)
        if service is None:
            raise ActionFailed(f"Cannot find any service with service name '{name}'.")
        return service

    def add_service(self, record: ServiceRecord) -> ServiceRecord:
        self.services[record.name.casefold()] = record
        return record

    def install_containerd(
        self, *, running: bool = True, version: str | None = None, layout: str = "microsoft"
    ) -> ServiceRecord:
        """Put containerd on the host the way its installer does: binary plus an Automatic service,
        configured as the installer `layout` leaves it (testing.containerd.PRESETS)."""
        from winnode.testing.artifacts import fake_binary

        if version:
            self.containerd_version = version
        self.write_bytes(
            CONTAINERD_EXE, fake_binary("containerd", self.containerd_version or "unknown"), system=True
        )
        config = PRESETS[layout]
        self.containerd_config = config
        for directory in (config.conf_dir, *config.bin_dirs):
            if directory:
                self.make_dirs(directory)
        for plugin in config.installer_plugins:
            self.write_bytes(
                ntpath.join(config.bin_dirs[0], plugin),
                fake_binary(plugin.removesuffix(".exe"), "installer"),
                system=True,
            )
        record = self.add_service(
            ServiceRecord(
                name="containerd",
                binary_path=f'"{CONTAINERD_EXE}" --run-service',
                display_name="containerd",
                description="Container runtime",
            )
        )
        if running:
            record.state = A.ServiceState.RUNNING
            record.started_count += 1
        return record

    def add_system_service(self, name: str, display_name: str, *, running: bool = True) -> ServiceRecord:
        """A built-in Windows service hosted by svchost.exe."""
        svchost = "C:\\Windows\\System32\\svchost.exe"
        if self.file(svchost) is None:
            self.write_bytes(svchost, b"MZ emulated svchost\n", system=True)
        record = self.add_service(
            ServiceRecord(
                name=name,
                binary_path=f"{svchost} -k netsvcs -p",
                display_name=display_name,
                description=f"Windows {display_name}",
                state=A.ServiceState.RUNNING if running else A.ServiceState.STOPPED,
            )
        )
        return record

    async def start_service(self, name: str, *, _chain: tuple[str, ...] = ()) -> bool:
        """Start a service and, first, its dependencies (the Service Control Manager's order)."""
        service = self._require_service(name)
        if service.state == A.ServiceState.RUNNING:
            return False
        label = f"Service '{service.display_name} ({service.name})'"
        cannot = f"{label} cannot be started due to the following error: Cannot start service {service.name} on computer '.'."
        if service.start_type == A.StartType.DISABLED:
            raise ActionFailed(
                cannot
                + " The service cannot be started, either because it is disabled or because it has no enabled devices associated with it."
            )
        if service.name.casefold() in _chain:
            raise ActionFailed(cannot + " Circular service dependency was specified.")
        for dependency in service.dependencies:
            if self.service(dependency) is None:
                raise ActionFailed(
                    cannot + " The dependency service does not exist or has been marked for deletion."
                )
            try:
                await self.start_service(dependency, _chain=(*_chain, service.name.casefold()))
            except ActionFailed:
                raise ActionFailed(cannot + " The dependency service or group failed to start.") from None
        exe = service.executable
        try:
            present = bool(exe) and self.file(exe) is not None
        except ActionFailed:
            present = False
        if not present:
            raise ActionFailed(cannot + " The system cannot find the file specified.")
        if self.service_checker is not None:
            verdict = self.service_checker(self, service)
            if verdict is not None and not verdict.ok:
                # The process exits before it reports to the SCM: the service stays stopped, and what
                # the component printed lands in its log (kube-log-runner's -log-file).
                self._service_log(service, verdict.describe())
                raise ActionFailed(f"{cannot} The service process terminated: {verdict.describe()}")
        hook = self.service_hooks.get(service.name.casefold())
        service.state = A.ServiceState.START_PENDING
        if hook is not None:
            try:
                await hook.on_start(self, service)
            except asyncio.CancelledError:
                service.state = A.ServiceState.STOPPED
                raise
            except Exception as exc:
                service.state = A.ServiceState.STOPPED
                raise ActionFailed(f"{cannot} The service process terminated: {exc}") from None
        service.state = A.ServiceState.RUNNING
        service.started_count += 1
        return True

    def _service_log(self, service: ServiceRecord, line: str) -> None:
        """A line as Go's log package prints it (the refusal of a flag), into the service's log."""
        self.append_service_log(service, f"{self.now().strftime('%Y/%m/%d %H:%M:%S')} {line}")

    def append_service_log(self, service: ServiceRecord, line: str) -> None:
        """Append what the component printed to the log file its kube-log-runner writes, if it has one."""
        from winnode.testing.conformance import component_of, log_runner_split

        argv = split_command_line(service.binary_path)
        if not argv or component_of(argv[0]) != "kube-log-runner":
            return
        log_file = log_runner_split(argv)[0].get("log-file")
        if not log_file:
            return
        try:
            entry = self.file(log_file)
            old = entry.content if entry is not None else b""
            self.write_bytes(log_file, old + f"{line}\n".encode())
        except ActionFailed:
            log.info("%s: cannot write the log of service %s", self.hostname, service.name)

    async def stop_service(self, name: str) -> bool:
        """Stop a service and, first, the running services that depend on it (Stop-Service -Force)."""
        service = self._require_service(name)
        if service.state == A.ServiceState.STOPPED:
            return False
        for other in list(self.services.values()):
            if other is not service and any(
                d.casefold() == service.name.casefold() for d in other.dependencies
            ):
                await self.stop_service(other.name)
        service.state = A.ServiceState.STOP_PENDING
        hook = self.service_hooks.get(service.name.casefold())
        try:
            if hook is not None:
                await hook.on_stop(self, service)
        except Exception:
            # A real service that fails to stop cleanly is still stopped by the SCM in the end.
            log.exception("stop hook of service %s failed", service.name)
        finally:
            service.state = A.ServiceState.STOPPED
        return True

    # --- power --------------------------------------------------------------------------------

    def request_reboot(self, delay_s: float) -> None:
        self.pending_reboot_delay_s = delay_s
        if self.on_reboot_requested is not None:
            self.on_reboot_requested(delay_s)

    async def shutdown(self) -> None:
        """Stop every running service (their hooks run), as Windows does before it restarts."""
        for _ in range(self.SHUTDOWN_ORDER_LIMIT):
            running = [s for s in self.services.values() if s.state != A.ServiceState.STOPPED]
            if not running:
                break
            await self.stop_service(running[0].name)

    async def boot(self) -> None:
        """A fresh boot: new boot id, nothing pending, services set to Automatic come back."""
        now = self.clock()
        self.booted_at = now if now > self.booted_at else self.booted_at + timedelta(microseconds=1)
        self.boot_count += 1
        self.reboot_pending = False
        self.pending_reboot_delay_s = None
        for service in list(self.services.values()):
            if service.start_type == A.StartType.AUTOMATIC and service.state == A.ServiceState.STOPPED:
                try:
                    await self.start_service(service.name)
                except ActionFailed as exc:
                    # Like a real boot: the failure lands in the event log, the host comes up anyway.
                    log.info("%s: service %s did not start at boot: %s", self.hostname, service.name, exc)

    async def reboot(self) -> None:
        await self.shutdown()
        await self.boot()

    def cni_network_error(self) -> str | None:
        """Why containerd reports its pod network not ready (None: ready); see testing.containerd."""
        containerd = self.service("containerd")
        if containerd is None or containerd.state != A.ServiceState.RUNNING:
            return "container runtime is down"
        return network_error(self.containerd_config, self._host_files())

    def run_sandbox(self, name: str) -> SandboxNetwork:
        """RunPodSandbox's network part: an address from the loaded CNI configuration and an HNS
        endpoint for it on the network the configuration names (raises SandboxError)."""
        containerd = self.service("containerd")
        if containerd is None or containerd.state != A.ServiceState.RUNNING:
            raise SandboxError("failed to setup network for sandbox: container runtime is down")
        files = self._host_files()
        loaded = loaded_config(self.containerd_config, files)
        wanted = json.loads(files.read_text(loaded or "") or "{}").get("name") if loaded else None
        network = self.hns_networks.get(str(wanted)) if wanted else None

        def taken(ip: str) -> bool:
            return network is not None and ip in network.endpoints

        sandbox = sandbox_network(self.containerd_config, files, taken)
        if network is None:
            raise SandboxError(f"failed to setup network for sandbox: network {wanted} not found in HNS")
        network.endpoints[sandbox.ip] = {"name": name, "host_attached": False, "gateway": sandbox.gateway}
        return sandbox

    def _host_files(self) -> HostFiles:
        def list_dir(path: str) -> list[str]:
            prefix = path_key(path).rstrip("\\") + "\\"
            return [
                e.path.rsplit("\\", 1)[-1]
                for k, e in self.files.items()
                if k.startswith(prefix) and "\\" not in k[len(prefix) :]
            ]

        def read_text(path: str) -> str | None:
            entry = self.file(path)
            return entry.text if entry is not None else None

        return HostFiles(list_dir, read_text, lambda path: self.file(path) is not None)

    # --- facts --------------------------------------------------------------------------------

    def all_addresses(self) -> list[str]:
        if not self.adapter_addresses:
            return list(self.addresses)
        return sorted({a for addrs in self.adapter_addresses.values() for a in addrs})

    def default_route_ipv4(self) -> str | None:
        adapter = self.default_route_adapter or (self.adapters[0] if self.adapters else None)
        if adapter is None:
            return None
        if self.adapter_addresses:
            candidates = self.adapter_addresses.get(adapter, [])
        else:
            candidates = list(self.addresses) if adapter == self.adapters[0] else []
        for address in candidates:
            try:
                ip = ipaddress.ip_address(address)
            except ValueError:
                continue
            if ip.version == 4 and not ip.is_link_local:
                return address
        return None

    def facts(self) -> A.FactsResult:
        containerd = self.service("containerd")
        return A.FactsResult(
            hostname=self.hostname,
            os_build=self.os_build,
            os_ubr=self.os_ubr,
            os_caption=self.os_caption,
            edition=self.edition,
            features=dict(self.features),
            containerd=A.ContainerdFacts(
                installed=containerd is not None,
                running=containerd is not None and containerd.state == A.ServiceState.RUNNING,
                version=self.containerd_version if containerd is not None else None,
                config_dump=self.containerd_config.dump()
                if containerd is not None and self.containerd_config is not None
                else None,
            ),
            system_drive_free_bytes=max(0, self.free_disk_bytes),
            # As facts.ps1 filters them: no loopback ::1/127.0.0.1, no link-local.
            addresses=[
                a
                for a in self.all_addresses()
                if a not in ("127.0.0.1", "::1")
                and not a.startswith("169.254.")
                and not a.lower().startswith("fe80:")
            ],
            default_route_ipv4=self.default_route_ipv4(),
            net_adapters=[
                A.NetAdapterFacts(name=a, description=self.adapter_description(a)) for a in self.adapters
            ],
            default_route_adapter=self.default_route_adapter or (self.adapters[0] if self.adapters else None),
            hns_version=A.HnsVersion(major=self.hns_api_version()[0], minor=self.hns_api_version()[1])
            if self.features.get("Containers")
            else None,
            reboot_pending=self.reboot_pending,
            boot_id=self.boot_id,
            utc_now=_iso(self.now()),
            powershell_version=self.powershell_version,
        )

    # --- actions ------------------------------------------------------------------------------

    async def execute(self, params: A.Params) -> A.Result:
        """Run one action on the model; raises ActionFailed with the host's error message."""
        handler = getattr(self, f"_do_{params.action}", None)
        if handler is None:
            raise ActionFailed(f"the emulated host does not implement action {params.action!r}")
        result: A.Result = await handler(params)
        return result

    async def _do_facts(self, p: A.FactsParams) -> A.FactsResult:
        return self.facts()

    # File actions (files.py).

    async def _do_ensure_directories(self, p: A.EnsureDirectoriesParams) -> A.EnsureDirectoriesResult:
        return await files.ensure_directories(self, p)

    async def _do_fetch_file(self, p: A.FetchFileParams) -> A.FileWriteResult:
        return await files.fetch_file(self, p)

    async def _do_write_file(self, p: A.WriteFileParams) -> A.FileWriteResult:
        return await files.write_file(self, p)

    async def _do_copy_file(self, p: A.CopyFileParams) -> A.FileWriteResult:
        return await files.copy_file(self, p)

    async def _do_stat_files(self, p: A.StatFilesParams) -> A.StatFilesResult:
        return await files.stat_files(self, p)

    async def _do_remove_path(self, p: A.RemovePathParams) -> A.RemovedResult:
        return await files.remove_path(self, p)

    # Service actions (scm.py).

    async def _do_service_ensure(self, p: A.ServiceEnsureParams) -> A.ServiceEnsureResult:
        return await scm.service_ensure(self, p)

    async def _do_service_start(self, p: A.ServiceStartParams) -> A.ServiceStateResult:
        return await scm.service_start(self, p)

    async def _do_service_stop(self, p: A.ServiceStopParams) -> A.ServiceStateResult:
        return await scm.service_stop(self, p)

    async def _do_service_remove(self, p: A.ServiceRemoveParams) -> A.RemovedResult:
        return await scm.service_remove(self, p)

    async def _do_service_query(self, p: A.ServiceQueryParams) -> A.ServiceQueryResult:
        return await scm.service_query(self, p)

    # HNS: networks, their policies and the host routes to peers (hns.py).

    def hns_api_version(self) -> tuple[int, int]:
        return hns.api_version(self)

    def adapter_description(self, adapter: str) -> str:
        return hns.adapter_description(self, adapter)

    async def _do_hns_network_ensure(self, p: A.HnsNetworkEnsureParams) -> A.HnsNetworkEnsureResult:
        return await hns.network_ensure(self, p)

    async def _do_hns_network_remove(self, p: A.HnsNetworkRemoveParams) -> A.RemovedResult:
        return await hns.network_remove(self, p)

    async def _do_hns_network_query(self, p: A.HnsNetworkQueryParams) -> A.HnsNetworkQueryResult:
        return await hns.network_query(self, p)

    async def _do_hns_routes_sync(self, p: A.HnsRoutesSyncParams) -> A.HnsRoutesSyncResult:
        return await hns.routes_sync(self, p)

    # Firewall rules (firewall.py).

    async def _do_firewall_rule_ensure(self, p: A.FirewallRuleEnsureParams) -> A.ChangedResult:
        return await firewall.rule_ensure(self, p)

    async def _do_firewall_rule_remove(self, p: A.FirewallRuleRemoveParams) -> A.RemovedResult:
        return await firewall.rule_remove(self, p)

    def _owner(self, changed: bool = False) -> A.HostOwnerResult:
        return A.HostOwnerResult(
            machine_guid=self.machine_guid,
            owner_uid=self.owner_uid,
            owner_name=self.owner_name,
            changed=changed,
        )

    async def _do_host_owner_query(self, p: A.HostOwnerQueryParams) -> A.HostOwnerResult:
        return self._owner()

    async def _do_host_owner_set(self, p: A.HostOwnerSetParams) -> A.HostOwnerResult:
        # The same compare-and-set as templates/host_owner_set.ps1.
        current = self.owner_uid
        if current is not None and current != p.owner_uid and current != p.expected_uid:
            raise ActionFailed(
                f"This host is owned by WindowsNode '{self.owner_name}' (uid {current}); not changing its owner."
            )
        changed = current != p.owner_uid
        if changed:
            self.owner_uid = p.owner_uid
            self.owner_name = p.owner_name if p.owner_uid is not None else None
        return self._owner(changed)

    async def _do_probe(self, p: A.ProbeParams) -> A.ProbeResult:
        # As templates/probe.ps1: the host's own view (here: the emulator's network, loopback).
        paths = {path: self.exists(path) for path in p.paths}
        tcp: dict[str, A.TcpProbe] = {}
        for key in p.tcp:
            address, _, port_text = key.rpartition(":")
            if not address or not port_text.isdigit():
                tcp[key] = A.TcpProbe(ok=False, error="not host:port")
                continue
            try:
                _, writer = await asyncio.wait_for(
                    asyncio.open_connection(address.strip("[]"), int(port_text)), p.timeout_s
                )
            except TimeoutError:
                tcp[key] = A.TcpProbe(ok=False, error=f"no connection within {p.timeout_s} s")
            except OSError:
                tcp[key] = A.TcpProbe(
                    ok=False,
                    error="No connection could be made because the target machine actively refused it.",
                )
            else:
                writer.close()
                tcp[key] = A.TcpProbe(ok=True)
        http: dict[str, A.HttpProbe] = {}
        for url in p.http:
            try:
                await self.fetcher(url, float(p.timeout_s))
            except FetchError as exc:
                code = re.search(r"\((\d{3})\)", str(exc))
                http[url] = A.HttpProbe(status=int(code.group(1)) if code else None, error=str(exc))
            else:
                http[url] = A.HttpProbe(status=200)
        return A.ProbeResult(paths=paths, tcp=tcp, http=http)

    def defender_excluded(self, processes: Iterable[str]) -> list[str]:
        """Those of `processes` Defender excludes now (templates/_defender.ps1 compares without case)."""
        return [x for x in processes if any(e.casefold() == x.casefold() for e in self.defender_exclusions)]

    async def _do_defender_exclusions_ensure(
        self, p: A.DefenderExclusionsEnsureParams
    ) -> A.DefenderExclusionsResult:
        if not self.defender_running:
            return A.DefenderExclusionsResult(defender_running=False, changed=False, excluded=[])
        changed = False
        for process in p.processes:
            has = bool(self.defender_excluded([process]))
            if p.present and not has:
                self.defender_exclusions.append(process)
                changed = True
            elif not p.present and has:
                self.defender_exclusions = [
                    e for e in self.defender_exclusions if e.casefold() != process.casefold()
                ]
                changed = True
        return A.DefenderExclusionsResult(
            defender_running=True, changed=changed, excluded=self.defender_excluded(p.processes)
        )

    async def _do_observe(self, p: A.ObserveParams) -> A.ObserveResult:
        # As templates/observe.ps1: each part from the same model state its own read action uses.
        hns_networks: dict[str, A.HnsNetworkInfo] | None = None
        hns_error: str | None = None
        if p.hns_networks:
            try:
                queried = await hns.network_query(self, A.HnsNetworkQueryParams(names=p.hns_networks))
            except ActionFailed as exc:
                hns_error = str(exc)
            else:
                hns_networks = dict(queried.networks)
        defender: A.DefenderState | None = None
        if p.defender_processes:
            defender = A.DefenderState(
                running=self.defender_running,
                excluded=self.defender_excluded(p.defender_processes) if self.defender_running else [],
            )
        return A.ObserveResult(
            facts=self.facts(),
            owner=self._owner() if p.owner else None,
            files=(await files.stat_files(self, A.StatFilesParams(paths=p.files))).files,
            services=(await scm.service_query(self, A.ServiceQueryParams(names=p.services))).services,
            hns_networks=hns_networks,
            hns_error=hns_error,
            firewall_rules={name: firewall.rule_info(self, name) for name in p.firewall_rules},
            defender=defender,
        )

    async def _do_reboot(self, p: A.RebootParams) -> A.RebootResult:
        before = self.boot_id
        self.reboot_pending = True
        self.request_reboot(float(p.delay_s))
        return A.RebootResult(boot_id=before)

    # --- scripts ------------------------------------------------------------------------------

    def _verify_script(self, script: str, secrets: dict[str, str] | None) -> tuple[str, A.Params]:
        """The action and validated parameters of a script, after checking its header against its body.

        `secrets` is the secret section the bootstrap split off stdin (None: there was none); the
        prelude fills each field holding its `<secret:NAME>` placeholder from it, or fails."""
        action, header_params = parse_header(script)
        text_params = extract_params(script)
        if header_params != text_params:
            raise ProtocolError(
                "the script header and the parameters its body decodes differ "
                f"(header keys {sorted(header_params)}, body keys {sorted(text_params)})"
            )
        if action not in A.ACTIONS:
            raise KeyError(action)
        body_params = fill_secrets(text_params, secrets)
        params = A.params_for(action, body_params)
        if self.strict:
            render = _load_renderer()
            if render is not None:
                expected = _canonical_script(_render_expected(render, action, params, body_params))
                actual = _canonical_script(script)
                if expected.rstrip("\n") != actual.rstrip("\n"):
                    raise ProtocolError(
                        f"the script for {action} is not what winnode.host.scripts.render produces "
                        f"({_first_difference(expected, actual)})"
                    )
        return action, params

    async def run_script(
        self, script: str, *, forced_exit_code: int | None = None, secrets: dict[str, str] | None = None
    ) -> ScriptOutcome:
        """Execute a rendered script: its `##RESULT##` line, exit code and (redacted) parameters."""
        try:
            action, params = self._verify_script(script, secrets)
        except KeyError as exc:
            name = str(exc.args[0]) if exc.args else "?"
            if not self.strict:
                return _outcome(name, None, False, {"ok": True, "emulated": False}, 0)
            message = f"unknown action {name!r}: the emulated host implements {', '.join(sorted(A.ACTIONS))}"
            return _outcome(name, None, False, {"ok": False, "error": message}, 1, stderr=message)
        except (ProtocolError, ValidationError, ActionFailed) as exc:
            message = f"emulated host refused the script: {exc}"
            return _outcome(None, None, False, {"ok": False, "error": message}, 1, stderr=message)
        redacted = redact(params)
        if forced_exit_code is not None:
            message = f"{action} failed: injected failure (exit code {forced_exit_code})"
            return _outcome(
                action, redacted, False, {"ok": False, "error": message}, forced_exit_code, stderr=message
            )
        try:
            result = await self.execute(params)
        except ActionFailed as exc:
            return _outcome(action, redacted, params.mutating, {"ok": False, "error": str(exc)}, 1)
        return _outcome(action, redacted, params.mutating, {"ok": True, **result.model_dump(mode="json")}, 0)


def _outcome(
    action: str | None,
    params: dict[str, Any] | None,
    mutating: bool,
    result: dict[str, Any],
    exit_code: int,
    *,
    stderr: str = "",
) -> ScriptOutcome:
    return ScriptOutcome(
        action=action,
        params=params,
        mutating=mutating,
        result=result,
        exit_code=exit_code,
        stdout=format_result(result) + CRLF,
        stderr=stderr + CRLF if stderr else "",
    )


def new_host_model(
    hostname: str,
    *,
    os_build: int = 20348,
    features: Mapping[str, bool] | None = None,
    containerd_installed: bool = True,
    containerd_running: bool = True,
    containerd_version: str | None = "2.1.4",
    containerd_layout: str = "microsoft",
    free_disk_bytes: int = 100 * GIB,
    addresses: Iterable[str] = (),
    strict: bool = True,
    **kwargs: Any,
) -> HostModel:
    """A freshly installed Windows Server: system services, and containerd if asked for."""
    model = HostModel(
        hostname=hostname,
        os_build=os_build,
        features=dict(features) if features is not None else {"Containers": True},
        containerd_version=containerd_version if containerd_installed else None,
        free_disk_bytes=free_disk_bytes,
        addresses=list(addresses),
        strict=strict,
        **kwargs,
    )
    model.add_system_service("WinRM", "Windows Remote Management (WS-Management)")
    if model.features.get("Containers"):
        model.add_system_service("hns", "Host Network Service")
        model.add_system_service("vmcompute", "Hyper-V Host Compute Service")
    if containerd_installed:
        model.install_containerd(
            running=containerd_running, version=containerd_version, layout=containerd_layout
        )
    return model
