"""AdmissionReview (admission.k8s.io/v1) in and out: strict parsing, plain responses.

A review we cannot read is the caller's mistake, answered with a 4xx and a message saying what is wrong;
it never reaches the policy and never raises anything but ReviewError.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

API_VERSION = "admission.k8s.io/v1"
KIND = "AdmissionReview"
OPERATIONS = frozenset({"CREATE", "UPDATE", "DELETE", "CONNECT"})


class ReviewError(ValueError):
    """A request body that is not an AdmissionReview we can answer; `status` is the HTTP code to send."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class GroupVersionKind:
    group: str
    version: str
    kind: str


@dataclass(frozen=True)
class AdmissionRequest:
    uid: str
    kind: GroupVersionKind
    resource: str
    sub_resource: str
    namespace: str
    name: str
    operation: str
    object: dict[str, Any]
    old_object: dict[str, Any] | None
    dry_run: bool
    username: str


@dataclass(frozen=True)
class AdmissionResponse:
    uid: str
    allowed: bool
    message: str = ""
    code: int = 403
    reason: str = "Forbidden"
    warnings: tuple[str, ...] = field(default=())
    audit_annotations: tuple[tuple[str, str], ...] = field(default=())

    def to_review(self) -> dict[str, Any]:
        response: dict[str, Any] = {"uid": self.uid, "allowed": self.allowed}
        if not self.allowed:
            response["status"] = {"code": self.code, "reason": self.reason, "message": self.message}
        if self.warnings:
            response["warnings"] = list(self.warnings)
        if self.audit_annotations:
            response["auditAnnotations"] = dict(self.audit_annotations)
        return {"apiVersion": API_VERSION, "kind": KIND, "response": response}


def _field(obj: dict[str, Any], key: str, typ: type, where: str, *, required: bool = True) -> Any:
    value = obj.get(key)
    if value is None:
        if required:
            raise ReviewError(400, f"{where}.{key} is missing")
        return None
    if not isinstance(value, typ):
        raise ReviewError(400, f"{where}.{key} must be a {typ.__name__}, not {type(value).__name__}")
    return value


def parse_review(body: bytes) -> AdmissionRequest:
    """The request inside an AdmissionReview body; ReviewError (400 or 422) when it is not one."""
    try:
        doc = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ReviewError(400, f"body is not JSON: {exc}") from None
    except RecursionError:
        raise ReviewError(400, "body is not JSON we can read: nested too deeply") from None
    if not isinstance(doc, dict):
        raise ReviewError(400, f"body must be a JSON object (an AdmissionReview), not {type(doc).__name__}")
    api_version, kind = doc.get("apiVersion"), doc.get("kind")
    if api_version != API_VERSION or kind != KIND:
        raise ReviewError(
            400,
            f"expected apiVersion {API_VERSION} kind {KIND}, got apiVersion {api_version!r} kind {kind!r} "
            "(the webhook configuration must list admissionReviewVersions [v1])",
        )
    request = _field(doc, "request", dict, "AdmissionReview")
    uid = _field(request, "uid", str, "request")
    if not uid:
        raise ReviewError(400, "request.uid is empty")
    gvk = _field(request, "kind", dict, "request")
    kind_name = _field(gvk, "kind", str, "request.kind")
    operation = _field(request, "operation", str, "request")
    if operation not in OPERATIONS:
        raise ReviewError(422, f"request.operation {operation!r} is not one of {sorted(OPERATIONS)}")
    obj = _field(request, "object", dict, "request", required=operation in ("CREATE", "UPDATE"))
    old = _field(request, "oldObject", dict, "request", required=False)
    if operation == "UPDATE" and old is None:
        raise ReviewError(422, "request.oldObject is missing on an UPDATE")
    resource = _field(request, "resource", dict, "request", required=False) or {}
    user = _field(request, "userInfo", dict, "request", required=False) or {}
    return AdmissionRequest(
        uid=uid,
        kind=GroupVersionKind(
            group=str(gvk.get("group") or ""), version=str(gvk.get("version") or ""), kind=kind_name
        ),
        resource=str(resource.get("resource") or ""),
        sub_resource=str(request.get("subResource") or ""),
        namespace=str(request.get("namespace") or ""),
        name=str(request.get("name") or ""),
        operation=operation,
        object=obj or {},
        old_object=old,
        dry_run=request.get("dryRun") is True,
        username=str(user.get("username") or ""),
    )
