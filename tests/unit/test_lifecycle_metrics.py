"""The reconciler's metrics: reconcile outcomes and durations, phases, host errors."""

from __future__ import annotations

import pytest
from prometheus_client.parser import text_string_to_metric_families

from winnode.metrics import OperatorMetrics


def samples(metrics: OperatorMetrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(metrics.render().decode()):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_reconcile_outcomes_and_durations() -> None:
    metrics = OperatorMetrics()
    with metrics.reconcile("configure") as outcome:
        outcome["outcome"] = "success"
    with pytest.raises(RuntimeError), metrics.reconcile("configure"):
        raise RuntimeError("boom")
    got = samples(metrics)
    labels = (("kind", "WindowsNode"), ("operation", "configure"), ("outcome", "success"))
    assert got[("winnode_reconcile_total", labels)] == 1
    assert got[("winnode_reconcile_duration_seconds_count", labels)] == 1
    failed = (("kind", "WindowsNode"), ("operation", "configure"), ("outcome", "failed"))
    assert got[("winnode_reconcile_total", failed)] == 1


def test_phase_gauge_follows_each_object() -> None:
    metrics = OperatorMetrics()
    metrics.set_phase("uid-1", "Installing")
    metrics.set_phase("uid-2", "Installing")
    metrics.set_phase("uid-1", "Ready")
    got = samples(metrics)
    assert got[("winnode_windowsnodes", (("phase", "Installing"),))] == 1
    assert got[("winnode_windowsnodes", (("phase", "Ready"),))] == 1
    assert got[("winnode_windowsnodes", (("phase", "Failed"),))] == 0
    metrics.set_phase("uid-2", None)  # deleted
    assert samples(metrics)[("winnode_windowsnodes", (("phase", "Installing"),))] == 0


def test_host_errors_by_reason() -> None:
    metrics = OperatorMetrics()
    metrics.host_error("AuthenticationFailed")
    metrics.host_error("AuthenticationFailed")
    metrics.host_error("HostUnreachable")
    got = samples(metrics)
    assert got[("winnode_host_errors_total", (("reason", "AuthenticationFailed"),))] == 2
    assert got[("winnode_host_errors_total", (("reason", "HostUnreachable"),))] == 1
