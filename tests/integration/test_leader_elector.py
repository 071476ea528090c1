"""LeaderElector in-process against the real apiserver: it steps down when another holder takes the
Lease, and when it cannot renew within the renew deadline (requests failing on the client side), in
both cases stopping the reconciler before the Lease could expire for anyone else."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Iterator
from typing import Any

import pytest

from winnode.kube.client import Kube
from winnode.kube.leases import get_lease, update_lease
from winnode.process.leader import Durations, LeaderElector, Outcome
from winnode.testing.cluster import ControlPlane

NAMESPACE = "wn-elector"
DURATIONS = Durations(lease=3.0, renew_deadline=2.0, retry=0.25)


class FlakyKube(Kube):
    """A real client whose requests fail at once ("refused") or never answer ("hung") while `broken`
    is set: a partition, seen from the client."""

    broken: str | None = None

    async def request(self, *args: Any, **kwargs: Any) -> Any:
        if self.broken == "refused":
            raise ConnectionResetError("injected: apiserver unreachable")
        if self.broken == "hung":
            await asyncio.sleep(3600)
        return await super().request(*args, **kwargs)


@pytest.fixture(scope="module")
def kube(control_plane: ControlPlane) -> Iterator[FlakyKube]:
    control_plane.kubectl("create", "namespace", NAMESPACE, check=False)
    base = Kube.from_kubeconfig(control_plane.kubeconfig)
    client = FlakyKube(base.api)
    try:
        yield client
    finally:
        client.close()


class Reconciler:
    """Stands in for run_operator: records when it ran and stops when told."""

    def __init__(self) -> None:
        self.started = asyncio.Event()
        self.stopped_at: float | None = None

    async def __call__(self, stop: asyncio.Event) -> None:
        self.started.set()
        await stop.wait()
        self.stopped_at = time.monotonic()


async def lead_until_done(
    elector: LeaderElector, reconciler: Reconciler
) -> tuple[asyncio.Task[Outcome], asyncio.Event]:
    stop = asyncio.Event()
    task = asyncio.create_task(elector.run(reconciler, stop))
    await asyncio.wait_for(reconciler.started.wait(), 30)
    return task, stop


async def test_steps_down_when_another_holder_takes_the_lease(kube: FlakyKube) -> None:
    name = "steal"
    elector = LeaderElector(kube, namespace=NAMESPACE, name=name, identity="me", durations=DURATIONS)
    reconciler = Reconciler()
    task, _ = await lead_until_done(elector, reconciler)
    current = await get_lease(kube, NAMESPACE, name)
    assert current is not None
    assert current.holder == "me"
    stolen_at = time.monotonic()
    await update_lease(kube, NAMESPACE, name, dataclasses.replace(current, holder="intruder"))
    outcome = await asyncio.wait_for(task, 10)
    assert outcome is Outcome.LOST
    assert reconciler.stopped_at is not None
    assert reconciler.stopped_at - stolen_at < 2 * DURATIONS.retry + 1.0
    after = await get_lease(kube, NAMESPACE, name)
    assert after is not None
    assert after.holder == "intruder"  # stepping down never writes over the new holder


@pytest.mark.parametrize("fault", ["refused", "hung"])
async def test_steps_down_at_the_renew_deadline_before_the_lease_expires(kube: FlakyKube, fault: str) -> None:
    name = f"partition-{fault}"
    elector = LeaderElector(kube, namespace=NAMESPACE, name=name, identity="me", durations=DURATIONS)
    reconciler = Reconciler()
    task, _ = await lead_until_done(elector, reconciler)
    await asyncio.sleep(DURATIONS.retry * 2)  # a few renewals
    before = await get_lease(kube, NAMESPACE, name)
    assert before is not None
    assert before.renew_time is not None
    kube.broken = fault
    broken_at = time.monotonic()
    try:
        outcome = await asyncio.wait_for(task, 10)
    finally:
        kube.broken = None
    assert outcome is Outcome.LOST
    assert reconciler.stopped_at is not None
    stopped_after = reconciler.stopped_at - broken_at
    # Gave up at the renew deadline, counted from the last successful renewal, even while requests
    # hang: well before the lease runs out for a standby. That renewal ended up to a retry period
    # before the break, plus the part of a renewal in flight at the break that had already run (its
    # read answered, its write cut): the allowance covers that round trip on a loaded machine.
    round_trip_allowance = 0.1
    earliest = DURATIONS.renew_deadline - DURATIONS.retry - round_trip_allowance
    assert earliest <= stopped_after < DURATIONS.renew_deadline + 0.5, stopped_after
    after = await get_lease(kube, NAMESPACE, name)
    assert after is not None
    assert after.holder == "me"  # nothing could be written; the Lease simply expires


async def test_stop_releases_the_lease(kube: FlakyKube) -> None:
    name = "release"
    elector = LeaderElector(kube, namespace=NAMESPACE, name=name, identity="me", durations=DURATIONS)
    reconciler = Reconciler()
    task, stop = await lead_until_done(elector, reconciler)
    stop.set()
    assert await asyncio.wait_for(task, 10) is Outcome.STOPPED
    after = await get_lease(kube, NAMESPACE, name)
    assert after is not None
    assert after.holder == ""
    # A second candidate takes a released Lease at once, without waiting out its duration.
    other = LeaderElector(kube, namespace=NAMESPACE, name=name, identity="next", durations=DURATIONS)
    assert await other.try_acquire_or_renew()
    taken = await get_lease(kube, NAMESPACE, name)
    assert taken is not None
    assert (taken.holder, taken.transitions) == ("next", after.transitions + 1)
