"""Waiting for a slot of the disruption budget costs no polling in one process: a release wakes the
local waiters at once; without one, the wait ends at its bound (a release elsewhere is seen then)."""

from __future__ import annotations

import asyncio
import copy
import time
from typing import Any

from winnode.kube.slots import SLOTS_LEASE, Slots


class LeaseStore:
    """One Lease as the apiserver keeps it: GET, POST, PUT guarded by resourceVersion."""

    def __init__(self) -> None:
        self.lease: dict[str, Any] | None = None
        self.version = 0
        self.requests = 0

    async def request(
        self, method: str, path: str, *, body: Any = None, missing_ok: bool = False, **_: Any
    ) -> dict[str, Any] | None:
        self.requests += 1
        if method == "GET":
            return copy.deepcopy(self.lease)
        assert body is not None
        if method == "PUT":
            assert self.lease is not None
            assert body["metadata"]["resourceVersion"] == self.lease["metadata"]["resourceVersion"]
        self.version += 1
        self.lease = copy.deepcopy(body)
        self.lease["metadata"]["resourceVersion"] = str(self.version)
        assert self.lease["metadata"]["name"] == SLOTS_LEASE
        return copy.deepcopy(self.lease)


async def test_a_release_wakes_a_waiter_at_once() -> None:
    store = LeaseStore()
    slots = Slots(store, "ns", 1)  # type: ignore[arg-type]
    assert (await slots.claim("a", "uid-a", "upgrade")).granted
    assert not (await slots.claim("b", "uid-b", "upgrade")).granted
    before = store.requests
    waiter = asyncio.create_task(slots.wait_released(30.0))
    await asyncio.sleep(0.05)
    started = time.monotonic()
    assert await slots.release("a")
    assert await waiter is True
    assert time.monotonic() - started < 1.0
    # While it waited the waiter read nothing: only the release touched the Lease.
    assert store.requests - before == 2
    assert (await slots.claim("b", "uid-b", "upgrade")).granted


async def test_without_a_release_the_wait_ends_at_its_bound() -> None:
    slots = Slots(LeaseStore(), "other", 1)  # type: ignore[arg-type]
    started = time.monotonic()
    assert await slots.wait_released(0.2) is False
    assert 0.15 < time.monotonic() - started < 2.0
