"""WindowsNode status: failures as conditions, the phase they lead to, and writing it all back.

A step that fails raises `StepFailure`: a CamelCase reason, a message that says what to do, the
condition it turns False, and whether an admin has to act (phase Failed, slower retries) or it is
expected to clear on its own. `StatusWriter` keeps the status being built during one reconcile and
patches the status subresource whenever it changed, so `kubectl get wn -w` shows progress live.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from winnode import timeouts
from winnode.api import (
    ConditionStatus,
    NodePhase,
    WindowsNodeConditionType,
    WindowsNodeStatus,
    find_condition,
    set_condition,
)
from winnode.host.errors import (
    HostAuthenticationError,
    HostError,
    HostProtocolError,
    HostTimeoutError,
    HostUnreachableError,
    ScriptFailedError,
)

log = logging.getLogger(__name__)

C = WindowsNodeConditionType


class StepFailure(Exception):
    """A configure/deconfigure step failed; everything status, Events and retries need to know."""

    def __init__(
        self,
        reason: str,
        message: str,
        *,
        condition: str | None = None,
        admin: bool = False,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.condition = condition
        # An admin has to change something (host, Secret, spec) before this can succeed.
        self.admin = admin
        self.retry_after = retry_after
        # The node was not disrupted (an upgrade failed before its drain): it serves on, Ready, and
        # only the condition says what failed.
        self.keeps_serving = False

    def __str__(self) -> str:
        return self.message


def host_failure(exc: HostError, doing: str, condition: str | None = None) -> StepFailure:
    """A StepFailure for an error talking to the host while `doing` something ("start kubelet").

    The host layer's messages already say what to check on the host; this adds which condition the
    failure belongs to and whether an admin has to act before a retry can succeed.
    """
    message = f"cannot {doing}: {exc.message}"
    if isinstance(exc, HostAuthenticationError):  # TLS verification failures included
        return StepFailure(
            exc.reason, message + "; retried until it works", condition=C.AUTHENTICATED, admin=True
        )
    if isinstance(exc, HostUnreachableError | HostTimeoutError):
        return StepFailure(exc.reason, message, condition=C.REACHABLE)
    if isinstance(exc, ScriptFailedError):
        reason = exc.reason
        if reason == ScriptFailedError.default_reason:
            error = exc.error.lower()
            if "checksum mismatch" in error:
                reason = "ChecksumMismatch"
            elif "not enough space" in error:
                reason = "DiskFull"
            elif "refused to start" in error:
                # The component exited at once on its command line or config (the message names
                # the flag): nothing changes until the spec, or winnode, does.
                reason = "ServiceRefusedToStart"
            else:
                reason = "".join(part.capitalize() for part in exc.action.split("_")) + "Failed"
        return StepFailure(
            reason,
            message,
            condition=condition,
            admin=reason in ("ChecksumMismatch", "DiskFull", "ServiceRefusedToStart"),
        )
    if isinstance(exc, HostProtocolError):
        return StepFailure(exc.reason, message, condition=condition, admin=True)
    return StepFailure(exc.reason, message, condition=condition)


def backoff_delay(retry: int, failure: StepFailure | None = None) -> float:
    """Seconds before retry number `retry` (0-based): doubling, capped."""
    if failure is not None and failure.retry_after is not None:
        return failure.retry_after
    poll = (
        timeouts.ADMIN_ACTION_BACKOFF if failure is not None and failure.admin else timeouts.RECONCILE_BACKOFF
    )
    return float(min(poll.deadline, poll.interval * (2 ** min(retry, 16))))


def phase_after_failure(
    previous: NodePhase | None, current: NodePhase | None, failure: StepFailure
) -> NodePhase:
    """Phase to show after a failed step: the deletion phase while deleting, Failed when an admin must
    act, Degraded for a node that was Ready, otherwise the phase the node was in (its retry goes on
    from there)."""
    if current in (NodePhase.DRAINING, NodePhase.DECONFIGURING):
        return current  # deletion goes on: its phase says so
    if failure.keeps_serving and previous in (NodePhase.READY, NodePhase.DEGRADED):
        return previous
    if failure.admin:
        return NodePhase.FAILED
    if previous in (NodePhase.READY, NodePhase.DEGRADED):
        return NodePhase.DEGRADED
    return current or previous or NodePhase.PENDING


# Condition types named after a problem: True while the problem holds.
PROBLEM_CONDITIONS = frozenset({C.UPGRADE_BLOCKED, C.UPGRADE_FAILED, C.DRAIN_BLOCKED})

PatchStatus = Callable[[dict[str, Any]], Awaitable[None]]


class StatusWriter:
    """The status of one WindowsNode as this reconcile builds it; `flush()` writes changes."""

    def __init__(self, status: WindowsNodeStatus, generation: int | None, patch: PatchStatus) -> None:
        self.status = status.model_copy(deep=True)
        self.generation = generation
        self._patch = patch
        self._written = self._dump()
        # The phase the node had when this reconcile started.
        self.initial_phase = status.phase

    def _dump(self) -> dict[str, Any]:
        data: dict[str, Any] = self.status.model_dump(by_alias=True, mode="json")
        return data

    @property
    def phase(self) -> NodePhase | None:
        return self.status.phase

    def set_phase(self, phase: NodePhase) -> None:
        self.status.phase = phase

    def condition(self, type_: str, status: ConditionStatus | bool, reason: str, message: str = "") -> None:
        self.status.conditions = set_condition(
            self.status.conditions, type_, status, reason, message, observed_generation=self.generation
        )

    def condition_is_true(self, type_: str) -> bool:
        c = find_condition(self.status.conditions, type_)
        return c is not None and c.status is ConditionStatus.TRUE

    def fail(self, failure: StepFailure, *, phase: NodePhase | None = None) -> None:
        if failure.condition:
            # UpgradeFailed, DrainBlocked...: named after the problem, so the problem is True.
            status = failure.condition in PROBLEM_CONDITIONS
            self.condition(failure.condition, status, failure.reason, failure.message)
        self.status.last_error = f"{failure.reason}: {failure.message}"
        self.set_phase(phase or phase_after_failure(self.initial_phase, self.status.phase, failure))

    def clear_error(self) -> None:
        self.status.last_error = None

    def observed(self) -> None:
        self.status.observed_generation = self.generation

    async def flush(self) -> bool:
        """Patch the status if it changed since the last write; whether it did."""
        data = self._dump()
        if data == self._written:
            return False
        patch = _merge_patch(self._written, data)
        await self._patch({"status": patch})
        self._written = data
        return True


def _merge_patch(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """A JSON merge patch turning `old` into `new` (nested dicts diffed, lists replaced whole)."""
    out: dict[str, Any] = {}
    for key, value in new.items():
        before = old.get(key)
        if isinstance(value, dict) and isinstance(before, dict):
            sub = _merge_patch(before, value)
            if sub:
                out[key] = sub
        elif value != before or key not in old:
            out[key] = value
    for key in old:
        if key not in new:
            out[key] = None
    return out


def now() -> datetime:
    return datetime.now(UTC)
