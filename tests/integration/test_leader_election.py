"""`winnode run --leader-elect` processes against the local control plane: one reconciles, the other
waits; SIGKILL of the leader mid-configure hands over within the lease duration, SIGTERM hands over at
once; a leader whose Lease is taken exits 1; no host work is done twice.

The processes run with shortened durations (lease 6 s, renew deadline 4 s, retry 1 s) so the suite
stays fast; the production values are client-go's (15/10/2 s, winnode.timeouts).
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from winnode.host.actions import ACTIONS
from winnode.settings import Settings
from winnode.testing.cluster import ControlPlane, free_ports
from winnode.testing.demo import World
from winnode.testing.emulator import EmulatedHost, ExecutedAction, HostSpec
from winnode.testing.processes import start_winnode_run, stop_process

NAMESPACE = "wn-leader"
LEASE = "winnode-operator"
LEASE_DURATION = 6.0
RENEW_DEADLINE = 4.0
RETRY = 1.0
TIMEOUT = 120.0
MUTATING = {name for name, (params, _) in ACTIONS.items() if params.mutating}


@dataclass
class Replica:
    identity: str
    port: int
    proc: subprocess.Popen[bytes]
    log: Path

    def get(self, route: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{route}", timeout=5) as resp:
                return int(resp.status), resp.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()
        except OSError:
            return 0, ""

    def samples(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        status, body = self.get("/metrics")
        assert status == 200, f"{self.identity}: /metrics answered {status}"
        return {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(body)
            for s in family.samples
        }

    def total(self, name: str) -> float:
        return sum(v for (n, _), v in self.samples().items() if n == name)

    def stop(self, sig: signal.Signals, timeout: float = 30.0) -> int:
        return stop_process(self.proc, sig, timeout)

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]


@pytest.fixture(scope="module")
def world(control_plane: ControlPlane) -> Iterator[World]:
    with World(
        control_plane, settings=Settings(metrics_port=0), namespace=NAMESPACE, run_operator=False
    ) as w:
        w.apply(w.network(name="leader", clusterCIDR="10.237.0.0/16"))
        yield w


def start(world: World, identity: str, port: int, tmp_path: Path, *, short: bool = True) -> Replica:
    """A `winnode run --leader-elect` process; `short`: the shortened durations, else the defaults."""
    env = {"WINNODE_NAMESPACE": NAMESPACE, "WINNODE_DRIFT_INTERVAL_S": "3"}
    if short:
        env["WINNODE_LEADER_LEASE_DURATION_S"] = str(LEASE_DURATION)
        env["WINNODE_LEADER_RENEW_DEADLINE_S"] = str(RENEW_DEADLINE)
        env["WINNODE_LEADER_RETRY_PERIOD_S"] = str(RETRY)
    log = tmp_path / f"{identity}.log"
    args = ("--leader-elect", f"--identity={identity}")
    proc = start_winnode_run(world.cp.kubeconfig, log, metrics_port=port, args=args, env=env)
    return Replica(identity, port, proc, log)


def lease_spec(world: World) -> dict[str, Any]:
    lease = world.get("lease", LEASE, NAMESPACE)
    return dict((lease or {}).get("spec") or {})


def holder(world: World) -> str:
    return str(lease_spec(world).get("holderIdentity") or "")


def changed_something(action: ExecutedAction) -> bool:
    """The host action's result says it changed the host (the results of winnode.host.actions)."""
    result = action.result
    return action.action == "reboot" or bool(
        result.get("changed") or result.get("created") or result.get("removed")
    )


def effective_actions(host: EmulatedHost) -> Counter[str]:
    """Host actions that changed something, by action and parameters."""
    return Counter(
        json.dumps([a.action, a.params], sort_keys=True)
        for a in list(host.actions)
        if a.ok and a.action in MUTATING and changed_something(a)
    )


def test_one_leader_takeover_on_kill_and_release_on_term(world: World, tmp_path: Path) -> None:
    world.cp.kubectl("delete", "lease", LEASE, "-n", NAMESPACE, "--ignore-not-found")
    port_a, port_b, port_c = free_ports(3)
    a = start(world, "replica-a", port_a, tmp_path)
    replicas = [a]
    try:
        world.wait_for("replica-a to lead", lambda: holder(world) == "replica-a", TIMEOUT)
        b = start(world, "replica-b", port_b, tmp_path)
        replicas.append(b)
        world.wait_for(
            "both replicas to answer", lambda: a.get("/healthz")[0] == b.get("/healthz")[0] == 200, 60
        )
        world.wait_for("the leader to be ready", lambda: a.get("/readyz")[0] == 200, 60)

        # One leader: ready; one standby: alive but not ready, and it never reconciles.
        status, why = b.get("/readyz")
        assert status == 503
        assert "standby" in why
        assert a.samples()[("winnode_leader", ())] == 1
        assert b.samples()[("winnode_leader", ())] == 0
        spec = lease_spec(world)
        assert spec["leaseDurationSeconds"] == int(LEASE_DURATION)
        assert spec["acquireTime"]
        assert spec["renewTime"]
        first_transitions = int(spec.get("leaseTransitions") or 0)

        # Configure a node slowly, and kill the leader in the middle of it.
        host = world.add_host(HostSpec.server2022(hostname="le-kill"))
        host.faults.latency_s = 0.3
        world.apply(world.windows_node(host, "le-kill", network="leader"))
        world.wait_for(
            "configure under way", lambda: world.phase("le-kill") in ("Installing", "Joining"), TIMEOUT
        )
        assert b.total("winnode_reconcile_total") == 0
        assert b.total("winnode_winrm_operation_duration_seconds_count") == 0
        assert a.total("winnode_winrm_operation_duration_seconds_count") > 0

        killed_at = time.monotonic()
        assert a.stop(signal.SIGKILL) == -signal.SIGKILL
        world.wait_for(
            "replica-b to take over", lambda: holder(world) == "replica-b", 3 * LEASE_DURATION, 0.1
        )
        takeover = time.monotonic() - killed_at
        host.faults.latency_s = 0.0
        world.wait_for("replica-b to be ready", lambda: b.get("/readyz")[0] == 200, 60)
        world.wait_phase("le-kill", "Ready", TIMEOUT)
        print(f"\nSIGKILL takeover: {takeover:.2f}s (lease {LEASE_DURATION:.0f}s, retry {RETRY:.0f}s)")
        # The standby judged expiry from when it last saw a renewal: at most one lease duration plus a
        # retry period (and the polling of this test) after the kill.
        assert takeover < LEASE_DURATION + 2 * RETRY + 1.0, takeover
        assert int(lease_spec(world).get("leaseTransitions") or 0) == first_transitions + 1
        assert b.samples()[("winnode_leader", ())] == 1
        assert b.total("winnode_reconcile_total") > 0

        # Nothing changed on the host twice: the new leader re-read the host and found the work done;
        # the steps it repeated were no-ops.
        twice = {key: n for key, n in effective_actions(host).items() if n > 1}
        assert not twice, twice
        mutating = [a for a in list(host.actions) if a.action in MUTATING]
        print(
            f"host actions: {len(mutating)} mutating executed, {sum(effective_actions(host).values())} changed "
            f"the host, none twice"
        )

        # A new standby, then SIGTERM of the leader: the Lease is released, the standby takes it at once.
        c = start(world, "replica-c", port_c, tmp_path)
        replicas.append(c)
        world.wait_for("replica-c to answer", lambda: c.get("/healthz")[0] == 200, 60)
        assert c.get("/readyz")[0] == 503
        termed_at = time.monotonic()
        code = b.stop(signal.SIGTERM)
        exited = time.monotonic() - termed_at
        assert code == 0, b.tail()
        world.wait_for("replica-c to take over", lambda: holder(world) == "replica-c", LEASE_DURATION, 0.1)
        handover = time.monotonic() - termed_at
        print(f"SIGTERM: leader exited in {exited:.2f}s, standby leading {handover:.2f}s after the signal")
        assert handover < LEASE_DURATION, "the Lease was not released: the standby waited it out"
        world.wait_for("replica-c to be ready", lambda: c.get("/readyz")[0] == 200, 60)
        assert world.phase("le-kill") == "Ready"

        world.cp.kubectl("delete", "windowsnode", "le-kill", "--wait=false")
        world.wait_for("le-kill gone", lambda: world.get("windowsnode", "le-kill") is None, TIMEOUT)
        assert world.get("node", "le-kill") is None

        # Someone else writes the Lease: the leader steps down and exits 1 for a clean restart.
        stolen_at = time.monotonic()
        world.cp.kubectl(
            "patch", "lease", LEASE, "-n", NAMESPACE, "--type=merge",
            "-p", '{"spec": {"holderIdentity": "intruder"}}',
        )  # fmt: skip
        assert c.proc.wait(30) == 1, c.tail()
        print(f"lease taken by another holder: leader exited 1 after {time.monotonic() - stolen_at:.2f}s")
        assert holder(world) == "intruder"  # stepping down never writes over the new holder
    finally:
        for r in replicas:
            r.stop(signal.SIGTERM)


@pytest.mark.slow
def test_sigkill_takeover_with_default_durations(world: World, tmp_path: Path) -> None:
    """client-go's durations (lease 15 s, retry 2 s): the standby leads within a lease duration and a
    retry period of the kill."""
    from winnode import timeouts

    world.cp.kubectl("delete", "lease", LEASE, "-n", NAMESPACE, "--ignore-not-found")
    port_a, port_b = free_ports(2)
    a = start(world, "default-a", port_a, tmp_path, short=False)
    replicas = [a]
    try:
        world.wait_for("default-a to lead", lambda: holder(world) == "default-a", TIMEOUT)
        b = start(world, "default-b", port_b, tmp_path, short=False)
        replicas.append(b)
        world.wait_for("default-b to answer", lambda: b.get("/healthz")[0] == 200, 60)
        assert lease_spec(world)["leaseDurationSeconds"] == int(timeouts.LEADER_LEASE_DURATION)
        killed_at = time.monotonic()
        assert a.stop(signal.SIGKILL) == -signal.SIGKILL
        world.wait_for("default-b to take over", lambda: holder(world) == "default-b", 60, 0.1)
        takeover = time.monotonic() - killed_at
        print(f"\nSIGKILL takeover with default durations: {takeover:.2f}s")
        assert takeover < timeouts.LEADER_LEASE_DURATION + 2 * timeouts.LEADER_RETRY_PERIOD + 1.0
        world.wait_for("default-b to be ready", lambda: b.get("/readyz")[0] == 200, 60)
    finally:
        for r in replicas:
            r.stop(signal.SIGTERM)
    assert holder(world) == ""
