"""Prometheus metrics of the reconciler (`winnode run`), served on settings.metrics_port with the probes
(winnode.process.health).

This module is the one place their names are defined: the monitoring manifests (Grafana dashboard,
PrometheusRule) are generated from it (winnode.deploy.monitoring) and a test checks every expression there
against the series registered here.

- winnode_reconcile_duration_seconds{kind, operation, outcome}: configure, deconfigure and drift passes
  of WindowsNodes, and the passes of any other resource kind (WindowsNetwork)
- winnode_reconcile_total{kind, operation, outcome}
- winnode_windowsnodes{phase}: WindowsNodes per phase, as this operator last saw them
- winnode_host_errors_total{reason}: failures talking to hosts recorded in status, by condition reason
- winnode_winrm_operation_duration_seconds{action, outcome}: one host action (script) over WinRM
- winnode_winrm_operation_errors_total{action, error_class}: failed host actions by class (auth, tls,
  unreachable, timeout, script, protocol, other)
- winnode_drift_repairs_total: things put back on hosts by the drift check
- winnode_csr_approvals_total{signer_kind}: kubelet CSRs approved
- winnode_upgrades_in_flight: nodes holding a slot of the upgrade budget in this process (upgrade or
  reboot between cordon and uncordon)
- winnode_upgrades_total{outcome}: upgrades and reboots ended: succeeded, rolled_back, drain_aborted,
  rebooted
- winnode_leader: 1 while this process is the active reconciler (holds the Lease), else 0
- winnode_leader_transitions_total: times this process became the active reconciler
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from winnode.api import NodePhase
from winnode.host.errors import (
    HostAuthenticationError,
    HostError,
    HostProtocolError,
    HostTimeoutError,
    HostTLSError,
    HostUnreachableError,
    ScriptFailedError,
)

OUTCOMES = ("success", "retry", "failed")
# Outcomes of an upgrade (winnode_upgrades_total{outcome}).
UPGRADE_OUTCOMES = ("succeeded", "rolled_back", "failed", "drain_aborted", "rebooted")
# Error classes of host actions, most specific first (HostTLSError is an authentication error).
ERROR_CLASSES: tuple[tuple[type[HostError], str], ...] = (
    (HostTLSError, "tls"),
    (HostAuthenticationError, "auth"),
    (HostUnreachableError, "unreachable"),
    (HostTimeoutError, "timeout"),
    (ScriptFailedError, "script"),
    (HostProtocolError, "protocol"),
)
WINRM_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)

# outcome of a pass that had nothing to do: neither counted nor timed.
NOOP = "noop"


def error_class(exc: BaseException) -> str:
    """The bounded label for a failed host action."""
    for cls, label in ERROR_CLASSES:
        if isinstance(exc, cls):
            return label
    return "other"


class OperatorMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.reconcile_duration = Histogram(
            "winnode_reconcile_duration_seconds",
            "Duration of one reconcile pass, by resource kind, operation and outcome.",
            ("kind", "operation", "outcome"),
            buckets=(0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600),
            registry=self.registry,
        )
        self.reconciles = Counter(
            "winnode_reconcile",
            "Reconcile passes, by resource kind, operation and outcome.",
            ("kind", "operation", "outcome"),
            registry=self.registry,
        )
        self.phases = Gauge(
            "winnode_windowsnodes",
            "WindowsNodes per phase.",
            ("phase",),
            registry=self.registry,
        )
        self.host_errors = Counter(
            "winnode_host_errors",
            "Failures talking to Windows hosts, by reason.",
            ("reason",),
            registry=self.registry,
        )
        self.drift_repairs = Counter(
            "winnode_drift_repairs",
            "Things the drift check found changed on a host and put back.",
            registry=self.registry,
        )
        self.csr_approvals = Counter(
            "winnode_csr_approvals",
            "Kubelet CSRs approved.",
            ("signer_kind",),
            registry=self.registry,
        )
        self.winrm_duration = Histogram(
            "winnode_winrm_operation_duration_seconds",
            "Duration of one host action over WinRM (render, send, run, parse), by action and outcome.",
            ("action", "outcome"),
            buckets=WINRM_BUCKETS,
            registry=self.registry,
        )
        self.winrm_errors = Counter(
            "winnode_winrm_operation_errors",
            "Failed host actions, by action and error class.",
            ("action", "error_class"),
            registry=self.registry,
        )
        self.leader = Gauge(
            "winnode_leader",
            "1 while this process is the active reconciler (holds the leader Lease), else 0.",
            registry=self.registry,
        )
        self.leader_transitions = Counter(
            "winnode_leader_transitions",
            "Times this process became the active reconciler.",
            registry=self.registry,
        )
        self.upgrades_in_flight = Gauge(
            "winnode_upgrades_in_flight",
            "Nodes being upgraded or rebooted (holding a slot of the budget) by this operator.",
            registry=self.registry,
        )
        self.upgrades = Counter(
            "winnode_upgrades",
            "Upgrades and reboots ended, by outcome.",
            ("outcome",),
            registry=self.registry,
        )
        for outcome in UPGRADE_OUTCOMES:
            self.upgrades.labels(outcome)
        self._in_flight: set[str] = set()
        self._anonymous_upgrades = 0
        self._phase_of: dict[str, str] = {}
        self._lock = threading.Lock()
        for phase in NodePhase:
            self.phases.labels(str(phase)).set(0)

    @contextmanager
    def reconcile(self, operation: str, kind: str = "WindowsNode") -> Iterator[dict[str, str]]:
        """Time one pass; the caller sets `outcome["outcome"]` (default failed, if it raises; NOOP: not
        counted)."""
        outcome = {"outcome": "failed"}
        started = time.monotonic()
        try:
            yield outcome
        finally:
            # A pass that found nothing to do (an upgrade check with no upgrade due) is not one.
            if outcome["outcome"] != NOOP:
                self.reconcile_duration.labels(kind, operation, outcome["outcome"]).observe(
                    time.monotonic() - started
                )
                self.reconciles.labels(kind, operation, outcome["outcome"]).inc()

    def winrm_operation(self, action: str, seconds: float, error: BaseException | None = None) -> None:
        """One host action finished (error None) or failed."""
        self.winrm_duration.labels(action, "success" if error is None else "error").observe(seconds)
        if error is not None:
            self.winrm_errors.labels(action, error_class(error)).inc()

    def upgrade_started(self, uid: str | None = None) -> None:
        """An upgrade began. With the WindowsNode's `uid`, a resumed upgrade (operator restart) counts
        once; without it, every call counts."""
        if uid is not None:
            self.upgrade_in_flight(uid, True)
            return
        with self._lock:
            self._anonymous_upgrades += 1
            self._set_in_flight()

    def upgrade_finished(self, outcome: str, uid: str | None = None) -> None:
        """An upgrade ended with `outcome` (one of UPGRADE_OUTCOMES); pass the `uid` given to
        upgrade_started, if any."""
        if outcome not in UPGRADE_OUTCOMES:
            raise ValueError(f"upgrade outcome {outcome!r} is not one of {', '.join(UPGRADE_OUTCOMES)}")
        with self._lock:
            if uid is not None and uid in self._in_flight:
                self._in_flight.discard(uid)
            elif self._anonymous_upgrades:
                self._anonymous_upgrades -= 1
            self._set_in_flight()
        self.upgrades.labels(outcome).inc()

    def _set_in_flight(self) -> None:
        self.upgrades_in_flight.set(len(self._in_flight) + self._anonymous_upgrades)

    def set_leader(self, leading: bool) -> None:
        if leading:
            self.leader_transitions.inc()
        self.leader.set(1 if leading else 0)

    def measure(self, host: HostRunner) -> MeasuredHost:
        """`host` with every action timed and its failures counted."""
        return MeasuredHost(host, self)

    def set_phase(self, uid: str, phase: str | None) -> None:
        with self._lock:
            self._phase_of.pop(uid, None)
            if phase is not None:
                self._phase_of[uid] = phase
            counts: dict[str, int] = {str(p): 0 for p in NodePhase}
            for value in self._phase_of.values():
                counts[value] = counts.get(value, 0) + 1
            for name, count in counts.items():
                self.phases.labels(name).set(count)

    def upgrade_in_flight(self, uid: str, in_flight: bool) -> None:
        with self._lock:
            if in_flight:
                self._in_flight.add(uid)
            else:
                self._in_flight.discard(uid)
            self._set_in_flight()

    def host_error(self, reason: str) -> None:
        self.host_errors.labels(reason).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)


class HostRunner(Protocol):
    """One Windows host as the lifecycle sees it (winnode.lifecycle.context.HostApi)."""

    async def run(self, params: Any) -> Any: ...


class MeasuredHost:
    """A host whose actions are timed (winnode_winrm_operation_duration_seconds) and whose failures are
    counted by class (winnode_winrm_operation_errors_total)."""

    def __init__(self, inner: HostRunner, metrics: OperatorMetrics) -> None:
        self.inner = inner
        self.metrics = metrics

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)

    async def run(self, params: Any) -> Any:
        action = str(getattr(params, "action", type(params).__name__))
        started = time.monotonic()
        try:
            result = await self.inner.run(params)
        except Exception as exc:
            self.metrics.winrm_operation(action, time.monotonic() - started, exc)
            raise
        self.metrics.winrm_operation(action, time.monotonic() - started)
        return result


def sample_names(registry: CollectorRegistry) -> frozenset[str]:
    """Every series name `registry` exposes (with _total, _bucket, _sum, _count, _created suffixes)."""
    names: set[str] = set()
    for family in registry.collect():
        names.add(family.name)
        names.update(sample.name for sample in family.samples)
        if family.type == "counter":
            names.add(family.name + "_total")
        if family.type == "histogram":
            names.update(family.name + suffix for suffix in ("_bucket", "_sum", "_count"))
    return frozenset(names)
