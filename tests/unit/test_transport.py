"""The WinRM transport against a scripted fake of pywinrm's Protocol: steps, deadline, cleanup, errors, locks."""

from __future__ import annotations

import asyncio
import base64
import logging
import os
import stat
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from xml.etree.ElementTree import ParseError

import pytest
import requests
from winrm.exceptions import (
    InvalidCredentialsError,
    WinRMError,
    WinRMOperationTimeoutError,
    WinRMTransportError,
    WSManFaultError,
)

from winnode import timeouts
from winnode.host.errors import (
    HostAuthenticationError,
    HostError,
    HostProtocolError,
    HostTimeoutError,
    HostTLSError,
    HostUnreachableError,
)
from winnode.host.transport import (
    BOOTSTRAP,
    BOOTSTRAP_COMMAND,
    SEND_ENVELOPE_OVERHEAD,
    UTF8_CODEPAGE,
    CredentialFiles,
    HostConnection,
    TransportLimits,
    WinRMTransport,
    classify_error,
    credential_files,
    pywinrm_protocol,
    skip_environment,
)
from winnode.settings import Settings

PASSWORD = "Very-Secret-Pa55"

Receive = tuple[bytes, bytes, int, bool] | BaseException | Callable[[], Any]


@dataclass
class FakeWire:
    """The host side: what each fake protocol did, shared across the fresh protocols of a test."""

    receives: list[Receive] = field(default_factory=list)
    # Default when the plan runs out: a finished command with a result line.
    final: tuple[bytes, bytes, int, bool] = (b'##RESULT## {"ok":true}\r\n', b"", 0, True)
    fail: dict[str, BaseException] = field(default_factory=dict)
    receive_delay_s: float = 0.0
    calls: list[tuple[str, Any]] = field(default_factory=list)
    stdin: dict[str, bytearray] = field(default_factory=dict)
    ends: list[bool] = field(default_factory=list)
    operation_timeouts: list[Any] = field(default_factory=list)
    read_timeouts: list[Any] = field(default_factory=list)
    running: dict[str, int] = field(default_factory=dict)
    peak: dict[str, int] = field(default_factory=dict)
    peak_total: int = 0
    sessions_closed: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)
    counter: int = 0

    def record(self, name: str, detail: Any = None) -> None:
        with self.lock:
            self.calls.append((name, detail))

    def names(self) -> list[str]:
        return [name for name, _ in self.calls]


class FakeTransportSession:
    def __init__(self, wire: FakeWire) -> None:
        self.wire = wire
        self.read_timeout_sec: Any = 30

    def close_session(self) -> None:
        with self.wire.lock:
            self.wire.sessions_closed += 1


class FakeProtocol:
    def __init__(self, wire: FakeWire, conn: HostConnection) -> None:
        self.wire = wire
        self.conn = conn
        self.operation_timeout_sec: Any = 20
        self.transport = FakeTransportSession(wire)

    def _maybe_fail(self, name: str) -> None:
        exc = self.wire.fail.get(name)
        if exc is not None:
            raise exc

    def open_shell(self, *, noprofile: bool, codepage: int) -> str:
        self.wire.read_timeouts.append(self.transport.read_timeout_sec)
        self.wire.record("open_shell", (noprofile, codepage))
        self._maybe_fail("open_shell")
        with self.wire.lock:
            self.wire.counter += 1
            shell = f"shell-{self.wire.counter}"
            key = self.conn.address
            self.wire.running[key] = self.wire.running.get(key, 0) + 1
            self.wire.peak[key] = max(self.wire.peak.get(key, 0), self.wire.running[key])
            self.wire.peak_total = max(self.wire.peak_total, sum(self.wire.running.values()))
        return shell

    def run_command(self, shell_id: str, command: str, *, console_mode_stdin: bool) -> str:
        self.wire.record("run_command", (shell_id, command, console_mode_stdin))
        self._maybe_fail("run_command")
        self.wire.stdin[shell_id] = bytearray()
        return f"{shell_id}-cmd"

    def send_command_input(self, shell_id: str, command_id: str, stdin_input: bytes, end: bool) -> None:
        self.wire.record("send_command_input", len(stdin_input))
        self._maybe_fail("send_command_input")
        self.wire.stdin[shell_id] += stdin_input
        self.wire.ends.append(end)

    def get_command_output_raw(self, shell_id: str, command_id: str) -> tuple[bytes, bytes, int, bool]:
        self.wire.operation_timeouts.append(self.operation_timeout_sec)
        self.wire.read_timeouts.append(self.transport.read_timeout_sec)
        self.wire.record("receive", shell_id)
        if self.wire.receive_delay_s:
            time.sleep(self.wire.receive_delay_s)
        with self.wire.lock:
            item: Receive = self.wire.receives.pop(0) if self.wire.receives else self.wire.final
        if isinstance(item, BaseException):
            raise item
        if callable(item):
            return item()  # type: ignore[no-any-return]
        return item

    def cleanup_command(self, shell_id: str, command_id: str) -> None:
        self.wire.record("cleanup_command", shell_id)
        self._maybe_fail("cleanup_command")

    def close_shell(self, shell_id: str, close_session: bool) -> None:
        self.wire.record("close_shell", (shell_id, close_session))
        with self.wire.lock:
            self.wire.running[self.conn.address] -= 1
        self._maybe_fail("close_shell")


def make_transport(
    wire: FakeWire, *, concurrency: int = 8, limits: TransportLimits | None = None
) -> WinRMTransport:
    return WinRMTransport(
        Settings(winrm_global_concurrency=concurrency, winrm_operation_timeout_s=30.0),
        limits=limits or TransportLimits(receive_wait_s=1.0, cleanup_s=1.0),
        protocol_factory=lambda conn, files, limits: FakeProtocol(wire, conn),
    )


def conn(address: str = "10.1.2.3", **overrides: Any) -> HostConnection:
    values: dict[str, Any] = {
        "address": address,
        "port": 5985,
        "scheme": "http",
        "auth": "ntlm",
        "username": "Administrator",
        "password": PASSWORD,
        "name": "win-01",
    }
    values.update(overrides)
    return HostConnection(**values)


# --- one operation, step by step --------------------------------------------------------------------


async def test_runs_the_bootstrap_streams_the_script_and_always_cleans_up() -> None:
    wire = FakeWire()
    async with make_transport(wire) as transport:
        result = await transport.execute(conn(), "Write-Output 'é'\n", mutating=True, action="facts")
    assert result.exit_code == 0
    assert result.stdout == '##RESULT## {"ok":true}\r\n'
    assert wire.names() == [
        "open_shell",
        "run_command",
        "send_command_input",
        "receive",
        "cleanup_command",
        "close_shell",
    ]
    assert wire.calls[0][1] == (True, UTF8_CODEPAGE)
    _, command, console_mode = wire.calls[1][1]
    assert command == BOOTSTRAP_COMMAND
    assert console_mode is False
    assert bytes(wire.stdin["shell-1"]) == "Write-Output 'é'\n".encode()
    assert wire.ends == [True]
    assert wire.calls[-1][1] == ("shell-1", False)
    assert wire.sessions_closed == 1


def test_bootstrap_command_decodes_to_the_stdin_reader() -> None:
    encoded = BOOTSTRAP_COMMAND.rsplit(" ", 1)[1]
    assert base64.b64decode(encoded).decode("utf-16-le") == BOOTSTRAP


async def test_large_scripts_are_sent_in_pieces_that_fit_the_envelope() -> None:
    wire = FakeWire()
    limits = TransportLimits(receive_wait_s=1.0, max_envelope_size=4 * SEND_ENVELOPE_OVERHEAD)
    script = ("# ünïcode line\n" * 6000) + "end\n"
    async with make_transport(wire, limits=limits) as transport:
        await transport.execute(conn(), script, mutating=False)
    sizes = [detail for name, detail in wire.calls if name == "send_command_input"]
    assert len(sizes) > 3
    assert max(sizes) <= limits.send_chunk_size
    # base64 of a piece plus the envelope overhead stays within the envelope size
    assert limits.send_chunk_size * 4 // 3 + SEND_ENVELOPE_OVERHEAD <= limits.max_envelope_size
    assert wire.ends == [False] * (len(sizes) - 1) + [True]
    assert bytes(wire.stdin["shell-1"]).decode("utf-8") == script


async def test_operation_timeouts_are_retried_and_output_is_joined() -> None:
    wire = FakeWire(
        receives=[
            WinRMOperationTimeoutError(),
            ("é".encode()[:1], b"", -1, False),
            WinRMOperationTimeoutError(),
            ("é".encode()[1:] + b"\r\n", b"warn", -1, False),
            (b'##RESULT## {"ok":true}', b"", 0, True),
        ]
    )
    async with make_transport(wire) as transport:
        result = await transport.execute(conn(), "x", mutating=False)
    assert result.stdout == 'é\r\n##RESULT## {"ok":true}'
    assert result.stderr == "warn"
    assert wire.names().count("receive") == 5
    assert all(1 <= t <= 1 for t in wire.operation_timeouts)
    connect, read = wire.read_timeouts[-1]
    assert connect == TransportLimits().connect_s
    assert read == 1 + TransportLimits().receive_margin_s


async def test_our_deadline_ends_a_command_that_never_finishes() -> None:
    wire = FakeWire(receive_delay_s=0.05)
    wire.receives = [WinRMOperationTimeoutError() for _ in range(1000)]
    started = time.monotonic()
    async with make_transport(wire) as transport:
        with pytest.raises(HostTimeoutError) as info:
            await transport.execute(conn(), "x", mutating=True, timeout_s=0.4, action="service_start")
    assert 0.35 <= time.monotonic() - started < 3
    assert info.value.reason == "HostTimeout"
    assert info.value.timeout_s == 0.4
    assert "service_start" in str(info.value)
    assert "win-01 (10.1.2.3:5985)" in str(info.value)
    # Terminated and deleted even so.
    assert wire.names()[-2:] == ["cleanup_command", "close_shell"]


async def test_cleanup_failures_are_logged_not_raised(caplog: pytest.LogCaptureFixture) -> None:
    wire = FakeWire(
        fail={
            "cleanup_command": requests.exceptions.ConnectionError("gone"),
            "close_shell": WinRMTransportError("http", 500, ""),
        }
    )
    with caplog.at_level(logging.WARNING, logger="winnode.host.transport"):
        async with make_transport(wire) as transport:
            result = await transport.execute(conn(), "x", mutating=True)
    assert result.exit_code == 0
    messages = [r.getMessage() for r in caplog.records]
    assert any("signal terminate" in m and "ConnectionError" in m for m in messages)
    assert any("delete shell" in m for m in messages)
    assert PASSWORD not in caplog.text


async def test_the_first_error_wins_over_cleanup_errors() -> None:
    wire = FakeWire(
        receives=[requests.exceptions.ConnectionError("reset by peer")],
        fail={"cleanup_command": requests.exceptions.ConnectionError("refused")},
    )
    async with make_transport(wire) as transport:
        with pytest.raises(HostUnreachableError) as info:
            await transport.execute(conn(), "x", mutating=True, action="fetch_file")
    assert info.value.reason == "ConnectionLost"
    assert info.value.command_sent
    assert "close_shell" in wire.names()


async def test_failed_create_has_nothing_to_clean() -> None:
    wire = FakeWire(fail={"open_shell": requests.exceptions.ConnectionError("refused")})
    async with make_transport(wire) as transport:
        with pytest.raises(HostUnreachableError) as info:
            await transport.execute(conn(), "x", mutating=True)
    assert wire.names() == ["open_shell"]
    assert info.value.reason == "HostUnreachable"
    assert not info.value.command_sent


async def test_failed_command_still_deletes_the_shell() -> None:
    wire = FakeWire(fail={"run_command": WSManFaultError(500, "m", "", "bad", wsman_fault_code=2150858752)})
    async with make_transport(wire) as transport:
        with pytest.raises(HostProtocolError):
            await transport.execute(conn(), "x", mutating=True)
    assert wire.names() == ["open_shell", "run_command", "close_shell"]


async def test_runaway_output_is_cut_off() -> None:
    wire = FakeWire(receives=[(b"x" * 600, b"", -1, False)] * 10)
    limits = TransportLimits(receive_wait_s=1.0, max_output_bytes=2000)
    async with make_transport(wire, limits=limits) as transport:
        with pytest.raises(HostProtocolError) as info:
            await transport.execute(conn(), "x", mutating=False)
    assert info.value.reason == "OutputTooLarge"
    assert wire.names()[-2:] == ["cleanup_command", "close_shell"]


# --- error classification --------------------------------------------------------------------------


def _ssl_error() -> BaseException:
    import ssl

    inner = ssl.SSLCertVerificationError(1, "certificate verify failed")
    inner.verify_message = "unable to get local issuer certificate"
    return requests.exceptions.SSLError(inner)


CASES: list[tuple[str, Callable[[], BaseException], type[HostError], str]] = [
    (
        "open_shell",
        lambda: InvalidCredentialsError("the specified credentials were rejected by the server"),
        HostAuthenticationError,
        "AuthenticationFailed",
    ),
    (
        "open_shell",
        lambda: InvalidCredentialsError("auth method ntlm requires a password"),
        HostAuthenticationError,
        "CredentialsMissing",
    ),
    (
        "open_shell",
        lambda: WinRMTransportError("http", 401, ""),
        HostAuthenticationError,
        "AuthenticationFailed",
    ),
    ("open_shell", _ssl_error, HostTLSError, "TLSVerificationFailed"),
    (
        "open_shell",
        lambda: requests.exceptions.ConnectionError(ConnectionRefusedError(111, "Connection refused")),
        HostUnreachableError,
        "ConnectionRefused",
    ),
    (
        "open_shell",
        lambda: requests.exceptions.ConnectTimeout("slow"),
        HostUnreachableError,
        "HostUnreachable",
    ),
    ("open_shell", lambda: OSError(113, "No route to host"), HostUnreachableError, "HostUnreachable"),
    (
        "open_shell",
        lambda: WSManFaultError(500, "m", "", "quota", wsman_fault_code=2150859173),
        HostUnreachableError,
        "WinRMQuotaExceeded",
    ),
    (
        "open_shell",
        lambda: WinRMError("requested auth method is kerberos, but pykerberos is not installed"),
        HostAuthenticationError,
        "AuthMethodUnavailable",
    ),
    ("open_shell", lambda: WinRMTransportError("http", 404, ""), HostProtocolError, "UnexpectedHTTPStatus"),
    ("open_shell", lambda: WinRMTransportError("http", 503, ""), HostUnreachableError, "HostUnreachable"),
    (
        "send_command_input",
        lambda: WinRMTransportError("http", 413, ""),
        HostProtocolError,
        "EnvelopeTooLarge",
    ),
    ("open_shell", lambda: ParseError("junk"), HostProtocolError, "ProtocolError"),
    ("open_shell", lambda: StopIteration(), HostProtocolError, "ProtocolError"),
    ("receive", lambda: requests.exceptions.ReadTimeout("read"), HostTimeoutError, "HostTimeout"),
    ("receive", lambda: requests.exceptions.ConnectionError("reset"), HostUnreachableError, "ConnectionLost"),
    (
        "receive",
        lambda: WSManFaultError(500, "m", "", "gone", wsman_fault_code=2150858843),
        HostUnreachableError,
        "ShellLost",
    ),
    ("receive", lambda: WSManFaultError(500, "m", "", "odd fault"), HostProtocolError, "WSManFault"),
    ("receive", lambda: RuntimeError("boom"), HostProtocolError, "ProtocolError"),
]


@pytest.mark.parametrize(("where", "make", "expected", "reason"), CASES)
async def test_errors_are_classified(
    where: str, make: Callable[[], BaseException], expected: type[HostError], reason: str
) -> None:
    wire = FakeWire()
    if where == "receive":
        wire.receives = [make()]
    else:
        wire.fail[where] = make()
    async with make_transport(wire) as transport:
        with pytest.raises(expected) as info:
            await transport.execute(conn(), "x", mutating=True, action="write_file")
    error = info.value
    assert type(error) is expected
    assert error.reason == reason
    assert error.host == "win-01 (10.1.2.3:5985)"
    assert "win-01" in error.message
    assert PASSWORD not in error.message
    assert PASSWORD not in repr(error)
    # Whatever failed after the shell existed, the shell was deleted.
    if "open_shell" not in where:
        assert "close_shell" in wire.names()


def test_classification_messages_say_what_to_do() -> None:
    c = conn()
    auth = classify_error(InvalidCredentialsError("rejected"), c, action="facts", command_sent=False)
    assert "credentials Secret" in auth.message
    assert "Administrators" in auth.message
    assert not auth.retryable
    cert = classify_error(
        InvalidCredentialsError("rejected"),
        conn(scheme="https", auth="certificate"),
        action="x",
        command_sent=False,
    )
    assert "client certificate" in cert.message
    tls = classify_error(_ssl_error(), c, action="facts", command_sent=False)
    assert "unable to get local issuer certificate" in tls.message
    assert "caBundle" in tls.message
    refused = classify_error(
        requests.exceptions.ConnectionError(ConnectionRefusedError(111, "Connection refused")),
        c,
        action="facts",
        command_sent=False,
    )
    assert "Connection refused" in refused.message
    assert "winrm quickconfig" in refused.message
    assert refused.retryable
    slow = classify_error(
        requests.exceptions.ConnectTimeout("x"), c, action="facts", command_sent=False, connect_s=3
    )
    assert "3s" in slow.message
    already = HostTimeoutError("h", "m")
    assert classify_error(already, c, action="facts", command_sent=False) is already


# --- concurrency -----------------------------------------------------------------------------------


async def test_one_mutating_operation_per_host_at_a_time() -> None:
    wire = FakeWire(receive_delay_s=0.1)
    async with make_transport(wire) as transport:
        same = [transport.execute(conn(), "x", mutating=True) for _ in range(3)]
        other = [transport.execute(conn("10.9.9.9"), "x", mutating=True) for _ in range(3)]
        started = time.monotonic()
        await asyncio.gather(*same, *other)
        elapsed = time.monotonic() - started
    assert wire.peak["10.1.2.3"] == 1
    assert wire.peak["10.9.9.9"] == 1
    assert wire.peak_total == 2, "different hosts run side by side"
    assert elapsed < 0.1 * 6, "the two hosts were not serialized with each other"
    assert not transport.host_busy(conn()), "the per-host lock is released and forgotten"


async def test_read_only_operations_do_not_wait_for_the_host_lock() -> None:
    wire = FakeWire(receive_delay_s=0.2)
    async with make_transport(wire) as transport:
        await asyncio.gather(
            transport.execute(conn(), "x", mutating=True),
            transport.execute(conn(), "x", mutating=False),
            transport.execute(conn(), "x", mutating=False),
        )
    assert wire.peak["10.1.2.3"] == 3


async def test_global_concurrency_limit() -> None:
    wire = FakeWire(receive_delay_s=0.05)
    async with make_transport(wire, concurrency=2) as transport:
        await asyncio.gather(
            *(transport.execute(conn(f"10.0.0.{i}"), "x", mutating=False) for i in range(1, 9))
        )
    assert wire.peak_total == 2


def test_one_transport_serves_successive_event_loops_under_contention() -> None:
    """The process-wide transport outlives event loops (an operator restarted in-process): waiting
    for a slot in a second loop must work after a first loop waited on one."""
    wire = FakeWire(receive_delay_s=0.02)
    transport = make_transport(wire, concurrency=2)

    async def burst() -> None:
        await asyncio.gather(
            *(transport.execute(conn(f"10.0.0.{i}"), "x", mutating=False) for i in range(1, 7))
        )

    try:
        for _ in range(3):
            asyncio.run(burst())
    finally:
        asyncio.run(transport.aclose())
    assert wire.peak_total == 2
    assert wire.names().count("close_shell") == 18


async def wait_for_call(wire: FakeWire, name: str) -> None:
    deadline = time.monotonic() + 5
    while name not in wire.names():
        assert time.monotonic() < deadline, f"no {name} call"
        await asyncio.sleep(0.01)


async def test_cancelling_stops_the_operation_and_keeps_the_host_locked_until_cleanup() -> None:
    wire = FakeWire(receive_delay_s=0.1)
    wire.receives = [WinRMOperationTimeoutError() for _ in range(1000)]
    async with make_transport(wire) as transport:
        first = asyncio.create_task(transport.execute(conn(), "x", mutating=True, timeout_s=60))
        await wait_for_call(wire, "receive")
        second = asyncio.create_task(transport.execute(conn(), "y", mutating=True))
        await asyncio.sleep(0.05)
        first.cancel()
        with pytest.raises(asyncio.CancelledError):
            await first
        # The first operation's shell is gone before the second one may open its own.
        names = wire.names()
        assert names[names.index("close_shell") - 1] == "cleanup_command"
        wire.receives.clear()
        await second
    names = wire.names()
    assert names.index("close_shell") < [i for i, n in enumerate(names) if n == "open_shell"][1]
    assert wire.peak["10.1.2.3"] == 1


async def test_a_cancelled_operation_returns_within_the_grace_and_the_host_stays_locked(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A stopping operator must not wait out a long Receive: the caller returns after the grace,
    while the host lock passes to the worker, which still cleans up before the next command."""
    monkeypatch.setattr(timeouts, "WINRM_CANCEL_GRACE", 0.2)
    wire = FakeWire(receive_delay_s=1.5)
    wire.receives = [WinRMOperationTimeoutError() for _ in range(1000)]
    async with make_transport(wire) as transport:
        first = asyncio.create_task(transport.execute(conn(), "x", mutating=True, timeout_s=60))
        await wait_for_call(wire, "receive")
        first.cancel()
        started = time.monotonic()
        with pytest.raises(asyncio.CancelledError):
            await first
        assert time.monotonic() - started < 1.0, "the caller waited for the worker's Receive"
        assert transport.host_busy(conn()), "the worker still holds the host"
        wire.receives.clear()
        await transport.execute(conn(), "y", mutating=True)
    names = wire.names()
    assert names.index("close_shell") < [i for i, n in enumerate(names) if n == "open_shell"][1]
    assert wire.peak["10.1.2.3"] == 1


async def test_closed_transport_refuses_work() -> None:
    transport = make_transport(FakeWire())
    await transport.aclose()
    with pytest.raises(RuntimeError):
        await transport.execute(conn(), "x", mutating=False)


# --- connection details ----------------------------------------------------------------------------


def test_connection_repr_hides_secrets() -> None:
    c = conn(cert_pem="CERT", key_pem="PRIVATE-KEY-DATA", ca_bundle="CA")
    text = repr(c) + str(c)
    assert PASSWORD not in text
    assert "PRIVATE-KEY-DATA" not in text
    assert "10.1.2.3" in text


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"auth": "certificate", "scheme": "http"}, "certificate authentication needs scheme https"),
        ({"auth": "digest"}, "unknown auth"),
        ({"scheme": "ftp"}, "scheme must be"),
        ({"port": 0}, "not a TCP port"),
        ({"address": ""}, "needs an address"),
    ],
)
def test_connection_validation(overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        conn(**overrides)


def test_endpoint_and_label() -> None:
    assert conn().endpoint == "http://10.1.2.3:5985/wsman"
    assert conn("fd00::5", scheme="https", port=5986).endpoint == "https://[fd00::5]:5986/wsman"
    assert conn(name=None).label == "10.1.2.3:5985"


def test_credential_files_are_private_and_temporary() -> None:
    c = conn(scheme="https", auth="certificate", cert_pem="CERT", key_pem="KEY", ca_bundle="CA")
    with credential_files(c) as files:
        paths = [files.ca_path, files.cert_path, files.key_path]
        assert all(p is not None for p in paths)
        for path in paths:
            assert path is not None
            assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
        assert stat.S_IMODE(os.stat(os.path.dirname(paths[0] or "")).st_mode) == 0o700
        assert Path(files.key_path or "").read_text() == "KEY"
    assert not any(os.path.exists(p or "") for p in paths)
    with credential_files(conn()) as nothing:
        assert nothing == CredentialFiles()
    with credential_files(conn(scheme="https", ca_bundle="CA", insecure_skip_verify=True)) as skipped:
        assert skipped.ca_path is None


def test_pywinrm_protocol_settings() -> None:
    limits = TransportLimits()
    p: Any = pywinrm_protocol(conn(), CredentialFiles(), limits)
    assert p.transport.auth_method == "ntlm"
    assert p.transport.message_encryption == "auto"
    assert p.transport.server_cert_validation == "validate"
    assert p.transport.proxy is None
    assert p.transport.endpoint == "http://10.1.2.3:5985/wsman"
    https: Any = pywinrm_protocol(
        conn(scheme="https", port=5986, insecure_skip_verify=True), CredentialFiles(), limits
    )
    assert https.transport.server_cert_validation == "ignore"
    pinned: Any = pywinrm_protocol(conn(scheme="https"), CredentialFiles(ca_path="/tmp/ca.pem"), limits)
    assert pinned.transport.ca_trust_path == "/tmp/ca.pem"


async def test_missing_client_certificate_is_a_credentials_problem() -> None:
    transport = WinRMTransport(Settings(winrm_global_concurrency=1))
    try:
        with pytest.raises(HostAuthenticationError) as info:
            await transport.execute(conn(scheme="https", auth="certificate"), "x", mutating=False)
    finally:
        await transport.aclose()
    assert info.value.reason == "CredentialsMissing"
    assert "tls.crt and tls.key" in info.value.message


# --- kept connections ---------------------------------------------------------------------------------


def counting_transport(wire: FakeWire, made: list[FakeProtocol]) -> WinRMTransport:
    def factory(c: HostConnection, files: CredentialFiles, limits: TransportLimits) -> FakeProtocol:
        protocol = FakeProtocol(wire, c)
        made.append(protocol)
        return protocol

    return WinRMTransport(
        Settings(winrm_global_concurrency=4, winrm_operation_timeout_s=30.0),
        limits=TransportLimits(receive_wait_s=1.0, cleanup_s=1.0),
        protocol_factory=factory,
    )


async def test_successive_operations_reuse_one_logged_on_connection() -> None:
    wire, made = FakeWire(), []
    transport = counting_transport(wire, made)
    for _ in range(3):
        await transport.execute(conn(), "Write-Output 1", mutating=True)
    assert len(made) == 1, "one Protocol (one TCP connection, one NTLM logon) served all three"
    assert wire.sessions_closed == 0
    assert transport.kept_connections(conn()) == 1
    # Other credentials never use a connection logged on with the old ones.
    await transport.execute(conn(password="Another-Pa55word"), "Write-Output 1", mutating=True)
    assert len(made) == 2
    assert wire.sessions_closed == 1, "the connection with the old password was closed"
    await transport.aclose()
    assert wire.sessions_closed == 2


async def test_an_error_closes_the_connection_and_the_next_operation_logs_on_again() -> None:
    wire, made = FakeWire(), []
    transport = counting_transport(wire, made)
    await transport.execute(conn(), "x", mutating=True)
    wire.receives = [requests.exceptions.ConnectionError("connection reset by peer")]
    with pytest.raises(HostUnreachableError) as caught:
        await transport.execute(conn(), "x", mutating=True)
    assert caught.value.command_sent, "the script was sent: never repeated by the transport"
    assert wire.names().count("send_command_input") == 2, "the failed command was not sent again"
    assert transport.kept_connections(conn()) == 0
    await transport.execute(conn(), "x", mutating=True)
    assert len(made) == 2, "a fresh connection after the transport error"
    await transport.aclose()


async def test_a_kept_connection_gone_stale_is_replaced_before_the_script_is_sent() -> None:
    wire, made = FakeWire(), []
    transport = counting_transport(wire, made)
    await transport.execute(conn(), "x", mutating=True)
    # The host closed the idle connection: the kept session's next request fails.
    stale = made[0]
    original = stale.open_shell

    def broken(*, noprofile: bool, codepage: int) -> str:
        raise requests.exceptions.ConnectionError("connection aborted")

    stale.open_shell = broken  # type: ignore[method-assign]
    result = await transport.execute(conn(), "x", mutating=True)
    assert result.exit_code == 0
    assert len(made) == 2
    assert wire.names().count("send_command_input") == 2, "the script was sent once per operation"
    stale.open_shell = original  # type: ignore[method-assign]
    await transport.aclose()


async def test_a_kept_connection_is_given_to_one_operation_at_a_time() -> None:
    wire, made = FakeWire(receive_delay_s=0.05), []
    transport = counting_transport(wire, made)
    # A mutating operation and two reads beside it: three connections at once, at most two kept.
    await asyncio.gather(
        transport.execute(conn(), "x", mutating=True),
        transport.execute(conn(), "x", mutating=False),
        transport.execute(conn(), "x", mutating=False),
    )
    assert len(made) == 3
    assert transport.kept_connections(conn()) == 2
    await transport.aclose()


async def test_commands_of_one_pass_share_a_shell_deleted_when_the_pass_ends() -> None:
    wire, made = FakeWire(), []
    transport = counting_transport(wire, made)
    async with transport.host_pass(conn().address):
        for _ in range(3):
            await transport.execute(conn(), "x", mutating=True)
        assert wire.names().count("open_shell") == 1
        assert wire.names().count("close_shell") == 0, "the shell stays open for the pass"
        assert wire.names().count("cleanup_command") == 3, "each command is still terminated"
    assert wire.names().count("close_shell") == 1, "deleted when the pass ended"
    assert transport.kept_connections(conn()) == 1, "the connection stays for the next pass"
    # Outside a pass each command has its own shell, as before.
    await transport.execute(conn(), "x", mutating=True)
    assert wire.names().count("open_shell") == 2
    assert wire.names().count("close_shell") == 2
    await transport.aclose()


async def test_a_failed_command_in_a_pass_deletes_its_shell_and_the_next_gets_a_new_one() -> None:
    wire, made = FakeWire(), []
    transport = counting_transport(wire, made)
    async with transport.host_pass(conn().address):
        await transport.execute(conn(), "x", mutating=True)
        wire.receives = [requests.exceptions.ConnectionError("reset")]
        with pytest.raises(HostUnreachableError):
            await transport.execute(conn(), "x", mutating=True)
        await transport.execute(conn(), "x", mutating=True)
    assert wire.names().count("open_shell") == 2
    assert wire.names().count("close_shell") == 2
    assert len(made) == 2
    await transport.aclose()


async def test_connections_idle_past_their_use_are_closed_on_every_host(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A fleet checked every few minutes must not keep a session and a socket per host meanwhile."""
    wire, made = FakeWire(), []
    transport = counting_transport(wire, made)
    clock = [1000.0]
    monkeypatch.setattr(time, "monotonic", lambda: clock[0])
    transport._pruned = clock[0]
    for address in ("10.1.2.3", "10.1.2.4"):
        await transport.execute(conn(address), "x", mutating=True)
    assert [transport.kept_connections(conn(a)) for a in ("10.1.2.3", "10.1.2.4")] == [1, 1]

    # Within the idle period an operation elsewhere leaves them alone.
    clock[0] += timeouts.WINRM_CONNECTION_IDLE / 2 + 1
    await transport.execute(conn("10.1.2.5"), "x", mutating=True)
    assert wire.sessions_closed == 0

    # Past it, the next operation anywhere closes both; its own connection stays.
    clock[0] += timeouts.WINRM_CONNECTION_IDLE
    await transport.execute(conn("10.1.2.5"), "x", mutating=True)
    assert [transport.kept_connections(conn(a)) for a in ("10.1.2.3", "10.1.2.4")] == [0, 0]
    assert transport.kept_connections(conn("10.1.2.5")) == 1
    assert wire.sessions_closed == 3, "both idle hosts', and the stale one the operation replaced"
    await transport.aclose()


def test_a_logged_on_session_no_longer_reads_proxy_settings_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HTTP_PROXY", "http://proxy.invalid:3128")
    protocol = pywinrm_protocol(conn(scheme="http"), CredentialFiles(), TransportLimits())
    session = requests.Session()
    protocol.transport.session = session
    looked: list[str] = []
    original = requests.sessions.resolve_proxies

    def counting(request: Any, proxies: Any, trust_env: bool = True) -> Any:
        if trust_env:
            looked.append(request.url)
        return original(request, proxies, trust_env)

    monkeypatch.setattr(requests.sessions, "resolve_proxies", counting)
    skip_environment(protocol)
    prepared = session.prepare_request(requests.Request("POST", "http://127.0.0.1:9/wsman", data=b""))
    with pytest.raises(requests.exceptions.ConnectionError):
        session.send(prepared, timeout=1)
    assert looked == [], "the environment was read for a request of a logged-on session"
    skip_environment(FakeProtocol(FakeWire(), conn()))  # a session not built yet: nothing to change
