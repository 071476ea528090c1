"""Prometheus metrics of the reconciler (`winnode run`), served on settings.metrics_port.

- winnode_reconcile_duration_seconds{operation, outcome}: configure, deconfigure and drift passes
- winnode_reconcile_total{operation, outcome}
- winnode_windowsnodes{phase}: WindowsNodes per phase, as this operator last saw them
- winnode_host_errors_total{reason}: failures talking to hosts, by class (AuthenticationFailed,
  HostUnreachable, HostTimeout, ScriptFailed, ...)
- winnode_drift_repairs_total: things put back on hosts by the drift check
- winnode_csr_approvals_total{signer_kind}: kubelet CSRs approved
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest, start_http_server

from winnode.api import NodePhase

OUTCOMES = ("success", "retry", "failed")


class OperatorMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.reconcile_duration = Histogram(
            "winnode_reconcile_duration_seconds",
            "Duration of one reconcile pass of a WindowsNode.",
            ("operation", "outcome"),
            buckets=(0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600),
            registry=self.registry,
        )
        self.reconciles = Counter(
            "winnode_reconcile",
            "Reconcile passes of WindowsNodes.",
            ("operation", "outcome"),
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
        self._phase_of: dict[str, str] = {}
        self._lock = threading.Lock()
        for phase in NodePhase:
            self.phases.labels(str(phase)).set(0)

    @contextmanager
    def reconcile(self, operation: str) -> Iterator[dict[str, str]]:
        """Time one pass; the caller sets `outcome["outcome"]` (default failed, if it raises)."""
        outcome = {"outcome": "failed"}
        started = time.monotonic()
        try:
            yield outcome
        finally:
            self.reconcile_duration.labels(operation, outcome["outcome"]).observe(time.monotonic() - started)
            self.reconciles.labels(operation, outcome["outcome"]).inc()

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

    def host_error(self, reason: str) -> None:
        self.host_errors.labels(reason).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)

    def serve(self, port: int, address: str = "0.0.0.0") -> None:
        start_http_server(port, addr=address, registry=self.registry)
