"""The webhook's HTTP surface through a real aiohttp server: verdicts, malformed reviews, probes, metrics."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient, TestServer

from winnode import cli
from winnode.admission import config
from winnode.admission.app import Webhook
from winnode.admission.metrics import WebhookMetrics
from winnode.admission.nodes import WindowsNodes

LIMIT = 64 * 1024


def review(spec: dict[str, Any], *, uid: str = "u-1", name: str = "web") -> dict[str, Any]:
    return {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": uid,
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "namespace": "default",
            "operation": "CREATE",
            "object": {"metadata": {"name": name, "namespace": "default"}, "spec": spec},
        },
    }


class Harness:
    def __init__(self) -> None:
        self.metrics = WebhookMetrics()
        self.nodes = WindowsNodes.static({"win-1"})
        self.is_ready = True
        self.webhook = Webhook(
            self.nodes,
            self.metrics,
            ready=lambda: (self.is_ready, "" if self.is_ready else "not yet"),
            max_body_bytes=LIMIT,
        )
        self.client: TestClient[Any, Any] | None = None

    @property
    def http(self) -> TestClient[Any, Any]:
        assert self.client is not None
        return self.client

    def counter(self, name: str, **labels: str) -> float:
        value = self.metrics.registry.get_sample_value(name, labels)
        return value or 0.0


@pytest.fixture
async def harness() -> AsyncIterator[Harness]:
    h = Harness()
    client: TestClient[Any, Any] = TestClient(TestServer(h.webhook.app()))
    await client.start_server()
    h.client = client
    try:
        yield h
    finally:
        await client.close()


async def post(h: Harness, data: bytes, content_type: str = "application/json") -> aiohttp.ClientResponse:
    return await h.http.post("/validate", data=data, headers={"Content-Type": content_type})


async def test_denies_two_containers_on_a_windows_node(harness: Harness) -> None:
    spec = {"nodeName": "win-1", "containers": [{"name": "app"}, {"name": "log-shipper"}]}
    resp = await post(harness, json.dumps(review(spec, uid="abc")).encode())
    assert resp.status == 200
    doc = await resp.json()
    assert doc["apiVersion"] == "admission.k8s.io/v1"
    assert doc["response"]["uid"] == "abc"
    assert doc["response"]["allowed"] is False
    assert doc["response"]["status"]["code"] == 403
    assert (
        "pod default/web runs 2 containers at once on Windows (app, log-shipper)"
        in doc["response"]["status"]["message"]
    )
    assert (
        harness.counter(
            "winnode_webhook_decisions_total", kind="Pod", verdict="denied", reason="TooManyContainers"
        )
        == 1
    )


async def test_admits_one_container_with_warnings(harness: Harness) -> None:
    spec = {
        "nodeSelector": {"kubernetes.io/os": "windows"},
        "securityContext": {"runAsUser": 1},
        "containers": [{"name": "app"}],
    }
    resp = await post(harness, json.dumps(review(spec)).encode())
    doc = await resp.json()
    assert doc["response"]["allowed"] is True
    assert len(doc["response"]["warnings"]) == 1
    assert harness.counter("winnode_webhook_warnings_total", kind="Pod") == 1


@pytest.mark.parametrize(
    ("data", "content_type", "status", "fragment"),
    [
        (b"{", "application/json", 400, "not JSON"),
        (b"", "application/json", 400, "body is empty"),
        (
            json.dumps({"apiVersion": "v1", "kind": "AdmissionReview", "request": {}}).encode(),
            "application/json",
            400,
            "expected apiVersion",
        ),
        (
            json.dumps({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview"}).encode(),
            "application/json",
            400,
            "request is missing",
        ),
        (b"<xml/>", "application/xml", 415, "not application/json"),
        (b"x" * (LIMIT + 1), "application/json", 413, "over the limit"),
    ],
)
async def test_malformed_reviews_get_4xx_with_a_message(
    harness: Harness, data: bytes, content_type: str, status: int, fragment: str
) -> None:
    before = harness.counter("winnode_webhook_malformed_reviews_total", code=str(status))
    resp = await post(harness, data, content_type)
    assert resp.status == status
    doc = await resp.json()
    assert doc["code"] == status
    assert fragment in doc["message"]
    assert harness.counter("winnode_webhook_malformed_reviews_total", code=str(status)) == before + 1
    assert harness.counter("winnode_webhook_requests_total", code=str(status)) >= 1


async def test_chunked_body_over_the_limit_is_413(harness: Harness) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(LIMIT // 4096 + 2):
            yield b" " * 4096

    resp = await harness.http.post("/validate", data=chunks(), headers={"Content-Type": "application/json"})
    assert resp.status == 413


async def test_server_keeps_answering_after_garbage(harness: Harness) -> None:
    for junk in (b"\x00" * 10, b'{"apiVersion": 1}', b"[" * 50000):
        assert (await post(harness, junk)).status == 400
    ok = await post(harness, json.dumps(review({"containers": [{"name": "a"}]})).encode())
    assert ok.status == 200


async def test_wrong_method_and_path(harness: Harness) -> None:
    assert (await harness.http.get("/validate")).status == 405
    assert (await harness.http.post("/nope", data=b"{}")).status == 404


async def test_probes(harness: Harness) -> None:
    assert (await harness.http.get("/healthz")).status == 200
    assert (await harness.http.get("/readyz")).status == 200
    harness.is_ready = False
    resp = await harness.http.get("/readyz")
    assert resp.status == 503
    assert "not yet" in await resp.text()
    harness.is_ready = True
    harness.webhook.shutting_down = True
    assert (await harness.http.get("/readyz")).status == 503


async def test_metrics_exposition(harness: Harness) -> None:
    await post(harness, json.dumps(review({"containers": [{"name": "a"}]})).encode())
    resp = await harness.http.get("/metrics")
    assert resp.status == 200
    assert resp.headers["Content-Type"].startswith("text/plain")
    text = await resp.text()
    assert 'winnode_webhook_requests_total{code="200"} 1.0' in text
    assert "winnode_webhook_review_duration_seconds_bucket" in text
    assert "winnode_webhook_windows_nodes 1.0" in text
    assert harness.metrics.request_count() == 1


# --- the command line -----------------------------------------------------------------------------


def test_write_manifests(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["webhook", "--write-manifests", str(tmp_path)]) == 0
    written = {p.name: p.read_text() for p in tmp_path.iterdir()}
    assert written == config.rendered_manifests()
    assert str(tmp_path / "webhook-configuration.yaml") in capsys.readouterr().out


def test_refuses_bad_settings_and_arguments(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("WINNODE_WEBHOOK_PORT", "https")
    assert cli.main(["webhook", "--kubeconfig", str(tmp_path / "kc")]) == 2
    assert "WINNODE_WEBHOOK_PORT='https' is not a valid int" in capsys.readouterr().err
    monkeypatch.delenv("WINNODE_WEBHOOK_PORT")
    assert cli.main(["webhook", "--cert-lifetime", "100", "--ca-lifetime", "10"]) == 2
    assert "--cert-lifetime <= --ca-lifetime" in capsys.readouterr().err
    assert cli.main(["webhook", "--kubeconfig", str(tmp_path / "missing")]) == 2
    assert "cannot read kubeconfig" in capsys.readouterr().err
