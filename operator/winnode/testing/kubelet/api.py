"""The kubelet's HTTP client of the apiserver: requests, watches, TLS contexts and retry backoff."""

from __future__ import annotations

import base64
import json
import random
import ssl
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

import aiohttp

from winnode import timeouts

from .config import ClusterAccess

Json = dict[str, Any]


class ApiError(RuntimeError):
    """A non-2xx answer from the apiserver."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(f"{status} {reason}: {message}" if message else f"{status} {reason}")
        self.status = status
        self.reason = reason
        self.message = message


class TransportError(RuntimeError):
    """The apiserver could not be reached, or the connection broke."""


class CertificateRequestEnded(RuntimeError):
    """A CSR was denied, failed, deleted or replaced: waiting longer is pointless."""


class WatchExpired(Exception):
    """The watch's resourceVersion is too old (410 Gone): list again."""


Handler = Callable[[str, Json], Awaitable[bool]]
CSR_PATH = "/apis/certificates.k8s.io/v1/certificatesigningrequests"
STRATEGIC_MERGE_PATCH = "application/strategic-merge-patch+json"
MERGE_PATCH = "application/merge-patch+json"
CONNECTIONS_PER_KUBELET = 2


class ApiClient:
    """Just enough HTTP for a kubelet: JSON requests and watch streams on one aiohttp session."""

    def __init__(
        self,
        access: ClusterAccess,
        ctx: ssl.SSLContext,
        *,
        bearer: str | None,
        user_agent: str,
        connections: int = CONNECTIONS_PER_KUBELET,
    ) -> None:
        self._server = access.server
        self._server_hostname = access.tls_server_name
        headers = {"Accept": "application/json", "User-Agent": user_agent}
        if bearer:
            headers["Authorization"] = f"Bearer {bearer}"
        self._session = aiohttp.ClientSession(
            # Each TLS connection costs ~300 KB (asyncio's SSL transport alone reads into a 256 KiB buffer):
            # one for the pod watch and one shared by the short requests is all a kubelet gets.
            connector=aiohttp.TCPConnector(ssl=ctx, limit=connections),
            headers=headers,
            timeout=aiohttp.ClientTimeout(total=timeouts.KUBELET_API_REQUEST),
        )

    async def close(self) -> None:
        await self._session.close()

    def _extra(self) -> dict[str, Any]:
        return {"server_hostname": self._server_hostname} if self._server_hostname else {}

    @staticmethod
    def _error(status: int, body: bytes, fallback: str) -> ApiError:
        try:
            doc = json.loads(body)
        except ValueError:
            doc = None
        if isinstance(doc, dict) and doc.get("kind") == "Status":
            return ApiError(status, str(doc.get("reason") or fallback), str(doc.get("message") or ""))
        return ApiError(status, fallback, "")

    async def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        body: Json | None = None,
        content_type: str = "application/json",
        headers: Mapping[str, str] | None = None,
    ) -> Json:
        """`headers` are added to the session's own (a request made on behalf of someone else)."""
        data = json.dumps(body).encode() if body is not None else None
        if data is not None:
            headers = {**(headers or {}), "Content-Type": content_type}
        try:
            async with self._session.request(
                method, self._server + path, params=params, data=data, headers=headers, **self._extra()
            ) as resp:
                payload = await resp.read()
                if resp.status >= 400:
                    raise self._error(resp.status, payload, resp.reason or "Error")
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise TransportError(f"{method} {path}: {exc or type(exc).__name__}") from None
        try:
            result = json.loads(payload) if payload else {}
        except ValueError:
            raise TransportError(f"{method} {path}: the answer is not JSON") from None
        return result if isinstance(result, dict) else {}

    async def watch(self, path: str, params: Mapping[str, str], handle: Handler) -> None:
        """Stream watch events to `handle(type, object)` until it returns True or the server ends the watch."""
        server_timeout = int(timeouts.KUBELET_WATCH_TIMEOUT * (1 + random.random()))
        query = {
            **params,
            "watch": "true",
            "allowWatchBookmarks": "true",
            "timeoutSeconds": str(server_timeout),
        }
        timeout = aiohttp.ClientTimeout(
            total=None,
            sock_connect=timeouts.KUBELET_API_REQUEST,
            sock_read=server_timeout + timeouts.KUBELET_API_REQUEST,
        )
        try:
            async with self._session.get(
                self._server + path, params=query, timeout=timeout, **self._extra()
            ) as resp:
                if resp.status == 410:
                    raise WatchExpired()
                if resp.status >= 400:
                    raise self._error(resp.status, await resp.read(), resp.reason or "Error")
                # One JSON document per line; split here, aiohttp's line reader caps the line length.
                buf = bytearray()
                async for chunk in resp.content.iter_any():
                    buf.extend(chunk)
                    while (end := buf.find(b"\n")) >= 0:
                        line = bytes(buf[:end])
                        del buf[: end + 1]
                        if not line.strip():
                            continue
                        try:
                            event = json.loads(line)
                        except ValueError:
                            raise TransportError(f"watch {path}: an event is not JSON") from None
                        etype, obj = str(event.get("type")), event.get("object") or {}
                        if etype == "ERROR":
                            if obj.get("code") == 410:
                                raise WatchExpired()
                            raise ApiError(
                                int(obj.get("code") or 500),
                                str(obj.get("reason") or "Error"),
                                str(obj.get("message") or ""),
                            )
                        if await handle(etype, obj):
                            return
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise TransportError(f"watch {path}: {exc or type(exc).__name__}") from None


def client_ssl_context(access: ClusterAccess, cert_file: Path | None) -> ssl.SSLContext:
    if access.insecure:
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    else:
        ctx = ssl.create_default_context(cadata=access.ca_pem.decode() if access.ca_pem else None)
    if cert_file is not None:
        ctx.load_cert_chain(cert_file)
    return ctx


def retry_backoff(poll: timeouts.Poll) -> Callable[[], float]:
    """Successive delays of an exponential backoff with a little jitter, so many kubelets spread out."""
    delay = poll.interval

    def next_delay() -> float:
        nonlocal delay
        current = delay
        delay = min(delay * 2, poll.deadline)
        return current * (1 + 0.2 * random.random())

    return next_delay


def csr_outcome(obj: Json, uid: str) -> bytes | None:
    """The issued certificate once approved and signed; None while pending; raises when it never will be."""
    meta = obj.get("metadata") or {}
    if meta.get("uid") != uid:
        raise CertificateRequestEnded(f"CSR {meta.get('name')} was replaced by another object")
    status = obj.get("status") or {}
    approved = False
    for cond in status.get("conditions") or []:
        ctype = cond.get("type")
        if ctype in ("Denied", "Failed"):
            what = "denied" if ctype == "Denied" else "failed"
            raise CertificateRequestEnded(
                f"certificate signing request {meta.get('name')} {what}, reason: {cond.get('reason')}, "
                f"message: {cond.get('message')}"
            )
        if ctype == "Approved":
            approved = True
    if approved and status.get("certificate"):
        return base64.b64decode(status["certificate"])
    return None
