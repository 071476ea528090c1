"""The one Kubernetes API client of winnode: JSON over HTTPS on aiohttp, for the reconciler (through
`kube.client.Kube`) and for the admission webhook.

- `Credentials`: the apiserver's URL and how to authenticate. The Authorization header is asked for
  anew before each request, so a projected service-account token rotated on disk by the kubelet, or
  an exec-plugin token past its expiry, is picked up. Loaded here from a kubeconfig or the pod's
  service account without the `kubernetes` package (the webhook never imports it, it costs ~20 MB
  per process); `Kube.from_kubeconfig` fills the same type from `kubernetes.config` instead.
- `ApiClient`: one aiohttp session per event loop (tests, `winnode demo` and benches run several
  loops in several threads; a session or connection never crosses loops), each with a bounded
  connection pool. Every request is bounded by the client's timeout (winnode.timeouts).
- `ApiError`: a non-2xx answer. Its message is the status, reason and the apiserver's Status
  message, never the request or response headers or body (they can hold tokens and Secret data).
- `path()`: every URL path is built here, one quoted segment at a time.

Whoever runs an event loop that used a client awaits `aclose()` on that loop before it ends;
`close()` closes the sessions of loops that are not running in the caller's thread.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime
import json
import logging
import os
import ssl
import tempfile
import threading
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, overload
from urllib.parse import quote

import aiohttp
import yaml

from winnode import __version__, timeouts

log = logging.getLogger(__name__)

IN_CLUSTER_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")
USER_AGENT = f"winnode/{__version__}"
# Connections per event loop to the apiserver (HTTP/1.1: one request at a time on each). Requests
# past this wait for a free connection (within their timeout) instead of opening more sockets.
MAX_CONNECTIONS = 32

Method = Literal["GET", "POST", "PUT", "PATCH", "DELETE"]
Body = Mapping[str, Any] | Sequence[Any]
Query = Mapping[str, str | int | bool]


class ApiError(Exception):
    """A non-2xx answer from the apiserver.

    `status`, `reason` (HTTP reason phrase), `body` (the response text, usually a Status object) and
    `message` (the Status message, else the reason). str() leaves the body out.
    """

    def __init__(self, status: int, reason: str = "", body: str = "", message: str | None = None) -> None:
        self.status = status
        self.reason = reason
        self.body = body
        self.message = _status_message(body) if message is None else message
        super().__init__(
            f"HTTP {status} {reason}: {self.message}" if self.message else f"HTTP {status} {reason}"
        )


def _status_message(body: str) -> str:
    try:
        decoded = json.loads(body or "")
    except ValueError:
        return ""
    return str(decoded.get("message") or "") if isinstance(decoded, dict) else ""


def status_of(exc: BaseException) -> int | None:
    """HTTP status of an ApiError, None for anything else."""
    return exc.status if isinstance(exc, ApiError) else None


def api_message(exc: ApiError) -> str:
    """The apiserver's own explanation (Status.message), falling back to the HTTP status and reason."""
    return exc.message or f"HTTP {exc.status} {exc.reason or ''}".strip()


def api_status(exc: ApiError) -> dict[str, Any]:
    """The Status object of an error response (empty when the body is not one)."""
    try:
        body = json.loads(exc.body or "")
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def path(*segments: str) -> str:
    """Join URL path segments, quoting each: names come from custom resources and users."""
    return "/" + "/".join(quote(s, safe="") for s in segments)


# --- credentials ---------------------------------------------------------------------------------


class ConfigError(RuntimeError):
    """No usable credentials: neither a readable kubeconfig nor an in-cluster service account."""


@dataclass(frozen=True, repr=False)
class Credentials:
    """Where the apiserver is and how to authenticate. The repr names the server only."""

    server: str
    ca_pem: bytes | None = None
    insecure: bool = False
    client_cert_pem: bytes | None = None
    client_key_pem: bytes | None = None
    token: str | None = None
    token_file: Path | None = None
    # The whole Authorization header ("Bearer ...", "Basic ..."), asked before every request; when
    # set it replaces token and token_file (kubernetes.config refreshes exec and in-cluster tokens).
    authorization_source: Callable[[], str | None] | None = None
    tls_server_name: str | None = None
    proxy: str | None = None

    def __repr__(self) -> str:
        return f"Credentials(server={self.server!r})"

    def bearer(self) -> str | None:
        # Re-read every time: projected service-account tokens are rotated on disk by the kubelet.
        if self.token_file is not None:
            return self.token_file.read_text().strip()
        return self.token

    def authorization(self) -> str | None:
        if self.authorization_source is not None:
            return self.authorization_source()
        token = self.bearer()
        return f"Bearer {token}" if token else None

    def ssl_context(self) -> ssl.SSLContext:
        if self.insecure:
            ctx = ssl.create_default_context()
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        else:
            ctx = ssl.create_default_context(cadata=self.ca_pem.decode() if self.ca_pem else None)
        if self.client_cert_pem and self.client_key_pem:
            load_cert_chain_from_memory(ctx, self.client_cert_pem, self.client_key_pem)
        return ctx


def load_cert_chain_from_memory(ctx: ssl.SSLContext, cert_pem: bytes, key_pem: bytes) -> None:
    """ssl only loads certificates from files: write them to a private directory for the moment it reads."""
    with tempfile.TemporaryDirectory(prefix="winnode-tls-") as tmp:
        cert_path, key_path = Path(tmp) / "tls.crt", Path(tmp) / "tls.key"
        cert_path.write_bytes(cert_pem)
        fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(key_pem)
        ctx.load_cert_chain(cert_path, key_path)


def _data_or_file(entry: Mapping[str, Any], key: str, base: Path) -> bytes | None:
    data = entry.get(f"{key}-data")
    if data:
        return base64.b64decode(str(data))
    file = entry.get(key)
    if file:
        return (base / str(file)).read_bytes()
    return None


def from_kubeconfig(kubeconfig: Path, context: str | None = None) -> Credentials:
    """Server, CA, client certificate, token or tokenFile of one kubeconfig context (no exec plugins:
    the webhook runs in-cluster; the reconciler loads through kubernetes.config)."""
    try:
        doc = yaml.safe_load(kubeconfig.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot read kubeconfig {kubeconfig}: {exc}") from exc
    base = kubeconfig.parent

    def named(section: str, name: str) -> dict[str, Any]:
        for item in doc.get(section) or []:
            if item.get("name") == name:
                inner = item.get(section[:-1]) or {}
                return dict(inner)
        raise ConfigError(f"kubeconfig {kubeconfig}: no {section[:-1]} named {name!r}")

    ctx_name = context or doc.get("current-context")
    if not ctx_name:
        raise ConfigError(f"kubeconfig {kubeconfig} has no current-context; pass a context")
    ctx = named("contexts", ctx_name)
    cluster = named("clusters", ctx.get("cluster", ""))
    user = named("users", ctx.get("user", "")) if ctx.get("user") else {}
    server = cluster.get("server")
    if not server:
        raise ConfigError(f"kubeconfig {kubeconfig}: cluster {ctx.get('cluster')!r} has no server")
    token_file = user.get("tokenFile")
    return Credentials(
        server=str(server).rstrip("/"),
        ca_pem=_data_or_file(cluster, "certificate-authority", base),
        insecure=bool(cluster.get("insecure-skip-tls-verify")),
        client_cert_pem=_data_or_file(user, "client-certificate", base),
        client_key_pem=_data_or_file(user, "client-key", base),
        token=user.get("token"),
        token_file=(base / token_file) if token_file else None,
        tls_server_name=cluster.get("tls-server-name") or None,
        proxy=cluster.get("proxy-url") or None,
    )


def in_cluster(directory: Path = IN_CLUSTER_DIR) -> Credentials:
    host, port = os.environ.get("KUBERNETES_SERVICE_HOST"), os.environ.get("KUBERNETES_SERVICE_PORT")
    if not host or not port or not (directory / "token").exists():
        raise ConfigError(
            "not running in a cluster (no KUBERNETES_SERVICE_HOST or service-account token): pass --kubeconfig"
        )
    if ":" in host:
        host = f"[{host}]"
    return Credentials(
        server=f"https://{host}:{port}",
        ca_pem=(directory / "ca.crt").read_bytes(),
        token_file=directory / "token",
    )


def load_credentials(kubeconfig: str | None = None) -> Credentials:
    """`kubeconfig`, else $KUBECONFIG (its first file), else the pod's service account."""
    file = kubeconfig or (os.environ.get("KUBECONFIG") or "").split(os.pathsep)[0]
    if file:
        return from_kubeconfig(Path(file))
    return in_cluster()


# --- the client ----------------------------------------------------------------------------------


def _json_default(value: object) -> str:
    # What the `kubernetes` client's serializer did for the few typed values callers pass.
    if isinstance(value, datetime.datetime | datetime.date):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def _query_value(value: str | int | bool) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


class ApiClient:
    """JSON requests and watches to one apiserver; safe to use from several threads and loops."""

    def __init__(
        self,
        credentials: Credentials,
        *,
        request_timeout: float = timeouts.KUBE_REQUEST,
        max_connections: int = MAX_CONNECTIONS,
    ) -> None:
        self.credentials = credentials
        self.request_timeout = request_timeout
        self._max_connections = max_connections
        # Built once: loading the CA and client certificate is the costly part of a TLS setup, and
        # an SSLContext may serve connections of several loops.
        self._ssl = credentials.ssl_context()
        self._sessions: dict[asyncio.AbstractEventLoop, aiohttp.ClientSession] = {}
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"ApiClient(server={self.credentials.server!r})"

    async def __aenter__(self) -> ApiClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def _session(self) -> aiohttp.ClientSession:
        loop = asyncio.get_running_loop()
        with self._lock:
            session = self._sessions.get(loop)
            if session is not None and not session.closed:
                return session
            for other in [lp for lp in self._sessions if lp.is_closed()]:
                # Its loop ended without aclose(): the session can no longer be closed properly.
                log.warning("a Kubernetes API session outlived its event loop (%r); await aclose()", self)
                del self._sessions[other]
            session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(ssl=self._ssl, limit=self._max_connections),
                headers={"User-Agent": USER_AGENT},
            )
            self._sessions[loop] = session
            return session

    async def aclose(self) -> None:
        """Close the session of the running loop (the others are left to their loops)."""
        loop = asyncio.get_running_loop()
        with self._lock:
            session = self._sessions.pop(loop, None)
        if session is not None:
            await session.close()

    def close(self) -> None:
        """Close every session whose loop can still run it: loops not running (run to close), and
        loops running in other threads (asked to close it, waited for). A session of a loop running
        in this thread is closed by a task on that loop."""
        with self._lock:
            sessions, self._sessions = self._sessions, {}
        here = _running_loop()
        for loop, session in sessions.items():
            if session.closed or loop.is_closed():
                continue
            if loop is here:
                loop.create_task(session.close())
            elif loop.is_running():
                with contextlib.suppress(Exception):
                    asyncio.run_coroutine_threadsafe(session.close(), loop).result(self.request_timeout)
            elif here is None:
                loop.run_until_complete(session.close())
            else:
                # Another loop runs in this thread: run the idle one in a thread of its own.
                closer = threading.Thread(target=loop.run_until_complete, args=(session.close(),))
                closer.start()
                closer.join(self.request_timeout)

    def _headers(self, content_type: str | None, accept: str | None) -> dict[str, str]:
        headers = {"Accept": accept or "application/json"}
        authorization = self.credentials.authorization()
        if authorization:
            headers["Authorization"] = authorization
        if content_type:
            headers["Content-Type"] = content_type
        return headers

    def _url(self, resource_path: str) -> str:
        return self.credentials.server + resource_path

    def _extra(self) -> dict[str, Any]:
        extra: dict[str, Any] = {}
        if self.credentials.tls_server_name:
            extra["server_hostname"] = self.credentials.tls_server_name
        if self.credentials.proxy:
            extra["proxy"] = self.credentials.proxy
        return extra

    @overload
    async def request(
        self,
        method: Method,
        resource_path: str,
        *,
        body: Body | None = None,
        query: Query | None = None,
        content_type: str | None = None,
        accept: str | None = None,
        missing_ok: Literal[False] = False,
        request_timeout: float | None = None,
    ) -> dict[str, Any]: ...

    @overload
    async def request(
        self,
        method: Method,
        resource_path: str,
        *,
        body: Body | None = None,
        query: Query | None = None,
        content_type: str | None = None,
        accept: str | None = None,
        missing_ok: Literal[True],
        request_timeout: float | None = None,
    ) -> dict[str, Any] | None: ...

    async def request(
        self,
        method: Method,
        resource_path: str,
        *,
        body: Body | None = None,
        query: Query | None = None,
        content_type: str | None = None,
        accept: str | None = None,
        missing_ok: bool = False,
        request_timeout: float | None = None,
    ) -> dict[str, Any] | None:
        """One JSON request to `resource_path` (e.g. "/api/v1/nodes/n1"); the decoded response object
        (a JSON list comes back as {"items": [...]}, an empty body as {}).

        Raises ApiError for non-2xx answers, except a 404 with `missing_ok` (returns None), and
        TimeoutError when there is no whole answer within the timeout.
        """
        try:
            return await self._send(
                method,
                resource_path,
                body,
                query,
                content_type,
                accept,
                request_timeout or self.request_timeout,
            )
        except ApiError as exc:
            if missing_ok and exc.status == 404:
                return None
            raise

    async def _send(
        self,
        method: str,
        resource_path: str,
        body: Body | None,
        query: Query | None,
        content_type: str | None,
        accept: str | None,
        seconds: float,
    ) -> dict[str, Any]:
        data = None if body is None else json.dumps(body, default=_json_default).encode()
        headers = self._headers((content_type or "application/json") if data is not None else None, accept)
        params = {k: _query_value(v) for k, v in (query or {}).items()}
        try:
            async with self._session().request(
                method,
                self._url(resource_path),
                data=data,
                params=params or None,
                headers=headers,
                timeout=aiohttp.ClientTimeout(total=seconds),
                **self._extra(),
            ) as resp:
                text = await resp.text()
                if not 200 <= resp.status <= 299:
                    raise ApiError(resp.status, resp.reason or "", text)
        except TimeoutError:
            raise TimeoutError(f"{method} {resource_path}: no answer within {seconds:.0f}s") from None
        if not text:
            return {}
        decoded = json.loads(text)
        return decoded if isinstance(decoded, dict) else {"items": decoded}

    async def get(
        self, resource_path: str, query: Query | None = None, *, accept: str | None = None
    ) -> dict[str, Any]:
        return await self.request("GET", resource_path, query=query, accept=accept)

    async def watch(
        self,
        resource_path: str,
        query: Query,
        *,
        server_timeout_s: float,
        accept: str | None = None,
    ) -> AsyncIterator[tuple[str, dict[str, Any]]]:
        """(type, object) of each event of one watch; ends when the server closes it (after
        `server_timeout_s`). Leaving the loop early closes the connection."""
        params = {k: _query_value(v) for k, v in query.items()}
        params |= {"watch": "true", "timeoutSeconds": str(int(server_timeout_s))}
        async with self._session().get(
            self._url(resource_path),
            params=params,
            headers=self._headers(None, accept),
            # The server ends the watch; a connection silent well past that is dead.
            timeout=aiohttp.ClientTimeout(
                total=None,
                sock_connect=self.request_timeout,
                sock_read=server_timeout_s + self.request_timeout,
            ),
            **self._extra(),
        ) as resp:
            if not 200 <= resp.status <= 299:
                raise ApiError(resp.status, resp.reason or "", await resp.text())
            # One JSON document per line; split here, aiohttp's line reader caps the line length.
            buffer = b""
            async for chunk in resp.content.iter_any():
                buffer += chunk
                *lines, buffer = buffer.split(b"\n")
                for line in lines:
                    if line.strip():
                        event = json.loads(line)
                        yield str(event.get("type", "")), dict(event.get("object") or {})


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None
