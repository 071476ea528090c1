"""A Node leaving Ready wakes its drift check at once, with the periodic check an hour away.

Real apiserver and kcm (which marks the Node NotReady when its kubelet stops), emulated host and
kubelet, the operator in-process with drift_interval_s=3600: only the Node event can explain a repair
within the test's bound."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from winnode import timeouts
from winnode.settings import Settings
from winnode.testing.cluster import ControlPlane
from winnode.testing.demo import World
from winnode.testing.emulator import HostSpec

TIMEOUT = 120.0


@pytest.fixture(scope="module")
def world(control_plane: ControlPlane) -> Iterator[World]:
    settings = Settings(metrics_port=0, drift_interval_s=3600.0)
    with World(control_plane, settings=settings, namespace="wn-drift-events") as w:
        w.apply(w.network(name="events", clusterCIDR="10.246.0.0/16"))
        yield w


def test_a_node_leaving_ready_is_checked_and_repaired_at_once(world: World) -> None:
    host = world.add_host(HostSpec.server2022(hostname="d-event"))
    world.apply(world.windows_node(host, "d-event", network="events"))
    world.wait_phase("d-event", "Ready", TIMEOUT)
    # Past the daemon's first check after start (DRIFT_INITIAL_DELAY plus jitter): from here on only
    # an event can start one before an hour has passed.
    time.sleep(timeouts.DRIFT_INITIAL_DELAY * (1 + timeouts.DRIFT_JITTER) + 1)
    assert world.emulator is not None
    stopped_at = time.monotonic()
    world.emulator.run(host.model.stop_service("kubelet"))

    def repaired() -> list[dict[str, Any]] | None:
        events = world.events("d-event", "DriftRepaired")
        return events if any("started service kubelet" in e["message"] for e in events) else None

    world.wait_for("DriftRepaired after the Node left Ready", repaired, TIMEOUT)
    took = time.monotonic() - stopped_at
    assert took < 3600 / 10, f"repaired {took:.0f}s after the kubelet stopped"
    world.wait_phase("d-event", "Ready", TIMEOUT)
