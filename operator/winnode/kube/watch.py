"""A watch stream over the `kubernetes` client's connection, one event at a time.

`Kube.request` reads whole responses; a watch must be read line by line as the apiserver sends it.
The blocking read runs in a worker thread that hands each event to the event loop; the server ends
the watch after `timeoutSeconds`, and cancelling the consumer closes the connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
from collections.abc import AsyncIterator, Mapping
from typing import Any

from kubernetes.client.exceptions import ApiException

from winnode.kube.client import Kube

_END = object()


async def watch(
    kube: Kube, path: str, query: Mapping[str, str | int], *, server_timeout_s: int
) -> AsyncIterator[tuple[str, dict[str, Any]]]:
    """(type, object) of each event of one watch of `path`; ends when the server closes it."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[object] = asyncio.Queue()
    params = [(k, str(v)) for k, v in {**query, "watch": "true", "timeoutSeconds": server_timeout_s}.items()]
    method, url, headers, _, _ = kube.api_client.param_serialize(
        method="GET",
        resource_path=path,
        query_params=params,
        header_params={"Accept": "application/json"},
        auth_settings=["BearerToken"],
    )
    holder: dict[str, Any] = {}
    closed = threading.Event()

    def read() -> None:
        try:
            response = kube.api_client.call_api(
                method, url, header_params=headers, _request_timeout=(10, server_timeout_s + 30)
            )
            raw = response.response
            holder["raw"] = raw
            if not 200 <= response.status <= 299:
                response.read()  # type: ignore[no-untyped-call]
                raise ApiException.from_response(http_resp=response, body=None, data=None)
            buffer = b""
            for chunk in raw.stream(64 * 1024, decode_content=True):
                if closed.is_set():
                    break
                buffer += chunk
                *lines, buffer = buffer.split(b"\n")
                for line in lines:
                    if line.strip():
                        loop.call_soon_threadsafe(queue.put_nowait, json.loads(line))
        except BaseException as exc:  # handed to the consumer, raised there
            if not closed.is_set():
                loop.call_soon_threadsafe(queue.put_nowait, exc)
        finally:
            with contextlib.suppress(BaseException):
                loop.call_soon_threadsafe(queue.put_nowait, _END)

    worker = threading.Thread(target=read, name="kube-watch", daemon=True)
    worker.start()
    try:
        while True:
            item = await queue.get()
            if item is _END:
                return
            if isinstance(item, BaseException):
                raise item
            event = item if isinstance(item, dict) else {}
            yield str(event.get("type", "")), dict(event.get("object") or {})
    finally:
        closed.set()
        raw = holder.get("raw")
        if raw is not None:
            # Unblock the reader thread now (urllib3 2.3+ has shutdown); otherwise the server's
            # timeoutSeconds ends its read.
            for step in ("shutdown", "close"):
                with contextlib.suppress(Exception):
                    getattr(raw, step)()
