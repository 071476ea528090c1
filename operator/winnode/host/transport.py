"""Running a script on a Windows host over WinRM, as one bounded async call.

pywinrm is blocking and its objects are not thread-safe, so every operation runs in a worker of our
own bounded thread pool, with a `winrm.protocol.Protocol` it has to itself for the operation:

0. Take the host's kept connection (an authenticated Protocol whose requests session holds the
   keep-alive TCP connection and, over http, the NTLM/Kerberos sealing context), or log on anew. A
   kept connection is handed to one operation at a time, so one pywinrm object is never used by two
   threads at once; a host has at most CONNECTIONS_PER_HOST of them (a read-only operation may run
   beside a mutating one), each kept while idle at most timeouts.WINRM_CONNECTION_IDLE.
1. Create a cmd shell with code page 65001 (UTF-8).
2. Command: `powershell -NoProfile -NonInteractive -ExecutionPolicy Bypass -EncodedCommand <bootstrap>`,
   about a thousand characters that read the real script from stdin and run it. The script itself
   never goes on a command line: cmd.exe caps one at 8191 characters.
3. Send the script (UTF-8) on stdin, then its secret section (host/protocol.py), in pieces that
   fit the host's MaxEnvelopeSize.
4. Receive until the command is done, re-asking after each OperationTimeout fault, until our own
   deadline; a command that outlives it is a HostTimeoutError.
5. Always, in `finally`: Signal terminate and Delete the shell. Failures there are logged, never
   raised over the real outcome.
6. A connection that served the operation without any error goes back to be kept; after any error
   it is closed, and the next operation connects and logs on again.

A kept connection may have been closed by the host while idle (its restart, an idle timeout we did
not see). That shows on its first request. Only when the failure came before any byte of the script
was sent (so nothing can have run: the bootstrap runs nothing before stdin ends) is the operation
started once more on a fresh connection; a connection lost later is a HostUnreachableError with
`command_sent`, never repeated here.

Concurrency: at most `Settings.winrm_global_concurrency` operations at once over all hosts, and at
most one mutating operation per host (read-only ones may run beside it). Every failure leaves as
one of the typed errors in `winnode.host.errors`. There are no retries here: backoff belongs to the
caller, which knows whether an action is safe to repeat.
"""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import contextlib
import functools
import logging
import math
import os
import re
import ssl
import tempfile
import threading
import time
import weakref
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol
from xml.etree.ElementTree import ParseError

import requests
from winrm.exceptions import (
    InvalidCredentialsError,
    WinRMError,
    WinRMOperationTimeoutError,
    WinRMTransportError,
    WSManFaultError,
)

from winnode import timeouts
from winnode.host import kerberos
from winnode.host.errors import (
    HostAuthenticationError,
    HostError,
    HostProtocolError,
    HostTimeoutError,
    HostTLSError,
    HostUnreachableError,
)
from winnode.host.pinning import MISMATCH_TEXT, pin_session
from winnode.host.protocol import BOOTSTRAP, encode_stdin
from winnode.host.shells import NamedShellProtocol, reclaim
from winnode.settings import Settings

log = logging.getLogger(__name__)

AUTH_MODES: tuple[str, ...] = ("ntlm", "kerberos", "credssp", "basic", "certificate")
PASSWORD_AUTH: frozenset[str] = frozenset({"ntlm", "kerberos", "credssp", "basic"})

UTF8_CODEPAGE = 65001
BOOTSTRAP_COMMAND = (
    "powershell -NoProfile -NonInteractive -ExecutionPolicy Bypass -EncodedCommand "
    + base64.b64encode(BOOTSTRAP.encode("utf-16-le")).decode("ascii")
)

# Room in a Send envelope for the SOAP header and, with NTLM/Kerberos, the encryption framing.
SEND_ENVELOPE_OVERHEAD = 8 * 1024
# A script's output is a result line and a few messages; beyond this something is wrong.
MAX_OUTPUT_BYTES = 16 * 1024 * 1024

# WSManFault codes (winerror.h ERROR_WSMAN_*).
WSMAN_SHELL_NOT_FOUND = 2150858843
WSMAN_QUOTA_MAX_SHELLS = 2150859173
WSMAN_QUOTA_CODES = frozenset({WSMAN_QUOTA_MAX_SHELLS, 2150859174, 2150859180, 2150859181})
# What pywinrm says when it was given no usable credentials (it raises InvalidCredentialsError too).
_MISSING_CREDENTIALS = re.compile(r"requires a (username|password)|must be specified|file not found")


# --- connection ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class HostConnection:
    """Where a host's WinRM listener is and how to log on to it. Secrets are kept out of repr."""

    address: str
    port: int = 5986
    # Plain strings (checked below) so API enums and Secret data pass without casts.
    scheme: str = "https"
    auth: str = "ntlm"
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    # PEM CA certificates that sign the listener's certificate; None uses the default trust store.
    ca_bundle: str | None = field(default=None, repr=False)
    insecure_skip_verify: bool = False
    # SHA-256 (hex) of the only listener certificate accepted (host/pinning.py); replaces CA checks.
    pinned_sha256: str | None = None
    # Client certificate and key (PEM) for auth "certificate".
    cert_pem: str | None = field(default=None, repr=False)
    key_pem: str | None = field(default=None, repr=False)
    # How messages name the host (e.g. the WindowsNode's name); defaults to address:port.
    name: str | None = None
    # auth "kerberos": the host name in the listener's service principal HTTP/<name>; None uses address.
    kerberos_hostname: str | None = None

    def __post_init__(self) -> None:
        if not self.address:
            raise ValueError("a host connection needs an address")
        if not 1 <= self.port <= 65535:
            raise ValueError(f"port {self.port} is not a TCP port")
        if self.scheme not in ("http", "https"):
            raise ValueError(f"scheme must be http or https, not {self.scheme!r}")
        if self.auth not in AUTH_MODES:
            raise ValueError(f"unknown auth {self.auth!r}; use ntlm, kerberos, credssp, basic or certificate")
        if self.auth == "certificate" and self.scheme != "https":
            raise ValueError("certificate authentication needs scheme https")

    @property
    def endpoint(self) -> str:
        host = f"[{self.address}]" if ":" in self.address else self.address
        return f"{self.scheme}://{host}:{self.port}/wsman"

    @property
    def label(self) -> str:
        where = f"{self.address}:{self.port}"
        return f"{self.name} ({where})" if self.name else where

    @property
    def kerberos_principal_host(self) -> str:
        return (self.kerberos_hostname or self.address).lower()

    @property
    def lock_key(self) -> str:
        return self.address.lower()


@dataclass(frozen=True)
class CredentialFiles:
    """Paths pywinrm (through requests) needs: it reads CA bundles and client keys only from files."""

    ca_path: str | None = None
    cert_path: str | None = None
    key_path: str | None = None


@contextlib.contextmanager
def credential_files(conn: HostConnection) -> Iterator[CredentialFiles]:
    """Write the connection's PEM material to a private temporary directory for one operation."""
    wanted = {
        "ca.pem": conn.ca_bundle if conn.scheme == "https" and not conn.insecure_skip_verify else None,
        "client.pem": conn.cert_pem if conn.auth == "certificate" else None,
        "client.key": conn.key_pem if conn.auth == "certificate" else None,
    }
    if not any(wanted.values()):
        yield CredentialFiles()
        return
    with tempfile.TemporaryDirectory(prefix="winnode-winrm-") as directory:
        os.chmod(directory, 0o700)
        paths: dict[str, str | None] = {}
        for name, content in wanted.items():
            if not content:
                paths[name] = None
                continue
            path = os.path.join(directory, name)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write(content)
            paths[name] = path
        yield CredentialFiles(
            ca_path=paths["ca.pem"], cert_path=paths["client.pem"], key_path=paths["client.key"]
        )


# --- limits and the protocol seam -----------------------------------------------------------------


@dataclass(frozen=True)
class TransportLimits:
    connect_s: float = timeouts.WINRM_CONNECT
    request_s: float = timeouts.WINRM_REQUEST
    receive_wait_s: float = timeouts.WINRM_RECEIVE_WAIT
    receive_margin_s: float = timeouts.WINRM_RECEIVE_MARGIN
    cleanup_s: float = timeouts.WINRM_CLEANUP
    max_envelope_size: int = 150 * 1024
    max_output_bytes: int = MAX_OUTPUT_BYTES

    def __post_init__(self) -> None:
        if min(self.connect_s, self.request_s, self.receive_wait_s, self.cleanup_s) <= 0:
            raise ValueError("WinRM timeouts must be positive")
        if self.max_envelope_size < 2 * SEND_ENVELOPE_OVERHEAD:
            raise ValueError(f"max_envelope_size must be at least {2 * SEND_ENVELOPE_OVERHEAD} bytes")

    @property
    def send_chunk_size(self) -> int:
        """Script bytes per Send: base64 grows them by 4/3 inside the envelope."""
        return (self.max_envelope_size - SEND_ENVELOPE_OVERHEAD) * 3 // 4


class WinRMProtocol(Protocol):
    """The part of `winrm.protocol.Protocol` we use (a fake implements it in unit tests).

    `operation_timeout_sec` is the OperationTimeout of the next request; `transport.read_timeout_sec`
    is what requests uses as its timeout (we set a (connect, read) pair before each request).
    """

    operation_timeout_sec: Any
    transport: Any

    def open_shell(self, *, noprofile: bool, codepage: int) -> str: ...

    def run_command(self, shell_id: str, command: str, *, console_mode_stdin: bool) -> str: ...

    def send_command_input(self, shell_id: str, command_id: str, stdin_input: bytes, end: bool) -> None: ...

    def get_command_output_raw(self, shell_id: str, command_id: str) -> tuple[bytes, bytes, int, bool]: ...

    def cleanup_command(self, shell_id: str, command_id: str) -> None: ...

    def close_shell(self, shell_id: str, close_session: bool) -> None: ...


ProtocolFactory = Callable[[HostConnection, CredentialFiles, TransportLimits], WinRMProtocol]


# Kept authenticated connections per host: one for the mutating operation, one for a read beside it.
CONNECTIONS_PER_HOST = 2


def pywinrm_protocol(conn: HostConnection, files: CredentialFiles, limits: TransportLimits) -> WinRMProtocol:
    """A pywinrm Protocol for one host connection (its shells carry winnode's name, host/shells.py)."""
    operation = max(1, math.ceil(limits.receive_wait_s))
    protocol = NamedShellProtocol(
        conn.endpoint,
        transport=conn.auth,  # type: ignore[arg-type]  # checked in HostConnection
        username=conn.username if conn.auth in PASSWORD_AUTH else None,
        password=conn.password if conn.auth in PASSWORD_AUTH else None,
        cert_pem=files.cert_path,
        cert_key_pem=files.key_path,
        server_cert_validation="ignore" if conn.insecure_skip_verify or conn.pinned_sha256 else "validate",
        # None: requests' own trust store, not whatever REQUESTS_CA_BUNDLE says.
        ca_trust_path=files.ca_path,  # type: ignore[arg-type]
        operation_timeout_sec=operation,
        read_timeout_sec=operation + max(1, math.ceil(limits.receive_margin_s)),
        # NTLM, Kerberos and CredSSP seal every message over http; over https TLS does.
        message_encryption="auto",
        # WinRM goes straight to the host; an HTTP(S)_PROXY meant for the internet must not apply.
        proxy=None,
    )
    if conn.auth == "kerberos":
        # Before pinning: pywinrm's own build_session would look for pykerberos.
        if not conn.username or conn.password is None:
            raise InvalidCredentialsError("auth method kerberos requires a username and a password")
        target = kerberos.KerberosTarget(username=conn.username, hostname=conn.kerberos_principal_host)
        kerberos.install(protocol.transport, target, conn.password)
    if conn.pinned_sha256:
        pin_session(protocol.transport.build_session(), conn.pinned_sha256)
    return protocol


def skip_environment(protocol: WinRMProtocol) -> None:
    """The session's later requests skip requests' look at the environment before each one (proxy
    variables, and ~/.netrc where no auth is set): pywinrm was given proxy=None, so the answer never
    changes, and the lookup was about 5% of the operator's CPU at bring-up."""
    session = getattr(protocol.transport, "session", None)
    if session is not None:
        session.trust_env = False


@dataclass
class _Connection:
    """One authenticated Protocol for `conn`, used by one worker at a time.

    `files` keeps the CA bundle and client key on disk for as long as the session may reconnect."""

    conn: HostConnection
    protocol: WinRMProtocol
    files: contextlib.ExitStack
    idle_since: float = 0.0
    operations: int = 0
    # The shell kept open for the next command of the same pass (host_pass), if any.
    shell_id: str | None = None

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.protocol.transport.close_session()
        with contextlib.suppress(Exception):
            self.files.close()


# --- results ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ExecResult:
    """What a script printed and returned. Output may echo script fragments: kept out of repr."""

    stdout: str = field(repr=False)
    stderr: str = field(repr=False)
    exit_code: int
    elapsed_s: float


class _Cancelled(Exception):
    """The awaiting task was cancelled: stop at the next step and clean up."""


# --- the transport -----------------------------------------------------------------------------------


@dataclass
class _HostLock:
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    users: int = 0


class WinRMTransport:
    """Async, bounded, single-attempt script execution on Windows hosts over WinRM."""

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        limits: TransportLimits | None = None,
        protocol_factory: ProtocolFactory | None = None,
    ) -> None:
        self.settings = settings or Settings()
        if self.settings.winrm_global_concurrency < 1:
            raise ValueError("winrm_global_concurrency must be at least 1")
        self.limits = limits or TransportLimits(
            max_envelope_size=self.settings.winrm_max_envelope_size_kb * 1024
        )
        self._factory: ProtocolFactory = protocol_factory or pywinrm_protocol
        # One semaphore per event loop: an asyncio primitive is bound to the loop that first waits on
        # it, and this transport is process-wide while event loops come and go (an operator restarted
        # in the same process, one loop per test). The thread pool bounds the real concurrency.
        self._slots: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Semaphore] = (
            weakref.WeakKeyDictionary()
        )
        self._executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=self.settings.winrm_global_concurrency, thread_name_prefix="winrm"
        )
        self._host_locks: dict[str, _HostLock] = {}
        # When each host's shells were last swept for ones a previous winnode process left.
        self._swept: dict[str, float] = {}
        self._swept_lock = threading.Lock()
        # Authenticated connections not in use, per host; taken and given back under _pool_lock.
        self._pool: dict[str, list[_Connection]] = {}
        # Open passes per host (host_pass): while one is open, a command's shell is kept for the next.
        self._passes: dict[str, int] = {}
        self._pool_lock = threading.Lock()
        # When idle connections of every host were last closed (_prune_idle).
        self._pruned = time.monotonic()
        self._closed = False
        # Lock and slot releases waiting for a cancelled operation's worker to finish.
        self._releasing: set[asyncio.Task[None]] = set()

    async def __aenter__(self) -> WinRMTransport:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Wait for running operations (each bounded by its deadline) and stop the worker threads."""
        if self._closed:
            return
        self._closed = True
        await asyncio.to_thread(self._executor.shutdown, True)
        with self._pool_lock:
            kept = [c for entries in self._pool.values() for c in entries]
            self._pool.clear()
        for connection in kept:
            connection.close()

    @contextlib.asynccontextmanager
    async def host_pass(self, address: str) -> AsyncIterator[None]:
        """Within this, the commands run on host `address` share one shell (Create and Delete once,
        not per command); the shell is deleted when the last open pass on the host ends."""
        key = address.lower()
        with self._pool_lock:
            self._passes[key] = self._passes.get(key, 0) + 1
        try:
            yield
        finally:
            with self._pool_lock:
                left = self._passes.get(key, 1) - 1
                if left > 0:
                    self._passes[key] = left
                    shells: list[_Connection] = []
                else:
                    self._passes.pop(key, None)
                    entries = self._pool.get(key, [])
                    shells = [c for c in entries if c.shell_id is not None]
                    for c in shells:
                        entries.remove(c)
            if shells and not self._closed:
                loop = asyncio.get_running_loop()
                await asyncio.shield(loop.run_in_executor(self._executor, self._close_shells, shells))
            else:
                for connection in shells:
                    connection.close()

    def _close_shells(self, connections: list[_Connection]) -> None:
        for connection in connections:
            if self._delete_shell(connection):
                self._give_back(connection)
            else:
                connection.close()

    def _delete_shell(self, connection: _Connection) -> bool:
        """Delete the connection's kept shell; False when that failed (the connection is suspect)."""
        shell_id, connection.shell_id = connection.shell_id, None
        if shell_id is None:
            return True
        protocol = connection.protocol
        return self._cleanup(
            protocol,
            connection.conn,
            "delete shell",
            lambda: protocol.close_shell(shell_id, close_session=False),
        )

    def kept_connections(self, conn: HostConnection) -> int:
        """How many authenticated connections to this host wait for the next operation."""
        with self._pool_lock:
            return len(self._pool.get(conn.lock_key, ()))

    def host_busy(self, conn: HostConnection) -> bool:
        """Whether a mutating operation holds (or waits for) this host's lock."""
        return conn.lock_key in self._host_locks

    @contextlib.asynccontextmanager
    async def _exclusive(self, key: str) -> AsyncIterator[None]:
        entry = self._host_locks.get(key)
        if entry is None:
            entry = self._host_locks[key] = _HostLock()
        entry.users += 1
        try:
            async with entry.lock:
                yield
        finally:
            entry.users -= 1
            if entry.users == 0 and self._host_locks.get(key) is entry:
                del self._host_locks[key]

    async def execute(
        self,
        conn: HostConnection,
        script: str,
        *,
        mutating: bool,
        timeout_s: float | None = None,
        action: str = "script",
        secrets: dict[str, str] | None = None,
    ) -> ExecResult:
        """Run `script` on the host and return its output, or raise a HostError.

        `timeout_s` bounds the whole operation from the moment it gets its slot (waiting for the
        host lock or a global slot is not counted). Cancelling the caller stops the operation at its
        next step; the host lock and the slot are held until the worker has cleaned up.
        `secrets` (a winnode script's secret fields) follow the script on stdin, never in its text.
        """
        if self._closed:
            raise RuntimeError("the WinRM transport is closed")
        timeout = self.settings.winrm_operation_timeout_s if timeout_s is None else timeout_s
        if timeout <= 0:
            raise ValueError("timeout_s must be positive")
        payload = encode_stdin(script, secrets) if secrets is not None else script.encode("utf-8")
        loop = asyncio.get_running_loop()
        slots = self._slots.get(loop)
        if slots is None:
            slots = self._slots[loop] = asyncio.Semaphore(self.settings.winrm_global_concurrency)
        async with contextlib.AsyncExitStack() as held:
            if mutating:
                await held.enter_async_context(self._exclusive(conn.lock_key))
            await held.enter_async_context(slots)
            cancelled = threading.Event()
            work = functools.partial(self._run_blocking, conn, payload, timeout, cancelled, action)
            future = loop.run_in_executor(self._executor, work)
            try:
                return await asyncio.shield(future)
            except asyncio.CancelledError:
                cancelled.set()
                await self._release_when_done(future, held)
                raise

    async def _release_when_done(
        self, future: asyncio.Future[ExecResult], held: contextlib.AsyncExitStack
    ) -> None:
        """After a cancellation, keep the host lock and the slot until the worker has cleaned up.

        The worker notices the cancellation only between WS-Management requests, and a Receive may
        wait for output for WINRM_RECEIVE_WAIT: the caller (a stopping operator, within a Pod's
        30 s grace) waits a short grace, then the lock and the slot pass to the worker's completion.
        """
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait({future}, timeout=timeouts.WINRM_CANCEL_GRACE)
        if future.done():
            return
        later = held.pop_all()
        loop = asyncio.get_running_loop()

        def release(_: object) -> None:
            task = loop.create_task(later.aclose())
            self._releasing.add(task)
            task.add_done_callback(self._releasing.discard)

        future.add_done_callback(release)

    # --- worker side (runs in the thread pool) ---------------------------------------------------

    def _run_blocking(
        self, conn: HostConnection, payload: bytes, timeout: float, cancelled: threading.Event, action: str
    ) -> ExecResult:
        started = time.monotonic()
        deadline = started + timeout
        state = _OperationState()
        self._prune_idle()
        try:
            connection = self._take(conn)
            reused = connection is not None
            if connection is None:
                connection = self._connect(conn)
            try:
                stdout, stderr, code = self._run_command(
                    connection, conn, payload, deadline, timeout, cancelled, action, state
                )
            except (_Cancelled, HostError):
                connection.close()
                raise
            except Exception as exc:
                connection.close()
                if not reused or state.input_started:
                    raise
                # The kept connection was closed by the host while idle; nothing of the script left.
                log.debug(
                    "kept WinRM connection to %s failed before %s started (%s); connecting again",
                    conn.label,
                    action,
                    type(exc).__name__,
                    extra={"host": conn.label, "action": action},
                )
                state = _OperationState()
                connection = self._connect(conn)
                try:
                    stdout, stderr, code = self._run_command(
                        connection, conn, payload, deadline, timeout, cancelled, action, state
                    )
                except BaseException:
                    connection.close()
                    raise
            self._finish(connection)
        except _Cancelled:
            raise HostTimeoutError(
                conn.label, f"{action} on {conn.label} was cancelled before it finished", reason="Cancelled"
            ) from None
        except HostError:
            raise
        except Exception as exc:
            error = (
                _session_lost(conn, action, state)
                if state.logged_on and _is_refusal(exc)
                else classify_error(
                    exc, conn, action=action, command_sent=state.command_sent, connect_s=self.limits.connect_s
                )
            )
            log.debug(
                "winrm %s on %s failed: %s (%s)",
                action,
                conn.label,
                error.reason,
                type(exc).__name__,
                extra={"host": conn.label, "action": action, "reason": error.reason},
            )
            raise error from None
        elapsed = time.monotonic() - started
        log.debug(
            "winrm %s on %s: exit code %d in %.2fs",
            action,
            conn.label,
            code,
            elapsed,
            extra={"host": conn.label, "action": action, "exit_code": code, "elapsed_s": round(elapsed, 3)},
        )
        return ExecResult(
            stdout=stdout.decode("utf-8", errors="replace"),
            stderr=stderr.decode("utf-8", errors="replace"),
            exit_code=code,
            elapsed_s=elapsed,
        )

    def _connect(self, conn: HostConnection) -> _Connection:
        """A new Protocol for `conn` (it connects and logs on with its first request)."""
        files = contextlib.ExitStack()
        try:
            paths = files.enter_context(credential_files(conn))
            return _Connection(conn, self._factory(conn, paths, self.limits), files)
        except BaseException:
            files.close()
            raise

    def _take(self, conn: HostConnection) -> _Connection | None:
        """A kept connection to `conn`'s host with the same settings and credentials, if one is fresh."""
        now = time.monotonic()
        stale: list[_Connection] = []
        found: _Connection | None = None
        with self._pool_lock:
            entries = self._pool.get(conn.lock_key, [])
            while entries:
                candidate = entries.pop()
                if candidate.conn == conn and now - candidate.idle_since < timeouts.WINRM_CONNECTION_IDLE:
                    found = candidate
                    break
                stale.append(candidate)
            if not entries:
                self._pool.pop(conn.lock_key, None)
        for connection in stale:
            # A shell kept through a long pause of its pass: delete it while the host may still
            # accept this connection (if not, the next sweep does).
            self._delete_shell(connection)
            connection.close()
        return found

    def _prune_idle(self) -> None:
        """Close the kept connections of every host that have idled past WINRM_CONNECTION_IDLE.

        _take would never use them again, but only a later operation on the same host drops them:
        a fleet checked every few minutes would keep a session, a socket and its sealing context per
        host for nothing. Runs at most twice per idle period; connections holding a shell of an open
        pass are left to that pass."""
        now = time.monotonic()
        if now - self._pruned < timeouts.WINRM_CONNECTION_IDLE / 2:
            return
        stale: list[_Connection] = []
        with self._pool_lock:
            if now - self._pruned < timeouts.WINRM_CONNECTION_IDLE / 2:
                return
            self._pruned = now
            for key in list(self._pool):
                keep: list[_Connection] = []
                for c in self._pool[key]:
                    fresh = now - c.idle_since < timeouts.WINRM_CONNECTION_IDLE
                    (keep if fresh or (c.shell_id is not None and self._passes.get(key)) else stale).append(c)
                if keep:
                    self._pool[key] = keep
                else:
                    del self._pool[key]
        for connection in stale:
            if connection.shell_id is not None:
                # Its pass has ended, so no one deletes this shell but the host's next sweep.
                self._delete_shell(connection)
            connection.close()

    def _finish(self, connection: _Connection) -> None:
        """After a successful command: keep its shell if a pass on the host is open, else delete it."""
        with self._pool_lock:
            if connection.shell_id is not None and self._passes.get(connection.conn.lock_key):
                # Given back under the same lock host_pass ends under: its end deletes this shell.
                self._keep(connection)
                return
        if self._delete_shell(connection):
            self._give_back(connection)
        else:
            connection.close()

    def _keep(self, connection: _Connection) -> None:
        connection.idle_since = time.monotonic()
        connection.operations += 1
        entries = self._pool.setdefault(connection.conn.lock_key, [])
        if not self._closed and len(entries) < CONNECTIONS_PER_HOST:
            entries.append(connection)
            return
        # No room: the shell stays until the sweep (the pool is full only with reads beside writes).
        # close() also removes the connection's CA bundle and client key from disk.
        connection.close()

    def _give_back(self, connection: _Connection) -> None:
        connection.idle_since = time.monotonic()
        connection.operations += 1
        with self._pool_lock:
            entries = self._pool.setdefault(connection.conn.lock_key, [])
            if not self._closed and len(entries) < CONNECTIONS_PER_HOST:
                entries.append(connection)
                return
        connection.close()

    def _request_timeouts(self, protocol: WinRMProtocol, read_s: float) -> None:
        protocol.transport.read_timeout_sec = (self.limits.connect_s, read_s)

    def _check(
        self, conn: HostConnection, deadline: float, timeout: float, cancelled: threading.Event, action: str
    ) -> None:
        if cancelled.is_set():
            raise _Cancelled
        if time.monotonic() >= deadline:
            raise HostTimeoutError(
                conn.label,
                f"{action} on {conn.label} did not finish within {timeout:g}s; it may still be running "
                "there. Check the host's load and responsiveness; the step is retried.",
                timeout_s=timeout,
            )

    def _run_command(
        self,
        connection: _Connection,
        conn: HostConnection,
        payload: bytes,
        deadline: float,
        timeout: float,
        cancelled: threading.Event,
        action: str,
        state: _OperationState,
    ) -> tuple[bytes, bytes, int]:
        """Run the command in the connection's kept shell or a new one. On success the shell stays
        open in `connection` (_finish decides); on any failure it is deleted here."""
        protocol = connection.protocol
        self._check(conn, deadline, timeout, cancelled, action)
        self._request_timeouts(protocol, self.limits.request_s)
        shell_id = connection.shell_id
        if shell_id is None:
            if self._sweep_due(conn):
                reclaim(protocol, conn.label)
            try:
                shell_id = protocol.open_shell(noprofile=True, codepage=UTF8_CODEPAGE)
            except WSManFaultError as exc:
                # Shells left by a killed operator count against the per-user quota: delete them, once.
                if exc.wsman_fault_code not in WSMAN_QUOTA_CODES or not reclaim(protocol, conn.label):
                    raise
                self._check(conn, deadline, timeout, cancelled, action)
                shell_id = protocol.open_shell(noprofile=True, codepage=UTF8_CODEPAGE)
            connection.shell_id = shell_id
            state.logged_on = True
            skip_environment(protocol)
        succeeded = False
        try:
            self._check(conn, deadline, timeout, cancelled, action)
            command_id = protocol.run_command(shell_id, BOOTSTRAP_COMMAND, console_mode_stdin=False)
            state.logged_on = True
            state.command_sent = True
            try:
                chunk = self.limits.send_chunk_size
                pieces = [payload[i : i + chunk] for i in range(0, len(payload), chunk)] or [b""]
                for index, piece in enumerate(pieces):
                    self._check(conn, deadline, timeout, cancelled, action)
                    state.input_started = True
                    protocol.send_command_input(shell_id, command_id, piece, end=index == len(pieces) - 1)
                output = self._receive(
                    protocol, conn, shell_id, command_id, deadline, timeout, cancelled, action
                )
            finally:
                self._cleanup(
                    protocol, conn, "signal terminate", lambda: protocol.cleanup_command(shell_id, command_id)
                )
            succeeded = True
            return output
        finally:
            if not succeeded:
                self._delete_shell(connection)

    def _sweep_due(self, conn: HostConnection) -> bool:
        """True once per host on first contact and then every WINRM_SHELL_SWEEP_INTERVAL."""
        now = time.monotonic()
        with self._swept_lock:
            last = self._swept.get(conn.lock_key)
            if last is not None and now - last < timeouts.WINRM_SHELL_SWEEP_INTERVAL:
                return False
            self._swept[conn.lock_key] = now
            return True

    def _receive(
        self,
        protocol: WinRMProtocol,
        conn: HostConnection,
        shell_id: str,
        command_id: str,
        deadline: float,
        timeout: float,
        cancelled: threading.Event,
        action: str,
    ) -> tuple[bytes, bytes, int]:
        stdout = bytearray()
        stderr = bytearray()
        while True:
            self._check(conn, deadline, timeout, cancelled, action)
            remaining = deadline - time.monotonic()
            wait = max(1, min(math.ceil(self.limits.receive_wait_s), math.ceil(remaining)))
            protocol.operation_timeout_sec = wait
            self._request_timeouts(protocol, wait + self.limits.receive_margin_s)
            try:
                out, err, code, done = protocol.get_command_output_raw(shell_id, command_id)
            except WinRMOperationTimeoutError:
                # No output within OperationTimeout: the normal answer while a command runs.
                continue
            stdout += out
            stderr += err
            if len(stdout) + len(stderr) > self.limits.max_output_bytes:
                raise HostProtocolError(
                    conn.label,
                    f"{action} on {conn.label} printed more than {self.limits.max_output_bytes} bytes; "
                    "a winnode script prints one result line, so the host ran something else",
                    reason="OutputTooLarge",
                )
            if done:
                return bytes(stdout), bytes(stderr), code

    def _cleanup(
        self, protocol: WinRMProtocol, conn: HostConnection, what: str, step: Callable[[], None]
    ) -> bool:
        """Run one cleanup step; False (logged, never raised) when it failed."""
        try:
            wait = max(1, math.ceil(self.limits.cleanup_s))
            protocol.operation_timeout_sec = wait
            self._request_timeouts(protocol, wait + 1)
            step()
        except Exception as exc:
            # The outcome of the command is what matters to the caller; a shell left behind is
            # removed by WinRM itself after its idle timeout.
            log.warning(
                "winrm %s on %s failed: %s",
                what,
                conn.label,
                type(exc).__name__,
                extra={"host": conn.label, "step": what, "error": type(exc).__name__},
            )
            return False
        return True


@dataclass
class _OperationState:
    # Set once the Command request succeeded: from then on the host may have run (part of) the script.
    command_sent: bool = False
    # Set before the first Send: until then the bootstrap has no script to run, whatever happened.
    input_started: bool = False
    # Set once the host accepted a request of this operation: the credentials are good.
    logged_on: bool = False


def _is_refusal(exc: BaseException) -> bool:
    """A 401 or 400: what a host answers a request sealed with a context it no longer has."""
    if isinstance(exc, InvalidCredentialsError):
        return True
    return isinstance(exc, WinRMTransportError) and exc.code in (400, 401)


def _session_lost(conn: HostConnection, action: str, state: _OperationState) -> HostUnreachableError:
    """The connection was replaced in the middle of an operation (requests reconnects by itself) and
    the host refused the new one: with NTLM or Kerberos over http the logon and the message sealing
    belong to the TCP connection, so this is the connection lost, not a credentials problem."""
    return HostUnreachableError(
        conn.label,
        f"the connection to {conn.label} was lost while {action} was running and the host did not "
        "accept the operation's logon on a new one; the host may have restarted WinRM. "
        + ("The step is retried and is safe to run again." if state.command_sent else "It is retried."),
        command_sent=state.command_sent,
    )


# --- error classification ---------------------------------------------------------------------------


def _causes(exc: BaseException) -> Iterator[BaseException]:
    """`exc` and what it wraps: __cause__/__context__, urllib3's `.reason`, requests' args[0]."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        reason = getattr(current, "reason", None)
        if isinstance(reason, BaseException):
            current = reason
        elif current.args and isinstance(current.args[0], BaseException):
            current = current.args[0]
        else:
            current = current.__cause__ or current.__context__


def _detail(exc: BaseException) -> str:
    """A short human reason: the OS or TLS error at the bottom when there is one."""
    chain = list(_causes(exc))
    for cause in chain:
        if isinstance(cause, ssl.SSLCertVerificationError) and cause.verify_message:
            return f"certificate verify failed: {cause.verify_message}"
    for cause in chain:
        if isinstance(cause, ssl.SSLError):
            return str(cause.reason or cause)[:300]
        if isinstance(cause, OSError) and cause.strerror:
            return cause.strerror
    last = chain[-1]
    text = getattr(last, "reason", None)
    text = text if isinstance(text, str) and text else str(last) or type(last).__name__
    return " ".join(text.split())[:300]


_KERBEROS_FIXES: dict[str, str] = {
    "KerberosPasswordExpired": "the account's password has expired: set a new one and update the Secret",
    "KerberosPrincipalUnknown": "the KDC does not know this principal: check the username in the Secret "
    "(user@REALM, the realm in upper case)",
    "KerberosServicePrincipalUnknown": "the KDC has no service principal HTTP/{spn_host}: register it for "
    "the host (setspn -S HTTP/{spn_host} HOSTNAME) or set spec.winrm.kerberosHostname to the name it has",
    "KerberosPasswordRejected": "the KDC refused the password: fix the password in the Secret",
    "KerberosKDCUnreachable": "no KDC of the realm answered: check krb5.conf (KRB5_CONFIG of the operator, "
    "the [realms] kdc entries) and that the KDC's port 88 is reachable from the operator",
    "KerberosClockSkew": "the host's clock differs from the KDC's by more than the allowed skew (5 minutes): "
    "synchronise it (w32tm /resync on the host; NTP on the operator's node)",
    "KerberosTicketExpired": "a ticket was refused as expired: the clocks of the operator's "
    "node, the KDC and the host differ; synchronise them (NTP; w32tm /resync on the host)",
    "KerberosMutualAuthFailed": "the host did not prove it holds the key of the service principal: the "
    "address may reach another machine, or the host's keytab/computer account is out of date",
    "AuthMethodUnavailable": "install winnode with its kerberos extra (python-gssapi and krb5 need "
    "MIT krb5's libraries)",
}


def _kerberos_error(exc: kerberos.KerberosFailure, conn: HostConnection) -> HostError:
    fix = _KERBEROS_FIXES.get(exc.reason, "see the krb5 error above and the realm configuration")
    message = f"Kerberos logon of {conn.username!r} to {conn.label} failed ({exc.detail}): " + fix.format(
        spn_host=conn.kerberos_principal_host
    )
    if exc.reason == "KerberosKDCUnreachable":
        return HostUnreachableError(conn.label, message, reason=exc.reason)
    return HostAuthenticationError(conn.label, message, reason=exc.reason)


def classify_error(
    exc: BaseException,
    conn: HostConnection,
    *,
    action: str,
    command_sent: bool,
    connect_s: float = timeouts.WINRM_CONNECT,
) -> HostError:
    """The typed error for an exception raised by pywinrm or requests while talking to `conn`."""
    host = conn.label
    if isinstance(exc, HostError):
        return exc
    if isinstance(exc, kerberos.KerberosFailure):
        return _kerberos_error(exc, conn)
    if isinstance(exc, InvalidCredentialsError) and _MISSING_CREDENTIALS.search(str(exc)):
        needed = "tls.crt and tls.key" if conn.auth == "certificate" else "username and password"
        return HostAuthenticationError(
            host,
            f"no credentials for {conn.auth} authentication to {host}: the credentials Secret must "
            f"hold {needed}",
            reason="CredentialsMissing",
        )
    if isinstance(exc, InvalidCredentialsError):
        if conn.auth == "certificate":
            return HostAuthenticationError(
                host,
                f"WinRM on {host} did not accept the client certificate: map it to a local administrator "
                "on the host (New-Item WSMan:\\localhost\\ClientCertificate ...) and check that certificate "
                "authentication is enabled (winrm get winrm/config/service/auth)",
            )
        if conn.auth == "kerberos":
            return HostAuthenticationError(
                host,
                f"WinRM on {host} accepted no Kerberos logon of {conn.username!r} with a ticket for "
                f"HTTP/{conn.kerberos_principal_host}: the principal must be an account in the host's "
                "Administrators group (a domain account the host trusts), and the service principal "
                "must be registered for this host (setspn -L on the host's computer account)",
                reason="KerberosPrincipalRejected",
            )
        return HostAuthenticationError(
            host,
            f"WinRM on {host} rejected the {conn.auth} credentials of user {conn.username!r}: check the "
            "username and password in the credentials Secret, that the account is in the host's "
            f"Administrators group and that {conn.auth} authentication is enabled on the listener "
            "(winrm get winrm/config/service/auth)",
        )
    if isinstance(exc, WSManFaultError):
        code = exc.wsman_fault_code
        if code in WSMAN_QUOTA_CODES:
            return HostUnreachableError(
                host,
                f"WinRM on {host} refused a new shell: the user has too many open shells or operations "
                f"({_detail(exc)}). They close on their own after their idle timeout; raise "
                "MaxShellsPerUser (winrm/config/winrs) if this keeps happening.",
                reason="WinRMQuotaExceeded",
            )
        if code == WSMAN_SHELL_NOT_FOUND:
            return HostUnreachableError(
                host,
                f"the WinRM shell running {action} on {host} disappeared (the host or its WinRM service "
                "restarted); the step is retried and is safe to run again",
                reason="ShellLost",
                command_sent=command_sent,
            )
        if exc.code == 401:
            return classify_error(InvalidCredentialsError(), conn, action=action, command_sent=command_sent)
        return HostProtocolError(
            host, f"WinRM on {host} answered {action} with a fault: {_detail(exc)}", reason="WSManFault"
        )
    if isinstance(exc, WinRMTransportError):
        if exc.code == 401:
            return classify_error(InvalidCredentialsError(), conn, action=action, command_sent=command_sent)
        if exc.code == 413:
            return HostProtocolError(
                host,
                f"WinRM on {host} refused a message as too large (HTTP 413): lower "
                "WINNODE_WINRM_MAX_ENVELOPE_SIZE_KB to the host's MaxEnvelopeSizekb "
                "(winrm get winrm/config)",
                reason="EnvelopeTooLarge",
            )
        if exc.code in (502, 503, 504):
            return HostUnreachableError(
                host,
                f"WinRM on {host} is not available (HTTP {exc.code}); retrying later",
                command_sent=command_sent,
            )
        return HostProtocolError(
            host,
            f"WinRM on {host} answered HTTP {exc.code}: is {conn.endpoint} a WinRM listener?",
            reason="UnexpectedHTTPStatus",
        )
    if isinstance(exc, WinRMOperationTimeoutError):
        return HostTimeoutError(host, f"WinRM on {host} did not complete a request of {action} in time")
    if conn.pinned_sha256 and any(MISMATCH_TEXT in str(c) for c in _causes(exc)):
        return HostTLSError(
            host,
            f"the WinRM listener of {host} presented a certificate other than the pinned one (SHA-256 "
            f"{conn.pinned_sha256}); the connection was closed before any credentials were sent. If the "
            "host's certificate was replaced on purpose, set spec.winrm.certificateSHA256 to the new one "
            "(with trustOnFirstUse: remove status.listenerCertificateSHA256)",
            reason="CertificatePinMismatch",
        )
    if isinstance(exc, requests.exceptions.SSLError) or any(
        isinstance(c, ssl.SSLError) for c in _causes(exc)
    ):
        return HostTLSError(
            host,
            f"TLS with {host} failed ({_detail(exc)}): put the CA that signed the WinRM listener's "
            "certificate in spec.winrm.caBundle and make sure the certificate names the address used; "
            "insecureSkipVerify is for lab hosts only",
        )
    if isinstance(exc, requests.exceptions.ConnectTimeout):
        return HostUnreachableError(
            host,
            f"cannot connect to WinRM on {host}: no answer within {connect_s:g}s. Check that the "
            f"host is up and that a firewall lets port {conn.port} through",
            command_sent=command_sent,
        )
    if isinstance(exc, requests.exceptions.ReadTimeout):
        return HostTimeoutError(
            host,
            f"WinRM on {host} stopped answering during {action}; the host may be overloaded or hung. "
            "The step is retried.",
        )
    if isinstance(exc, requests.exceptions.ConnectionError | ConnectionError):
        if command_sent:
            return HostUnreachableError(
                host,
                f"the connection to {host} dropped while {action} was running ({_detail(exc)}); the host "
                "may have rebooted. The step is retried and is safe to run again.",
                command_sent=True,
            )
        if any(isinstance(c, ConnectionRefusedError) for c in _causes(exc)):
            # An answer, not silence: the machine is up but nothing listens on that port.
            return HostUnreachableError(
                host,
                f"cannot connect to WinRM on {host} ({_detail(exc)}): the host answers but nothing "
                f"listens on port {conn.port}. Start the WinRM service (Start-Service WinRM) and enable "
                f"its {conn.scheme} listener on that port (winrm quickconfig"
                f"{' -transport:https' if conn.scheme == 'https' else ''})",
                reason="ConnectionRefused",
            )
        return HostUnreachableError(
            host,
            f"cannot connect to WinRM on {host} ({_detail(exc)}): check that the host is up, that the "
            f"WinRM {conn.scheme} listener on port {conn.port} is enabled (winrm quickconfig"
            f"{' -transport:https' if conn.scheme == 'https' else ''}) and that the firewall allows it",
        )
    if isinstance(exc, WinRMError):
        text = str(exc)
        if "not installed" in text or "unsupported auth" in text:
            return HostAuthenticationError(
                host,
                f"auth {conn.auth} cannot be used for {host}: {text}. Choose another spec.winrm.auth "
                "(ntlm works with local and domain accounts)",
                reason="AuthMethodUnavailable",
            )
        return HostProtocolError(host, f"WinRM error talking to {host}: {_detail(exc)}")
    if isinstance(exc, requests.exceptions.RequestException | OSError):
        return HostUnreachableError(
            host, f"talking to WinRM on {host} failed: {_detail(exc)}", command_sent=command_sent
        )
    if isinstance(exc, ParseError | StopIteration | AssertionError | KeyError | ValueError):
        # pywinrm parses answers with ElementTree and `next(...)`: garbage surfaces as these.
        return HostProtocolError(
            host,
            f"the answer of {host} to {action} is not valid WS-Management ({type(exc).__name__}): "
            f"is {conn.endpoint} a WinRM listener?",
        )
    return HostProtocolError(
        host, f"unexpected error talking to {host} during {action}: {type(exc).__name__}: {_detail(exc)}"
    )
