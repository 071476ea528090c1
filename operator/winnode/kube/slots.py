"""Slots of the cluster-wide disruption budget (Settings.max_unavailable): which nodes may be cordoned,
drained and restarted by an upgrade or a reboot right now.

The holders live in one coordination.k8s.io Lease in the operator's namespace, as JSON in its
annotation winnode.io/slot-holders ({nodeName: {uid, reason, since}}). Why a Lease and not the
operator's memory or the WindowsNodes' phases:
- it outlives the operator process: after a crash or a restart the new process sees exactly who holds
  a slot, and a holder resuming its upgrade claims again idempotently (no second slot, no gap);
- every change is a PUT carrying the resourceVersion that was read, so two claims racing for the last
  slot (two passes in one process, an old and a new leader during a hand-over) cannot both win: the
  apiserver answers 409 Conflict to the second and it looks again. Deriving slots from WindowsNode
  phases would need a claim spanning two objects, which the API cannot make atomic.
A holder is removed when its upgrade or reboot ends (success, rollback or an aborted drain); holders
whose WindowsNode is gone (deleted mid-upgrade) are pruned when the budget is full.

Waiting for a slot costs no polling within one process: a release wakes one local waiter at once, the
one waiting longest (one asyncio.Condition per namespace and event loop), and that waiter takes the
freed slot. Waking them all would have every waiter race for one slot, each loser's write a 409: with
180 waiters for 20 slots the Lease saw hundreds of conflicting writes per release, and waiters retried
conflicts until their bound ran out. Only a release by another process (a previous leader) is
noticed by the waiters' slow fallback poll.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from winnode import timeouts
from winnode.kube.api import ApiError
from winnode.kube.client import Kube, path
from winnode.settings import FIELD_PREFIX

log = logging.getLogger(__name__)

SLOTS_LEASE = "winnode-disruption-slots"
HOLDERS_ANNOTATION = f"{FIELD_PREFIX}/slot-holders"
# Namespace -> when holders were last checked for staleness (one check serves every claim).
_last_prune: dict[str, float] = {}
# (event loop, namespace) -> the condition local releases notify. Per loop: an asyncio primitive is
# bound to the loop that first waits on it, and tests run several operators in one process.
_released: dict[tuple[int, str], asyncio.Condition] = {}


def _release_condition(namespace: str) -> asyncio.Condition:
    key = (id(asyncio.get_running_loop()), namespace)
    condition = _released.get(key)
    if condition is None:
        condition = _released[key] = asyncio.Condition()
    return condition


@dataclass(frozen=True)
class Holder:
    uid: str  # the WindowsNode's uid: a namesake created later is another node
    reason: str  # "upgrade to v1.37.2", "reboot"
    since: str  # RFC 3339


@dataclass(frozen=True)
class Claim:
    granted: bool
    holders: tuple[str, ...]  # node names holding a slot after this claim

    def summary(self, limit: int) -> str:
        return f"{len(self.holders)}/{limit} slots taken by {', '.join(self.holders) or 'nobody'}"


# Whether a holder is stale (its WindowsNode is gone or was re-created).
StaleCheck = Callable[[str, Holder], Awaitable[bool]]


def may_hold(holders: Mapping[str, Holder], name: str, limit: int) -> bool:
    """Whether node `name` may hold a slot: it already does, or fewer than `limit` are taken."""
    return name in holders or len(holders) < limit


def parse_holders(lease: Mapping[str, Any] | None) -> dict[str, Holder]:
    raw = (((lease or {}).get("metadata") or {}).get("annotations") or {}).get(HOLDERS_ANNOTATION)
    if not raw:
        return {}
    try:
        data = json.loads(raw)
    except ValueError:
        log.warning(
            "Lease %s: annotation %s is not JSON; treating it as empty", SLOTS_LEASE, HOLDERS_ANNOTATION
        )
        return {}
    out: dict[str, Holder] = {}
    for name, entry in (data or {}).items() if isinstance(data, dict) else ():
        if isinstance(entry, dict):
            out[str(name)] = Holder(
                uid=str(entry.get("uid", "")),
                reason=str(entry.get("reason", "")),
                since=str(entry.get("since", "")),
            )
    return out


def _dump(holders: Mapping[str, Holder]) -> str:
    return json.dumps(
        {n: {"uid": h.uid, "reason": h.reason, "since": h.since} for n, h in sorted(holders.items())},
        separators=(",", ":"),
    )


def _lease_path(namespace: str, name: str | None = None) -> str:
    parts = ["apis", "coordination.k8s.io", "v1", "namespaces", namespace, "leases"]
    return path(*parts, name) if name else path(*parts)


async def _jittered(at_most_s: float) -> None:
    """Sleep a random part of the interval, so writers that conflicted do not collide again in step."""
    await asyncio.sleep(random.uniform(0.0, at_most_s))


class Slots:
    """The budget of one operator: claim and release slots on the Lease in `namespace`."""

    def __init__(self, kube: Kube, namespace: str, limit: int, stale: StaleCheck | None = None) -> None:
        self._kube = kube
        self._namespace = namespace
        self.limit = limit
        self._stale = stale

    async def holders(self) -> dict[str, Holder]:
        return parse_holders(await self._read())

    async def _read(self) -> dict[str, Any] | None:
        return await self._kube.request("GET", _lease_path(self._namespace, SLOTS_LEASE), missing_ok=True)

    async def _write(self, lease: dict[str, Any] | None, holders: Mapping[str, Holder]) -> None:
        """Create the Lease or replace it at the resourceVersion read (409 when someone was faster)."""
        annotations = {HOLDERS_ANNOTATION: _dump(holders)}
        if lease is None:
            body: dict[str, Any] = {
                "apiVersion": "coordination.k8s.io/v1",
                "kind": "Lease",
                "metadata": {"name": SLOTS_LEASE, "namespace": self._namespace, "annotations": annotations},
                "spec": {},
            }
            await self._kube.request("POST", _lease_path(self._namespace), body=body)
            return
        body = dict(lease)
        meta = dict(body.get("metadata") or {})
        meta["annotations"] = {**(meta.get("annotations") or {}), **annotations}
        body["metadata"] = meta  # carries resourceVersion: the update is refused if the Lease moved
        await self._kube.request("PUT", _lease_path(self._namespace, SLOTS_LEASE), body=body)

    async def _update(self, change: Callable[[dict[str, Holder]], Awaitable[bool]]) -> dict[str, Holder]:
        """Read, let `change` edit the holders (True = write), write guarded; again on a conflict."""
        conflict: ApiError | None = None
        async for _ in timeouts.UPGRADE_SLOT_CONFLICT.attempts(_jittered):
            lease = await self._read()
            holders = parse_holders(lease)
            if not await change(holders):
                return holders
            try:
                await self._write(lease, holders)
                return holders
            except ApiError as exc:
                if exc.status not in (409, 422):
                    raise
                # 409: another claim or release won; 422 would be a create racing a create.
                conflict = exc
        assert conflict is not None  # the poll ends only after a try that hit a conflict
        raise conflict

    async def claim(self, name: str, uid: str, reason: str) -> Claim:
        """Take a slot for node `name` if one is free (or it holds one already); never waits."""

        async def change(holders: dict[str, Holder]) -> bool:
            current = holders.get(name)
            if current is not None and current.uid == uid:
                return False
            if current is None and not may_hold(holders, name, self.limit):
                if not await self._prune(holders):
                    return False
                if not may_hold(holders, name, self.limit):
                    return True  # write the pruning even though this claim still waits
            holders[name] = Holder(uid=uid, reason=reason, since=datetime.now(UTC).isoformat())
            return True

        holders = await self._update(change)
        granted = holders.get(name) is not None and holders[name].uid == uid
        if granted:
            log.info("slot for %s (%s): %d/%d taken", name, reason, len(holders), self.limit)
        return Claim(granted=granted, holders=tuple(sorted(holders)))

    async def release(self, name: str) -> bool:
        """Give node `name`'s slot back; whether it held one."""
        released = False

        async def change(holders: dict[str, Holder]) -> bool:
            nonlocal released
            released = holders.pop(name, None) is not None
            return released

        await self._update(change)
        if released:
            log.info("slot of %s released", name)
            condition = _release_condition(self._namespace)
            async with condition:
                condition.notify(1)
        return released

    async def wait_released(self, at_most_s: float) -> bool:
        """Wait until this process releases a slot of the budget, at most `at_most_s` seconds (so a
        release by another process is seen by the caller's next claim); whether one was released."""
        condition = _release_condition(self._namespace)
        async with condition:
            try:
                await asyncio.wait_for(condition.wait(), at_most_s)
            except TimeoutError:
                return False
        return True

    async def _prune(self, holders: dict[str, Holder]) -> bool:
        """Drop holders whose WindowsNode is gone (at most every UPGRADE_SLOT_PRUNE); whether any was."""
        last = _last_prune.get(self._namespace, float("-inf"))
        if self._stale is None or time.monotonic() - last < timeouts.UPGRADE_SLOT_PRUNE:
            return False
        _last_prune[self._namespace] = time.monotonic()
        pruned = False
        for holder_name, holder in list(holders.items()):
            if await self._stale(holder_name, holder):
                log.warning("slot of %s released: its WindowsNode is gone", holder_name)
                del holders[holder_name]
                pruned = True
        return pruned
