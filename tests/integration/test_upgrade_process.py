"""`winnode run` as a real process, SIGKILLed in the middle of an upgrade step; a new process converges
without ever breaching the budget (maxUnavailable 1 over two nodes upgraded together)."""

from __future__ import annotations

import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes
import pytest

from winnode.lifecycle import kubelet_config as kc
from winnode.settings import Settings
from winnode.testing.cluster import ControlPlane, free_ports
from winnode.testing.demo import World
from winnode.testing.emulator import EmulatedHost, HostSpec
from winnode.testing.processes import start_winnode_run, stop_process
from winnode.testing.upgrades import (
    UnavailableWatcher,
    installed_binary,
    set_version,
    slot_holders,
    upgraded,
    versions,
)

NAMESPACE = "wn-upgrade-proc"
TIMEOUT = 180.0
NAMES = ("uk-0", "uk-1")


@pytest.fixture(scope="module")
def world(control_plane: ControlPlane) -> Iterator[World]:
    settings = Settings(metrics_port=0, namespace=NAMESPACE)
    with World(control_plane, settings=settings, namespace=NAMESPACE, run_operator=False) as w:
        w.apply(w.network(name="upgrade-proc", clusterCIDR="10.248.0.0/16"))
        assert w.artifacts is not None
        w.artifacts.publish_release(versions(w)[0])
        yield w


@pytest.fixture(scope="module")
def hosts(world: World, tmp_path_factory: pytest.TempPathFactory) -> dict[str, EmulatedHost]:
    out = {name: world.add_host(HostSpec.server2022(hostname=name)) for name in NAMES}
    log = tmp_path_factory.mktemp("operator") / "operator.log"
    proc = start_operator(world, log)
    try:
        world.apply(
            *(
                world.windows_node(h, n, network="upgrade-proc", kubernetesVersion=versions(world)[0],
                                   labels={"test": "upgrade-kill"})
                for n, h in out.items()
            )
        )  # fmt: skip
        for name in NAMES:
            world.wait_phase(name, "Ready", TIMEOUT)
    finally:
        stop_process(proc, signal.SIGTERM)
    return out


def observed(world: World, name: str) -> bool:
    obj = world.must_get("windowsnode", name)
    return bool((obj.get("status") or {}).get("observedGeneration") == obj["metadata"]["generation"])


def start_operator(world: World, log: Path) -> subprocess.Popen[bytes]:
    (port,) = free_ports(1)
    env = {"WINNODE_DRIFT_INTERVAL_S": "2", "WINNODE_NAMESPACE": NAMESPACE, "WINNODE_MAX_UNAVAILABLE": "1"}
    return start_winnode_run(world.cp.kubeconfig, log, metrics_port=port, env=env)


def kill_at_step(
    world: World, proc: subprocess.Popen[bytes], step: str, stop_event: threading.Event
) -> dict[str, Any]:
    """Watch the WindowsNodes and SIGKILL `proc` the moment one shows upgrade step `step`; what was seen."""
    api = kubernetes.client.CustomObjectsApi(world.cp.api_client())
    seen: dict[str, Any] = {"killed_at": None, "steps": []}
    watch = kubernetes.watch.Watch()  # type: ignore[no-untyped-call]
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline and not stop_event.is_set():
        for event in watch.stream(  # type: ignore[no-untyped-call]
            api.list_cluster_custom_object, "winnode.io", "v1alpha1", "windowsnodes", timeout_seconds=5
        ):
            obj = event["object"]
            if obj["metadata"]["name"] not in NAMES:
                continue
            current = ((obj.get("status") or {}).get("upgrade") or {}).get("step")
            seen["steps"].append((obj["metadata"]["name"], current))
            if current == step:
                proc.send_signal(signal.SIGKILL)
                seen["killed_at"] = (obj["metadata"]["name"], current)
                return seen
            if stop_event.is_set():
                break
    return seen


# Steps a kill lands in quickly enough for the default run; the rest are in the slow sweep.
FAST_STEPS = ("Swapping",)
ALL_STEPS = ("Staging", "Cordoning", "Draining", "Swapping", "Starting", "Verifying", "Uncordoning")


@pytest.mark.parametrize(
    "step", [s if s in FAST_STEPS else pytest.param(s, marks=pytest.mark.slow) for s in ALL_STEPS]
)
def test_sigkill_at_upgrade_step_converges_within_budget(
    world: World, hosts: dict[str, EmulatedHost], step: str, tmp_path: Path
) -> None:
    old, new = versions(world)
    start = installed_binary(hosts[NAMES[0]], kc.KUBELET_EXE)
    target = new if start == old else old
    log = tmp_path / "operator.log"
    for host in hosts.values():
        host.faults.latency_s = 0.2  # each WinRM round trip is slow enough to kill in the middle
    with UnavailableWatcher(world.cp, "upgrade-kill") as watcher:
        first = start_operator(world, log)
        give_up = threading.Event()
        seen: dict[str, Any] = {}
        killer = threading.Thread(target=lambda: seen.update(kill_at_step(world, first, step, give_up)))
        try:
            killer.start()
            for name in NAMES:
                set_version(world, name, target)
            killer.join(TIMEOUT)
        finally:
            give_up.set()
            first.kill()
            first.wait(30)
        assert seen.get("killed_at"), f"never saw step {step}: {seen.get('steps')}"
        for host in hosts.values():
            host.faults.latency_s = 0.0
        second = start_operator(world, log)
        try:
            for name in NAMES:
                world.wait_for(f"{name} on {target}", lambda n=name: upgraded(world, n, target), TIMEOUT)  # type: ignore[misc]
                # The configure pass after the upgrade applies the rest of the spec and marks it observed;
                # stopping only after it keeps SIGTERM clear of handlers still in flight.
                world.wait_for(f"{name} observed", lambda n=name: observed(world, n), TIMEOUT)  # type: ignore[misc]
        finally:
            code = stop_process(second, signal.SIGTERM)
    assert code == 0, log.read_text()[-3000:]
    assert watcher.most <= 1, f"budget breached after a kill at {seen['killed_at']}: {watcher.unavailable}"
    for name, host in hosts.items():
        assert installed_binary(host, kc.KUBELET_EXE) == target, name
        assert installed_binary(host, kc.KUBE_PROXY_EXE) == target, name
    assert slot_holders(world, NAMESPACE) == []
