"""Status computation: failures -> conditions, phase and retry delay; writes carry only changes."""

from __future__ import annotations

from typing import Any

import pytest

from winnode import timeouts
from winnode.api import NodePhase, WindowsNodeStatus, find_condition
from winnode.host.errors import (
    HostAuthenticationError,
    HostProtocolError,
    HostTimeoutError,
    HostTLSError,
    HostUnreachableError,
    ScriptFailedError,
)
from winnode.lifecycle.status import (
    C,
    StatusWriter,
    StepFailure,
    backoff_delay,
    host_failure,
    phase_after_failure,
)


class Patches:
    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []

    async def __call__(self, patch: dict[str, Any]) -> None:
        self.sent.append(patch)


async def test_flush_sends_only_changes_and_clears_with_null() -> None:
    patches = Patches()
    initial = WindowsNodeStatus.model_validate(
        {"phase": "Installing", "lastError": "old: boom", "subnet": "10.1.0.0/24"}
    )
    writer = StatusWriter(initial, 3, patches)
    assert not await writer.flush(), "nothing changed, nothing sent"

    writer.condition(C.REACHABLE, True, "Connected", "answers")
    writer.clear_error()
    writer.set_phase(NodePhase.READY)
    writer.observed()
    assert await writer.flush()
    (patch,) = patches.sent
    status = patch["status"]
    assert status["phase"] == "Ready"
    assert status["lastError"] is None, "a merge patch null removes the old error"
    assert status["observedGeneration"] == 3
    assert "subnet" not in status, "unchanged fields are not sent"
    (condition,) = status["conditions"]
    assert (condition["type"], condition["status"], condition["observedGeneration"]) == (
        "Reachable",
        "True",
        3,
    )
    assert not await writer.flush()


async def test_fail_records_condition_error_and_phase() -> None:
    writer = StatusWriter(WindowsNodeStatus(phase=NodePhase.CONNECTING), 1, Patches())
    writer.fail(StepFailure("SecretNotFound", "create it", condition=C.CREDENTIALS_AVAILABLE, admin=True))
    status = writer.status
    assert status.phase is NodePhase.FAILED
    assert status.last_error == "SecretNotFound: create it"
    condition = find_condition(status.conditions, C.CREDENTIALS_AVAILABLE)
    assert condition is not None
    assert (condition.status, condition.reason, condition.message) == ("False", "SecretNotFound", "create it")


@pytest.mark.parametrize(
    ("previous", "current", "admin", "expected"),
    [
        (None, NodePhase.INSTALLING, False, NodePhase.INSTALLING),
        (NodePhase.PENDING, NodePhase.CONNECTING, True, NodePhase.FAILED),
        (NodePhase.READY, NodePhase.READY, False, NodePhase.DEGRADED),
        (NodePhase.READY, NodePhase.READY, True, NodePhase.FAILED),
        (NodePhase.DEGRADED, NodePhase.DEGRADED, False, NodePhase.DEGRADED),
        (NodePhase.READY, NodePhase.DECONFIGURING, True, NodePhase.DECONFIGURING),
        (NodePhase.READY, NodePhase.DRAINING, False, NodePhase.DRAINING),
        (None, None, False, NodePhase.PENDING),
    ],
)
def test_phase_after_failure(
    previous: NodePhase | None, current: NodePhase | None, admin: bool, expected: NodePhase
) -> None:
    assert phase_after_failure(previous, current, StepFailure("X", "x", admin=admin)) is expected


def test_backoff_grows_and_is_bounded() -> None:
    plain = [backoff_delay(i, StepFailure("X", "x")) for i in range(12)]
    assert plain[0] == timeouts.RECONCILE_BACKOFF.interval
    assert plain == sorted(plain)
    assert max(plain) == timeouts.RECONCILE_BACKOFF.deadline
    admin = [backoff_delay(i, StepFailure("X", "x", admin=True)) for i in range(12)]
    assert admin[0] == timeouts.ADMIN_ACTION_BACKOFF.interval
    assert max(admin) == timeouts.ADMIN_ACTION_BACKOFF.deadline
    assert backoff_delay(10**6) == timeouts.RECONCILE_BACKOFF.deadline
    assert backoff_delay(3, StepFailure("X", "x", retry_after=7.0)) == 7.0


@pytest.mark.parametrize(
    ("error", "reason", "condition", "admin"),
    [
        (HostAuthenticationError("h", "rejected"), "AuthenticationFailed", C.AUTHENTICATED, True),
        (HostTLSError("h", "bad cert"), "TLSVerificationFailed", C.AUTHENTICATED, True),
        (HostUnreachableError("h", "refused"), "HostUnreachable", C.REACHABLE, False),
        (HostUnreachableError("h", "dropped", command_sent=True), "ConnectionLost", C.REACHABLE, False),
        (HostTimeoutError("h", "slow"), "HostTimeout", C.REACHABLE, False),
        (
            ScriptFailedError("h", "fetch_file", "Checksum mismatch for http://x: expected a, actual b", 1),
            "ChecksumMismatch",
            C.BINARIES_INSTALLED,
            True,
        ),
        (
            ScriptFailedError("h", "write_file", "There is not enough space on the disk. : 'C:\\k\\x'", 1),
            "DiskFull",
            C.BINARIES_INSTALLED,
            True,
        ),
        (
            ScriptFailedError("h", "service_start", "cannot start", 1),
            "ServiceStartFailed",
            C.BINARIES_INSTALLED,
            False,
        ),
        (
            ScriptFailedError("h", "service_start", "cannot start", 1, reason="ServiceDisabled"),
            "ServiceDisabled",
            C.BINARIES_INSTALLED,
            False,
        ),
        (
            ScriptFailedError(
                "h",
                "service_start",
                "Service 'kubelet' cannot be started ... The service process terminated: kubelet refused "
                "to start (flag --log-file): failed to parse kubelet flag: unknown flag: --log-file",
                1,
            ),
            "ServiceRefusedToStart",
            C.BINARIES_INSTALLED,
            True,
        ),
        (HostProtocolError("h", "garbage"), "ProtocolError", C.BINARIES_INSTALLED, True),
    ],
)
def test_host_errors_become_named_failures(
    error: Exception, reason: str, condition: str, admin: bool
) -> None:
    failure = host_failure(error, "do the thing", C.BINARIES_INSTALLED)  # type: ignore[arg-type]
    assert failure.reason == reason
    assert failure.condition == condition
    assert failure.admin is admin
    assert failure.message.startswith("cannot do the thing: ")
    assert str(error) in failure.message
