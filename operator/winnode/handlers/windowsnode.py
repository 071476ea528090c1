"""kopf handlers of WindowsNode: thin wrappers that run lifecycle/ and turn its failures into retries.

- create / spec update / resume (operator start): lifecycle.configure
- delete (finalizer winnode.io/finalizer): lifecycle.deconfigure
- a daemon per object: lifecycle.drift every Settings.drift_interval_s (with jitter), and at once
  when its Node leaves Ready or changes kubelet version (lifecycle/drift_triggers.py)
- before either: lifecycle.upgrade.maintenance, the budgeted upgrade (version changed on a Ready node)
  or reboot (annotation); a pass waiting for a slot is retried without counting as a failure

Every pass works on a fresh read of the object, under a per-object lock, so configure, drift and
deconfigure never overlap on one host. A StepFailure has already been written to status when it
reaches here; it becomes an Event and a kopf.TemporaryError with a bounded, growing delay. Anything
else is a bug: it is logged with its traceback, and status gets a one-line InternalError instead.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

import kopf
from pydantic import ValidationError

from winnode import timeouts
from winnode.api import NodePhase, WindowsNode, find_condition
from winnode.api import WindowsNodeConditionType as C
from winnode.api.common import ConditionStatus
from winnode.api.windowsnode import WINDOWS_NODE
from winnode.handlers import waits
from winnode.host.errors import HostError
from winnode.kube.client import JSON_MERGE_PATCH, path
from winnode.kube.events import post_event, scrub
from winnode.lifecycle import drift, unreadable, upgrade
from winnode.lifecycle.configure import PAUSED_CONDITION, configure, set_paused
from winnode.lifecycle.context import ChecksumError, Deps, Recorder
from winnode.lifecycle.deconfigure import deconfigure, host_leftovers
from winnode.lifecycle.disruption import release_slot
from winnode.lifecycle.session import Session, installed_version
from winnode.lifecycle.status import StatusWriter, StepFailure, backoff_delay
from winnode.metrics import NOOP

log = logging.getLogger(__name__)
T = TypeVar("T")

# Failures that are waits for something expected to clear (a PodDisruptionBudget during deletion):
# logged at INFO (handlers/waits.py), still recorded in status and as an Event.
WAIT_REASONS = frozenset({"DrainBlocked"})

GROUP, VERSION, PLURAL = WINDOWS_NODE.group, WINDOWS_NODE.version, WINDOWS_NODE.plural


def _object_path(name: str, *sub: str) -> str:
    return path("apis", GROUP, VERSION, PLURAL, name, *sub)


class Unreadable(Exception):
    """The stored WindowsNode does not validate; `session` is on what could be read safely, if any."""

    def __init__(self, obj: dict[str, Any], found: list[str], session: Session | None) -> None:
        self.obj = obj
        self.found = found
        self.session = session
        name = str((obj.get("metadata") or {}).get("name", "?"))
        self.message = unreadable.message("WindowsNode", name, found)
        super().__init__(self.message)


async def open_session(deps: Deps, name: str) -> Session | None:
    """A session on a fresh read of WindowsNode `name`; None when it is gone. Raises Unreadable
    when the stored object does not validate."""
    obj = await deps.kube.request("GET", _object_path(name), missing_ok=True)
    if obj is None:
        return None
    try:
        node = WindowsNode.model_validate(obj)
    except ValidationError as exc:
        salvaged = unreadable.salvage(WindowsNode, obj)
        session = None if salvaged is None else _session(deps, name, salvaged)
        raise Unreadable(obj, unreadable.problems(exc), session) from None
    return _session(deps, name, node)


def _session(deps: Deps, name: str, node: WindowsNode) -> Session:
    async def patch_status(patch: dict[str, Any]) -> None:
        await deps.kube.request(
            "PATCH", _object_path(name, "status"), body=patch, content_type=JSON_MERGE_PATCH, missing_ok=True
        )

    writer = StatusWriter(node.status, node.metadata.generation, patch_status)
    return Session(deps=deps, node=node, writer=writer, events=Recorder(deps.kube, node))


async def report_unreadable(deps: Deps, name: str, problem: Unreadable) -> None:
    """A False SpecReadable condition, lastError and a Warning Event, each naming the fields."""
    if problem.session is not None:
        s = problem.session
        s.writer.fail(StepFailure("SpecUnreadable", problem.message, condition=C.SPEC_READABLE))
        await s.writer.flush()
        await s.events.warning("SpecUnreadable", problem.message)
        return
    meta = problem.obj.get("metadata") or {}
    condition = {
        "type": C.SPEC_READABLE.value,
        "status": "False",
        "reason": "SpecUnreadable",
        "message": problem.message,
        "lastTransitionTime": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    await deps.kube.request(
        "PATCH",
        _object_path(name, "status"),
        body={"status": {"lastError": f"{'SpecUnreadable'}: {problem.message}", "conditions": [condition]}},
        content_type=JSON_MERGE_PATCH,
        missing_ok=True,
    )
    involved = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "WindowsNode",
        "name": name,
        "uid": meta.get("uid", ""),
    }
    await post_event(deps.kube, involved, "Warning", "SpecUnreadable", problem.message)


async def record_failure(s: Session, failure: StepFailure) -> None:
    s.writer.fail(failure)
    await s.writer.flush()
    cause = failure.__cause__
    if isinstance(cause, HostError | ChecksumError):
        s.deps.metrics.host_error(cause.reason)
    s.deps.metrics.set_phase(s.node.metadata.uid or s.name, s.writer.phase)
    await s.events.warning(failure.reason, failure.message)


def _internal(exc: BaseException, doing: str) -> StepFailure:
    log.exception("unexpected error while trying to %s", doing)
    return StepFailure(
        "InternalError",
        f"unexpected {type(exc).__name__} while trying to {doing}: {scrub(str(exc))[:500]}; "
        "see the operator's log; this is retried",
    )


async def _guarded(
    s: Session, operation: str, doing: str, retry: int | None, work: Callable[[], Awaitable[T]]
) -> T:
    """Run one pass of `work`, timed; a failure is recorded (status, Event, metrics) and becomes a
    kopf.TemporaryError with the backoff for retry number `retry`."""
    with s.deps.metrics.reconcile(operation) as outcome:
        try:
            result = await work()
        except StepFailure as failure:
            caught = failure
        except Exception as exc:
            caught = _internal(exc, doing)
        else:
            outcome["outcome"] = NOOP if getattr(result, "ran", True) is False else "success"
            return result
        outcome["outcome"] = "retry"
    await record_failure(s, caught)
    if caught.reason in WAIT_REASONS:
        raise waits.wait(caught.message, backoff_delay(retry or 0, caught))
    raise kopf.TemporaryError(caught.message, delay=backoff_delay(retry or 0, caught))


async def _paused(s: Session) -> bool:
    """Handle spec.paused; True when the host must not be touched now."""
    condition = find_condition(s.writer.status.conditions, PAUSED_CONDITION)
    was_paused = condition is not None and condition.status is ConditionStatus.TRUE
    if s.node.spec.paused:
        if not was_paused:
            await set_paused(s, True)
            await s.events.normal("Paused", "spec.paused is true: no changes to the host until it is false")
        return True
    if was_paused:
        await set_paused(s, False)
        await s.events.normal("Resumed", "spec.paused is false again: reconciling the host")
    return False


async def configure_handler(name: str, uid: str, retry: int, memo: kopf.Memo, **_: Any) -> None:
    deps: Deps = memo.deps
    async with deps.lock_for(uid):
        try:
            s = await open_session(deps, name)
        except Unreadable as problem:
            if (problem.obj.get("metadata") or {}).get("deletionTimestamp"):
                return
            await report_unreadable(deps, name, problem)
            # Not retried: an edit of the spec runs the handler again.
            raise kopf.PermanentError(problem.message) from None
        if s is None or s.node.metadata.deletion_timestamp is not None:
            return
        if await _paused(s):
            return
        async with deps.host_pass(s.node.spec.address):
            await _configure_pass(deps, s, name, uid, retry)


async def _configure_pass(deps: Deps, s: Session, name: str, uid: str, retry: int) -> None:
    maintenance = await _guarded(
        s, "upgrade", f"upgrade WindowsNode {name}", retry, lambda: upgrade.maintenance(s)
    )
    if maintenance.ran:
        deps.metrics.set_phase(uid, s.writer.phase)
        if not maintenance.finished:
            # Waiting (for a slot, or after an aborted drain) is not a failure: no lastError.
            raise waits.wait(maintenance.message, maintenance.retry_after or timeouts.UPGRADE_SLOT_RETRY)
    # A wanted version that is refused or was rolled back is never installed in place: the rest of
    # the spec is applied with the version the host runs.
    keep = installed_version(s) if maintenance.blocked else None
    changes = await _guarded(
        s, "configure", f"configure WindowsNode {name}", retry, lambda: configure(s, keep_version=keep)
    )
    deps.metrics.set_phase(uid, s.writer.phase)
    if changes or s.writer.initial_phase is not NodePhase.READY:
        # The Event stays one short line; the list of changes goes to the log.
        if changes:
            log.info("%s: configured: %s", name, "; ".join(changes))
        summary = f"{len(changes)} change(s) on the host" if changes else "nothing to change on the host"
        await s.events.normal("Configured", f"Node {s.node_name} is Ready ({summary})")


async def deconfigure_handler(name: str, uid: str, retry: int, memo: kopf.Memo, **_: Any) -> None:
    deps: Deps = memo.deps
    async with deps.lock_for(uid):
        try:
            s = await open_session(deps, name)
        except Unreadable as problem:
            if problem.session is None:
                await _release_unreadable(deps, name, problem)
                return
            # Read without the refused fields: the host is cleaned as usual.
            s = problem.session
            await s.events.warning("SpecUnreadable", problem.message)
        if s is None:
            return
        await _guarded(
            s,
            "deconfigure",
            f"remove WindowsNode {name}",
            retry,
            lambda: deconfigure(s, deletion_started=s.node.metadata.deletion_timestamp),
        )
        await release_slot(s)  # deleted mid-upgrade: the budget gets its slot back
        await s.events.normal("Removed", f"Node {s.node_name} removed from the cluster and the host cleaned")
    deps.forget(uid, s.node_name)
    deps.metrics.set_phase(uid, None)


async def _release_unreadable(deps: Deps, name: str, problem: Unreadable) -> None:
    """Let a WindowsNode go whose host, Node or network cannot be read: nothing is touched, and
    status.leftOnHost (and an Event) say what may remain on the host."""
    left = host_leftovers()
    await deps.kube.request(
        "PATCH",
        _object_path(name, "status"),
        body={"status": {"leftOnHost": left, "lastError": f"{'SpecUnreadable'}: {problem.message}"}},
        content_type=JSON_MERGE_PATCH,
        missing_ok=True,
    )
    meta = problem.obj.get("metadata") or {}
    involved = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "WindowsNode",
        "name": name,
        "uid": meta.get("uid", ""),
    }
    await post_event(
        deps.kube,
        involved,
        "Warning",
        "HostNotCleaned",
        f"{problem.message}. Deleted without touching the host, which may still hold: " + ", ".join(left),
    )


async def drift_pass(deps: Deps, name: str, uid: str) -> None:
    """One drift check of WindowsNode `name`, unless another pass holds the object."""
    lock = deps.lock_for(uid)
    if lock.locked():
        return
    async with lock:
        try:
            s = await open_session(deps, name)
        except Unreadable:
            return  # reported by the configure handler, which a spec edit runs again
        if s is None or s.node.metadata.deletion_timestamp is not None or s.node.spec.paused:
            return
        async with deps.host_pass(s.node.spec.address):
            await _drift_pass(deps, s, name, uid)


async def _drift_pass(deps: Deps, s: Session, name: str, uid: str) -> None:
    # A version change that needs no spec edit (the apiserver's default moved), an upgrade to
    # resume, a retry or reboot asked for by annotation: the daemon notices those.
    try:
        maintenance = await _guarded(
            s, "upgrade", f"upgrade WindowsNode {name}", None, lambda: upgrade.maintenance(s)
        )
    except kopf.TemporaryError:
        return
    if maintenance.ran:
        deps.metrics.set_phase(uid, s.writer.phase)
        return
    if not drift.due(s):
        return
    try:
        await _guarded(s, "drift", f"check WindowsNode {name} for drift", None, lambda: drift.drift_check(s))
    except kopf.TemporaryError:
        return
    deps.metrics.set_phase(uid, s.writer.phase)


def _jittered(interval: float) -> float:
    return interval * (1.0 + random.uniform(0.0, timeouts.DRIFT_JITTER))


async def drift_daemon(
    name: str, uid: str, spec: kopf.Spec, memo: kopf.Memo, stopped: kopf.DaemonStopped, **_: Any
) -> None:
    deps: Deps = memo.deps
    interval = deps.settings.drift_interval_s
    node_name = str(spec.get("nodeName") or name)
    wakeup = deps.drift_wakeups.wakeup(node_name)
    await waits.sleep(stopped, _jittered(min(timeouts.DRIFT_INITIAL_DELAY, interval)))
    while not stopped:
        wakeup.clear()
        try:
            await drift_pass(deps, name, uid)
        except asyncio.CancelledError:
            raise
        except Exception:
            # The API itself failed (status or Event writes); the next pass tries again.
            log.exception("drift check of WindowsNode %s failed", name)
        if await waits.sleep_or_wake(stopped, wakeup, _jittered(interval)):
            reason = deps.drift_wakeups.reasons.pop(node_name, "Node changed")
            log.info("%s: drift check now: %s", name, reason, extra={"node": node_name, "reason": reason})


def register(registry: kopf.OperatorRegistry) -> None:
    resource = (GROUP, VERSION, PLURAL)
    backoff = timeouts.RECONCILE_BACKOFF.interval
    kopf.on.create(*resource, id="configure", registry=registry, backoff=backoff)(configure_handler)
    kopf.on.update(*resource, id="reconfigure", field="spec", registry=registry, backoff=backoff)(
        configure_handler
    )
    kopf.on.resume(*resource, id="resume", registry=registry, backoff=backoff)(configure_handler)
    kopf.on.delete(*resource, id="deconfigure", registry=registry, backoff=backoff)(deconfigure_handler)
    kopf.daemon(*resource, id="drift", registry=registry, cancellation_timeout=5.0)(drift_daemon)
