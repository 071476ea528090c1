"""Emulated Windows hosts for tests and demos: real WS-Management over HTTP(S) on loopback addresses.

    from winnode.testing.emulator import EmulatorServer, HostSpec

    with EmulatorServer(strict=True) as server:
        host = server.add_host(HostSpec(hostname="win-01", os_build=20348, username="Administrator", password="..."))
        # pywinrm (or the operator) talks to host.endpoint, e.g. http://127.0.0.2:41234/wsman
        ...
        server.assert_no_leaked_shells()

One `EmulatorServer` runs its own asyncio loop in a background thread and holds any number of
hosts; each host listens on its own loopback address (127.0.0.2, 127.0.0.3, ...), so the operator
addresses them the way it addresses real machines. Behind each listener a `HostModel` executes the
action named in every script it receives and answers the `##RESULT##` line a real host prints.
`host.faults` injects failures at runtime; `host.requests` and `host.actions` record what happened.
When `winnode.testing.kubelet` is importable, starting the `kubelet` service on a host starts an
emulated kubelet that joins the cluster named in its bootstrap kubeconfig.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import concurrent.futures
import contextlib
import dataclasses
import errno
import importlib
import ipaddress
import logging
import ntpath
import re
import secrets
import shutil
import socket
import ssl
import tempfile
import threading
import time
from collections.abc import Callable, Coroutine, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType, TracebackType
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from winnode.host.actions import ServiceState
from winnode.host.protocol import (
    BOOTSTRAP,
    HEADER_PREFIX,
    SECRETS_MARKER,
    ProtocolError,
    format_result,
    parse_header,
    split_stdin,
)
from winnode.testing.artifacts import parse_fake_binary
from winnode.testing.hostmodel import (
    GIB,
    ActionFailed,
    Faults,
    HostModel,
    ScriptOutcome,
    ServiceRecord,
    new_host_model,
    release_for,
    split_command_line,
)
from winnode.testing.nodenet import NodeNetwork
from winnode.testing.winauth import (
    AUTH_MODES,
    DEFAULT_AUTH_MODES,
    AuthConfig,
    CertificateAuthority,
    IssuedCert,
)
from winnode.testing.wsman import Command, RecordedRequest, Shell, WinRMListener, WSManService

if TYPE_CHECKING:
    from winnode.testing.kubelet.light import LightKubelets
    from winnode.testing.kubeproxy import KubeProxyHook

__all__ = [
    "PRESETS",
    "EmulatedHost",
    "EmulatorServer",
    "ExecutedAction",
    "Faults",
    "HostModel",
    "HostSpec",
    "IssuedCert",
    "KubeletHook",
    "LightKubeletHook",
    "RecordedRequest",
    "bootstrap_command",
    "parse_kubelet_flags",
    "parse_powershell_args",
    "run_script_with_pywinrm",
]

log = logging.getLogger(__name__)
T = TypeVar("T")

DEFAULT_BASE_ADDRESS = "127.0.0.2"
KUBELET_SERVICE = "kubelet"
KUBE_PROXY_SERVICE = "kube-proxy"
KUBELET_MODULE = "winnode.testing.kubelet"


# --- host specification --------------------------------------------------------------------------


@dataclass(frozen=True)
class HostSpec:
    """What an emulated host looks like. Leave hostname/password unset to have them generated."""

    hostname: str | None = None
    os_build: int = 20348
    os_ubr: int | None = None
    os_caption: str | None = None
    edition: str = "ServerDatacenter"
    username: str = "Administrator"
    password: str | None = None
    auth_modes: tuple[str, ...] = DEFAULT_AUTH_MODES
    https: bool = False
    port: int = 0  # 0 = ephemeral
    address: str | None = None  # a fixed loopback address instead of the next free one
    features: Mapping[str, bool] = field(default_factory=lambda: {"Containers": True})
    containerd_installed: bool = True
    containerd_running: bool = True
    containerd_version: str = "2.1.4"
    # How containerd was installed and configured: a testing.containerd.PRESETS name.
    containerd_layout: str = "microsoft"
    free_disk_bytes: int = 100 * GIB
    addresses: tuple[str, ...] = ()  # the host's IP addresses (default: its loopback address)
    adapters: tuple[str, ...] = ("Ethernet",)
    # Addresses per adapter, as Get-NetIPAddress shows them; "{address}" stands for the host's loopback
    # listener address. Default (no `addresses` given): the listener address and an IPv6 one on the first
    # adapter, and a Hyper-V NAT switch (vEthernet (nat)) as a Windows container host has.
    adapter_addresses: Mapping[str, tuple[str, ...]] | None = None
    default_route_adapter: str | None = None  # holds the IPv4 default route (default: the first adapter)
    client_ca_pem: str | None = None  # CA trusted for certificate auth (default: the emulator's CA)
    # UPN or subject CN of a client certificate -> local user (default: <username>@localhost).
    client_cert_users: Mapping[str, str] | None = None
    max_envelope_size_kb: int = 500  # winrm/config MaxEnvelopeSizekb
    max_shells_per_user: int = 30  # winrm/config/winrs MaxShellsPerUser
    reboot_downtime_s: float = 1.0  # how long a rebooting host refuses connections
    strict: bool | None = None  # default: the server's setting
    # Kerberos (auth mode "kerberos"): the keytab of HTTP/<kerberos host name> and the principals
    # (user@REALM) that are administrators of this host, as domain accounts in its Administrators group.
    kerberos_keytab: str | None = None
    kerberos_principals: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        unknown = set(self.auth_modes) - set(AUTH_MODES)
        if unknown:
            raise ValueError(f"unknown auth modes {sorted(unknown)}; known: {', '.join(AUTH_MODES)}")
        if not self.auth_modes:
            raise ValueError("a host needs at least one auth mode")
        if tuple(self.auth_modes) == ("certificate",) and not self.https:
            raise ValueError("certificate authentication needs https=True")
        if "kerberos" in self.auth_modes and not self.kerberos_keytab:
            raise ValueError("auth mode kerberos needs kerberos_keytab (the listener's HTTP/ key)")

    @classmethod
    def server2019(cls, **overrides: Any) -> HostSpec:
        return cls(**{"os_build": 17763, **overrides})

    @classmethod
    def server2022(cls, **overrides: Any) -> HostSpec:
        return cls(**{"os_build": 20348, **overrides})

    @classmethod
    def server2025(cls, **overrides: Any) -> HostSpec:
        return cls(**{"os_build": 26100, **overrides})

    @classmethod
    def two_nics(cls, **overrides: Any) -> HostSpec:
        """Windows Server 2022 with a management NIC (WinRM) and a second NIC holding the default route,
        so the node's IP is not the address winnode connects to."""
        return cls(
            **{
                "os_build": 20348,
                "adapters": ("Ethernet", "Ethernet 2", "vEthernet (nat)"),
                "adapter_addresses": {
                    "Ethernet": ("{address}", "fe80::15:5dff:fe00:101"),
                    "Ethernet 2": ("192.168.50.21", "2001:db8:50::21", "fe80::15:5dff:fe00:102"),
                    "vEthernet (nat)": ("172.29.16.1",),
                },
                "default_route_adapter": "Ethernet 2",
                **overrides,
            }
        )

    @property
    def max_envelope_size(self) -> int:
        return self.max_envelope_size_kb * 1024


PRESETS: dict[str, Callable[..., HostSpec]] = {
    "2019": HostSpec.server2019,
    "2022": HostSpec.server2022,
    "2025": HostSpec.server2025,
    "2022-two-nics": HostSpec.two_nics,
}


@dataclass(frozen=True)
class ExecutedAction:
    """One script an emulated host executed (secret parameters redacted)."""

    at: float
    action: str | None
    params: dict[str, Any] | None
    ok: bool
    exit_code: int
    user: str
    result: dict[str, Any]

    @property
    def error(self) -> str | None:
        error = self.result.get("error")
        return str(error) if error is not None else None


# --- loopback addresses ----------------------------------------------------------------------------

_addresses_lock = threading.Lock()
_addresses_in_use: set[str] = set()
MAX_BIND_ATTEMPTS = 4096


def _candidate_addresses(base: str) -> Iterable[str]:
    start = int(ipaddress.IPv4Address(base))
    last = int(ipaddress.IPv4Address("127.255.255.254"))
    for value in range(start, last + 1):
        address = ipaddress.IPv4Address(value)
        octet = value & 0xFF
        if str(address) == "127.0.0.1" or octet in (0, 255):
            continue
        yield str(address)


def _bind(address: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((address, port))
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


def _allocate(base: str, port: int, fixed: str | None) -> tuple[str, socket.socket]:
    """Reserve a loopback address (unique in this process) and bind the port on it."""
    if fixed is not None:
        if not ipaddress.IPv4Address(fixed).is_loopback:
            raise ValueError(f"emulated hosts listen on loopback addresses only, not {fixed}")
        with _addresses_lock:
            if fixed in _addresses_in_use:
                raise ValueError(f"address {fixed} is already used by another emulated host")
            sock = _bind(fixed, port)
            _addresses_in_use.add(fixed)
            return fixed, sock
    attempts = 0
    for address in _candidate_addresses(base):
        with _addresses_lock:
            if address in _addresses_in_use:
                continue
            attempts += 1
            try:
                sock = _bind(address, port)
            except OSError as exc:
                # Taken by another test session, or not a usable address here: try the next one.
                if exc.errno not in (errno.EADDRINUSE, errno.EADDRNOTAVAIL, errno.EACCES):
                    raise
                if attempts >= MAX_BIND_ATTEMPTS:
                    break
                continue
            _addresses_in_use.add(address)
            return address, sock
    raise OSError(f"no free loopback address from {base} for port {port} after {attempts} attempts")


def _release(address: str) -> None:
    with _addresses_lock:
        _addresses_in_use.discard(address)


# --- command interpretation ----------------------------------------------------------------------

_STDIN_READER = re.compile(
    r"\[(?:System\.)?Console\]::In\b|\$input\b|OpenStandardInput|\bReadToEnd\s*\(", re.IGNORECASE
)
_VALUE_OPTIONS = (
    "executionpolicy",
    "inputformat",
    "outputformat",
    "windowstyle",
    "version",
    "configurationname",
    "psconsolefile",
)
_VALUE_ALIASES = {"ep", "ex", "if", "of", "w", "v"}


@dataclass(frozen=True)
class PowerShellInvocation:
    inline: str | None  # script text given on the command line
    reads_stdin: bool  # whether that text (or `-Command -`) reads the script from stdin

    @property
    def splits_secrets(self) -> bool:
        """Whether the inline text is a bootstrap that cuts a secret section off stdin before it
        compiles the rest (host/protocol.py); any other reader compiles all of stdin."""
        return self.inline is not None and self.reads_stdin and SECRETS_MARKER in self.inline


def parse_powershell_args(args: list[str]) -> PowerShellInvocation:
    """What powershell.exe would run for these arguments (the subset winnode and pywinrm use)."""
    i = 0
    while i < len(args):
        arg = args[i]
        if not arg or arg[0] not in "-/":
            return PowerShellInvocation(inline=" ".join(args[i:]), reads_stdin=False)
        name = arg[1:].lower()
        if name in ("e", "ec") or (len(name) >= 2 and "encodedcommand".startswith(name)):
            if i + 1 >= len(args):
                return PowerShellInvocation(inline=None, reads_stdin=False)
            try:
                text = base64.b64decode(args[i + 1], validate=True).decode("utf-16-le")
            except (binascii.Error, UnicodeDecodeError):
                return PowerShellInvocation(inline=None, reads_stdin=False)
            return PowerShellInvocation(inline=text, reads_stdin=bool(_STDIN_READER.search(text)))
        if name == "c" or (len(name) >= 2 and "command".startswith(name)):
            rest = " ".join(args[i + 1 :])
            if rest.strip() == "-":
                return PowerShellInvocation(inline=None, reads_stdin=True)
            return PowerShellInvocation(inline=rest, reads_stdin=bool(_STDIN_READER.search(rest)))
        if name == "f" or (len(name) >= 2 and "file".startswith(name)):
            value = args[i + 1] if i + 1 < len(args) else ""
            return PowerShellInvocation(inline=None, reads_stdin=value == "-")
        if name in _VALUE_ALIASES or (len(name) >= 2 and any(o.startswith(name) for o in _VALUE_OPTIONS)):
            i += 2
            continue
        i += 1
    return PowerShellInvocation(inline=None, reads_stdin=False)


def _is_script(text: str | None) -> bool:
    return text is not None and text.lstrip("\ufeff").startswith(HEADER_PREFIX)


def _program(args: list[str]) -> str:
    return ntpath.basename(args[0]).lower().removesuffix(".exe") if args else ""


NOT_RECOGNIZED = (
    "'{0}' is not recognized as an internal or external command,\r\noperable program or batch file.\r\n"
)


class _HostRunner:
    """What commands do on an emulated host: winnode scripts run on the model, plus a few cmd.exe builtins."""

    def __init__(self, host: EmulatedHost) -> None:
        self.host = host

    def peek_action(self, command: Command) -> str | None:
        args = split_command_line(command.command_line)
        if _program(args) not in ("powershell", "pwsh"):
            return None
        invocation = parse_powershell_args(args[1:])
        text = invocation.inline if _is_script(invocation.inline) else None
        if text is None and invocation.reads_stdin and command.stdin:
            first, newline, _ = bytes(command.stdin[:65536]).partition(b"\n")
            text = command.shell.decode(first) if newline or command.stdin_closed else None
        if not _is_script(text):
            return None
        try:
            return parse_header(text or "")[0]
        except ProtocolError:
            return None

    async def run(self, shell: Shell, command: Command) -> None:
        faults = self.host.faults
        await self.host._unstalled.wait()
        forced = faults.take_exit_code()
        args = split_command_line(command.command_line)
        await self._dispatch(shell, command, args, forced, depth=0)

    def _emit(
        self, shell: Shell, command: Command, stdout: str = "", stderr: str = "", code: int = 0
    ) -> None:
        command.write("stdout", shell.encode(stdout))
        command.write("stderr", shell.encode(stderr))
        command.finish(code)

    async def _dispatch(
        self, shell: Shell, command: Command, args: list[str], forced: int | None, depth: int
    ) -> None:
        program = _program(args)
        if program in ("powershell", "pwsh"):
            await self._powershell(shell, command, args[1:], forced)
            return
        if forced is not None:
            self._emit(shell, command, stderr=f"injected failure (exit code {forced})\r\n", code=forced)
            return
        if program == "cmd" and not command.skip_cmd_shell and depth < 4:
            rest = args[1:]
            if rest and rest[0].lower() in ("/c", "/k", "/s"):
                inner = command.command_line.split(rest[0], 1)[1].strip()
                await self._dispatch(shell, command, split_command_line(inner), None, depth + 1)
                return
            await self._interactive_cmd(shell, command)
            return
        out, err, code = self._builtin(shell, command, args)
        if code is None:
            stdin_text = shell.decode(await command.read_stdin())
            out, err, code = stdin_text.replace("\r\n", "\n").replace("\n", "\r\n"), "", 0
        self._emit(shell, command, out, err, code)

    def _builtin(self, shell: Shell, command: Command, args: list[str]) -> tuple[str, str, int | None]:
        """(stdout, stderr, exit code) of a cmd.exe builtin; exit code None means `more` (echo stdin)."""
        program = _program(args)
        model = self.host.model
        line = command.command_line.strip()
        if program == "echo":
            text = (
                line[len(args[0]) :].lstrip(" ")
                if line.lower().startswith(args[0].lower())
                else " ".join(args[1:])
            )
            return (text or "ECHO is on.") + "\r\n", "", 0
        if program == "hostname":
            return model.hostname + "\r\n", "", 0
        if program == "whoami":
            return f"{model.hostname.lower()}\\{shell.owner.lower()}\r\n", "", 0
        if program == "ver":
            return f"\r\nMicrosoft Windows [Version 10.0.{model.os_build}.{model.os_ubr}]\r\n", "", 0
        if program == "exit":
            codes = [a for a in args[1:] if a.lower() != "/b"]
            try:
                return "", "", int(codes[0]) if codes else 0
            except ValueError:
                return "", "", 0
        if program == "type" and len(args) > 1:
            try:
                entry = model.file(args[1])
            except Exception:
                entry = None
            if entry is None:
                return "", "The system cannot find the file specified.\r\n", 1
            return entry.text, "", 0
        if program == "more":
            return "", "", None
        return "", NOT_RECOGNIZED.format(args[0] if args else ""), 1

    async def _interactive_cmd(self, shell: Shell, command: Command) -> None:
        text = shell.decode(await command.read_stdin())
        out: list[str] = []
        err: list[str] = []
        code = 0
        for raw in text.splitlines():
            line = raw.strip()
            if not line:
                continue
            for part in (p.strip() for p in line.split("&&")):
                args = split_command_line(part)
                if _program(args) == "exit":
                    _, _, exit_code = self._builtin(shell, _line_command(command, part), args)
                    self._emit(shell, command, "".join(out), "".join(err), exit_code or 0)
                    return
                o, e, c = self._builtin(shell, _line_command(command, part), args)
                out.append(o)
                err.append(e)
                code = c or 0
        self._emit(shell, command, "".join(out), "".join(err), code)

    async def _powershell(self, shell: Shell, command: Command, args: list[str], forced: int | None) -> None:
        host = self.host
        invocation = parse_powershell_args(args)
        script = invocation.inline
        secrets: dict[str, str] | None = None
        if invocation.inline is not None:
            host.log_script_block(invocation.inline)
        if not _is_script(script) and invocation.reads_stdin:
            script = shell.decode(await command.read_stdin())
            if invocation.splits_secrets:
                try:
                    script, secrets = split_stdin(script)
                except ProtocolError as exc:
                    # The bootstrap would hand the prelude a section it cannot decode.
                    message = f"the emulated host {host.hostname} could not read the secrets: {exc}"
                    self._emit(shell, command, format_result({"ok": False, "error": message}) + "\r\n", "", 1)
                    return
            host.log_script_block(script)
        if script is None or not _is_script(script):
            if forced is not None:
                self._emit(shell, command, stderr=f"injected failure (exit code {forced})\r\n", code=forced)
            elif host.strict:
                message = (
                    f"the emulated host {host.hostname} runs only winnode scripts (first line "
                    f"'{HEADER_PREFIX.strip()} {{...}}'); got {command.command_line[:80]!r}"
                    + (" with a script on stdin that has no such header" if script else "")
                )
                self._emit(
                    shell,
                    command,
                    format_result({"ok": False, "error": message}) + "\r\n",
                    message + "\r\n",
                    1,
                )
            else:
                self._emit(shell, command)
            return
        outcome = await host.model.run_script(script, forced_exit_code=forced, secrets=secrets)
        host._record_action(outcome, shell.owner)
        if outcome.mutating and host.faults.reboot_mid_step:
            host.faults.reboot_mid_step = False
            log.info("%s: injected reboot in the middle of %s", host.hostname, outcome.action)
            host._crash_and_reboot()
            return
        if outcome.action == "hns_network_ensure" and outcome.exit_code == 0 and host.faults.hns_network_blip:
            host.faults.hns_network_blip = False
            log.info("%s: injected network blip after creating an HNS network", host.hostname)
            host._drop_connections()
            return
        if host.faults.drop_mid_command:
            host.faults.drop_mid_command = False
            log.info("%s: injected connection loss after %s ran", host.hostname, outcome.action)
            # Cut while the client's Receive is in flight (bounded wait for it), so the answer is lost
            # with the connection; the output stays with the command, as on a host.
            for _ in range(500):
                if command.receiving:
                    break
                await asyncio.sleep(0.01)
            host._drop_connections()
            self._emit(shell, command, outcome.stdout, outcome.stderr, outcome.exit_code)
            return
        self._emit(shell, command, outcome.stdout, outcome.stderr, outcome.exit_code)


def _line_command(command: Command, line: str) -> Command:
    return Command(id=command.id, shell=command.shell, command=line, arguments=[])


# --- the emulated kubelet hook ---------------------------------------------------------------------


def kubelet_module() -> ModuleType | None:
    """`winnode.testing.kubelet` if it is part of this build."""
    try:
        return importlib.import_module(KUBELET_MODULE)
    except ModuleNotFoundError as exc:
        if exc.name == KUBELET_MODULE:
            return None
        raise


def parse_kubelet_flags(args: Iterable[str]) -> dict[str, str]:
    """`--name=value` and `--name value` flags of a kubelet command line (bare flags map to "true")."""
    flags: dict[str, str] = {}
    items = list(args)
    i = 0
    while i < len(items):
        arg = items[i]
        if arg.startswith("--"):
            name, sep, value = arg[2:].partition("=")
            if not sep:
                if i + 1 < len(items) and not items[i + 1].startswith("--"):
                    value = items[i + 1]
                    i += 1
                else:
                    value = "true"
            flags[name] = value
        i += 1
    return flags


def _parse_labels(value: str) -> dict[str, str]:
    labels: dict[str, str] = {}
    for item in value.split(","):
        key, sep, val = item.strip().partition("=")
        if key:
            labels[key] = val if sep else ""
    return labels


def _config_taints(model: HostModel, path: str | None) -> list[str]:
    if not path:
        return []
    entry = model.file(path)
    if entry is None:
        return []
    import yaml

    try:
        config = yaml.safe_load(entry.text) or {}
    except yaml.YAMLError:
        return []
    taints: list[str] = []
    for taint in config.get("registerWithTaints") or [] if isinstance(config, dict) else []:
        if isinstance(taint, dict) and taint.get("key") and taint.get("effect"):
            value = taint.get("value")
            taints.append(
                f"{taint['key']}={value}:{taint['effect']}" if value else f"{taint['key']}:{taint['effect']}"
            )
    return taints


class KubeletHook:
    """Starts an EmulatedKubelet when the host's kubelet service starts, and stops it with the service."""

    START_GRACE_S: ClassVar[float] = 5.0  # how long service start waits for the kubelet to come up
    STOP_TIMEOUT_S: ClassVar[float] = 30.0

    def __init__(self, host: EmulatedHost, module: ModuleType) -> None:
        self.host = host
        self.module = module
        self.kubelet: Any = None
        self._starting: asyncio.Task[Any] | None = None

    def kubeconfig_text(self, model: HostModel, flags: Mapping[str, str]) -> str:
        bootstrap_path = flags.get("bootstrap-kubeconfig")
        if not bootstrap_path:
            raise RuntimeError("kubelet has no --bootstrap-kubeconfig")
        bootstrap = model.file(bootstrap_path)
        own_kubeconfig = self.host.state_dir / "kubelet" / "kubelet.conf"
        if bootstrap is not None:
            return bootstrap.text
        if own_kubeconfig.is_file():
            # A kubelet whose own kubeconfig holds a client certificate does not read the bootstrap
            # one (pkg/kubelet/certificate/bootstrap/bootstrap.go LoadClientCert); winnode removes
            # it once the node has joined. A certificate that is no longer valid fails the start.
            return own_kubeconfig.read_text(encoding="utf-8")
        raise RuntimeError(f"bootstrap kubeconfig {bootstrap_path} does not exist")

    def heartbeat_s(self) -> float | None:
        """How often the kubelet renews its Lease; None: the kubelet's own default."""
        return self.host.server.kubelet_heartbeat_s

    def new_kubelet(self, config: Any) -> Any:
        return self.module.EmulatedKubelet(config)

    def config_for(self, model: HostModel, service: ServiceRecord) -> Any:
        program = service.program
        flags = parse_kubelet_flags(program[1:])
        kubeconfig_text = self.kubeconfig_text(model, flags)
        exe = model.file(program[0]) if program else None
        info = parse_fake_binary(exe.content) if exe is not None else None
        if info is None:
            raise RuntimeError(f"{program[:1]} is not a winnode fake binary: cannot tell the kubelet version")
        taints = [t for t in flags.get("register-with-taints", "").split(",") if t.strip()]
        for taint in _config_taints(model, flags.get("config")):
            if taint not in taints:
                taints.append(taint)
        state_dir = self.host.state_dir / "kubelet"
        state_dir.mkdir(parents=True, exist_ok=True)
        # The fault only when injected: a stand-in kubelet module need not know the field.
        fault = {"never_ready": True} if info.version in self.host.kubelet_never_ready else {}
        heartbeat = self.heartbeat_s()
        # Only when set, as the fault: a stand-in kubelet module need not know the field.
        timing = {"heartbeat_interval_s": heartbeat} if heartbeat is not None else {}
        return self.module.KubeletConfig(
            node_name=(flags.get("hostname-override") or model.hostname).lower(),
            bootstrap_kubeconfig=kubeconfig_text,
            kubelet_version=info.version,
            os_build=model.os_build,
            os_image=model.product_name,
            # The kubelet reports one InternalIP: --node-ip, else the address of the default-route
            # interface (as the kubelet picks it when the flag is absent).
            addresses=[flags["node-ip"]]
            if flags.get("node-ip")
            else [a for a in [model.default_route_ipv4()] if a] or model.all_addresses(),
            labels=_parse_labels(flags.get("node-labels", "")),
            taints=taints,
            state_dir=state_dir,
            network_error=lambda: self.host.model.cni_network_error(),
            log_line=lambda line: model.append_service_log(service, line),
            **self._server_settings(model),
            **fault,
            **timing,
        )

    def _server_settings(self, model: HostModel) -> dict[str, Any]:
        """On a node address kube-apiserver reaches (a node network), the kubelet serves its HTTPS
        endpoint there, with the node log query reading the host's files."""
        network, address = self.host.server.node_network, self.host.node_address
        if network is None or address is None:
            return {}

        def read_file(path: str) -> bytes | None:
            try:
                entry = model.file(path)
            except ActionFailed:
                return None
            return None if entry is None else entry.content

        return {"read_file": read_file, "listen": network.listen}

    async def on_start(self, model: HostModel, service: ServiceRecord) -> None:
        kubelet = self.new_kubelet(self.config_for(model, service))
        task: asyncio.Task[Any] = asyncio.ensure_future(kubelet.start())
        self.kubelet, self._starting = kubelet, task
        done, _ = await asyncio.wait({task}, timeout=self.START_GRACE_S)
        if task in done:
            self._starting = None
            task.result()
            return

        # Still starting (waiting for its CSR to be approved, say): the service runs meanwhile,
        # and a later failure is a crash of the service process.
        def crashed(t: asyncio.Task[Any]) -> None:
            if t.cancelled() or t.exception() is None:
                return
            log.warning("%s: emulated kubelet failed: %s", model.hostname, t.exception())
            record = model.service(service.name)
            if record is not None and self.kubelet is kubelet:
                record.state = ServiceState.STOPPED
                self.kubelet = None

        task.add_done_callback(crashed)

    async def on_stop(self, model: HostModel, service: ServiceRecord) -> None:
        kubelet, task = self.kubelet, self._starting
        self.kubelet = self._starting = None
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
        if kubelet is not None:
            await asyncio.wait_for(kubelet.stop(), self.STOP_TIMEOUT_S)


class LightKubeletHook(KubeletHook):
    """Starts a light kubelet (testing.kubelet.light) instead, for benchmarks of many hosts.

    The light kubelet needs no credentials of its own, so once winnode has removed the bootstrap
    kubeconfig (the node joined) a restart reads the one it was first started with, as a real
    kubelet reads its own kubeconfig then."""

    def __init__(self, host: EmulatedHost, module: ModuleType, hub: LightKubelets) -> None:
        super().__init__(host, module)
        self.hub = hub
        self._joined_with: str | None = None

    def kubeconfig_text(self, model: HostModel, flags: Mapping[str, str]) -> str:
        try:
            text = super().kubeconfig_text(model, flags)
        except RuntimeError:
            if self._joined_with is None:
                raise
            return self._joined_with
        self._joined_with = text
        return text

    def heartbeat_s(self) -> float | None:
        return self.hub.renew_s

    def new_kubelet(self, config: Any) -> Any:
        return self.hub.kubelet(config)


# --- one host ------------------------------------------------------------------------------------

MAX_RECORDS = 100_000  # per host; a long-running demo keeps the most recent half once reached


def _trim(records: list[Any]) -> None:
    if len(records) > MAX_RECORDS:
        del records[: len(records) // 2]


class EmulatedHost:
    """One emulated Windows host: its listener, its model, its faults and what it recorded."""

    NAT_SWITCH = "vEthernet (nat)"

    NODE_NIC = "Ethernet 2"

    def _adapter_addresses(self, spec: HostSpec) -> dict[str, list[str]]:
        if spec.adapter_addresses is not None:
            return {
                name: [a.replace("{address}", self.address) for a in addrs]
                for name, addrs in spec.adapter_addresses.items()
            }
        if spec.addresses:
            return {}
        octet = self.address.rsplit(".", 1)[-1]
        node_nic = {self.NODE_NIC: [self.node_address]} if self.node_address else {}
        return {
            spec.adapters[0]: [self.address, f"2001:db8:10::{octet}", f"fe80::15:5dff:fe00:{octet}"],
            **node_nic,
            self.NAT_SWITCH: ["172.29.16.1"],
        }

    def _adapters(self, spec: HostSpec) -> list[str]:
        names = list(spec.adapters)
        if self.node_address and self.NODE_NIC not in names:
            names.insert(1, self.NODE_NIC)
        if spec.adapter_addresses is None and not spec.addresses and self.NAT_SWITCH not in names:
            names.append(self.NAT_SWITCH)
        return names

    def __init__(self, server: EmulatorServer, spec: HostSpec, hostname: str, password: str) -> None:
        self.server = server
        self.spec = spec
        self.hostname = hostname
        self.username = spec.username
        self.password = password
        self.strict = server.strict if spec.strict is None else spec.strict
        self.faults = Faults()
        self.requests: list[RecordedRequest] = []
        self.actions: list[ExecutedAction] = []
        # What PowerShell script-block logging (event 4104, Microsoft-Windows-PowerShell/Operational)
        # would record: the text of every script block compiled, i.e. the command-line text and each
        # script the bootstrap compiles from stdin. Data a script reads is not compiled, not logged.
        self.script_block_log: list[str] = []
        self.address = ""
        # The node NIC's address in the server's node network, if it has one.
        self.node_address: str | None = None
        self.port = 0
        self.scheme = "https" if spec.https else "http"
        self.ca_pem: str | None = server.ca.cert_pem if spec.https else None
        self.state_dir = server.state_dir / "hosts" / hostname
        self.model: HostModel
        self.kubelet_hook: KubeletHook | None = None
        self.kube_proxy_hook: KubeProxyHook | None = None
        # Fault: a kubelet.exe of one of these versions starts but never reports Ready.
        self.kubelet_never_ready: set[str] = set()
        self._sock: socket.socket | None = None
        self._listener: WinRMListener | None = None
        self._service: WSManService | None = None
        self._down = False
        self._stopped = False
        self._reboot_task: asyncio.Task[None] | None = None
        self._server_cert: IssuedCert | None = None
        self._unstalled = asyncio.Event()  # set while commands may run (cleared by the stall fault)

    def __repr__(self) -> str:
        return f"<EmulatedHost {self.hostname} {self.endpoint}>"

    # --- public view --------------------------------------------------------------------

    @property
    def endpoint(self) -> str:
        return f"{self.scheme}://{self.address}:{self.port}/wsman"

    @property
    def credentials_secret_name(self) -> str:
        """The name a Secret holding this host's WinRM credentials gets (`winnode emulator` prints it)."""
        return f"{self.hostname}-winrm"

    @property
    def kubelet(self) -> Any:
        """The running EmulatedKubelet, if the kubelet service is up and the module is available."""
        return self.kubelet_hook.kubelet if self.kubelet_hook else None

    @property
    def connections_accepted(self) -> int:
        """TCP connections the host's WinRM listener accepted since it started."""
        return self.server.call(lambda: self._listener.accepted if self._listener else 0)

    @property
    def open_shells(self) -> int:
        return self.server.call(lambda: len(self._service.shells) if self._service else 0)

    @property
    def up(self) -> bool:
        return (
            not self._down and not self._stopped and self._listener is not None and self._listener.listening
        )

    def issue_client_cert(self, upn: str | None = None) -> IssuedCert:
        """A client certificate this host maps to its user (by default `<username>@localhost`)."""
        return self.server.ca.issue_client_cert(upn or f"{self.username}@localhost")

    def call(self, fn: Callable[[HostModel], T]) -> T:
        """Run `fn(model)` on the emulator's loop (the model is not thread-safe)."""
        return self.server.call(lambda: fn(self.model))

    def actions_named(self, action: str) -> list[ExecutedAction]:
        return [a for a in list(self.actions) if a.action == action]

    def reboot(self, downtime_s: float | None = None, *, wait: bool = True) -> None:
        """Reboot now: connections drop, shells vanish, Automatic services come back after the downtime."""
        self.server.run(self._reboot_now(downtime_s, wait=wait))

    def clear_records(self) -> None:
        self.requests.clear()
        self.actions.clear()

    # --- loop side ----------------------------------------------------------------------

    def _auth_config(self) -> AuthConfig:
        users = dict(self.spec.client_cert_users or {f"{self.username}@localhost": self.username})
        return AuthConfig(
            hostname=self.hostname,
            modes=frozenset(self.spec.auth_modes),
            passwords={self.username.casefold(): self.password},
            cert_users={k.casefold(): v for k, v in users.items()},
            server_cert_der=self._server_cert.der if self._server_cert else None,
            names={self.username.casefold(): self.username},
            keytab=self.spec.kerberos_keytab,
            kerberos_users={p.casefold(): self.username for p in self.spec.kerberos_principals},
        )

    def _ssl_context(self) -> ssl.SSLContext:
        self._server_cert = self.server.ca.issue_server_cert([self.hostname], [self.address])
        cert_path, key_path = self._server_cert.write(self.state_dir / "tls", "server")
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert_path, key_path)
        if "certificate" in self.spec.auth_modes:
            context.verify_mode = ssl.CERT_OPTIONAL
            context.load_verify_locations(cadata=self.spec.client_ca_pem or self.server.ca.cert_pem)
        return context

    async def _start(self) -> None:
        spec = self.spec
        self.address, sock = await asyncio.to_thread(
            _allocate, self.server.base_address, spec.port, spec.address
        )
        self._sock = sock
        self.port = sock.getsockname()[1]
        network = self.server.node_network
        if network is not None and spec.adapter_addresses is None and not spec.addresses:
            self.node_address = await asyncio.to_thread(network.allocate)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.model = new_host_model(
            self.hostname,
            os_build=spec.os_build,
            features=dict(spec.features),
            containerd_installed=spec.containerd_installed,
            containerd_running=spec.containerd_running,
            containerd_version=spec.containerd_version,
            containerd_layout=spec.containerd_layout,
            free_disk_bytes=spec.free_disk_bytes,
            addresses=list(spec.addresses) or [self.address],
            strict=self.strict,
            faults=self.faults,
            adapters=self._adapters(spec),
            adapter_addresses=self._adapter_addresses(spec),
            default_route_adapter=spec.default_route_adapter
            or (self.NODE_NIC if self.node_address else None),
            edition=spec.edition,
        )
        release = release_for(spec.os_build)
        self.model.os_ubr = spec.os_ubr or release.ubr
        if spec.os_caption:
            self.model.os_caption = spec.os_caption
        self.model.on_reboot_requested = self._schedule_reboot
        module = kubelet_module()
        light = self.server.light_kubelets
        if module is not None:
            self.kubelet_hook = (
                KubeletHook(self, module) if light is None else LightKubeletHook(self, module, light)
            )
            self.model.service_hooks[KUBELET_SERVICE] = self.kubelet_hook
        if light is None:
            # A light host's kube-proxy service runs and does nothing: its two watches per host are
            # what a light host leaves out (kubelet.light.LEFT_OUT).
            from winnode.testing.kubeproxy import KubeProxyHook

            self.kube_proxy_hook = KubeProxyHook()
            self.model.service_hooks[KUBE_PROXY_SERVICE] = self.kube_proxy_hook
        self._service = WSManService(
            machine=self.hostname,
            runner=_HostRunner(self),
            max_shells_per_user=spec.max_shells_per_user,
            endpoint=self.endpoint,
        )
        self._listener = WinRMListener(
            service=self._service,
            auth_config=self._auth_config,
            faults=self.faults,
            max_envelope_size=spec.max_envelope_size,
            record=self._record_request,
            ssl_context=self._ssl_context() if spec.https else None,
        )
        loop = asyncio.get_running_loop()

        def on_fault_change(name: str) -> None:
            if not loop.is_closed():
                loop.call_soon_threadsafe(self._apply_faults, name)

        self.faults.subscribe(on_fault_change)
        self._apply_faults("stall")
        await self._listen()

    async def _listen(self) -> None:
        if self._listener is None or self._listener.listening or self._stopped:
            return
        if self._sock is None:
            try:
                self._sock = _bind(self.address, self.port)
            except OSError as exc:
                log.error("%s: cannot re-bind %s:%s: %s", self.hostname, self.address, self.port, exc)
                return
        sock, self._sock = self._sock, None
        await self._listener.listen(sock)

    def _refuse(self) -> None:
        """Close the listener but keep the port bound, so connection attempts are refused, not hijacked."""
        if self._listener is None:
            return
        was_listening = self._listener.listening
        self._listener.close_listener()
        self._listener.drop_connections()
        if was_listening and self._sock is None:
            try:
                self._sock = _bind(self.address, self.port)
            except OSError as exc:
                log.warning(
                    "%s: could not keep %s:%s reserved: %s", self.hostname, self.address, self.port, exc
                )

    def _apply_faults(self, name: str) -> None:
        if name == "stall":
            if self.faults.stall:
                self._unstalled.clear()
            else:
                self._unstalled.set()
            return
        if name != "refuse_connections" or self._stopped:
            return
        if self.faults.refuse_connections:
            self._refuse()
        elif not self._down:
            asyncio.get_running_loop().create_task(self._listen())

    def _record_request(self, request: RecordedRequest) -> None:
        self.requests.append(request)
        _trim(self.requests)

    def log_script_block(self, text: str) -> None:
        _trim(self.script_block_log)
        self.script_block_log.append(text)

    def _record_action(self, outcome: ScriptOutcome, user: str) -> None:
        _trim(self.actions)
        self.actions.append(
            ExecutedAction(
                at=time.time(),
                action=outcome.action,
                params=outcome.params,
                ok=outcome.ok,
                exit_code=outcome.exit_code,
                user=user,
                result=outcome.result,
            )
        )

    def _schedule_reboot(self, delay_s: float) -> None:
        loop = asyncio.get_running_loop()
        loop.call_later(delay_s, lambda: self._start_reboot(None))

    def _go_down(self) -> None:
        self._down = True
        self._refuse()
        if self._service is not None:
            self._service.close_all()

    def _start_reboot(self, downtime_s: float | None) -> asyncio.Task[None] | None:
        if self._stopped or (self._reboot_task is not None and not self._reboot_task.done()):
            return self._reboot_task
        self._go_down()
        self._reboot_task = asyncio.get_running_loop().create_task(self._reboot(downtime_s))
        return self._reboot_task

    def _drop_connections(self) -> None:
        """Every open connection is cut; the listener keeps accepting new ones."""
        if self._listener is not None:
            self._listener.drop_connections()

    def _crash_and_reboot(self) -> None:
        self._start_reboot(None)

    async def _reboot_now(self, downtime_s: float | None, *, wait: bool) -> None:
        task = self._start_reboot(downtime_s)
        if wait and task is not None:
            await asyncio.shield(task)

    async def _reboot(self, downtime_s: float | None) -> None:
        try:
            await self.model.shutdown()
            await asyncio.sleep(self.spec.reboot_downtime_s if downtime_s is None else downtime_s)
            await self.model.boot()
        finally:
            self._down = False
            if not self.faults.refuse_connections and not self._stopped:
                await self._listen()

    async def _stop(self) -> None:
        self._stopped = True
        if self._reboot_task is not None and not self._reboot_task.done():
            self._reboot_task.cancel()
            with contextlib.suppress(BaseException):
                await self._reboot_task
        if self._listener is not None:
            await self._listener.stop()
        if self._service is not None:
            self._service.close_all()
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        if hasattr(self, "model"):
            try:
                await asyncio.wait_for(self.model.shutdown(), KubeletHook.STOP_TIMEOUT_S + 5)
            except Exception:
                log.exception("%s: shutting the model down failed", self.hostname)
        _release(self.address)


# --- the server ------------------------------------------------------------------------------------


class EmulatorServer:
    """Many emulated hosts in one process, served from one asyncio loop in a background thread."""

    START_TIMEOUT_S: ClassVar[float] = 10.0
    CALL_TIMEOUT_S: ClassVar[float] = 120.0
    STOP_TIMEOUT_S: ClassVar[float] = 60.0

    def __init__(
        self,
        *,
        strict: bool = True,
        base_address: str = DEFAULT_BASE_ADDRESS,
        state_dir: Path | None = None,
        ca: CertificateAuthority | None = None,
        node_network: NodeNetwork | None = None,
        kubelet_heartbeat_s: float | None = None,
        light_kubelets: LightKubelets | None = None,
    ) -> None:
        """`kubelet_heartbeat_s`: how often emulated kubelets renew their Lease (None: their default, 2 s;
        benchmarks use kubelet's own timeouts.KUBELET_LEASE_RENEW). `light_kubelets`: hosts run light
        kubelets of this hub and no emulated kube-proxy (benchmarks of many hosts; see
        testing.kubelet.light); the hub is closed with the server."""
        if not ipaddress.IPv4Address(base_address).is_loopback:
            raise ValueError(f"base address must be a loopback address, not {base_address}")
        self.strict = strict
        self.base_address = base_address
        self._own_state_dir = state_dir is None
        self.state_dir = (
            Path(tempfile.mkdtemp(prefix="winnode-emulator-")) if state_dir is None else state_dir
        )
        self.ca = ca or CertificateAuthority()
        # When given, every host gets a second NIC there holding the default route: its node address,
        # where its kubelet serves and kube-apiserver can reach it (testing.nodenet).
        self.node_network = node_network
        self.kubelet_heartbeat_s = kubelet_heartbeat_s
        self.light_kubelets = light_kubelets
        self._hosts: dict[str, EmulatedHost] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._counter = 0

    # --- lifecycle ----------------------------------------------------------------------

    @property
    def ca_pem(self) -> str:
        return self.ca.cert_pem

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            raise RuntimeError("EmulatorServer is not started")
        return self._loop

    def start(self) -> EmulatorServer:
        if self._loop is not None:
            return self
        loop = asyncio.new_event_loop()
        ready = threading.Event()

        def run() -> None:
            asyncio.set_event_loop(loop)
            loop.call_soon(ready.set)
            loop.run_forever()

        self._loop = loop
        self._thread = threading.Thread(target=run, name="winnode-emulator", daemon=True)
        self._thread.start()
        if not ready.wait(self.START_TIMEOUT_S):
            raise RuntimeError("the emulator loop did not start")
        return self

    def stop(self) -> None:
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        try:
            self.run(self._shutdown(), timeout=self.STOP_TIMEOUT_S)
        finally:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(self.STOP_TIMEOUT_S)
            if not thread.is_alive():
                loop.close()
            self._loop = self._thread = None
            if self._own_state_dir:
                shutil.rmtree(self.state_dir, ignore_errors=True)

    async def _shutdown(self) -> None:
        hosts = list(self._hosts.values())
        self._hosts.clear()
        await asyncio.gather(*(h._stop() for h in hosts), return_exceptions=True)
        if self.light_kubelets is not None:
            await self.light_kubelets.close()
        current = asyncio.current_task()
        pending = [t for t in asyncio.all_tasks() if t is not current]
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending, timeout=5.0)

    def __enter__(self) -> EmulatorServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # --- running things on the loop -------------------------------------------------------

    def _check_thread(self) -> None:
        if threading.current_thread() is self._thread:
            raise RuntimeError(
                "this blocking call would deadlock on the emulator's own loop; use the *_async variant"
            )

    def run(self, coro: Coroutine[Any, Any, T], *, timeout: float | None = None) -> T:
        """Run a coroutine on the emulator's loop and wait for it (bounded)."""
        self._check_thread()
        future = asyncio.run_coroutine_threadsafe(coro, self.loop)
        try:
            return future.result(self.CALL_TIMEOUT_S if timeout is None else timeout)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise TimeoutError("the emulator did not answer in time") from None

    def call(self, fn: Callable[[], T]) -> T:
        """Run a plain function on the emulator's loop (where models and shells may be touched safely)."""
        if threading.current_thread() is self._thread:
            return fn()

        async def wrapper() -> T:
            return fn()

        return self.run(wrapper())

    async def _on_loop(self, coro: Coroutine[Any, Any, T]) -> T:
        """Await `coro` on the emulator's loop from any other loop."""
        if asyncio.get_running_loop() is self.loop:
            return await coro
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro, self.loop))

    # --- hosts ----------------------------------------------------------------------------

    @property
    def hosts(self) -> list[EmulatedHost]:
        return list(self._hosts.values())

    def host(self, hostname: str) -> EmulatedHost:
        try:
            return self._hosts[hostname.casefold()]
        except KeyError:
            raise KeyError(f"no emulated host named {hostname!r}") from None

    def _prepare(self, spec: HostSpec | None, overrides: Mapping[str, Any]) -> EmulatedHost:
        spec = dataclasses.replace(spec or HostSpec(), **overrides)
        self._counter += 1
        hostname = spec.hostname or f"win-{self._counter:03d}"
        if hostname.casefold() in self._hosts:
            raise ValueError(f"an emulated host named {hostname!r} already exists")
        password = spec.password or secrets.token_urlsafe(12) + "aA1!"
        host = EmulatedHost(self, spec, hostname, password)
        self._hosts[hostname.casefold()] = host
        return host

    async def _start_host(self, host: EmulatedHost) -> EmulatedHost:
        try:
            await host._start()
        except BaseException:
            self._hosts.pop(host.hostname.casefold(), None)
            if host.address:
                _release(host.address)
            raise
        return host

    def add_host(self, spec: HostSpec | None = None, **overrides: Any) -> EmulatedHost:
        """Start a host (spec fields can be overridden by keyword) and return it once it listens."""
        host = self.call(lambda: self._prepare(spec, overrides))
        return self.run(self._start_host(host))

    async def add_host_async(self, spec: HostSpec | None = None, **overrides: Any) -> EmulatedHost:
        host = await self._on_loop(_as_coro(lambda: self._prepare(spec, overrides)))
        return await self._on_loop(self._start_host(host))

    def add_hosts(
        self, count: int, spec: HostSpec | None = None, *, prefix: str = "win-"
    ) -> list[EmulatedHost]:
        """Start `count` hosts named `<prefix>001`, `<prefix>002`, ... concurrently."""

        async def start_all() -> list[EmulatedHost]:
            hosts = [
                self._prepare(spec, {"hostname": f"{prefix}{self._counter + 1:03d}"}) for _ in range(count)
            ]
            return list(await asyncio.gather(*(self._start_host(h) for h in hosts)))

        return self.run(start_all())

    async def _remove(self, host: EmulatedHost) -> None:
        self._hosts.pop(host.hostname.casefold(), None)
        await host._stop()

    def remove_host(self, host: EmulatedHost | str) -> None:
        target = self.host(host) if isinstance(host, str) else host
        self.run(self._remove(target))

    async def remove_host_async(self, host: EmulatedHost | str) -> None:
        target = self.host(host) if isinstance(host, str) else host
        await self._on_loop(self._remove(target))

    def issue_client_cert(self, upn: str) -> IssuedCert:
        return self.ca.issue_client_cert(upn)

    def leaked_shells(self) -> dict[str, list[str]]:
        """Open shells per host: hostname -> shell descriptions."""

        def collect() -> dict[str, list[str]]:
            leaks: dict[str, list[str]] = {}
            for host in self._hosts.values():
                service = host._service
                if service and service.shells:
                    leaks[host.hostname] = [
                        f"{s.id} (owner {s.owner}, commands: "
                        + (", ".join(c.command_line[:60] for c in s.commands.values()) or "none")
                        + ")"
                        for s in service.shells.values()
                    ]
            return leaks

        return self.call(collect)

    def assert_no_leaked_shells(self) -> None:
        leaks = self.leaked_shells()
        if leaks:
            detail = "; ".join(f"{name}: {', '.join(shells)}" for name, shells in sorted(leaks.items()))
            raise AssertionError(
                f"shells left open on emulated hosts (every shell must be deleted): {detail}"
            )


async def _as_coro(fn: Callable[[], T]) -> T:
    return fn()


# --- a minimal client, for exercising hosts without the operator's transport -----------------------

STDIN_CHUNK = 64 * 1024


def bootstrap_command() -> str:
    """The short command line that makes powershell.exe read the real script (and its secret
    section) from stdin: the protocol's bootstrap, which is part of the wire contract."""
    encoded = base64.b64encode(BOOTSTRAP.encode("utf-16-le")).decode()
    return f"powershell -NoProfile -NonInteractive -ExecutionPolicy Bypass -EncodedCommand {encoded}"


def run_script_with_pywinrm(
    protocol: Any, script: str | bytes, *, chunk_size: int = STDIN_CHUNK
) -> tuple[str, str, int]:
    """Run a script through a `winrm.Protocol` the way winnode does: UTF-8 shell, bootstrap, script on stdin.

        `script` is text, or the exact stdin bytes (a script with its secret section, as
    `RenderedScript.stdin`). Returns (stdout, stderr, exit code); the shell is always deleted.
    """
    shell_id = protocol.open_shell(codepage=65001)
    try:
        command_id = protocol.run_command(shell_id, bootstrap_command())
        try:
            data = script if isinstance(script, bytes) else script.encode("utf-8")
            chunks = [data[i : i + chunk_size] for i in range(0, len(data), chunk_size)] or [b""]
            for index, chunk in enumerate(chunks):
                protocol.send_command_input(shell_id, command_id, chunk, end=index == len(chunks) - 1)
            stdout, stderr, code = protocol.get_command_output(shell_id, command_id)
        finally:
            protocol.cleanup_command(shell_id, command_id)
    finally:
        protocol.close_shell(shell_id, close_session=False)
    return stdout.decode("utf-8"), stderr.decode("utf-8"), int(code)
