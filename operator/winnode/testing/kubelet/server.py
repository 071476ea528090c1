"""The kubelet's HTTPS endpoint, as far as the apiserver uses it for node log queries.

kubelet serves on the Node's address and status.daemonEndpoints.kubeletEndpoint.Port with its serving
certificate, authenticates clients by certificate against its client CA (anonymous auth off, as our
KubeletConfiguration says) and authorizes each request with a SubjectAccessReview against the apiserver
(pkg/kubelet/server/auth.go, v1.37.2): the HTTP method gives the verb, /logs/ the subresource "log",
any other path "proxy". Only /logs/ is answered; other paths are 404 after authorization.
"""

from __future__ import annotations

import logging
import socket
import ssl
from collections.abc import Awaitable, Callable
from pathlib import Path
from urllib.parse import parse_qs

from aiohttp import web
from cryptography import x509
from cryptography.x509.oid import NameOID

from . import logs

log = logging.getLogger(__name__)

# user, groups, verb, subresource -> allowed
Authorize = Callable[[str, list[str], str, str], Awaitable[bool]]

# pkg/kubelet/server/auth.go GetRequestAttributes: HTTP method -> API verb.
_VERBS = {"POST": "create", "GET": "get", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}


def subresource_for(path: str) -> str:
    """auth.go: /logs/* is nodes/log; /stats, /metrics, /pods... have their own; the rest is nodes/proxy."""
    return "log" if path == "/logs" or path.startswith("/logs/") else "proxy"


def _identity(der: bytes | None) -> tuple[str, list[str]] | None:
    if not der:
        return None
    cert = x509.load_der_x509_certificate(der)
    cns = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    orgs = cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)
    if not cns:
        return None
    return str(cns[0].value), [str(o.value) for o in orgs]


class KubeletServer:
    """One kubelet's HTTPS server; start() binds, stop() closes."""

    def __init__(
        self,
        *,
        node_name: str,
        address: str,
        port: int,
        listen: Callable[[str, int], socket.socket] | None = None,
        serving_bundle: Path,
        client_ca_pem: bytes,
        authorize: Authorize,
        read_file: logs.ReadFile,
    ) -> None:
        self.node_name = node_name
        self.address = address
        self.port = port
        self._listen = listen
        self._authorize = authorize
        self._read_file = read_file
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(serving_bundle)
        ctx.load_verify_locations(cadata=client_ca_pem.decode())
        # A client without a certificate reaches the handler and is refused there (401), as kubelet
        # with anonymous auth disabled answers.
        ctx.verify_mode = ssl.CERT_OPTIONAL
        self._ssl = ctx
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site: web.BaseSite
        if self._listen is not None:
            site = web.SockSite(runner, self._listen(self.address, self.port), ssl_context=self._ssl)
        else:
            site = web.TCPSite(runner, self.address, self.port, ssl_context=self._ssl)
        await site.start()
        self._runner = runner
        log.info("%s: kubelet serving on https://%s:%d", self.node_name, self.address, self.port)

    async def stop(self) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    async def _handle(self, request: web.Request) -> web.Response:
        peer = request.transport.get_extra_info("ssl_object") if request.transport else None
        who = _identity(peer.getpeercert(binary_form=True) if peer is not None else None)
        if who is None:
            return web.Response(status=401, text="Unauthorized\n")
        user, groups = who
        verb = _VERBS.get(request.method, "*")
        subresource = subresource_for(request.path)
        if not await self._authorize(user, groups, verb, subresource):
            # pkg/kubelet/server/server.go authFilter: the forbidden message.
            text = f"Forbidden (user={user}, verb={verb}, resource=nodes, subresource(s)=[{subresource}])\n"
            return web.Response(status=403, text=text)
        if subresource != "log":
            return web.Response(status=404, text="404 page not found\n")
        rest = request.path[len("/logs/") :] if request.path.startswith("/logs/") else ""
        query = parse_qs(request.query_string, keep_blank_values=True)
        answer = logs.answer(request.method, rest, query, read_file=self._read_file)
        return web.Response(
            status=answer.status, text=answer.body, content_type="text/plain", charset="utf-8"
        )
