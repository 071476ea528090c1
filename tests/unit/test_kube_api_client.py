"""kube/api.py against a small HTTP server on loopback: JSON in and out, the Authorization header asked
for on every request, errors that never carry the body, watch streams split anywhere, one session
per event loop and every session closed."""

from __future__ import annotations

import asyncio
import gc
import json
import subprocess
import sys
import threading
import warnings
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from aiohttp import web

from winnode.kube.api import ApiClient, ApiError, Credentials, api_message, api_status, path, status_of

SECRET = "c2VjcmV0LXZhbHVl"  # what a Secret's data looks like; must never reach a message or repr


class Apiserver:
    """Records each request; answers by path."""

    def __init__(self) -> None:
        self.seen: list[dict[str, Any]] = []

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        self.seen.append(
            {
                "method": request.method,
                "path": request.path,
                "query": dict(request.query),
                "headers": dict(request.headers),
                "body": json.loads(body) if body else None,
            }
        )
        if request.path == "/api/v1/nodes/missing":
            status = {
                "kind": "Status",
                "code": 404,
                "reason": "NotFound",
                "message": 'nodes "missing" not found',
            }
            return web.json_response(status, status=404)
        if request.path == "/api/v1/secrets/bad":
            status = {"kind": "Status", "code": 422, "message": "invalid", "details": {"data": SECRET}}
            return web.json_response(status, status=422, headers={"X-Echo": SECRET})
        if request.path == "/list":
            return web.json_response([1, 2])
        if request.path == "/empty":
            return web.Response(status=200)
        if request.path == "/slow":
            await asyncio.sleep(5)
        if request.query.get("watch") == "true":
            response = web.StreamResponse()
            await response.prepare(request)
            lines = b"".join(
                json.dumps({"type": t, "object": {"metadata": {"name": n}}}).encode() + b"\n"
                for t, n in [("ADDED", "a"), ("MODIFIED", "b"), ("DELETED", "c")]
            )
            for i in range(0, len(lines), 7):  # chunks that cut lines and JSON anywhere
                await response.write(lines[i : i + 7])
            await response.write_eof()
            return response
        return web.json_response({"echo": True})


@pytest.fixture
async def server() -> AsyncIterator[tuple[Apiserver, str]]:
    api = Apiserver()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", api.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield api, f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


@pytest.fixture
def no_unclosed() -> Iterator[None]:
    """Fails when a session or connector is left unclosed (their __del__ warns)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        yield
        gc.collect()
    unclosed = [str(w.message) for w in caught if "Unclosed" in str(w.message)]
    assert not unclosed, unclosed


async def test_json_requests_with_a_fresh_authorization_each_time(
    server: tuple[Apiserver, str], no_unclosed: None
) -> None:
    api, url = server
    tokens = iter(["Bearer one", "Bearer two", "Bearer three"])
    client = ApiClient(Credentials(server=url, authorization_source=lambda: next(tokens)))
    try:
        answer = await client.request(
            "PATCH",
            path("apis", "winnode.io", "v1alpha1", "windowsnodes", "a b/c"),
            body={"spec": {"x": 1}},
            query={"dryRun": "All", "force": True, "limit": 5},
            content_type="application/merge-patch+json",
        )
        assert answer == {"echo": True}
        assert await client.get("/list") == {"items": [1, 2]}
        first, second = api.seen
        assert first["method"] == "PATCH"
        assert first["path"] == "/apis/winnode.io/v1alpha1/windowsnodes/a b/c"  # quoted on the wire
        assert first["query"] == {"dryRun": "All", "force": "true", "limit": "5"}
        assert first["body"] == {"spec": {"x": 1}}
        assert first["headers"]["Content-Type"] == "application/merge-patch+json"
        assert first["headers"]["Accept"] == "application/json"
        assert first["headers"]["User-Agent"].startswith("winnode/")
        # A rotated token is used by the very next request.
        assert (first["headers"]["Authorization"], second["headers"]["Authorization"]) == (
            "Bearer one",
            "Bearer two",
        )
        assert "Content-Type" not in second["headers"]
        assert await client.request("GET", "/empty") == {}
    finally:
        await client.aclose()


async def test_errors_name_the_status_message_and_never_the_body(
    server: tuple[Apiserver, str], no_unclosed: None
) -> None:
    _, url = server
    async with ApiClient(Credentials(server=url, token=SECRET)) as client:
        assert await client.request("GET", "/api/v1/nodes/missing", missing_ok=True) is None
        with pytest.raises(ApiError) as missing:
            await client.request("GET", "/api/v1/nodes/missing")
        assert status_of(missing.value) == 404
        assert api_message(missing.value) == 'nodes "missing" not found'
        assert str(missing.value) == 'HTTP 404 Not Found: nodes "missing" not found'

        with pytest.raises(ApiError) as bad:
            await client.request("PUT", "/api/v1/secrets/bad", body={"data": {"k": SECRET}})
        assert bad.value.status == 422
        assert api_status(bad.value)["details"] == {"data": SECRET}  # there for callers that look
        for text in (str(bad.value), repr(bad.value), repr(client), repr(client.credentials)):
            assert SECRET not in text, text
    assert status_of(ValueError()) is None


async def test_timeouts_name_the_request(server: tuple[Apiserver, str], no_unclosed: None) -> None:
    _, url = server
    async with ApiClient(Credentials(server=url), request_timeout=0.2) as client:
        with pytest.raises(TimeoutError, match=r"GET /slow: no answer within 0s"):
            await client.request("GET", "/slow")


async def test_watch_events_across_chunk_boundaries(server: tuple[Apiserver, str], no_unclosed: None) -> None:
    api, url = server
    async with ApiClient(Credentials(server=url)) as client:
        events = [
            (kind, obj["metadata"]["name"])
            async for kind, obj in client.watch(
                "/api/v1/nodes", {"resourceVersion": "7"}, server_timeout_s=30
            )
        ]
        assert events == [("ADDED", "a"), ("MODIFIED", "b"), ("DELETED", "c")]
        assert api.seen[-1]["query"] == {"resourceVersion": "7", "watch": "true", "timeoutSeconds": "30"}
        with pytest.raises(ApiError):
            async for _ in client.watch("/api/v1/nodes/missing", {}, server_timeout_s=30):
                pass


async def test_one_session_per_loop_each_closed_by_its_owner(
    server: tuple[Apiserver, str], no_unclosed: None
) -> None:
    _, url = server
    client = ApiClient(Credentials(server=url))
    sessions: list[object] = []

    async def use() -> None:
        await client.get("/x")
        sessions.append(client._session())

    # Another thread, another loop, which closes its own session before it ends.
    async def use_then_close() -> None:
        await use()
        await client.aclose()

    thread = threading.Thread(target=lambda: asyncio.run(use_then_close()))
    thread.start()
    await asyncio.to_thread(thread.join)
    await use()
    assert len(sessions) == 2
    assert sessions[0] is not sessions[1]
    assert list(client._sessions) == [asyncio.get_running_loop()]

    # A loop that is idle (not running): close(), called on this loop, runs it in a thread of its own
    # to close the session there.
    idle = asyncio.new_event_loop()
    try:
        await asyncio.to_thread(idle.run_until_complete, use())
        assert len(client._sessions) == 2
        await client.aclose()
        client.close()
        assert client._sessions == {}
        assert all(s.closed for s in sessions[2:])  # type: ignore[attr-defined]
    finally:
        idle.close()


def test_the_webhook_never_loads_the_kubernetes_package() -> None:
    code = (
        "import sys, winnode.admission.server, winnode.admission.certs, winnode.admission.nodes, winnode.kube.api;"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'kubernetes'))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
