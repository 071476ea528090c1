"""The WS-Management side of an emulated host: remote shells over SOAP, served on HTTP(S) at /wsman.

`WSManService` keeps the shells and commands of one host and answers the WinRS operations
(Create, Command, Send, Receive, Signal, Delete) with the envelopes and faults Windows sends,
including the w:TimedOut fault (WSManFault 2150858793) when a Receive outlasts its OperationTimeout,
and the "shell not found" fault (2150858843). `WinRMListener` is the HTTP/1.1 server in front of it:
keep-alive connections (NTLM authenticates a connection), message encryption, MaxEnvelopeSize.
What a command *does* is up to a `CommandRunner` (the emulator's host glue).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import socket
import ssl
import time
import uuid
import xml.etree.ElementTree as ET
from base64 import b64decode, b64encode
from binascii import Error as BinasciiError
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import ClassVar, Protocol
from xml.sax.saxutils import escape, quoteattr

from winnode.testing.hostmodel import Faults
from winnode.testing.winauth import (
    NO_CREDENTIALS,
    AuthConfig,
    AuthDecision,
    ConnectionAuth,
    EncryptionError,
    is_encrypted,
)

log = logging.getLogger(__name__)

NS = {
    "s": "http://www.w3.org/2003/05/soap-envelope",
    "a": "http://schemas.xmlsoap.org/ws/2004/08/addressing",
    "x": "http://schemas.xmlsoap.org/ws/2004/09/transfer",
    "w": "http://schemas.dmtf.org/wbem/wsman/1/wsman.xsd",
    "rsp": "http://schemas.microsoft.com/wbem/wsman/1/windows/shell",
    "p": "http://schemas.microsoft.com/wbem/wsman/1/wsman.xsd",
    "f": "http://schemas.microsoft.com/wbem/wsman/1/wsmanfault",
}
SHELL_NS = NS["rsp"]
CMD_SHELL_URI = "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/cmd"
ANONYMOUS = "http://schemas.xmlsoap.org/ws/2004/08/addressing/role/anonymous"
FAULT_ACTION = "http://schemas.dmtf.org/wbem/wsman/1/wsman/fault"

ACTION_CREATE = "http://schemas.xmlsoap.org/ws/2004/09/transfer/Create"
ACTION_DELETE = "http://schemas.xmlsoap.org/ws/2004/09/transfer/Delete"
ACTION_COMMAND = f"{SHELL_NS}/Command"
ACTION_SEND = f"{SHELL_NS}/Send"
ACTION_RECEIVE = f"{SHELL_NS}/Receive"
ACTION_SIGNAL = f"{SHELL_NS}/Signal"
ENUMERATION_NS = "http://schemas.xmlsoap.org/ws/2004/09/enumeration"
ACTION_ENUMERATE = f"{ENUMERATION_NS}/Enumerate"
ACTION_PULL = f"{ENUMERATION_NS}/Pull"
# Enumerating this URI lists every shell of the user, whatever its kind (winrm enumerate windows/shell).
SHELL_URI = "http://schemas.microsoft.com/wbem/wsman/1/windows/shell"
OPERATIONS = {
    ACTION_CREATE: "Create",
    ACTION_DELETE: "Delete",
    ACTION_COMMAND: "Command",
    ACTION_SEND: "Send",
    ACTION_RECEIVE: "Receive",
    ACTION_SIGNAL: "Signal",
    ACTION_ENUMERATE: "Enumerate",
    ACTION_PULL: "Pull",
}
SIGNAL_TERMINATE = f"{SHELL_NS}/signal/terminate"
SIGNAL_CTRL_C = f"{SHELL_NS}/signal/ctrl_c"
SIGNAL_CTRL_BREAK = f"{SHELL_NS}/signal/ctrl_break"
STATE_RUNNING = f"{SHELL_NS}/CommandState/Running"
STATE_DONE = f"{SHELL_NS}/CommandState/Done"

# WSManFault codes Windows uses (ERROR_WSMAN_* in winerror.h).
CODE_TIMED_OUT = 2150858793
CODE_SHELL_NOT_FOUND = 2150858843
CODE_QUOTA_MAX_SHELLS = 2150859173
CODE_RESOURCE_NOT_FOUND = 2150858752
CODE_ACTION_NOT_SUPPORTED = 2150858771
CODE_SCHEMA_VALIDATION = 2150858817
CODE_INVALID_HEADER = 2150858767
CODE_FILENAME_TOO_LONG = 206  # ERROR_FILENAME_EXCED_RANGE from CreateProcess

CMD_LINE_LIMIT = 8191  # cmd.exe
CREATE_PROCESS_LIMIT = 32767
STATUS_CONTROL_C_EXIT = -1073741510
DEFAULT_OPERATION_TIMEOUT_S = 60.0
MAX_OPERATION_TIMEOUT_S = 600.0
RESPONSE_OVERHEAD = 4096  # bytes of envelope around a Receive's streams

_TIMED_OUT_TEXT = (
    "The WS-Management service cannot complete the operation within the time specified in OperationTimeout.  "
)


class WSManFault(Exception):
    """A SOAP fault the service answers with (HTTP 500 unless said otherwise)."""

    def __init__(
        self,
        *,
        code: str,
        subcode: str | None,
        reason: str,
        wsman_code: int | None,
        message: str | None = None,
        status: int = 500,
    ) -> None:
        super().__init__(reason)
        self.code = code
        self.subcode = subcode
        self.reason = reason
        self.wsman_code = wsman_code
        self.message = message or reason
        self.status = status


def timed_out_fault() -> WSManFault:
    return WSManFault(
        code="s:Receiver", subcode="w:TimedOut", reason=_TIMED_OUT_TEXT, wsman_code=CODE_TIMED_OUT
    )


def shell_not_found_fault(shell_id: str) -> WSManFault:
    return WSManFault(
        code="s:Sender",
        subcode="w:InvalidSelectors",
        reason=(
            f"The request for the Windows Remote Shell with ShellId {shell_id} failed because the shell was not found "
            "on the server. Possible causes are: the specified ShellId is incorrect or the shell no longer exists on "
            "the server. Provide the correct ShellId or create a new shell and retry the operation. "
        ),
        wsman_code=CODE_SHELL_NOT_FOUND,
    )


def command_not_found_fault(shell_id: str, command_id: str) -> WSManFault:
    fault = shell_not_found_fault(shell_id)
    fault.reason = fault.message = (
        f"The request for the Windows Remote Shell with ShellId {shell_id} failed because the command with "
        f"CommandId {command_id} was not found in the shell. Provide the correct CommandId or run a new command. "
    )
    return fault


def resource_not_found_fault(resource_uri: str) -> WSManFault:
    return WSManFault(
        code="s:Sender",
        subcode="w:DestinationUnreachable",
        reason=(
            "The WS-Management service cannot process the request. The resource URI "
            f"({resource_uri}) was not found in the WS-Management catalog."
        ),
        wsman_code=CODE_RESOURCE_NOT_FOUND,
    )


def quota_fault(limit: int) -> WSManFault:
    return WSManFault(
        code="s:Sender",
        subcode="w:QuotaLimit",
        reason=(
            "The WS-Management service cannot process the request. The maximum number of concurrent shells for this "
            "user has been exceeded. Close existing shells or raise the quota for this user. "
        ),
        message=(
            f"The WS-Management service cannot process the request. This user is allowed a maximum number of {limit} "
            "concurrent shells, which has been exceeded. Close existing shells or raise the quota for this user. "
        ),
        wsman_code=CODE_QUOTA_MAX_SHELLS,
    )


def schema_fault(detail: str) -> WSManFault:
    return WSManFault(
        code="s:Sender",
        subcode="w:SchemaValidationError",
        reason=f"The SOAP XML in the message does not match the corresponding XML schema definition. {detail}",
        wsman_code=CODE_SCHEMA_VALIDATION,
    )


# --- shells and commands -----------------------------------------------------------------------


@dataclass(eq=False)
class Command:
    id: str
    shell: Shell
    command: str
    arguments: list[str]
    skip_cmd_shell: bool = False
    console_mode_stdin: bool = True
    stdin: bytearray = field(default_factory=bytearray)
    stdin_closed: bool = False
    stdout: bytearray = field(default_factory=bytearray)
    stderr: bytearray = field(default_factory=bytearray)
    exit_code: int | None = None
    done_reported: bool = False
    task: asyncio.Task[None] | None = None
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    stdin_changed: asyncio.Event = field(default_factory=asyncio.Event)
    started_at: float = field(default_factory=time.time)
    # Receive requests waiting for this command's output right now.
    receiving: int = 0

    @property
    def command_line(self) -> str:
        return " ".join([self.command, *self.arguments]) if self.arguments else self.command

    @property
    def done(self) -> bool:
        return self.exit_code is not None

    def write(self, stream: str, data: bytes) -> None:
        if self.done or not data:
            return
        (self.stdout if stream == "stdout" else self.stderr).extend(data)
        self.changed.set()

    def finish(self, exit_code: int) -> None:
        if self.done:
            return
        self.exit_code = exit_code
        self.changed.set()

    def feed(self, data: bytes, *, end: bool) -> None:
        if self.stdin_closed:
            return
        self.stdin.extend(data)
        self.stdin_closed = end
        self.stdin_changed.set()

    async def read_stdin(self) -> bytes:
        """All of stdin, once the client has sent its last chunk (End="true")."""
        while not self.stdin_closed:
            self.stdin_changed.clear()
            await self.stdin_changed.wait()
        return bytes(self.stdin)

    def cancel(self) -> None:
        if self.task is not None and not self.task.done():
            self.task.cancel()
        # Wake a Receive waiting on this command so it notices the command is gone.
        self.changed.set()


@dataclass(eq=False)
class Shell:
    id: str
    owner: str
    codepage: int = 437
    noprofile: bool = False
    working_directory: str | None = None
    environment: dict[str, str] = field(default_factory=dict)
    input_streams: str = "stdin"
    output_streams: str = "stdout stderr"
    client_ip: str = ""
    name: str | None = None  # the optional Name attribute of rsp:Shell at Create (MS-WSMV 2.2.4.37)
    created_at: float = field(default_factory=time.time)
    last_used: float = field(default_factory=time.time)
    commands: dict[str, Command] = field(default_factory=dict)

    @property
    def encoding(self) -> str:
        return {65001: "utf-8", 1200: "utf-16-le"}.get(self.codepage, f"cp{self.codepage}")

    def decode(self, data: bytes) -> str:
        try:
            return data.decode(self.encoding).lstrip("\ufeff")
        except (LookupError, UnicodeDecodeError):
            return data.decode("utf-8", errors="replace").lstrip("\ufeff")

    def encode(self, text: str) -> bytes:
        try:
            return text.encode(self.encoding, errors="replace")
        except LookupError:
            return text.encode("utf-8", errors="replace")


class CommandRunner(Protocol):
    """Makes a command do something: reads `command.stdin`, writes output, calls `command.finish`."""

    async def run(self, shell: Shell, command: Command) -> None: ...

    def peek_action(self, command: Command) -> str | None:
        """The winnode action a command carries, if it can be told yet (for request records)."""
        ...


@dataclass(frozen=True)
class RecordedRequest:
    """One HTTP request to an emulated host, as the emulator saw it."""

    at: float
    operation: str  # Create, Command, Send, Receive, Signal, Delete; or Auth / Probe / Rejected / TooLarge
    user: str | None
    status: int
    shell_id: str | None = None
    command_id: str | None = None
    command_line: str | None = None
    action: str | None = None  # the winnode action a Command/Send carried
    fault_code: int | None = None
    encrypted: bool = False


@dataclass
class _Request:
    action: str
    message_id: str
    resource_uri: str
    selectors: dict[str, str]
    options: dict[str, str]
    operation_timeout_s: float
    max_envelope_size: int
    body: ET.Element


@dataclass
class Outcome:
    status: int
    envelope: bytes
    record: RecordedRequest


def _text(element: ET.Element | None) -> str:
    return (element.text or "").strip() if element is not None else ""


_DURATION = re.compile(
    r"^P(?:(?P<d>\d+)D)?(?:T(?:(?P<h>\d+)H)?(?:(?P<m>\d+)M)?(?:(?P<s>\d+(?:\.\d+)?)S)?)?$", re.IGNORECASE
)


def parse_duration(value: str) -> float | None:
    """Seconds of an xs:duration like PT20S or PT1M30.5S; None if it is not one."""
    match = _DURATION.match(value.strip())
    if not match or value.strip().upper() in ("P", "PT"):
        return None
    d, h, m, s = (match.group(g) for g in "dhms")
    return int(d or 0) * 86400 + int(h or 0) * 3600 + int(m or 0) * 60 + float(s or 0)


def _duration(seconds: float) -> str:
    """xs:duration the way WinRM writes ShellRunTime: P0DT0H1M5S."""
    total = max(0, int(seconds))
    days, rest = divmod(total, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    return f"P{days}DT{hours}H{minutes}M{secs}S"


def _max_elements(request: ET.Element, ns: dict[str, str]) -> int:
    raw = _text(request.find("w:MaxElements", ns)) or _text(request.find("n:MaxElements", ns))
    try:
        return max(1, int(raw)) if raw else 1
    except ValueError:
        return 1


def _new_id() -> str:
    return str(uuid.uuid4()).upper()


class WSManService:
    """The shells and commands of one host, and the envelopes it answers."""

    def __init__(
        self,
        *,
        machine: str,
        runner: CommandRunner,
        max_shells_per_user: int = 30,
        max_operation_timeout_s: float = MAX_OPERATION_TIMEOUT_S,
        endpoint: str = "",
    ) -> None:
        self.machine = machine
        self.runner = runner
        self.max_shells_per_user = max_shells_per_user
        self.max_operation_timeout_s = max_operation_timeout_s
        self.endpoint = endpoint
        self.shells: dict[str, Shell] = {}
        # Open enumerations (context -> shell ids still to hand out), bounded like WinRM's own.
        self._enumerations: dict[str, list[str]] = {}

    # --- lifecycle ------------------------------------------------------------------------

    def close_all(self) -> None:
        """Drop every shell and kill every command (the host went down)."""
        for shell in list(self.shells.values()):
            for command in shell.commands.values():
                command.cancel()
        self.shells.clear()

    # --- dispatch -------------------------------------------------------------------------

    async def dispatch(
        self, envelope: bytes, user: str, *, client_ip: str = "", encrypted: bool = False
    ) -> Outcome:
        started = time.time()
        operation = "Unknown"
        shell_id: str | None = None
        message_id = ""
        try:
            request = self._parse(envelope)
            message_id = request.message_id
            operation = OPERATIONS.get(request.action, request.action.rsplit("/", 1)[-1] or "Unknown")
            shell_id = request.selectors.get("ShellId")
            body, info = await self._handle(request, user, client_ip)
            record = RecordedRequest(
                at=started,
                operation=operation,
                user=user,
                status=200,
                shell_id=info.get("shell_id", shell_id),
                command_id=info.get("command_id"),
                command_line=info.get("command_line"),
                action=info.get("action"),
                encrypted=encrypted,
            )
            return Outcome(200, self._envelope(request, OPERATIONS_RESPONSE[request.action], body), record)
        except WSManFault as fault:
            record = RecordedRequest(
                at=started,
                operation=operation,
                user=user,
                status=fault.status,
                shell_id=shell_id,
                fault_code=fault.wsman_code,
                encrypted=encrypted,
            )
            return Outcome(fault.status, self._fault_envelope(fault, message_id), record)

    def _parse(self, envelope: bytes) -> _Request:
        try:
            # The emulator listens on loopback for tests; expat does not resolve external entities.
            root = ET.fromstring(envelope)  # noqa: S314
        except ET.ParseError as exc:
            raise schema_fault(f"The XML is not well formed: {exc}") from None
        header = root.find("s:Header", NS)
        body = root.find("s:Body", NS)
        if root.tag != f"{{{NS['s']}}}Envelope" or header is None or body is None:
            raise schema_fault("The message is not a SOAP 1.2 envelope with a header and a body.")
        selectors = {
            s.get("Name", ""): _text(s)
            for s in header.findall("w:SelectorSet/w:Selector", NS)
            if s.get("Name")
        }
        options = {
            o.get("Name", ""): _text(o) for o in header.findall("w:OptionSet/w:Option", NS) if o.get("Name")
        }
        raw_timeout = _text(header.find("w:OperationTimeout", NS))
        timeout = parse_duration(raw_timeout) if raw_timeout else DEFAULT_OPERATION_TIMEOUT_S
        if timeout is None:
            raise WSManFault(
                code="s:Sender",
                subcode="a:InvalidMessageInformationHeader",
                reason=(
                    "The WS-Management service cannot process the request. The XML contains an invalid timeout "
                    f"field in the SOAP header: {raw_timeout}. "
                ),
                wsman_code=CODE_INVALID_HEADER,
            )
        try:
            max_env = int(_text(header.find("w:MaxEnvelopeSize", NS)) or 153600)
        except ValueError:
            max_env = 153600
        return _Request(
            action=_text(header.find("a:Action", NS)),
            message_id=_text(header.find("a:MessageID", NS)),
            resource_uri=_text(header.find("w:ResourceURI", NS)),
            selectors=selectors,
            options=options,
            operation_timeout_s=min(max(timeout, 0.0), self.max_operation_timeout_s),
            max_envelope_size=max(max_env, 8192),
            body=body,
        )

    async def _handle(self, req: _Request, user: str, client_ip: str) -> tuple[str, dict[str, str]]:
        if req.action not in OPERATIONS:
            raise WSManFault(
                code="s:Sender",
                subcode="a:ActionNotSupported",
                reason="The WS-Management service does not support the specified action.",
                wsman_code=CODE_ACTION_NOT_SUPPORTED,
            )
        if req.action in (ACTION_ENUMERATE, ACTION_PULL):
            return self._enumerate(req, user)
        if req.resource_uri.casefold() != CMD_SHELL_URI.casefold():
            raise resource_not_found_fault(req.resource_uri)
        if req.action == ACTION_CREATE:
            return self._create(req, user, client_ip)
        shell = self._shell(req, user)
        if req.action == ACTION_DELETE:
            for command in shell.commands.values():
                command.cancel()
            del self.shells[shell.id]
            return "", {"shell_id": shell.id}
        if req.action == ACTION_COMMAND:
            return self._command(req, shell)
        if req.action == ACTION_SEND:
            return self._send(req, shell)
        if req.action == ACTION_RECEIVE:
            return await self._receive(req, shell)
        return self._signal(req, shell)

    def _shell(self, req: _Request, user: str) -> Shell:
        shell_id = req.selectors.get("ShellId", "")
        shell = self.shells.get(shell_id.upper())
        # Windows hides other users' shells: to them the shell does not exist.
        if shell is None or shell.owner != user:
            raise shell_not_found_fault(shell_id)
        shell.last_used = time.time()
        return shell

    _MAX_ENUMERATIONS = 64

    def _enumerate(self, req: _Request, user: str) -> tuple[str, dict[str, str]]:
        """WS-Enumeration over the user's shells: Enumerate (optimized: the first items at once), Pull."""
        if req.resource_uri.casefold() not in (SHELL_URI.casefold(), CMD_SHELL_URI.casefold()):
            raise resource_not_found_fault(req.resource_uri)
        ns = {"n": ENUMERATION_NS, **NS}
        if req.action == ACTION_ENUMERATE:
            request = req.body.find("n:Enumerate", ns)
            if request is None:
                raise schema_fault("The Enumerate body has no n:Enumerate element.")
            pending = [
                s.id for s in sorted(self.shells.values(), key=lambda s: s.created_at) if s.owner == user
            ]
            optimized = request.find("w:OptimizeEnumeration", ns) is not None
            context = _new_id()
            if len(self._enumerations) >= self._MAX_ENUMERATIONS:
                self._enumerations.pop(next(iter(self._enumerations)))
            self._enumerations[context] = pending
            if not optimized:
                return (
                    f"<n:EnumerateResponse xmlns:n={quoteattr(ENUMERATION_NS)}><n:EnumerationContext>uuid:{context}</n:EnumerationContext></n:EnumerateResponse>",
                    {},
                )
            items, done = self._take(context, _max_elements(request, ns))
            end = (
                "<w:EndOfSequence/>"
                if done
                else f"<n:EnumerationContext>uuid:{context}</n:EnumerationContext>"
            )
            return (
                f"<n:EnumerateResponse xmlns:n={quoteattr(ENUMERATION_NS)}>{end}<w:Items>{items}</w:Items></n:EnumerateResponse>",
                {},
            )
        request = req.body.find("n:Pull", ns)
        raw = _text(request.find("n:EnumerationContext", ns)) if request is not None else ""
        context = raw.removeprefix("uuid:")
        if request is None or context not in self._enumerations:
            raise WSManFault(
                code="s:Sender",
                subcode="n:InvalidEnumerationContext",
                reason="The supplied enumeration context is invalid.",
                wsman_code=None,
            )
        items, done = self._take(context, _max_elements(request, ns))
        end = "<n:EndOfSequence/>" if done else f"<n:EnumerationContext>uuid:{context}</n:EnumerationContext>"
        return (
            f"<n:PullResponse xmlns:n={quoteattr(ENUMERATION_NS)}>{end}<n:Items>{items}</n:Items></n:PullResponse>",
            {},
        )

    def _take(self, context: str, limit: int) -> tuple[str, bool]:
        pending = self._enumerations[context]
        batch, rest = pending[:limit], pending[limit:]
        now = time.time()
        items = "".join(self._shell_item(self.shells[i], now) for i in batch if i in self.shells)
        if rest:
            self._enumerations[context] = rest
        else:
            del self._enumerations[context]
        return items, not rest

    @staticmethod
    def _shell_item(shell: Shell, now: float) -> str:
        name = f"<rsp:Name>{escape(shell.name)}</rsp:Name>" if shell.name is not None else ""
        return (
            "<rsp:Shell>"
            f"<rsp:ShellId>{shell.id}</rsp:ShellId>"
            f"{name}"
            f"<rsp:ResourceUri>{CMD_SHELL_URI}</rsp:ResourceUri>"
            f"<rsp:Owner>{escape(shell.owner)}</rsp:Owner>"
            f"<rsp:ClientIP>{escape(shell.client_ip)}</rsp:ClientIP>"
            "<rsp:IdleTimeOut>PT7200.000S</rsp:IdleTimeOut>"
            f"<rsp:InputStreams>{escape(shell.input_streams)}</rsp:InputStreams>"
            f"<rsp:OutputStreams>{escape(shell.output_streams)}</rsp:OutputStreams>"
            f"<rsp:ShellRunTime>{_duration(now - shell.created_at)}</rsp:ShellRunTime>"
            f"<rsp:ShellInactivity>{_duration(now - shell.last_used)}</rsp:ShellInactivity>"
            "</rsp:Shell>"
        )

    def _create(self, req: _Request, user: str, client_ip: str) -> tuple[str, dict[str, str]]:
        owned = sum(1 for s in self.shells.values() if s.owner == user)
        if owned >= self.max_shells_per_user:
            raise quota_fault(self.max_shells_per_user)
        shell_el = req.body.find("rsp:Shell", NS)
        if shell_el is None:
            raise schema_fault("The Create body has no rsp:Shell element.")
        try:
            codepage = int(req.options.get("WINRS_CODEPAGE", "437"))
        except ValueError:
            raise schema_fault("WINRS_CODEPAGE is not a number.") from None
        env = {v.get("Name", ""): v.text or "" for v in shell_el.findall("rsp:Environment/rsp:Variable", NS)}
        shell = Shell(
            id=_new_id(),
            owner=user,
            codepage=codepage,
            noprofile=req.options.get("WINRS_NOPROFILE", "FALSE").upper() == "TRUE",
            working_directory=_text(shell_el.find("rsp:WorkingDirectory", NS)) or None,
            environment=env,
            input_streams=_text(shell_el.find("rsp:InputStreams", NS)) or "stdin",
            output_streams=_text(shell_el.find("rsp:OutputStreams", NS)) or "stdout stderr",
            client_ip=client_ip,
            name=shell_el.get("Name"),
        )
        self.shells[shell.id] = shell
        body = (
            "<x:ResourceCreated>"
            f"<a:Address>{escape(self.endpoint or ANONYMOUS)}</a:Address>"
            "<a:ReferenceParameters>"
            f"<w:ResourceURI>{CMD_SHELL_URI}</w:ResourceURI>"
            f'<w:SelectorSet><w:Selector Name="ShellId">{shell.id}</w:Selector></w:SelectorSet>'
            "</a:ReferenceParameters>"
            "</x:ResourceCreated>"
            f'<rsp:Shell xmlns:rsp="{SHELL_NS}">'
            f"<rsp:ShellId>{shell.id}</rsp:ShellId>"
            f"<rsp:ResourceUri>{CMD_SHELL_URI}</rsp:ResourceUri>"
            f"<rsp:Owner>{escape(user)}</rsp:Owner>"
            f"<rsp:ClientIP>{escape(client_ip)}</rsp:ClientIP>"
            "<rsp:IdleTimeOut>PT7200.000S</rsp:IdleTimeOut>"
            f"<rsp:InputStreams>{escape(shell.input_streams)}</rsp:InputStreams>"
            f"<rsp:OutputStreams>{escape(shell.output_streams)}</rsp:OutputStreams>"
            "<rsp:ShellRunTime>P0DT0H0M0S</rsp:ShellRunTime>"
            "<rsp:ShellInactivity>P0DT0H0M0S</rsp:ShellInactivity>"
            "</rsp:Shell>"
        )
        return body, {"shell_id": shell.id}

    def _command(self, req: _Request, shell: Shell) -> tuple[str, dict[str, str]]:
        line_el = req.body.find("rsp:CommandLine", NS)
        if line_el is None:
            raise schema_fault("The Command body has no rsp:CommandLine element.")
        command = Command(
            id=_new_id(),
            shell=shell,
            command=(line_el.findtext("rsp:Command", default="", namespaces=NS) or "").strip(),
            arguments=[a.text or "" for a in line_el.findall("rsp:Arguments", NS)],
            skip_cmd_shell=req.options.get("WINRS_SKIP_CMD_SHELL", "FALSE").upper() == "TRUE",
            console_mode_stdin=req.options.get("WINRS_CONSOLEMODE_STDIN", "TRUE").upper() == "TRUE",
        )
        line = command.command_line
        if command.skip_cmd_shell and len(line) > CREATE_PROCESS_LIMIT:
            raise WSManFault(
                code="s:Receiver",
                subcode="w:InternalError",
                reason="The filename or extension is too long. ",
                wsman_code=CODE_FILENAME_TOO_LONG,
            )
        shell.commands[command.id] = command
        if not command.skip_cmd_shell and len(line) > CMD_LINE_LIMIT:
            # cmd.exe itself refuses the line: the command "runs" and fails, as on a real host.
            command.write("stderr", shell.encode("The command line is too long.\r\n"))
            command.finish(1)
        else:
            command.task = asyncio.get_running_loop().create_task(
                self._run(shell, command), name=f"wsman-command-{command.id}"
            )
        body = f"<rsp:CommandResponse><rsp:CommandId>{command.id}</rsp:CommandId></rsp:CommandResponse>"
        info = {"shell_id": shell.id, "command_id": command.id, "command_line": line}
        action = self.runner.peek_action(command)
        if action:
            info["action"] = action
        return body, info

    async def _run(self, shell: Shell, command: Command) -> None:
        try:
            await self.runner.run(shell, command)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.exception("emulated command %r failed", command.command_line[:200])
            command.write("stderr", shell.encode(f"emulator error: {exc}\r\n"))
            command.finish(1)

    def _find_command(self, shell: Shell, command_id: str) -> Command:
        command = shell.commands.get(command_id.upper())
        if command is None:
            raise command_not_found_fault(shell.id, command_id)
        return command

    def _send(self, req: _Request, shell: Shell) -> tuple[str, dict[str, str]]:
        info = {"shell_id": shell.id}
        for stream in req.body.findall("rsp:Send/rsp:Stream", NS):
            if stream.get("Name", "stdin") != "stdin":
                continue
            command = self._find_command(shell, stream.get("CommandId", ""))
            try:
                data = b64decode(_text(stream), validate=True) if _text(stream) else b""
            except BinasciiError:
                raise schema_fault("The stdin stream is not base64.") from None
            command.feed(data, end=stream.get("End", "false").lower() == "true")
            info["command_id"] = command.id
            action = self.runner.peek_action(command)
            if action:
                info["action"] = action
        return "<rsp:SendResponse/>", info

    async def _receive(self, req: _Request, shell: Shell) -> tuple[str, dict[str, str]]:
        desired = req.body.find("rsp:Receive/rsp:DesiredStream", NS)
        if desired is None:
            raise schema_fault("The Receive body has no rsp:DesiredStream element.")
        command = self._find_command(shell, desired.get("CommandId", ""))
        streams = (_text(desired) or "stdout stderr").split()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + req.operation_timeout_s
        command.receiving += 1
        try:
            while not (command.stdout or command.stderr or command.done):
                command.changed.clear()
                remaining = deadline - loop.time()
                if remaining <= 0:
                    raise timed_out_fault()
                try:
                    await asyncio.wait_for(command.changed.wait(), remaining)
                except TimeoutError:
                    raise timed_out_fault() from None
                if shell.id not in self.shells or command.id not in shell.commands:
                    raise command_not_found_fault(shell.id, command.id)
        finally:
            command.receiving -= 1
        budget = max(1024, (req.max_envelope_size - RESPONSE_OVERHEAD) * 3 // 4)
        parts: list[str] = []
        cid = quoteattr(command.id)
        for name in streams:
            buffer = command.stdout if name == "stdout" else command.stderr if name == "stderr" else None
            if buffer is None or not buffer or budget <= 0:
                continue
            chunk = bytes(buffer[:budget])
            del buffer[: len(chunk)]
            budget -= len(chunk)
            parts.append(
                f'<rsp:Stream Name="{name}" CommandId={cid}>{b64encode(chunk).decode()}</rsp:Stream>'
            )
        drained = not command.stdout and not command.stderr
        if command.done and drained:
            for name in streams:
                parts.append(f'<rsp:Stream Name="{name}" CommandId={cid} End="true"></rsp:Stream>')
            parts.append(
                f'<rsp:CommandState CommandId={cid} State="{STATE_DONE}">'
                f"<rsp:ExitCode>{command.exit_code}</rsp:ExitCode></rsp:CommandState>"
            )
            command.done_reported = True
        else:
            parts.append(f'<rsp:CommandState CommandId={cid} State="{STATE_RUNNING}"></rsp:CommandState>')
        body = f"<rsp:ReceiveResponse>{''.join(parts)}</rsp:ReceiveResponse>"
        return body, {"shell_id": shell.id, "command_id": command.id}

    def _signal(self, req: _Request, shell: Shell) -> tuple[str, dict[str, str]]:
        signal = req.body.find("rsp:Signal", NS)
        if signal is None:
            raise schema_fault("The Signal body has no rsp:Signal element.")
        command = self._find_command(shell, signal.get("CommandId", ""))
        code = _text(signal.find("rsp:Code", NS))
        if code in (SIGNAL_CTRL_C, SIGNAL_CTRL_BREAK):
            command.cancel()
            command.finish(STATUS_CONTROL_C_EXIT)
        else:
            command.cancel()
            del shell.commands[command.id]
        return "<rsp:SignalResponse/>", {"shell_id": shell.id, "command_id": command.id}

    # --- envelopes ------------------------------------------------------------------------

    def _envelope(self, req: _Request, action: str, body: str) -> bytes:
        relates = escape(req.message_id)
        return (
            '<s:Envelope xml:lang="en-US"'
            f' xmlns:s="{NS["s"]}" xmlns:a="{NS["a"]}" xmlns:x="{NS["x"]}" xmlns:w="{NS["w"]}"'
            f' xmlns:rsp="{NS["rsp"]}" xmlns:p="{NS["p"]}">'
            "<s:Header>"
            f"<a:Action>{action}</a:Action>"
            f"<a:MessageID>uuid:{_new_id()}</a:MessageID>"
            f"<a:To>{ANONYMOUS}</a:To>"
            f"<a:RelatesTo>{relates}</a:RelatesTo>"
            "</s:Header>"
            f"<s:Body>{body}</s:Body>"
            "</s:Envelope>"
        ).encode()

    def _fault_envelope(self, fault: WSManFault, relates_to: str) -> bytes:
        subcode = f"<s:Subcode><s:Value>{fault.subcode}</s:Value></s:Subcode>" if fault.subcode else ""
        detail = ""
        if fault.wsman_code is not None:
            detail = (
                "<s:Detail>"
                f'<f:WSManFault xmlns:f="{NS["f"]}" Code="{fault.wsman_code}" Machine={quoteattr(self.machine)}>'
                f"<f:Message>{escape(fault.message)}</f:Message>"
                "</f:WSManFault>"
                "</s:Detail>"
            )
        return (
            '<s:Envelope xml:lang="en-US"'
            f' xmlns:s="{NS["s"]}" xmlns:a="{NS["a"]}" xmlns:x="{NS["x"]}"'
            ' xmlns:e="http://schemas.xmlsoap.org/ws/2004/08/eventing"'
            ' xmlns:n="http://schemas.xmlsoap.org/ws/2004/09/enumeration"'
            f' xmlns:w="{NS["w"]}" xmlns:p="{NS["p"]}">'
            "<s:Header>"
            f"<a:Action>{FAULT_ACTION}</a:Action>"
            f"<a:MessageID>uuid:{_new_id()}</a:MessageID>"
            f"<a:To>{ANONYMOUS}</a:To>"
            f"<a:RelatesTo>{escape(relates_to)}</a:RelatesTo>"
            "</s:Header>"
            "<s:Body><s:Fault>"
            f"<s:Code><s:Value>{fault.code}</s:Value>{subcode}</s:Code>"
            f'<s:Reason><s:Text xml:lang="en-US">{escape(fault.reason)}</s:Text></s:Reason>'
            f"{detail}"
            "</s:Fault></s:Body>"
            "</s:Envelope>"
        ).encode()


OPERATIONS_RESPONSE = {
    ACTION_CREATE: "http://schemas.xmlsoap.org/ws/2004/09/transfer/CreateResponse",
    ACTION_DELETE: "http://schemas.xmlsoap.org/ws/2004/09/transfer/DeleteResponse",
    ACTION_COMMAND: f"{SHELL_NS}/CommandResponse",
    ACTION_SEND: f"{SHELL_NS}/SendResponse",
    ACTION_RECEIVE: f"{SHELL_NS}/ReceiveResponse",
    ACTION_SIGNAL: f"{SHELL_NS}/SignalResponse",
    ACTION_ENUMERATE: f"{ENUMERATION_NS}/EnumerateResponse",
    ACTION_PULL: f"{ENUMERATION_NS}/PullResponse",
}


# --- HTTP ----------------------------------------------------------------------------------------


class HttpError(Exception):
    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status


@dataclass
class HttpRequest:
    method: str
    path: str
    version: str
    headers: dict[str, str]
    body: bytes
    too_large: bool = False

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())

    @property
    def keep_alive(self) -> bool:
        connection = (self.header("connection") or "").lower()
        if self.version == "HTTP/1.0":
            return connection == "keep-alive"
        return connection != "close"


_REASONS = {
    200: "OK",
    400: "Bad Request",
    401: "Unauthorized",
    404: "Not Found",
    405: "Method Not Allowed",
    411: "Length Required",
    413: "Request Entity Too Large",
    500: "Internal Server Error",
}


async def read_http_request(
    reader: asyncio.StreamReader, *, body_limit: int, drain_limit: int
) -> HttpRequest | None:
    """One request from a keep-alive connection, or None at a clean end of stream.

    A body over `body_limit` is read and thrown away (up to `drain_limit`) so the client, which
    sends its whole body before reading, gets the 413 rather than a reset connection.
    """
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as exc:
        if not exc.partial.strip():
            return None
        raise HttpError(400, "incomplete request head") from None
    except asyncio.LimitOverrunError:
        raise HttpError(400, "request head too large") from None
    lines = head.decode("latin-1").split("\r\n")
    try:
        method, path, version = lines[0].split(" ", 2)
    except ValueError:
        raise HttpError(400, "malformed request line") from None
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if not line:
            continue
        name, sep, value = line.partition(":")
        if not sep:
            raise HttpError(400, "malformed header")
        key = name.strip().lower()
        headers[key] = f"{headers[key]}, {value.strip()}" if key in headers else value.strip()
    too_large = False
    if "chunked" in headers.get("transfer-encoding", "").lower():
        chunks = bytearray()
        while True:
            size_line = await reader.readuntil(b"\r\n")
            try:
                size = int(size_line.split(b";", 1)[0].strip(), 16)
            except ValueError:
                raise HttpError(400, "malformed chunk size") from None
            if size == 0:
                while (await reader.readuntil(b"\r\n")) != b"\r\n":
                    pass
                break
            data = await reader.readexactly(size)
            await reader.readexactly(2)
            if len(chunks) + size > drain_limit:
                raise HttpError(413, "body too large")
            if len(chunks) + size > body_limit:
                too_large = True
            if not too_large:
                chunks.extend(data)
        body = bytes(chunks)
    else:
        try:
            length = int(headers.get("content-length", "0"))
        except ValueError:
            raise HttpError(400, "malformed Content-Length") from None
        if length > drain_limit:
            raise HttpError(413, "body too large")
        too_large = length > body_limit
        if too_large:
            remaining = length
            while remaining:
                remaining -= len(await reader.readexactly(min(remaining, 1 << 16)))
            body = b""
        else:
            body = await reader.readexactly(length)
    return HttpRequest(method.upper(), path, version.upper(), headers, body, too_large=too_large)


def http_response(
    status: int,
    body: bytes = b"",
    *,
    content_type: str | None = None,
    extra: list[tuple[str, str]] | None = None,
    close: bool = False,
) -> bytes:
    lines = [f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}", "Server: Microsoft-HTTPAPI/2.0"]
    if body and content_type:
        lines.append(f"Content-Type: {content_type}")
    for name, value in extra or ():
        lines.append(f"{name}: {value}")
    lines.append(f"Content-Length: {len(body)}")
    if close:
        lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


SOAP_CONTENT_TYPE = "application/soap+xml;charset=UTF-8"


class WinRMListener:
    """HTTP(S) front of one host: one connection handler per TCP connection, each with its own auth state."""

    IDLE_TIMEOUT_S: ClassVar[float] = 120.0  # HTTP.sys drops idle keep-alive connections after two minutes
    HANDSHAKE_TIMEOUT_S: ClassVar[float] = 10.0

    def __init__(
        self,
        *,
        service: WSManService,
        auth_config: Callable[[], AuthConfig],
        faults: Faults,
        max_envelope_size: int,
        record: Callable[[RecordedRequest], None],
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.service = service
        self._auth_config = auth_config
        self.faults = faults
        self.max_envelope_size = max_envelope_size
        self._record = record
        self.ssl_context = ssl_context
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.StreamWriter] = set()
        self._handlers: set[asyncio.Task[None]] = set()
        # TCP connections accepted so far: each one is a TCP (and TLS) handshake, and with NTLM or
        # Kerberos a logon, that a client keeping its connection does not repeat.
        self.accepted = 0

    @property
    def listening(self) -> bool:
        return self._server is not None

    async def listen(self, sock: socket.socket) -> None:
        """Start accepting on an already bound socket."""
        self._server = await asyncio.start_server(
            self._serve,
            sock=sock,
            ssl=self.ssl_context,
            ssl_handshake_timeout=self.HANDSHAKE_TIMEOUT_S if self.ssl_context else None,
            limit=1 << 16,
        )

    def close_listener(self) -> None:
        """Stop accepting (closes the listening socket; the caller keeps the port reserved)."""
        server, self._server = self._server, None
        if server is not None:
            server.close()

    def drop_connections(self) -> None:
        """Abort every open connection, as a host that vanishes does."""
        for writer in list(self._connections):
            transport = writer.transport
            with contextlib.suppress(Exception):
                transport.abort()
        self._connections.clear()

    async def stop(self) -> None:
        self.close_listener()
        self.drop_connections()
        # Aborted connections end their handlers; cancel only the ones stuck elsewhere (a long Receive).
        handlers = set(self._handlers)
        if handlers:
            _, pending = await asyncio.wait(handlers, timeout=0.5)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending, timeout=5.0)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._handlers.add(task)
        self._connections.add(writer)
        self.accepted += 1
        ssl_object = writer.get_extra_info("ssl_object")
        peer_cert = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
        peer = writer.get_extra_info("peername")
        client_ip = str(peer[0]) if isinstance(peer, tuple) and peer else ""
        conn = ConnectionAuth(self._auth_config(), tls=ssl_object is not None, peer_cert_der=peer_cert)
        try:
            while True:
                try:
                    request = await asyncio.wait_for(
                        read_http_request(
                            reader,
                            body_limit=self.max_envelope_size + 16384,
                            drain_limit=max(64 << 20, self.max_envelope_size * 4),
                        ),
                        self.IDLE_TIMEOUT_S,
                    )
                except HttpError as exc:
                    writer.write(http_response(exc.status, close=True))
                    await writer.drain()
                    break
                if request is None:
                    break
                response, close = await self._respond(conn, request, client_ip)
                writer.write(response)
                await writer.drain()
                if close or not request.keep_alive:
                    break
        except (TimeoutError, ConnectionError, asyncio.IncompleteReadError, ssl.SSLError, OSError):
            pass
        except asyncio.CancelledError:
            # Only stop() cancels a handler, and asyncio's stream machinery logs a handler task that
            # ends cancelled as an error: end it normally instead.
            pass
        finally:
            self._connections.discard(writer)
            if task is not None:
                self._handlers.discard(task)
            with contextlib.suppress(Exception):
                writer.close()

    async def _respond(
        self, conn: ConnectionAuth, request: HttpRequest, client_ip: str
    ) -> tuple[bytes, bool]:
        now = time.time()
        latency = self.faults.latency_s
        if latency > 0:
            await asyncio.sleep(latency)
        if request.path.split("?", 1)[0].rstrip("/").lower() != "/wsman":
            return http_response(404), False
        if request.method != "POST":
            return http_response(405), False
        decision = conn.authenticate(request.header("authorization"))
        if decision.ok and self.faults.auth_failure:
            # Injected failure: the credentials are checked and rejected, as with a wrong password.
            conn.revoke()
            decision = AuthDecision(user=None, challenges=tuple(conn.config.challenges()), reason="injected")
        if not decision.ok:
            # A challenge (no credentials yet, or the next NTLM leg) is routine; anything else is a refusal.
            operation = "Auth" if decision.handshake or decision.reason == NO_CREDENTIALS else "Rejected"
            self._record(RecordedRequest(at=now, operation=operation, user=None, status=401))
            return http_response(401, extra=[("WWW-Authenticate", c) for c in decision.challenges]), False
        user = decision.user or ""
        extra = [("WWW-Authenticate", decision.final)] if decision.final else []
        response, close = await self._serve_authenticated(conn, request, user, now, client_ip)
        if extra:
            head, sep, body = response.partition(b"\r\n\r\n")
            response = head + "".join(f"\r\n{k}: {v}" for k, v in extra).encode("latin-1") + sep + body
        return response, close

    async def _serve_authenticated(
        self, conn: ConnectionAuth, request: HttpRequest, user: str, now: float, client_ip: str
    ) -> tuple[bytes, bool]:
        encrypted = is_encrypted(request.header("content-type"))
        if request.too_large:
            self._record(
                RecordedRequest(at=now, operation="TooLarge", user=user, status=413, encrypted=encrypted)
            )
            return http_response(413), False
        if not request.body:
            # The empty POST with which an NTLM client sets up its session for message encryption.
            self._record(RecordedRequest(at=now, operation="Probe", user=user, status=200))
            return http_response(200), False
        if encrypted:
            try:
                envelope = conn.unwrap(request.body)
            except EncryptionError as exc:
                log.info("rejecting an encrypted request: %s", exc)
                self._record(
                    RecordedRequest(at=now, operation="Rejected", user=user, status=400, encrypted=True)
                )
                return http_response(400, close=True), True
        else:
            envelope = request.body
        if len(envelope) > self.max_envelope_size:
            self._record(
                RecordedRequest(at=now, operation="TooLarge", user=user, status=413, encrypted=encrypted)
            )
            return http_response(413), False
        outcome = await self.service.dispatch(envelope, user, client_ip=client_ip, encrypted=encrypted)
        self._record(outcome.record)
        if encrypted:
            return http_response(
                outcome.status, conn.wrap(outcome.envelope), content_type=conn.content_type
            ), False
        return http_response(outcome.status, outcome.envelope, content_type=SOAP_CONTENT_TYPE), False
