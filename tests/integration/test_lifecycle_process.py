"""`winnode run` as a real process: SIGKILL in the middle of configuring, a new process finishes the
job; /metrics answers; SIGTERM stops it cleanly."""

from __future__ import annotations

import signal
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from winnode.settings import Settings
from winnode.testing.cluster import ControlPlane, free_ports
from winnode.testing.demo import World
from winnode.testing.emulator import HostSpec
from winnode.testing.processes import start_winnode_run, stop_process

TIMEOUT = 120.0


@pytest.fixture(scope="module")
def world(control_plane: ControlPlane) -> Iterator[World]:
    with World(
        control_plane, settings=Settings(metrics_port=0), namespace="wn-process", run_operator=False
    ) as w:
        w.apply(w.network(name="process", clusterCIDR="10.246.0.0/16"))
        yield w


def start_operator(world: World, port: int, log: Path) -> subprocess.Popen[bytes]:
    return start_winnode_run(
        world.cp.kubeconfig,
        log,
        metrics_port=port,
        env={"WINNODE_DRIFT_INTERVAL_S": "2", "WINNODE_CREDENTIALS_NAMESPACES": world.namespace},
    )


def test_sigkill_mid_configure_then_resume(world: World, tmp_path: Path) -> None:
    log = tmp_path / "operator.log"
    (port,) = free_ports(1)
    host = world.add_host(HostSpec.server2022(hostname="p-kill"))
    host.faults.latency_s = 0.3
    first = start_operator(world, port, log)
    try:
        world.apply(world.windows_node(host, "p-kill", network="process"))
        world.wait_for(
            "configure under way", lambda: world.phase("p-kill") in ("Installing", "Joining"), TIMEOUT
        )
    finally:
        assert stop_process(first, signal.SIGKILL) == -signal.SIGKILL
    host.faults.latency_s = 0.0
    second = start_operator(world, port, log)
    try:
        world.wait_phase("p-kill", "Ready", TIMEOUT)
        body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
        assert 'winnode_reconcile_total{kind="WindowsNode",operation="configure",outcome="success"}' in body
        assert 'winnode_windowsnodes{phase="Ready"} 1.0' in body
        world.cp.kubectl("delete", "windowsnode", "p-kill", "--wait=false")
        world.wait_for("p-kill gone", lambda: world.get("windowsnode", "p-kill") is None, TIMEOUT)
    finally:
        started = time.monotonic()
        code = stop_process(second, signal.SIGTERM)
    assert code == 0, log.read_text()[-3000:]
    assert time.monotonic() - started < 30
    assert world.get("node", "p-kill") is None
