"""AdmissionReview parsing: every malformed shape is a ReviewError with a status and a message."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from winnode.admission.review import AdmissionResponse, ReviewError, parse_review


def review(**request: Any) -> dict[str, Any]:
    req: dict[str, Any] = {
        "uid": "u-1",
        "kind": {"group": "", "version": "v1", "kind": "Pod"},
        "resource": {"group": "", "version": "v1", "resource": "pods"},
        "namespace": "default",
        "name": "web",
        "operation": "CREATE",
        "object": {"metadata": {"name": "web"}, "spec": {"containers": []}},
        "userInfo": {"username": "alice"},
        "dryRun": True,
    }
    req.update(request)
    return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": req}


def body(doc: Any) -> bytes:
    return json.dumps(doc).encode()


def test_parses_a_full_request() -> None:
    req = parse_review(
        body(review(subResource="ephemeralcontainers", operation="UPDATE", oldObject={"spec": {}}))
    )
    assert req.uid == "u-1"
    assert req.kind.kind == "Pod"
    assert req.resource == "pods"
    assert req.sub_resource == "ephemeralcontainers"
    assert (req.namespace, req.name, req.operation) == ("default", "web", "UPDATE")
    assert req.old_object == {"spec": {}}
    assert req.dry_run
    assert req.username == "alice"


@pytest.mark.parametrize(
    ("raw", "status", "fragment"),
    [
        (b"{not json", 400, "not JSON"),
        (b"\xff\xfe", 400, "not JSON"),
        (b"[]", 400, "JSON object"),
        (b"null", 400, "JSON object"),
        (
            body({**review(), "apiVersion": "admission.k8s.io/v1beta1"}),
            400,
            "expected apiVersion admission.k8s.io/v1",
        ),
        (body({**review(), "kind": "Pod"}), 400, "kind AdmissionReview"),
        (
            body({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview"}),
            400,
            "AdmissionReview.request is missing",
        ),
        (
            body({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": []}),
            400,
            "must be a dict",
        ),
        (body(review(uid=None)), 400, "request.uid is missing"),
        (body(review(uid="")), 400, "request.uid is empty"),
        (body(review(uid=7)), 400, "request.uid must be a str"),
        (body(review(kind=None)), 400, "request.kind is missing"),
        (body(review(kind={"group": ""})), 400, "request.kind.kind is missing"),
        (body(review(object=None)), 400, "request.object is missing"),
        (body(review(object="pod")), 400, "request.object must be a dict"),
        (body(review(operation="PATCH")), 422, "request.operation 'PATCH'"),
        (body(review(operation="UPDATE")), 422, "oldObject is missing"),
        (b"[" * 100000 + b"]" * 100000, 400, "JSON"),
    ],
)
def test_malformed_reviews(raw: bytes, status: int, fragment: str) -> None:
    with pytest.raises(ReviewError) as info:
        parse_review(raw)
    assert info.value.status == status
    assert fragment in info.value.message


def test_delete_needs_no_object() -> None:
    assert parse_review(body(review(operation="DELETE", object=None))).object == {}


@settings(max_examples=300)
@given(st.binary(max_size=200) | st.text(max_size=200).map(str.encode))
def test_arbitrary_bytes_never_escape_as_anything_but_review_error(raw: bytes) -> None:
    with pytest.raises(ReviewError) as info:
        parse_review(raw)
    assert 400 <= info.value.status < 500


def test_response_shapes() -> None:
    allowed = AdmissionResponse(uid="u", allowed=True, warnings=("w",)).to_review()
    assert allowed == {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "response": {"uid": "u", "allowed": True, "warnings": ["w"]},
    }
    denied = AdmissionResponse(uid="u", allowed=False, message="no").to_review()
    assert denied["response"]["status"] == {"code": 403, "reason": "Forbidden", "message": "no"}
    assert "warnings" not in denied["response"]
