"""Honest status and logs: phases after failures that disrupt nothing, problem conditions, waits at
INFO, no-op passes not counted, Paused in the wide columns, dashboard units."""

from __future__ import annotations

import logging

import kopf
import pytest

from winnode.admission.metrics import WebhookMetrics
from winnode.api import NodePhase, WindowsNodeStatus, find_condition
from winnode.api.windowsnode import WINDOWS_NODE
from winnode.deploy.monitoring import dashboard
from winnode.handlers.waits import KOPF_OBJECT_LOGGER, WaitsAtInfo, wait
from winnode.lifecycle.status import C, StatusWriter, StepFailure, phase_after_failure
from winnode.metrics import NOOP, OperatorMetrics


def test_a_failure_that_disrupted_nothing_keeps_a_ready_node_ready() -> None:
    failure = StepFailure("ChecksumUnavailable", "no .sha256", condition=C.UPGRADE_FAILED, admin=True)
    assert phase_after_failure(NodePhase.READY, NodePhase.READY, failure) is NodePhase.FAILED
    failure.keeps_serving = True
    assert phase_after_failure(NodePhase.READY, NodePhase.READY, failure) is NodePhase.READY
    # Never for a node that was not serving.
    assert phase_after_failure(NodePhase.INSTALLING, NodePhase.INSTALLING, failure) is NodePhase.FAILED


@pytest.mark.parametrize(
    ("condition", "status"),
    [
        (C.UPGRADE_FAILED, "True"),
        (C.DRAIN_BLOCKED, "True"),
        (C.UPGRADE_BLOCKED, "True"),
        (C.REACHABLE, "False"),
    ],
)
def test_failures_set_problem_conditions_true(condition: str, status: str) -> None:
    async def patch(_: object) -> None:
        return None

    writer = StatusWriter(WindowsNodeStatus(), 1, patch)
    writer.fail(StepFailure("X", "x", condition=condition))
    found = find_condition(writer.status.conditions, condition)
    assert found is not None
    assert found.status.value == status


def test_waits_are_logged_at_info_and_failures_stay_errors() -> None:
    error = wait("waiting for an upgrade slot (2 of 2 in use)", 10.0)
    assert isinstance(error, kopf.TemporaryError)
    flt = WaitsAtInfo()

    def record(message: str) -> logging.LogRecord:
        return logging.LogRecord(KOPF_OBJECT_LOGGER, logging.ERROR, __file__, 1, message, None, None)

    waited = record("Handler 'configure' failed temporarily: waiting for an upgrade slot (2 of 2 in use)")
    assert flt.filter(waited)
    assert waited.levelno == logging.INFO
    assert waited.levelname == "INFO"
    failed = record("Handler 'configure' failed temporarily: cannot connect to https://10.1.2.3:5986")
    assert flt.filter(failed)
    assert failed.levelno == logging.ERROR


def test_noop_passes_are_not_counted() -> None:
    metrics = OperatorMetrics()
    with metrics.reconcile("upgrade") as outcome:
        outcome["outcome"] = NOOP
    with metrics.reconcile("upgrade") as outcome:
        outcome["outcome"] = "success"
    samples = [
        s for m in metrics.reconciles.collect() for s in m.samples if s.name.endswith("_total") and s.value
    ]
    assert [(s.labels["operation"], s.labels["outcome"], s.value) for s in samples] == [
        ("upgrade", "success", 1.0)
    ]


def test_paused_is_a_wide_printer_column() -> None:
    columns = {c.name: c for c in WINDOWS_NODE.printer_columns}
    assert columns["Paused"].json_path == ".spec.paused"
    assert columns["Paused"].priority == 1


def test_dashboard_panels_in_seconds_show_only_durations() -> None:
    for panel in dashboard(OperatorMetrics(), WebhookMetrics())["panels"]:
        if panel["fieldConfig"]["defaults"]["unit"] != "s":
            continue
        for target in panel["targets"]:
            expr = target["expr"]
            assert "duration" in expr or "latency" in expr or "time()" in expr, (panel["title"], expr)
