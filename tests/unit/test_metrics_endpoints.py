"""Both processes' HTTP endpoints serve every series with sane values, and the probes answer as documented.

`winnode run`: process/health.HealthServer on a real socket (/metrics, /healthz, /readyz).
`winnode webhook`: the aiohttp application on a real server (its /metrics, /healthz driven by the node
watch's staleness).
"""

from __future__ import annotations

import asyncio
import math
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from winnode import timeouts
from winnode.admission.app import Webhook
from winnode.admission.metrics import WebhookMetrics
from winnode.admission.nodes import WindowsNodes
from winnode.host.errors import HostAuthenticationError, HostTimeoutError, HostTLSError, ScriptFailedError
from winnode.metrics import UPGRADE_OUTCOMES, OperatorMetrics, error_class
from winnode.process.health import HealthServer, OperatorHealth

Samples = dict[str, list[tuple[dict[str, str], float]]]


def families(text: str) -> dict[str, Any]:
    return {f.name: f for f in text_string_to_metric_families(text)}


def registered(registry: CollectorRegistry) -> set[str]:
    return {f.name for f in registry.collect()}


def check_sane(text: str, registry: CollectorRegistry) -> None:
    """Every registered family is served; values are finite and non-negative (timestamps aside);
    histogram buckets are cumulative and end in +Inf == _count."""
    served = families(text)
    missing = registered(registry) - set(served)
    assert not missing, f"not served: {sorted(missing)}"
    for family in served.values():
        for s in family.samples:
            assert math.isfinite(s.value) or s.labels.get("le") == "+Inf", s
            assert s.value >= 0, s
        if family.type == "histogram":
            series: dict[tuple[tuple[str, str], ...], list[tuple[float, float]]] = {}
            counts: dict[tuple[tuple[str, str], ...], float] = {}
            for s in family.samples:
                key = tuple(sorted((k, v) for k, v in s.labels.items() if k != "le"))
                if s.name.endswith("_bucket"):
                    series.setdefault(key, []).append((float(s.labels["le"]), s.value))
                elif s.name.endswith("_count"):
                    counts[key] = s.value
            for key, buckets in series.items():
                values = [v for _, v in sorted(buckets)]
                assert values == sorted(values), (family.name, key)
                assert values[-1] == counts[key], (family.name, key)


def exercised_operator_metrics() -> OperatorMetrics:
    m = OperatorMetrics()
    with m.reconcile("configure") as outcome:
        outcome["outcome"] = "success"
    with m.reconcile("apply", kind="WindowsNetwork") as outcome:
        outcome["outcome"] = "retry"
    m.set_phase("uid-1", "Ready")
    m.host_error("AuthenticationFailed")
    m.winrm_operation("facts", 0.2)
    m.winrm_operation("fetch_file", 3.0, HostTimeoutError("h", "slow", timeout_s=1))
    m.upgrade_started("uid-1")
    m.upgrade_finished("succeeded", "uid-1")
    m.drift_repairs.inc()
    m.csr_approvals.labels("client").inc()
    m.set_leader(True)
    return m


@pytest.fixture
def operator_server() -> Iterator[tuple[HealthServer, OperatorHealth, OperatorMetrics]]:
    metrics = exercised_operator_metrics()
    health = OperatorHealth(leader_election=True)
    server = HealthServer(metrics.registry, health, 0, "127.0.0.1").start()
    try:
        yield server, health, metrics
    finally:
        server.stop()


def get(server: HealthServer, route: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{server.port}{route}", timeout=5) as resp:
            return int(resp.status), resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def test_operator_metrics_endpoint_serves_every_series(
    operator_server: tuple[HealthServer, OperatorHealth, OperatorMetrics],
) -> None:
    server, _, metrics = operator_server
    status, body = get(server, "/metrics")
    assert status == 200
    check_sane(body, metrics.registry)
    got = families(body)
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value for f in got.values() for s in f.samples}
    assert samples[("winnode_leader", ())] == 1
    assert samples[("winnode_leader_transitions_total", ())] == 1
    assert (
        samples[
            (
                "winnode_reconcile_total",
                (("kind", "WindowsNetwork"), ("operation", "apply"), ("outcome", "retry")),
            )
        ]
        == 1
    )
    assert (
        samples[
            ("winnode_winrm_operation_errors_total", (("action", "fetch_file"), ("error_class", "timeout")))
        ]
        == 1
    )
    assert (
        samples[
            ("winnode_winrm_operation_duration_seconds_count", (("action", "facts"), ("outcome", "success")))
        ]
        == 1
    )
    assert samples[("winnode_upgrades_in_flight", ())] == 0
    assert samples[("winnode_upgrades_total", (("outcome", "succeeded"),))] == 1
    # Every outcome is exposed from the start, so rates and alerts see zeros rather than gaps.
    for outcome in UPGRADE_OUTCOMES:
        assert ("winnode_upgrades_total", (("outcome", outcome),)) in samples
    assert samples[("winnode_windowsnodes", (("phase", "Ready"),))] == 1
    assert get(server, "/nothing")[0] == 404


def test_operator_probes_follow_leadership_and_watches(
    operator_server: tuple[HealthServer, OperatorHealth, OperatorMetrics],
) -> None:
    server, health, _ = operator_server
    assert get(server, "/healthz")[0] == 200  # before the first tick: starting
    t0 = time.monotonic()
    health.observe(t0, set())
    status, why = get(server, "/readyz")
    assert (status, why.strip()) == (503, "standby: another replica holds the leader Lease")
    health.set_leading(True)
    assert get(server, "/readyz")[0] == 503  # kopf not started yet
    health.set_running(True)
    assert "no watch stream" in health.readyz(t0)[1]
    watches = {"watcher for windowsnodes.v1alpha1.winnode.io@None", "watcher for csr@None"}
    health.observe(t0 + 1, watches)
    assert health.readyz(t0 + 1) == (True, "ok")
    assert health.healthz(t0 + 1) == (True, "leader")
    # A watch stream whose task ended: not ready at once, not alive after the grace period.
    health.observe(t0 + 2, {"watcher for csr@None"})
    assert not health.readyz(t0 + 2)[0]
    assert health.healthz(t0 + 2)[0]
    late = t0 + 2 + timeouts.HEALTH_WATCH_GRACE + 1
    health.observe(late, {"watcher for csr@None"})
    ok, why = health.healthz(late)
    assert not ok
    assert "windowsnodes" in why
    # A stalled event loop: no tick for longer than HEALTH_LOOP_STALL.
    stalled = late + timeouts.HEALTH_LOOP_STALL + 1
    ok, why = health.healthz(stalled)
    assert not ok
    assert "stalled" in why


def test_standby_is_alive_but_not_ready() -> None:
    health = OperatorHealth(leader_election=True)
    health.observe(5.0, set())
    assert health.healthz(6.0) == (True, "standby")
    assert not health.readyz(6.0)[0]
    solo = OperatorHealth(leader_election=False)
    solo.observe(5.0, set())
    assert solo.healthz(6.0) == (True, "ok")


async def test_monitor_sees_watcher_tasks() -> None:
    health = OperatorHealth(leader_election=False)
    health.set_running(True)
    watcher = asyncio.create_task(asyncio.sleep(30), name="watcher for things.v1.example.io@None")
    monitor = asyncio.create_task(health.monitor())
    try:
        await asyncio.sleep(0.05)
        assert health.readyz() == (True, "ok")
        watcher.cancel()
        await asyncio.sleep(timeouts.HEALTH_TICK + 0.2)
        ok, why = health.readyz()
        assert not ok
        assert "things.v1.example.io" in why
    finally:
        watcher.cancel()
        monitor.cancel()
        await asyncio.gather(watcher, monitor, return_exceptions=True)


def test_error_classes() -> None:
    assert error_class(HostTLSError("h", "bad cert")) == "tls"
    assert error_class(HostAuthenticationError("h", "401")) == "auth"
    assert error_class(ScriptFailedError("h", "facts", "boom", 1)) == "script"
    assert error_class(ValueError("x")) == "other"


def test_upgrade_counting_without_and_with_uid() -> None:
    m = OperatorMetrics()
    m.upgrade_started("a")
    m.upgrade_started("a")  # resumed after a restart: still one
    m.upgrade_started()
    assert m.registry.get_sample_value("winnode_upgrades_in_flight") == 2
    m.upgrade_finished("rolled_back", "a")
    m.upgrade_finished("failed")
    m.upgrade_finished("failed")  # an unmatched end never goes below zero
    assert m.registry.get_sample_value("winnode_upgrades_in_flight") == 0
    assert m.registry.get_sample_value("winnode_upgrades_total", {"outcome": "failed"}) == 2
    with pytest.raises(ValueError, match="not one of"):
        m.upgrade_finished("exploded")


async def test_measured_host_times_actions_and_counts_errors() -> None:
    class Params:
        action = "service_start"

    class FlakyHost:
        name = "win-1"

        def __init__(self) -> None:
            self.calls = 0

        async def run(self, params: Any) -> Any:
            self.calls += 1
            if self.calls == 2:
                raise ScriptFailedError("win-1", params.action, "service would not start", 1)
            return {"ok": True}

    m = OperatorMetrics()
    host = m.measure(FlakyHost())
    assert await host.run(Params()) == {"ok": True}
    with pytest.raises(ScriptFailedError):
        await host.run(Params())
    assert host.name == "win-1"  # everything else passes through
    labels = {"action": "service_start", "outcome": "success"}
    assert m.registry.get_sample_value("winnode_winrm_operation_duration_seconds_count", labels) == 1
    errors = {"action": "service_start", "error_class": "script"}
    assert m.registry.get_sample_value("winnode_winrm_operation_errors_total", errors) == 1


async def test_webhook_endpoints_serve_every_series_and_health_follows_the_watch() -> None:
    metrics = WebhookMetrics()
    nodes = WindowsNodes.static({"win-1"})
    live = {"ok": (True, "")}
    webhook = Webhook(nodes, metrics, ready=lambda: (True, ""), live=lambda: live["ok"])
    # Label sets appear once used: make every family have a sample.
    metrics.decisions.labels("Pod", "allowed", "NotWindows").inc()
    metrics.warnings.labels("Pod").inc()
    metrics.malformed.labels("400").inc()
    metrics.requests.labels("200").inc()
    metrics.latency.observe(0.002)
    metrics.cert_not_after.set(2_000_000_000)
    metrics.cert_reloads.inc()
    metrics.cert_issued.labels("serving").inc()
    async with TestClient(TestServer(webhook.app())) as client:
        resp = await client.get("/metrics")
        assert resp.status == 200
        body = await resp.text()
        check_sane(body, metrics.registry)
        assert "winnode_webhook_windows_nodes 1.0" in body
        assert (await client.get("/healthz")).status == 200
        live["ok"] = (False, "Windows node watch stale for 700s")
        resp = await client.get("/healthz")
        assert resp.status == 503
        assert "stale" in await resp.text()


def test_node_watch_staleness_clock() -> None:
    nodes = WindowsNodes()
    assert nodes.stale_for() < 5
    later = time.monotonic() + timeouts.NODE_WATCH_STALE + 1
    assert nodes.stale_for(later) > timeouts.NODE_WATCH_STALE
