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
import dataclasses
import hashlib
import importlib
import inspect
import ipaddress
import json
import logging
import ntpath
import re
import urllib.error
import urllib.request
import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

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

if TYPE_CHECKING:
    from winnode.testing.conformance import Verdict
    from winnode.testing.kubeproxy import HnsLoadBalancer

log = logging.getLogger(__name__)

GIB = 1024**3
NOT_ENOUGH_SPACE = "There is not enough space on the disk."
REDACTED = "<redacted>"
CRLF = "\r\n"


class ActionFailed(Exception):
    """The action failed the way it would on a real host; the message is what the script reports."""


# --- Windows releases --------------------------------------------------------------------------


@dataclass(frozen=True)
class WindowsRelease:
    build: int
    ubr: int
    caption: str

    @property
    def product_name(self) -> str:
        """What the registry's ProductName (and a kubelet's osImage) says, without the vendor prefix."""
        return self.caption.removeprefix("Microsoft ")


WINDOWS_RELEASES: dict[int, WindowsRelease] = {
    17763: WindowsRelease(17763, 6414, "Microsoft Windows Server 2019 Datacenter"),
    20348: WindowsRelease(20348, 2700, "Microsoft Windows Server 2022 Datacenter"),
    26100: WindowsRelease(26100, 2894, "Microsoft Windows Server 2025 Datacenter"),
}


def release_for(build: int) -> WindowsRelease:
    return WINDOWS_RELEASES.get(build) or WindowsRelease(
        build, 0, f"Microsoft Windows Server (build {build})"
    )


# --- Windows paths and command lines -----------------------------------------------------------

_DRIVE = re.compile(r"^([A-Za-z]):(\\|$)")


def normalize_path(path: str) -> str:
    """Canonical display form of an absolute Windows path: backslashes, no `.`/`..`, no trailing slash."""
    p = path.strip().replace("/", "\\")
    if p.startswith("\\\\?\\"):
        p = p[4:]
    match = _DRIVE.match(p)
    if not match:
        raise ActionFailed(
            f"Cannot find path '{path}': the emulated host only knows absolute paths like C:\\dir."
        )
    drive = match.group(1).upper() + ":"
    parts: list[str] = []
    for segment in p[2:].split("\\"):
        if segment in ("", "."):
            continue
        if segment == "..":
            if parts:
                parts.pop()
            continue
        if any(c in segment for c in '<>:"|?*') or segment != segment.rstrip(" ."):
            raise ActionFailed(
                f"The filename, directory name, or volume label syntax is incorrect. : '{path}'"
            )
        parts.append(segment)
    return drive + "\\" + "\\".join(parts)


def path_key(path: str) -> str:
    """NTFS compares names case-insensitively: one key for every spelling of the same path."""
    return normalize_path(path).casefold()


def parent_path(path: str) -> str | None:
    norm = normalize_path(path)
    if len(norm) <= 3:
        return None
    head, _, _ = norm.rpartition("\\")
    return head if len(head) > 2 else head + "\\"


def split_command_line(command_line: str) -> list[str]:
    """Split a Windows command line the way CommandLineToArgvW does (the program name has no escapes)."""
    args: list[str] = []
    i, n = 0, len(command_line)
    while i < n and command_line[i] in " \t":
        i += 1
    if i >= n:
        return args
    # The program name: quotes group, backslashes are literal.
    if command_line[i] == '"':
        end = command_line.find('"', i + 1)
        end = n if end < 0 else end
        args.append(command_line[i + 1 : end])
        i = end + 1
    else:
        start = i
        while i < n and command_line[i] not in " \t":
            i += 1
        args.append(command_line[start:i])
    current: list[str] = []
    in_quotes = False
    has_token = False
    while i < n:
        c = command_line[i]
        if c in " \t" and not in_quotes:
            if has_token:
                args.append("".join(current))
                current, has_token = [], False
            i += 1
            continue
        if c == "\\":
            start = i
            while i < n and command_line[i] == "\\":
                i += 1
            count = i - start
            if i < n and command_line[i] == '"':
                current.append("\\" * (count // 2))
                if count % 2:
                    current.append('"')
                    i += 1
            else:
                current.append("\\" * count)
            has_token = True
            continue
        if c == '"':
            if in_quotes and i + 1 < n and command_line[i + 1] == '"':
                current.append('"')
                i += 2
            else:
                in_quotes = not in_quotes
                i += 1
            has_token = True
            continue
        current.append(c)
        has_token = True
        i += 1
    if has_token:
        args.append("".join(current))
    return args


# --- host objects ------------------------------------------------------------------------------


SECRET_FILE_ACL = ("S-1-5-18", "S-1-5-32-544")  # NT AUTHORITY\SYSTEM, BUILTIN\Administrators


@dataclass
class FileEntry:
    path: str
    content: bytes
    secret: bool = False
    system: bool = False  # part of the OS image: not counted against free disk space

    @property
    def acl(self) -> tuple[str, ...] | None:
        """The SIDs of the file's explicit, protected DACL (write_file.ps1 sets it with icacls for a
        secret: SYSTEM and Administrators, full control); None: it inherits its directory's."""
        return SECRET_FILE_ACL if self.secret else None

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.content).hexdigest()

    @property
    def size(self) -> int:
        return len(self.content)

    @property
    def text(self) -> str:
        return self.content.decode("utf-8-sig", errors="replace")


@dataclass
class ServiceRecord:
    name: str
    binary_path: str
    display_name: str
    description: str = ""
    dependencies: list[str] = field(default_factory=list)
    start_type: A.StartType = A.StartType.AUTOMATIC
    recovery_restart_delay_ms: int = 10_000
    recovery_reset_period_s: int = 86_400
    state: A.ServiceState = A.ServiceState.STOPPED
    started_count: int = 0

    @property
    def executable(self) -> str:
        args = split_command_line(self.binary_path)
        return args[0] if args else ""

    @property
    def arguments(self) -> list[str]:
        return split_command_line(self.binary_path)[1:]

    @property
    def program(self) -> list[str]:
        """argv of the program doing the work: the command a wrapper (kube-log-runner) runs, else
        the service's own command line."""
        from winnode.testing.conformance import program_argv

        return program_argv(split_command_line(self.binary_path))

    @property
    def images(self) -> list[str]:
        """Every executable file the running service holds open."""
        program = self.program
        return [self.executable, *program[:1]] if program[:1] != [self.executable] else [self.executable]

    def info(self) -> A.ServiceInfo:
        return A.ServiceInfo(
            exists=True,
            state=self.state,
            start_type=self.start_type,
            binary_path=self.binary_path,
            description=self.description,
            dependencies=list(self.dependencies),
        )


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


@dataclass
class FirewallRule:
    name: str
    display_name: str
    protocol: str
    local_port: int
    direction: str = "Inbound"
    enabled: bool = True


class ServiceHook(Protocol):
    """Runs beside a service's start and stop (the emulated kubelet hangs off the `kubelet` service)."""

    async def on_start(self, model: HostModel, service: ServiceRecord) -> None: ...

    async def on_stop(self, model: HostModel, service: ServiceRecord) -> None: ...


class ServiceChecker(Protocol):
    def __call__(self, model: HostModel, service: ServiceRecord) -> Verdict | None: ...


def _default_checker() -> ServiceChecker:
    from winnode.testing.conformance import check_service

    return check_service


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


class FetchError(Exception):
    """A download failed; the message is what Invoke-WebRequest would say."""


Fetcher = Callable[[str, float], Awaitable[bytes]]


def _fetch_blocking(url: str, timeout: float) -> bytes:
    if not url.lower().startswith(("http://", "https://")):
        raise FetchError(f"The URI prefix is not recognized: {url}")
    try:
        # Only http(s) URLs reach this point (checked above).
        with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310
            data: bytes = response.read()
            return data
    except urllib.error.HTTPError as exc:
        raise FetchError(f"The remote server returned an error: ({exc.code}) {exc.reason}.") from None
    except TimeoutError:
        raise FetchError("The operation has timed out.") from None
    except (urllib.error.URLError, OSError):
        raise FetchError("Unable to connect to the remote server") from None


async def urllib_fetch(url: str, limit_s: float) -> bytes:
    """Default fetcher: urllib in a worker thread, bounded by `limit_s`."""
    return await asyncio.wait_for(asyncio.to_thread(_fetch_blocking, url, limit_s), limit_s + 1.0)


# --- faults ------------------------------------------------------------------------------------


@dataclass
class Faults:
    """Failures injected into one host; change any field at runtime (from any thread)."""

    auth_failure: bool = False  # every request answers 401
    refuse_connections: bool = False  # the listener is closed: connections are refused
    latency_s: float = 0.0  # added before answering every request
    stall: bool = False  # commands never finish until cleared (transport timeouts)
    exit_code: int | None = None  # commands exit with this code (see exit_code_count)
    exit_code_count: int = 0  # how many more commands fail with exit_code; 0 = every one until cleared
    reboot_mid_step: bool = False  # the next mutating command reboots the host and drops the connection
    checksum_mismatch: bool = False  # fetched content arrives corrupted
    disk_full: bool = False  # writes fail with "There is not enough space on the disk."
    # The next HNS network creation drops every connection before its answer is sent, as a real
    # host does while its address moves to the new vEthernet adapter; the network is created.
    hns_network_blip: bool = False
    # The next command runs to its end on the host, then every TCP connection is cut before its
    # answer is sent: a connection lost mid-command, whose action did happen.
    drop_mid_command: bool = False
    _listeners: list[Callable[[str], None]] = field(default_factory=list, repr=False, compare=False)

    def __setattr__(self, name: str, value: Any) -> None:
        super().__setattr__(name, value)
        if not name.startswith("_"):
            for listener in list(getattr(self, "_listeners", ())):
                listener(name)

    def subscribe(self, listener: Callable[[str], None]) -> None:
        self._listeners.append(listener)

    def fail_next(self, count: int = 1, exit_code: int = 1) -> None:
        """The next `count` commands exit with `exit_code` without doing anything."""
        if count < 1:
            raise ValueError("count must be at least 1")
        self.exit_code_count = count
        self.exit_code = exit_code

    def take_exit_code(self) -> int | None:
        """The exit code the next command must fail with, consuming one of `exit_code_count`."""
        code = self.exit_code
        if code is None:
            return None
        if self.exit_code_count > 0:
            remaining = self.exit_code_count - 1
            self.exit_code_count = remaining
            if remaining == 0:
                self.exit_code = None
        return code

    def clear(self) -> None:
        for f in dataclasses.fields(self):
            if not f.name.startswith("_"):
                setattr(self, f.name, f.default)


# --- scripts -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ScriptOutcome:
    """What a script printed and returned; `params` has secret fields redacted."""

    action: str | None
    params: dict[str, Any] | None
    mutating: bool
    result: dict[str, Any]
    exit_code: int
    stdout: str
    stderr: str = ""

    @property
    def ok(self) -> bool:
        return bool(self.result.get("ok"))


def redact(params: A.Params) -> dict[str, Any]:
    data = params.model_dump(mode="json")
    for name in params.secret_fields:
        if name in data:
            data[name] = REDACTED
    return data


def _load_renderer() -> Callable[..., Any] | None:
    try:
        module = importlib.import_module("winnode.host.scripts")
    except ModuleNotFoundError as exc:
        if exc.name == "winnode.host.scripts":
            return None
        raise
    render = getattr(module, "render", None)
    return render if callable(render) else None


def _render_expected(render: Callable[..., Any], action: str, params: A.Params, raw: dict[str, Any]) -> str:
    """Call `winnode.host.scripts.render` with whichever of its two natural shapes it has."""
    try:
        signature = inspect.signature(render)
        required = [
            p
            for p in signature.parameters.values()
            if p.default is inspect.Parameter.empty
            and p.kind in (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
        ]
    except (TypeError, ValueError):
        required = []
    rendered = render(action, raw) if len(required) >= 2 else render(params)
    for attr in ("script", "text"):
        if not isinstance(rendered, str) and isinstance(getattr(rendered, attr, None), str):
            rendered = getattr(rendered, attr)
    if not isinstance(rendered, str):
        raise ActionFailed(
            f"winnode.host.scripts.render returned {type(rendered).__name__}, not the script text"
        )
    return rendered


def script_for(action: str, params: dict[str, Any] | A.Params | None = None, *, body: str = "") -> str:
    """A script for `action` that an emulated host accepts in strict mode.

    With `winnode.host.scripts.render` available this is exactly what it renders; before that
    exists, the header and parameter lines of the protocol followed by `body`.
    """
    from winnode.host.protocol import encode_header, encode_params_line

    model = params if isinstance(params, A.Params) else A.params_for(action, dict(params or {}))
    raw = model.model_dump(mode="json", exclude_unset=True) if not isinstance(params, dict) else dict(params)
    render = _load_renderer()
    if render is not None:
        return _render_expected(render, action, model, raw)
    lines = [encode_header(action, raw), encode_params_line(raw)]
    if body:
        lines.append(body)
    return "\n".join(lines) + "\n"


def stdin_for(action: str, params: dict[str, Any] | A.Params | None = None) -> bytes:
    """What winnode sends on stdin for `action`: the script of `script_for`, then its secret section."""
    from winnode.host.protocol import encode_stdin

    model = params if isinstance(params, A.Params) else A.params_for(action, dict(params or {}))
    text = script_for(action, params)
    secrets = {
        name: value for name in model.secret_fields if isinstance(value := getattr(model, name, None), str)
    }
    return encode_stdin(text, secrets)


def _canonical_script(text: str) -> str:
    # A transport may send CRLF line endings or a byte-order mark; neither changes the script.
    return text.lstrip("\ufeff").replace("\r\n", "\n")


def _first_difference(expected: str, actual: str) -> str:
    exp_lines, act_lines = expected.split("\n"), actual.split("\n")
    for number, (e, a) in enumerate(zip(exp_lines, act_lines, strict=False), start=1):
        if e != a:
            return f"line {number}: expected {e[:120]!r}, got {a[:120]!r}"
    return f"expected {len(exp_lines)} lines, got {len(act_lines)}"


# --- the model ---------------------------------------------------------------------------------

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

    def remove(self, path: str, *, recurse: bool = False) -> bool:
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
            stamp = self.now().strftime("%Y/%m/%d %H:%M:%S")
            self.write_bytes(log_file, old + f"{stamp} {line}\n".encode())
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

    async def _do_ensure_directories(self, p: A.EnsureDirectoriesParams) -> A.EnsureDirectoriesResult:
        created: list[str] = []
        for path in p.paths:
            if self.make_dirs(path):
                created.append(path)
        return A.EnsureDirectoriesResult(created=created)

    def _file_result(self, entry: FileEntry, changed: bool) -> A.FileWriteResult:
        return A.FileWriteResult(changed=changed, sha256=entry.sha256, size=entry.size)

    async def _do_fetch_file(self, p: A.FetchFileParams) -> A.FileWriteResult:
        existing = self.file(p.path)
        if existing is not None and p.sha256 is not None and existing.sha256 == p.sha256:
            return self._file_result(existing, changed=False)
        try:
            data = await self.fetcher(p.url, self.fetch_timeout_s)
        except FetchError as exc:
            raise ActionFailed(f"Downloading {p.url} failed: {exc}") from None
        if self.faults.checksum_mismatch:
            data = _corrupt(data)
        actual = hashlib.sha256(data).hexdigest()
        if p.sha256 is not None and actual != p.sha256:
            raise ActionFailed(
                f"Checksum mismatch for {p.url} (-> {normalize_path(p.path)}): expected sha256 {p.sha256}, actual {actual}"
            )
        if existing is not None and existing.content == data:
            return self._file_result(existing, changed=False)
        return self._file_result(self.write_bytes(p.path, data), changed=True)

    async def _do_write_file(self, p: A.WriteFileParams) -> A.FileWriteResult:
        content = p.content.encode("utf-8")
        existing = self.file(p.path)
        if existing is not None and existing.content == content and existing.secret == p.secret:
            return self._file_result(existing, changed=False)
        return self._file_result(self.write_bytes(p.path, content, secret=p.secret), changed=True)

    async def _do_copy_file(self, p: A.CopyFileParams) -> A.FileWriteResult:
        source = self.file(p.source)
        if source is None:
            raise ActionFailed(f"Cannot copy {normalize_path(p.source)}: the file does not exist")
        if p.sha256 is not None and source.sha256 != p.sha256:
            raise ActionFailed(
                f"Checksum mismatch for {normalize_path(p.source)} (-> {normalize_path(p.path)}): "
                f"expected sha256 {p.sha256}, actual {source.sha256}"
            )
        existing = self.file(p.path)
        if existing is not None and existing.content == source.content:
            return self._file_result(existing, changed=False)
        return self._file_result(self.write_bytes(p.path, source.content), changed=True)

    async def _do_stat_files(self, p: A.StatFilesParams) -> A.StatFilesResult:
        stats: dict[str, A.FileStat] = {}
        for path in p.paths:
            entry = self.file(path)
            stats[path] = (
                A.FileStat(exists=True, sha256=entry.sha256, size=entry.size)
                if entry
                else A.FileStat(exists=False)
            )
        return A.StatFilesResult(files=stats)

    async def _do_remove_path(self, p: A.RemovePathParams) -> A.RemovedResult:
        return A.RemovedResult(removed=self.remove(p.path, recurse=p.recurse))

    async def _do_service_ensure(self, p: A.ServiceEnsureParams) -> A.ServiceEnsureResult:
        wanted: dict[str, Any] = {
            "binary_path": p.binary_path,
            "display_name": p.display_name,
            "description": p.description,
            "dependencies": list(p.dependencies),
            "start_type": p.start_type,
            "recovery_restart_delay_ms": p.recovery_restart_delay_ms,
            "recovery_reset_period_s": p.recovery_reset_period_s,
        }
        service = self.service(p.name)
        if service is None:
            self.add_service(
                ServiceRecord(
                    name=p.name,
                    binary_path=p.binary_path,
                    display_name=p.display_name,
                    description=p.description,
                    dependencies=list(p.dependencies),
                    start_type=p.start_type,
                    recovery_restart_delay_ms=p.recovery_restart_delay_ms,
                    recovery_reset_period_s=p.recovery_reset_period_s,
                )
            )
            return A.ServiceEnsureResult(created=True, changed=True)
        changed = False
        for attr, value in wanted.items():
            if getattr(service, attr) != value:
                setattr(service, attr, value)
                changed = True
        return A.ServiceEnsureResult(created=False, changed=changed)

    async def _do_service_start(self, p: A.ServiceStartParams) -> A.ServiceStateResult:
        try:
            changed = await asyncio.wait_for(self.start_service(p.name), timeout=p.timeout_s)
        except TimeoutError:
            raise ActionFailed(f"Service '{p.name}' did not reach Running within {p.timeout_s}s") from None
        return A.ServiceStateResult(state=self._require_service(p.name).state, changed=changed)

    async def _do_service_stop(self, p: A.ServiceStopParams) -> A.ServiceStateResult:
        changed = await self.stop_service(p.name)
        return A.ServiceStateResult(state=self._require_service(p.name).state, changed=changed)

    async def _do_service_remove(self, p: A.ServiceRemoveParams) -> A.RemovedResult:
        service = self.service(p.name)
        if service is None:
            return A.RemovedResult(removed=False)
        await self.stop_service(p.name)
        del self.services[service.name.casefold()]
        return A.RemovedResult(removed=True)

    async def _do_service_query(self, p: A.ServiceQueryParams) -> A.ServiceQueryResult:
        infos: dict[str, A.ServiceInfo] = {}
        for name in p.names:
            service = self.service(name)
            infos[name] = service.info() if service else A.ServiceInfo(exists=False)
        return A.ServiceQueryResult(services=infos)

    def _require_hns(self) -> None:
        if not self.features.get("Containers"):
            raise ActionFailed(
                "The Host Network Service (hns) is not available: the Containers feature is not installed "
                "(Install-WindowsFeature -Name Containers, then reboot)."
            )

    def hns_api_version(self) -> tuple[int, int]:
        return self.hns_version or HNS_VERSION_BY_BUILD.get(self.os_build, (13, 2))

    def adapter_description(self, adapter: str) -> str:
        if adapter in self.adapter_descriptions:
            return self.adapter_descriptions[adapter]
        index = self.adapters.index(adapter) if adapter in self.adapters else 0
        return "Microsoft Hyper-V Network Adapter" + (f" #{index + 1}" if index else "")

    def _hns_refuse(self, p: A.HnsNetworkEnsureParams, why: str) -> ActionFailed:
        if p.api is A.HnsApi.V2:
            return ActionFailed(f"HcnCreateNetwork({p.name}) failed with HRESULT 0x80070057: {why}")
        return ActionFailed(
            f"HNS POST /networks/ failed: HNS failed with error : The parameter is incorrect. ({why})"
        )

    def _decode_hns_request(self, p: A.HnsNetworkEnsureParams) -> HnsNetwork:
        """The network HNS would create from the request itself (never from the action's other fields):
        refused as the real HNS would when hcsshim's types at this host's version do not decode it."""
        version = self.hns_api_version()
        if self.hns_checker is None:
            raise ActionFailed("the emulated HNS has no request checker: it cannot tell what HNS would do")
        kind = "hns-v2-network" if p.api is A.HnsApi.V2 else "hns-v1-network"
        refusal = self.hns_checker(kind, p.request, version)
        if refusal is not None:
            raise self._hns_refuse(p, refusal)
        body = json.loads(p.request)
        adapter: str | None = None
        vsid: int | None = None
        port: int | None = None
        if p.api is A.HnsApi.V2:
            subnets = [sub for ipam in body.get("Ipams") or [] for sub in ipam.get("Subnets") or []]
            if len(subnets) != 1:
                raise self._hns_refuse(
                    p, f"winnode's networks have one subnet, this request has {len(subnets)}"
                )
            prefix = str(subnets[0]["IpAddressPrefix"])
            gateways = [
                r["NextHop"]
                for r in subnets[0].get("Routes") or []
                if r.get("DestinationPrefix") == "0.0.0.0/0"
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
                raise self._hns_refuse(
                    p, f"winnode's networks have one subnet, this request has {len(subnets)}"
                )
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
            raise self._hns_refuse(p, str(exc)) from None
        if gateway_ip not in subnet:
            raise self._hns_refuse(p, f"gateway {gateway} is outside {prefix}")
        type_ = A.HnsNetworkType(str(body["Type"]))
        if type_ is A.HnsNetworkType.OVERLAY and vsid is None:
            raise self._hns_refuse(p, "an Overlay network needs a VSID")
        reported: str | None = None
        if adapter is not None:
            match = [
                a
                for a in self.adapters
                if adapter.casefold() in (a.casefold(), self.adapter_description(a).casefold())
            ]
            if not match:
                raise self._hns_refuse(p, f"no network adapter {adapter!r} on this host")
            # HNS reports the adapter a network is bound to by its InterfaceDescription.
            reported = self.adapter_description(match[0])
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

    async def _do_hns_network_ensure(self, p: A.HnsNetworkEnsureParams) -> A.HnsNetworkEnsureResult:
        self._require_hns()
        if p.adapter_name is not None and p.adapter_name.casefold() not in (
            a.casefold() for a in self.adapters
        ):
            # hns_network_ensure.ps1 looks the adapter up by name before sending anything.
            raise ActionFailed(
                f"HNS network {p.name}: no network adapter is named '{p.adapter_name}' (Get-NetAdapter); set "
                f"spec.adapterName of the WindowsNetwork to one of: {', '.join(self.adapters)}."
            )
        if p.type == A.HnsNetworkType.OVERLAY and p.vsid is None:
            raise ActionFailed(f"HNS network {p.name}: an Overlay network needs a VSID (VXLAN network id).")
        existing = self.hns_networks.get(p.name)
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
                    in (p.adapter_name.casefold(), self.adapter_description(p.adapter_name).casefold())
                )
                and (p.vxlan_port is None or existing.vxlan_port == p.vxlan_port)
            )
            if same:
                return A.HnsNetworkEnsureResult(id=existing.id, created=False, changed=False)
            # HNS networks cannot be modified in place: the script removes and re-creates it, and
            # with it go its policies (routes to peers) and endpoints (every pod's, the gateway's).
            del self.hns_networks[p.name]
        desired = self._decode_hns_request(p)
        desired.id = str(uuid.uuid4()).upper()
        self.hns_networks[desired.name] = desired
        return A.HnsNetworkEnsureResult(id=desired.id, created=existing is None, changed=True)

    async def _do_hns_network_remove(self, p: A.HnsNetworkRemoveParams) -> A.RemovedResult:
        self._require_hns()
        return A.RemovedResult(removed=self.hns_networks.pop(p.name, None) is not None)

    async def _do_hns_network_query(self, p: A.HnsNetworkQueryParams) -> A.HnsNetworkQueryResult:
        self._require_hns()
        found = {
            name: self.hns_networks[name].info()
            if name in self.hns_networks
            else A.HnsNetworkInfo(exists=False)
            for name in p.names
        }
        return A.HnsNetworkQueryResult(networks=found)

    def _overlay_identity(self, network: HnsNetwork) -> None:
        """The DR MAC and provider address HNS gives an Overlay network (emulated: from the host's
        first address, as 0E-2A-<address bytes>); the operator reads them, it never derives them."""
        if network.type != A.HnsNetworkType.OVERLAY or network.policies_of("DrMacAddress"):
            return
        provider = self.addresses[0] if self.addresses else "0.0.0.0"
        octets = ipaddress.IPv4Address(provider).packed
        mac = "0E-2A-" + "-".join(f"{b:02X}" for b in octets)
        network.policies.append({"Type": "DrMacAddress", "Settings": {"Address": mac}})
        network.policies.append({"Type": "ProviderAddress", "Settings": {"ProviderAddress": provider}})

    def _check_hns_call(self, kind: str, request: dict[str, Any], call: str) -> None:
        """Refuse, as HNS would, a request hcsshim's types at this host's version do not decode. The
        requests are the ones hns_routes_sync.ps1 builds from the same parameters."""
        if self.hns_checker is None:
            raise ActionFailed("the emulated HNS has no request checker: it cannot tell what HNS would do")
        refusal = self.hns_checker(kind, json.dumps(request), self.hns_api_version())
        if refusal is not None:
            raise ActionFailed(f"{call} failed with HRESULT 0x80070057: {refusal}")

    async def _do_hns_routes_sync(self, p: A.HnsRoutesSyncParams) -> A.HnsRoutesSyncResult:
        self._require_hns()
        network = self.hns_networks.get(p.network)
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
            self._overlay_identity(network)
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
                    self._check_hns_call(
                        "hns-v2-modify", request, f"HcnModifyNetwork({p.network}, {request_type} policies)"
                    )
            network.policies = kept + fresh
            mac = network.policies_of("DrMacAddress")[0]["Address"]
            provider = network.policies_of("ProviderAddress")[0]["ProviderAddress"]
            return A.HnsRoutesSyncResult(
                added=added, removed=removed, distributed_router_mac=mac, provider_address=provider
            )
        if p.bridge_endpoint_ip is None:
            raise ActionFailed(
                f"HNS network {p.network} is an L2Bridge network: the host endpoint IP is missing"
            )
        ip = ipaddress.IPv4Address(p.bridge_endpoint_ip)
        if ip not in ipaddress.IPv4Network(network.address_prefix) or str(ip) == network.gateway:
            raise ActionFailed(
                f"HNS failed with error : The parameter is incorrect. (endpoint {ip} on network "
                f"{network.address_prefix} with gateway {network.gateway})"
            )
        if str(ip) not in network.endpoints:
            endpoint = {"Name": f"{p.network}_host", "VirtualNetwork": network.id, "IPAddress": str(ip)}
            self._check_hns_call("hns-v1-endpoint", endpoint, "HNS POST /endpoints/")
            attach = {"SystemType": "Host", "CompartmentId": 1}
            self._check_hns_call("hns-v1-attach", attach, "HNS POST /endpoints/<id>/attach")
            network.endpoints[str(ip)] = {"name": f"{p.network}_host", "host_attached": True}
            added.append(f"host endpoint {ip}")
        for alias in (f"vEthernet ({p.network}_host)", "external"):
            if alias not in self.forwarding:
                self.forwarding.add(alias)
                added.append(f"forwarding on {alias}")
        want_routes = {r.destination_prefix: r.next_hop for r in p.net_routes}
        for prefix, hop in list(self.net_routes.items()):
            if want_routes.get(prefix) == hop:
                del want_routes[prefix]
            elif managed(prefix):
                del self.net_routes[prefix]
                removed.append(f"route {prefix}")
        for prefix in sorted(want_routes):
            self.net_routes[prefix] = want_routes[prefix]
            added.append(f"route {prefix} via {want_routes[prefix]}")
        return A.HnsRoutesSyncResult(added=added, removed=removed)

    async def _do_firewall_rule_ensure(self, p: A.FirewallRuleEnsureParams) -> A.ChangedResult:
        desired = FirewallRule(
            name=p.name,
            display_name=p.display_name,
            protocol=p.protocol,
            local_port=p.local_port,
            direction=p.direction,
        )
        if self.firewall_rules.get(p.name) == desired:
            return A.ChangedResult(changed=False)
        self.firewall_rules[p.name] = desired
        return A.ChangedResult(changed=True)

    async def _do_firewall_rule_remove(self, p: A.FirewallRuleRemoveParams) -> A.RemovedResult:
        return A.RemovedResult(removed=self.firewall_rules.pop(p.name, None) is not None)

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

    async def _do_defender_exclusions_ensure(
        self, p: A.DefenderExclusionsEnsureParams
    ) -> A.DefenderExclusionsResult:
        if not self.defender_running:
            return A.DefenderExclusionsResult(defender_running=False, changed=False, excluded=[])
        changed = False
        for process in p.processes:
            has = any(e.casefold() == process.casefold() for e in self.defender_exclusions)
            if p.present and not has:
                self.defender_exclusions.append(process)
                changed = True
            elif not p.present and has:
                self.defender_exclusions = [
                    e for e in self.defender_exclusions if e.casefold() != process.casefold()
                ]
                changed = True
        excluded = [
            x for x in p.processes if any(e.casefold() == x.casefold() for e in self.defender_exclusions)
        ]
        return A.DefenderExclusionsResult(defender_running=True, changed=changed, excluded=excluded)

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


def _corrupt(data: bytes) -> bytes:
    if not data:
        return b"\x00"
    middle = len(data) // 2
    return data[:middle] + bytes([data[middle] ^ 0xFF]) + data[middle + 1 :]


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
