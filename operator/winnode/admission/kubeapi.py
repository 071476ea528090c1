"""A small async Kubernetes API client on aiohttp, for the webhook's few calls off the request path.

The webhook needs four things from the API (list/watch Nodes, get/create/update one Secret, patch one
webhook configuration), all on its own event loop; the `kubernetes` package is synchronous and costs
tens of MB per replica, so this is just enough HTTP for those: kubeconfig or in-cluster credentials,
JSON in and out, a watch stream.
"""

from __future__ import annotations

import base64
import json
import os
import ssl
import tempfile
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import yaml

from winnode import timeouts

IN_CLUSTER_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")


class ApiError(RuntimeError):
    """A non-2xx answer from the apiserver, with the Status message it sent."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(f"{status} {reason}: {message}")
        self.status = status
        self.reason = reason
        self.message = message


class ConfigError(RuntimeError):
    """No usable credentials: neither a readable kubeconfig nor an in-cluster service account."""


@dataclass(frozen=True)
class Credentials:
    server: str
    ca_pem: bytes | None = None
    insecure: bool = False
    client_cert_pem: bytes | None = None
    client_key_pem: bytes | None = None
    token: str | None = None
    token_file: Path | None = None

    def bearer(self) -> str | None:
        # Re-read every time: projected service-account tokens are rotated on disk by the kubelet.
        if self.token_file is not None:
            return self.token_file.read_text().strip()
        return self.token

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
    path = entry.get(key)
    if path:
        return (base / str(path)).read_bytes()
    return None


def from_kubeconfig(path: Path, context: str | None = None) -> Credentials:
    try:
        doc = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot read kubeconfig {path}: {exc}") from exc
    base = path.parent

    def named(section: str, name: str) -> dict[str, Any]:
        for item in doc.get(section) or []:
            if item.get("name") == name:
                inner = item.get(section[:-1]) or {}
                return dict(inner)
        raise ConfigError(f"kubeconfig {path}: no {section[:-1]} named {name!r}")

    ctx_name = context or doc.get("current-context")
    if not ctx_name:
        raise ConfigError(f"kubeconfig {path} has no current-context; pass a context")
    ctx = named("contexts", ctx_name)
    cluster = named("clusters", ctx.get("cluster", ""))
    user = named("users", ctx.get("user", "")) if ctx.get("user") else {}
    server = cluster.get("server")
    if not server:
        raise ConfigError(f"kubeconfig {path}: cluster {ctx.get('cluster')!r} has no server")
    token_file = user.get("tokenFile")
    return Credentials(
        server=str(server).rstrip("/"),
        ca_pem=_data_or_file(cluster, "certificate-authority", base),
        insecure=bool(cluster.get("insecure-skip-tls-verify")),
        client_cert_pem=_data_or_file(user, "client-certificate", base),
        client_key_pem=_data_or_file(user, "client-key", base),
        token=user.get("token"),
        token_file=(base / token_file) if token_file else None,
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
    path = kubeconfig or (os.environ.get("KUBECONFIG") or "").split(os.pathsep)[0]
    if path:
        return from_kubeconfig(Path(path))
    return in_cluster()


class KubeClient:
    """JSON over HTTPS to one apiserver. Use as an async context manager, or call close()."""

    def __init__(
        self, credentials: Credentials, *, request_timeout: float = timeouts.WEBHOOK_API_REQUEST
    ) -> None:
        self.credentials = credentials
        self._ssl = credentials.ssl_context()
        self._timeout = request_timeout
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> KubeClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def _sess(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=self._ssl, limit=8))
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _headers(self, content_type: str | None = None) -> dict[str, str]:
        headers = {"Accept": "application/json"}
        token = self.credentials.bearer()
        if token:
            headers["Authorization"] = f"Bearer {token}"
        if content_type:
            headers["Content-Type"] = content_type
        return headers

    @staticmethod
    async def _raise_for(resp: aiohttp.ClientResponse) -> None:
        if resp.status < 300:
            return
        text = await resp.text()
        reason, message = resp.reason or "", text
        try:
            status = json.loads(text)
            reason = status.get("reason") or reason
            message = status.get("message") or text
        except (json.JSONDecodeError, AttributeError):
            pass
        raise ApiError(resp.status, reason, message)

    async def request(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        params: Mapping[str, str] | None = None,
        content_type: str = "application/json",
    ) -> dict[str, Any]:
        data = json.dumps(body).encode() if body is not None else None
        async with self._sess().request(
            method,
            self.credentials.server + path,
            data=data,
            params=params,
            headers=self._headers(content_type if data is not None else None),
            timeout=aiohttp.ClientTimeout(total=self._timeout),
        ) as resp:
            await self._raise_for(resp)
            result: dict[str, Any] = await resp.json(content_type=None)
            return result

    async def get(
        self, path: str, params: Mapping[str, str] | None = None, *, accept: str | None = None
    ) -> dict[str, Any]:
        if accept is None:
            return await self.request("GET", path, params=params)
        async with self._sess().get(
            self.credentials.server + path,
            params=params,
            headers={**self._headers(), "Accept": accept},
            timeout=aiohttp.ClientTimeout(total=self._timeout),
        ) as resp:
            await self._raise_for(resp)
            result: dict[str, Any] = await resp.json(content_type=None)
            return result

    async def watch(
        self, path: str, params: Mapping[str, str], *, accept: str | None = None
    ) -> AsyncIterator[tuple[str, dict[str, Any]]]:
        """(type, object) events of one watch; ends when the server closes it (timeoutSeconds)."""
        query = {**params, "watch": "true"}
        server_timeout = float(query.get("timeoutSeconds", timeouts.NODE_WATCH_SERVER_TIMEOUT))
        headers = self._headers()
        if accept:
            headers["Accept"] = accept
        async with self._sess().get(
            self.credentials.server + path,
            params=query,
            headers=headers,
            # The server ends the watch; a silent connection past that is dead.
            timeout=aiohttp.ClientTimeout(total=None, sock_read=server_timeout + self._timeout),
        ) as resp:
            await self._raise_for(resp)
            # One JSON document per line; split ourselves, aiohttp's line reader caps line length.
            buffer = b""
            async for chunk in resp.content.iter_any():
                buffer += chunk
                *lines, buffer = buffer.split(b"\n")
                for line in lines:
                    if line.strip():
                        event = json.loads(line)
                        yield str(event.get("type", "")), dict(event.get("object") or {})
