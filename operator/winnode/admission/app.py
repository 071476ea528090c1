"""The webhook's aiohttp application: POST /validate, /healthz, /readyz, /metrics.

Handlers are pure with respect to the cluster: they read the Windows-node set they are handed and never
call the API, so an answer costs microseconds of policy and the apiserver's timeout is never at risk.
One exception: a Binding carries no pod spec, so a binding to a Windows node reads the pod it binds
(bindings to other nodes are answered from the node set alone).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from winnode.admission import config, networks, policy
from winnode.admission.metrics import CONTENT_TYPE, WebhookMetrics
from winnode.admission.networks import NetworkAdmission
from winnode.admission.nodes import WindowsNodes
from winnode.admission.review import AdmissionRequest, AdmissionResponse, ReviewError, parse_review
from winnode.admission.windowsnodes import KIND as WINDOWS_NODE_KIND
from winnode.admission.windowsnodes import WindowsNodeAdmission
from winnode.settings import Settings

log = logging.getLogger(__name__)

# (ready, why not): a certificate loaded and the node list synced, as the server decides; the same
# shape answers /healthz (the node watch and the background tasks alive).
Readiness = Callable[[], tuple[bool, str]]
# Bodies are read in pieces so an oversize one is refused without holding it all.
READ_CHUNK = 64 * 1024
# (namespace, name) -> the pod, or None when it cannot be read.
PodLookup = Callable[[str, str], Awaitable[dict[str, Any] | None]]


def is_binding(request: AdmissionRequest) -> bool:
    return request.kind.kind == "Binding" or request.sub_resource == policy.BINDING_SUBRESOURCE


def to_response(request: AdmissionRequest, verdict: policy.Verdict) -> AdmissionResponse:
    return AdmissionResponse(
        uid=request.uid,
        allowed=verdict.allowed,
        message=verdict.message,
        warnings=verdict.warnings,
        audit_annotations=verdict.audit_annotations,
    )


def respond(
    request: AdmissionRequest,
    windows_nodes: frozenset[str] | policy.WindowsNodeNames,
    mode: policy.Mode = policy.Mode.DENY,
) -> tuple[AdmissionResponse, policy.Verdict]:
    """The answer to one parsed admission request (not a binding), and the verdict behind it."""
    verdict = policy.judge(
        request.kind.kind,
        request.object,
        operation=request.operation,
        old_object=request.old_object,
        sub_resource=request.sub_resource,
        namespace=request.namespace,
        name=request.name,
        windows_nodes=windows_nodes,
    )
    verdict = policy.apply_mode(verdict, mode)
    return to_response(request, verdict), verdict


def softened_message(verdict: policy.Verdict) -> str:
    """The refusal a Warn or Audit mode turned into an admission."""
    if verdict.softened is policy.Mode.WARN:
        return verdict.warnings[-1]
    return dict(verdict.audit_annotations).get(policy.AUDIT_KEY, "")


def verdict_label(verdict: policy.Verdict) -> str:
    """The `verdict` metrics label: what happened to the object."""
    if not verdict.allowed:
        return "denied"
    if verdict.softened is policy.Mode.WARN:
        return "warned"
    if verdict.softened is policy.Mode.AUDIT:
        return "audited"
    return "allowed"


class Webhook:
    """The aiohttp application. Pure with respect to the cluster: it reads the node set it is given."""

    def __init__(
        self,
        nodes: WindowsNodes,
        metrics: WebhookMetrics,
        *,
        ready: Readiness,
        max_body_bytes: int = Settings.webhook_max_body_bytes,
        networks: NetworkAdmission | None = None,
        live: Readiness | None = None,
        mode: policy.Mode = policy.Mode.DENY,
        pods: PodLookup | None = None,
        windows_nodes: WindowsNodeAdmission | None = None,
    ) -> None:
        self.nodes = nodes
        self.mode = mode
        self.pods = pods
        self.windows_nodes = windows_nodes
        self.live = live or (lambda: (True, ""))
        self.networks = networks
        self.metrics = metrics
        self.ready = ready
        self.max_body_bytes = max_body_bytes
        self.shutting_down = False

    def app(self) -> web.Application:
        # aiohttp's own limit is a backstop; validate() answers oversize bodies itself, with a message.
        app = web.Application(client_max_size=self.max_body_bytes + 1)
        app.router.add_post(config.WEBHOOK_PATH, self.validate)
        app.router.add_get("/healthz", self.healthz)
        app.router.add_get("/readyz", self.readyz)
        app.router.add_get("/metrics", self.metrics_handler)
        return app

    def _error(self, status: int, message: str) -> web.Response:
        self.metrics.malformed.labels(str(status)).inc()
        self.metrics.requests.labels(str(status)).inc()
        body = {"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": status, "message": message}
        return web.json_response(body, status=status)

    async def _read_body(self, request: web.Request) -> bytes:
        limit = self.max_body_bytes
        if request.content_length is not None and request.content_length > limit:
            raise ReviewError(
                413, f"body of {request.content_length} bytes is over the limit of {limit} bytes"
            )
        ctype = request.content_type
        if request.body_exists and ctype not in ("application/json", "application/octet-stream", ""):
            raise ReviewError(415, f"content type {ctype!r} is not application/json")
        chunks: list[bytes] = []
        size = 0
        try:
            # Chunked bodies carry no length up front: count while reading, stop at the limit.
            async for chunk in request.content.iter_chunked(READ_CHUNK):
                size += len(chunk)
                if size > limit:
                    raise ReviewError(413, f"body is over the limit of {limit} bytes")
                chunks.append(chunk)
        except web.HTTPRequestEntityTooLarge:
            raise ReviewError(413, f"body is over the limit of {limit} bytes") from None
        if not size:
            raise ReviewError(400, "body is empty; expected an AdmissionReview")
        return b"".join(chunks)

    async def validate(self, request: web.Request) -> web.Response:
        started = time.perf_counter()
        try:
            try:
                body = await self._read_body(request)
                review = parse_review(body)
            except ReviewError as exc:
                log.info("refused admission request from %s: %s", request.remote, exc.message)
                return self._error(exc.status, exc.message)
            if review.kind.kind == networks.KIND and self.networks is not None:
                response, reason_label = await self._network_response(review)
                verdict = "allowed" if response.allowed else "denied"
            elif review.kind.kind == WINDOWS_NODE_KIND and self.windows_nodes is not None:
                response, reason_label = await self._windows_node_response(review)
                verdict = "allowed" if response.allowed else "denied"
            else:
                if is_binding(review):
                    judged = await self._binding_verdict(review)
                    response = to_response(review, judged)
                else:
                    response, judged = respond(review, self.nodes.known, self.mode)
                reason_label, verdict = judged.reason.value, verdict_label(judged)
                if judged.softened is not None:
                    log.info(
                        "admitted %s %s/%s under mode %s (uid %s): %s",
                        review.operation,
                        review.namespace,
                        review.name,
                        judged.softened.value,
                        review.uid,
                        softened_message(judged),
                    )
            kind = review.kind.kind or "unknown"
            self.metrics.decisions.labels(kind, verdict, reason_label).inc()
            if response.warnings:
                self.metrics.warnings.labels(kind).inc(len(response.warnings))
            if not response.allowed:
                log.info(
                    "denied %s %s/%s (uid %s): %s",
                    review.operation,
                    review.namespace,
                    review.name,
                    review.uid,
                    response.message,
                )
            self.metrics.requests.labels("200").inc()
            return web.json_response(response.to_review())
        finally:
            self.metrics.latency.observe(time.perf_counter() - started)

    async def _binding_verdict(self, review: AdmissionRequest) -> policy.Verdict:
        """A binding to a Windows node is judged by the pod it binds, read from the API."""
        known = self.nodes.known
        if policy.binding_target(review.object) not in known.names:
            return policy.Verdict(True, policy.Reason.NOT_WINDOWS)
        pod = None
        if self.pods is not None:
            try:
                pod = await self.pods(review.namespace, review.name)
            except Exception as exc:  # fail open, as the entry that sends bindings here does
                log.warning(
                    "cannot read pod %s/%s to judge its binding: %s", review.namespace, review.name, exc
                )
        if pod is None:
            log.warning(
                "binding of pod %s/%s to Windows node %s admitted unjudged: the pod could not be read",
                review.namespace,
                review.name,
                policy.binding_target(review.object),
            )
        verdict = policy.judge_binding(
            review.object, pod, known, namespace=review.namespace, name=review.name
        )
        return policy.apply_mode(verdict, self.mode)

    async def _network_response(self, review: AdmissionRequest) -> tuple[AdmissionResponse, str]:
        """WindowsNetwork requests read the API (networks.py says why); a failed read is a refusal."""
        assert self.networks is not None
        return await _looked_up(
            review, self.networks.respond, "Network", "WindowsNetwork", "the other networks and nodes"
        )

    async def _windows_node_response(self, review: AdmissionRequest) -> tuple[AdmissionResponse, str]:
        """WindowsNode requests read the API (windowsnodes.py says why); a failed read is a refusal."""
        assert self.windows_nodes is not None
        return await _looked_up(
            review, self.windows_nodes.respond, "WindowsNode", "WindowsNode", "the other WindowsNodes"
        )

    async def healthz(self, _: web.Request) -> web.Response:
        ok, why = self.live()
        return web.Response(status=200 if ok else 503, text=(why or "ok") + "\n")

    async def readyz(self, _: web.Request) -> web.Response:
        if self.shutting_down:
            return web.Response(status=503, text="shutting down\n")
        ok, why = self.ready()
        return web.Response(status=200 if ok else 503, text=(why or "ok") + "\n")

    async def metrics_handler(self, _: web.Request) -> web.Response:
        self.metrics.windows_nodes.set(len(self.nodes.names))
        resp = web.Response(body=self.metrics.exposition())
        resp.headers["Content-Type"] = CONTENT_TYPE
        return resp


async def _looked_up(
    review: AdmissionRequest,
    respond: Callable[[AdmissionRequest], Awaitable[AdmissionResponse]],
    label: str,
    kind: str,
    against: str,
) -> tuple[AdmissionResponse, str]:
    """The answer of a judge that reads the API; a failed read is a refusal that says to try again."""
    try:
        return await respond(review), label
    except Exception as exc:
        log.warning("cannot judge %s %s: %s", review.operation, review.name, exc)
        message = f"cannot check {kind} {review.name} against {against} ({type(exc).__name__}); try again"
        return AdmissionResponse(uid=review.uid, allowed=False, message=message), "LookupFailed"
