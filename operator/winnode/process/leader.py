"""Leader election for `winnode run`: one active reconciler, chosen by a coordination.k8s.io Lease.

The rules are client-go's leaderelection:

- A candidate takes the Lease when it does not exist, has no holder, or its holder has not renewed it
  for leaseDurationSeconds. "Not renewed" is judged by when *this* candidate last saw the record
  change (its own monotonic clock), never by comparing renewTime with its clock: clocks of two
  machines may disagree.
- Every write sends the resourceVersion it read, so of two candidates only one wins a race.
- The holder renews every retry period. When it could not renew for the renew deadline (shorter
  than the lease duration), it stops reconciling and the process exits non-zero: the Deployment
  starts it again as a clean standby. By then nobody else can have taken the Lease yet.
- On SIGTERM the holder stops reconciling first, then releases the Lease (holder cleared), so a
  standby takes over at its next retry instead of waiting out the lease duration.

`decide()` is the pure part; `LeaderElector` does the I/O (kube/leases.py) and runs the reconciler
(`run_operator`) only while it holds the Lease.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import enum
import logging
import os
import socket
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, replace
from typing import Any

from winnode import timeouts
from winnode.kube.client import Kube
from winnode.kube.leases import LeaseConflict, LeaseRecord, create_lease, get_lease, update_lease
from winnode.settings import Settings

log = logging.getLogger(__name__)


def default_identity(environ: dict[str, str] | None = None) -> str:
    """POD_NAME (the Deployment passes it through the downward API), else hostname and pid."""
    env = os.environ if environ is None else environ
    return env.get("POD_NAME") or f"{socket.gethostname()}_{os.getpid()}"


@dataclass(frozen=True)
class Durations:
    lease: float
    renew_deadline: float
    retry: float

    @classmethod
    def from_settings(cls, settings: Settings) -> Durations:
        durations = cls(
            lease=settings.leader_lease_duration_s,
            renew_deadline=settings.leader_renew_deadline_s,
            retry=settings.leader_retry_period_s,
        )
        if not 0 < durations.retry < durations.renew_deadline < durations.lease:
            raise ValueError(
                "leader election needs 0 < retry period < renew deadline < lease duration; got "
                f"WINNODE_LEADER_RETRY_PERIOD_S={durations.retry}, "
                f"WINNODE_LEADER_RENEW_DEADLINE_S={durations.renew_deadline}, "
                f"WINNODE_LEADER_LEASE_DURATION_S={durations.lease}"
            )
        return durations


def decide(
    current: LeaseRecord | None,
    *,
    identity: str,
    now: datetime.datetime,
    expired: bool,
    lease_duration_s: int,
) -> LeaseRecord | None:
    """The record to write to acquire or renew the Lease, or None when someone else holds it.

    `expired`: the current holder has not renewed within its lease duration, as this candidate saw it.
    """
    if current is None:
        return LeaseRecord(identity, lease_duration_s, now, now, 0)
    if current.holder == identity:
        return replace(current, lease_duration_s=lease_duration_s, renew_time=now)
    if current.holder and not expired:
        return None
    return replace(
        current,
        holder=identity,
        lease_duration_s=lease_duration_s,
        acquire_time=now,
        renew_time=now,
        transitions=current.transitions + 1,
    )


def released(current: LeaseRecord, now: datetime.datetime) -> LeaseRecord:
    """What the holder writes when it steps down: no holder, so a standby takes it at once."""
    return replace(current, holder="", lease_duration_s=1, renew_time=now)


class Outcome(enum.Enum):
    STOPPED = "stopped"  # asked to stop (SIGTERM) or the reconciler ended by itself: exit 0
    LOST = "lost"  # could not renew, or someone else holds the Lease: exit non-zero


# The reconciler, run while we lead: it must return soon after its argument (a stop flag) is set.
Lead = Callable[[asyncio.Event], Coroutine[Any, Any, None]]
# Told True when this process starts leading and False when it stops.
LeadershipListener = Callable[[bool], None]


class LeaderElector:
    def __init__(
        self,
        kube: Kube,
        *,
        namespace: str,
        name: str,
        identity: str,
        durations: Durations,
        on_leadership: LeadershipListener | None = None,
    ) -> None:
        self.kube = kube
        self.namespace = namespace
        self.name = name
        self.identity = identity
        self.durations = durations
        self.on_leadership = on_leadership or (lambda _: None)
        self._observed: LeaseRecord | None = None
        self._observed_at = 0.0  # monotonic time when the observed record last changed
        self._last_renew = 0.0  # monotonic time of our last successful acquire or renew

    @property
    def lease(self) -> str:
        return f"Lease {self.namespace}/{self.name}"

    def _observe(self, record: LeaseRecord | None) -> None:
        def key(r: LeaseRecord | None) -> tuple[object, ...] | None:
            return None if r is None else (r.holder, r.renew_time, r.acquire_time, r.transitions)

        if key(record) != key(self._observed):
            self._observed_at = time.monotonic()
        self._observed = record

    def _expired(self, record: LeaseRecord) -> bool:
        duration = record.lease_duration_s if record.lease_duration_s > 0 else self.durations.lease
        return time.monotonic() > self._observed_at + duration

    async def try_acquire_or_renew(self, bound_s: float | None = None) -> bool:
        """One round, bounded by `bound_s` (default half the renew deadline): True when we hold the
        Lease afterwards."""
        now = datetime.datetime.now(datetime.UTC)
        try:
            # One attempt must not outlast the renew deadline (a half-open connection would).
            async with asyncio.timeout(self.durations.renew_deadline / 2 if bound_s is None else bound_s):
                current = await get_lease(self.kube, self.namespace, self.name)
                self._observe(current)
                desired = decide(
                    current,
                    identity=self.identity,
                    now=now,
                    expired=current is not None and self._expired(current),
                    lease_duration_s=max(1, round(self.durations.lease)),
                )
                if desired is None:
                    return False
                if current is None:
                    written = await create_lease(self.kube, self.namespace, self.name, desired)
                else:
                    written = await update_lease(self.kube, self.namespace, self.name, desired)
        except LeaseConflict as exc:
            log.info("lost a race for %s: %s", self.lease, exc)
            return False
        except Exception as exc:  # the API failed: try again next round, within the renew deadline
            log.warning("could not read or write %s: %s", self.lease, exc or type(exc).__name__)
            return False
        self._observe(written)
        self._last_renew = time.monotonic()
        if current is None or current.holder != self.identity:
            log.info(
                "acquired %s as %s (transitions %d, previous holder %r)",
                self.lease,
                self.identity,
                written.transitions,
                current.holder if current is not None else None,
            )
        return True

    async def release(self) -> None:
        """Clear the holder, if it is still us; best effort, bounded by the renew deadline."""
        try:
            async with asyncio.timeout(self.durations.renew_deadline):
                current = await get_lease(self.kube, self.namespace, self.name)
                if current is None or current.holder != self.identity:
                    return
                await update_lease(
                    self.kube,
                    self.namespace,
                    self.name,
                    released(current, datetime.datetime.now(datetime.UTC)),
                )
            log.info("released %s", self.lease)
        except Exception as exc:
            log.warning("could not release %s (a standby takes it when it expires): %s", self.lease, exc)

    async def _acquire(self, stop: asyncio.Event) -> bool:
        """Wait until we hold the Lease (True) or `stop` is set (False)."""
        log.info("waiting to acquire %s as %s", self.lease, self.identity)
        while not stop.is_set():
            if await self.try_acquire_or_renew():
                return True
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.durations.retry):
                    await stop.wait()
        return False

    async def _renew_until_lost(self, stop: asyncio.Event, finished: asyncio.Task[None]) -> bool:
        """Renew every retry period; False when the renew deadline passed or another holder took it,
        True when `stop` was set or the reconciler ended."""

        def remaining() -> float:
            # Time left before the renew deadline, counted from the last successful renewal: waits and
            # requests are cut to it, so stepping down is never later than the deadline.
            return self._last_renew + self.durations.renew_deadline - time.monotonic()

        stopping = asyncio.ensure_future(stop.wait())
        try:
            while True:
                done, _ = await asyncio.wait(
                    [stopping, finished],
                    timeout=max(0.0, min(self.durations.retry, remaining())),
                    return_when=asyncio.FIRST_COMPLETED,
                )
                if done:
                    return True
                if remaining() <= 0:
                    log.error(
                        "could not renew %s for %.1fs (renew deadline): stepping down",
                        self.lease,
                        self.durations.renew_deadline,
                    )
                    return False
                if await self.try_acquire_or_renew(min(self.durations.renew_deadline / 2, remaining())):
                    continue
                if self._observed is not None and self._observed.holder not in ("", self.identity):
                    log.error("%s is now held by %s: stepping down", self.lease, self._observed.holder)
                    return False
        finally:
            stopping.cancel()

    async def run(self, lead: Lead, stop: asyncio.Event) -> Outcome:
        """Acquire the Lease, run `lead` while holding it, and say how it ended."""
        if not await self._acquire(stop):
            return Outcome.STOPPED
        operator_stop = asyncio.Event()
        finished = asyncio.create_task(lead(operator_stop), name="reconciler")
        self.on_leadership(True)
        kept = False
        try:
            kept = await self._renew_until_lost(stop, finished)
        finally:
            self.on_leadership(False)
            # Stop reconciling before anything else: after losing the Lease, another replica may take
            # it once the lease duration has passed, and the renew deadline left us the difference.
            operator_stop.set()
            # After a loss, stop well within what the renew deadline left before the Lease expires.
            lost_grace = min(
                timeouts.LEADER_STOP_GRACE, (self.durations.lease - self.durations.renew_deadline) / 2
            )
            grace = timeouts.LEADER_SHUTDOWN_GRACE if kept else lost_grace
            done, _ = await asyncio.wait([finished], timeout=grace)
            if not done:
                log.warning("the reconciler did not stop within %.0fs: cancelling it", grace)
                finished.cancel()
                # Bounded too: a reconciler slow to unwind must not keep the process (and, when the
                # Lease is kept, its release) waiting; the process leaves right after this.
                await asyncio.wait([finished], timeout=grace)
            if kept:
                await self.release()
        if finished.done() and not finished.cancelled() and finished.exception() is not None:
            log.error("the reconciler failed", exc_info=finished.exception())
            return Outcome.LOST
        return Outcome.STOPPED if kept else Outcome.LOST
