"""Waiting for a slot of the disruption budget costs no polling in one process: a release wakes the
local waiters at once; without one, the wait ends at its bound (a release elsewhere is seen then)."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import time
from typing import Any

from winnode.kube.api import ApiError
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


class ConflictingLeaseStore(LeaseStore):
    """The apiserver's answer to a PUT at an old resourceVersion is 409, after a round trip."""

    def __init__(self) -> None:
        super().__init__()
        self.conflicts = 0

    async def request(
        self, method: str, path: str, *, body: Any = None, missing_ok: bool = False, **kw: Any
    ) -> dict[str, Any] | None:
        await asyncio.sleep(0.002)
        if method == "PUT" and self.lease is not None:
            assert body is not None
            if body["metadata"]["resourceVersion"] != self.lease["metadata"]["resourceVersion"]:
                self.requests += 1
                self.conflicts += 1
                raise ApiError(409, "Conflict")
        return await super().request(method, path, body=body, missing_ok=missing_ok, **kw)


async def test_a_release_hands_the_slot_to_one_waiter_without_a_race() -> None:
    """Many nodes wait for a full budget; each release wakes one of them, which takes the slot. Waking
    all would have every waiter write for the one free slot: all but one get a 409."""
    store = ConflictingLeaseStore()
    slots = Slots(store, "herd", 2)  # type: ignore[arg-type]
    for holder in ("a", "b"):
        assert (await slots.claim(holder, f"uid-{holder}", "upgrade")).granted
    granted: list[str] = []
    both = asyncio.Event()

    async def wait_for_slot(name: str) -> None:
        while True:
            await slots.wait_released(10.0)
            if (await slots.claim(name, f"uid-{name}", "upgrade")).granted:
                granted.append(name)
                if len(granted) == 2:
                    both.set()
                return

    waiters = [asyncio.create_task(wait_for_slot(f"w{i}")) for i in range(30)]
    await asyncio.sleep(0.1)
    before = store.requests
    for holder in ("a", "b"):
        assert await slots.release(holder)
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(both.wait(), 5.0)
    for task in waiters:
        task.cancel()
    await asyncio.gather(*waiters, return_exceptions=True)
    assert sorted(granted) == ["w0", "w1"], "the longest waiting nodes take the freed slots, one each"
    # Each woken waiter's claim can race one other write of the Lease (the second release, or the
    # other waiter's claim): at most 2. With every waiter woken it would be 29 and more.
    assert store.conflicts <= 2, store.conflicts
    # Two releases and two claims, each a read and a write, and a retry per conflict.
    assert store.requests - before <= 8 + 2 * store.conflicts
