"""Rolling upgrade benchmark: `python -m tests.bench upgrade`.

N WindowsNodes (default 20; WINNODE_BENCH_NODES=200 for the full run) on the release one minor
behind the apiserver are upgraded to the apiserver's release at once, under maxUnavailable M
(WINNODE_BENCH_MAX_UNAVAILABLE, default N // 10, at least 1: 2 for 20 nodes, 20 for 200).

One extra node is upgraded alone first: its time is "one node's upgrade" T1 (stage, slot, cordon,
drain, swap, restart, Ready, uncordon). With M nodes at a time the fleet cannot beat
ceil(N / M) x T1 by much; the table compares the fleet's total with that bound (ratio > 1 is time
lost to queueing for slots, to the apiserver and to this machine's cores, which run control plane,
operator, emulator and every emulated kubelet). A watcher on Nodes reports the most unschedulable or
NotReady at once, which must not exceed M. Hosts answer each request after LATENCY_S.

`winnode run` runs as its own process, as deployed, with the Settings below passed through its
environment; this process is the world around it (artifact mirror, emulated hosts and kubelets) and
the control plane has processes of its own. Over the fleet's upgrade each one's CPU seconds are
reported apart (the operator's also per upgraded node), with the operator's peak RSS.
WINNODE_BENCH_LOG_DIR keeps the operator's log (operator-upgrade.log).
Prints a table and writes bench-results/upgrade.json. Never part of the test suite.
"""

from __future__ import annotations

import json
import logging
import math
import os
import statistics
import time
from pathlib import Path
from typing import Any

from tests.bench.measure import OperatorProcess, log_dir

from winnode.settings import Settings
from winnode.testing.cluster import start_control_plane
from winnode.testing.demo import World
from winnode.testing.upgrades import UnavailableWatcher, fleet, set_version, upgraded, versions

DEFAULT_NODES = 20
LATENCY_S = 0.02
DEADLINE_S = 1800.0
POLL_S = 0.2
NAMESPACE = "wn-upgrade-bench"
NETWORK = "bench"
OUT = Path("bench-results") / "upgrade.json"


def sizes() -> tuple[int, int]:
    nodes = int(os.environ.get("WINNODE_BENCH_NODES", "").strip() or DEFAULT_NODES)
    budget = os.environ.get("WINNODE_BENCH_MAX_UNAVAILABLE", "").strip()
    return nodes, int(budget) if budget else max(1, nodes // 10)


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return 0.0
    return ordered[min(len(ordered) - 1, max(0, round(p / 100 * (len(ordered) - 1))))]


def wait_all(world: World, names: list[str], version: str, started: float) -> dict[str, float]:
    """Seconds from `started` until each node is upgraded, sampled every POLL_S."""
    done: dict[str, float] = {}
    deadline = time.monotonic() + DEADLINE_S
    while len(done) < len(names):
        listing = json.loads(world.cp.kubectl("get", "windowsnodes", "-o", "json").stdout)["items"]
        nodes = {
            n["metadata"]["name"]: n
            for n in json.loads(world.cp.kubectl("get", "nodes", "-o", "json").stdout)["items"]
        }
        for obj in listing:
            name = obj["metadata"]["name"]
            if name not in names or name in done:
                continue
            status = obj.get("status") or {}
            node = nodes.get(name) or {}
            if (
                status.get("phase") == "Ready"
                and (status.get("installed") or {}).get("kubelet") == version
                and not (status.get("upgrade") or {}).get("step")
                and node.get("status", {}).get("nodeInfo", {}).get("kubeletVersion") == version
                and not node.get("spec", {}).get("unschedulable")
            ):
                done[name] = time.monotonic() - started
        if time.monotonic() > deadline:
            raise TimeoutError(f"{len(names) - len(done)} nodes not upgraded within {DEADLINE_S:.0f}s")
        time.sleep(POLL_S)
    return done


def run(nodes: int, budget: int, logs: Path) -> dict[str, Any]:
    cp = start_control_plane()
    try:
        settings = Settings(
            metrics_port=0, namespace=NAMESPACE, max_unavailable=budget, drift_interval_s=600.0
        )
        with (
            World(cp, settings=settings, namespace=NAMESPACE, run_operator=False) as world,
            OperatorProcess(cp, world.settings, logs / "operator-upgrade.log") as operator,
        ):
            assert world.artifacts is not None
            world.apply(world.network(name=NETWORK))
            old, new = versions(world)
            world.artifacts.publish_release(old)
            t0 = time.monotonic()
            probe = fleet(world, "probe", 1, old, network=NETWORK, timeout=DEADLINE_S)
            hosts = fleet(world, "fleet", nodes, old, network=NETWORK, timeout=DEADLINE_S)
            for _, host in [*probe, *hosts]:
                host.faults.latency_s = LATENCY_S
            setup_s = time.monotonic() - t0

            probe_name = probe[0][0]
            cpu0 = operator.cpu()
            started = time.monotonic()
            set_version(world, probe_name, new)
            world.wait_for("probe upgraded", lambda: upgraded(world, probe_name, new), DEADLINE_S, POLL_S)
            one_s = time.monotonic() - started
            one_cpu = operator.cpu() - cpu0

            names = [n for n, _ in hosts]
            with UnavailableWatcher(cp, "fleet") as watcher:
                cpu0 = operator.cpu()
                started = time.monotonic()
                for name in names:
                    set_version(world, name, new)
                done = wait_all(world, names, new, started)
                total_s = time.monotonic() - started
                cpu = operator.cpu() - cpu0
            _, peak_rss = operator.rss_mib()
            bound_s = math.ceil(nodes / budget) * one_s
            per_node = list(done.values())
            return {
                "nodes": nodes,
                "max_unavailable": budget,
                "from": old,
                "to": new,
                "latency_s": LATENCY_S,
                "setup_s": round(setup_s, 2),
                "one_node_s": round(one_s, 2),
                "one_node_operator_cpu_s": round(one_cpu.operator_s, 2),
                "total_s": round(total_s, 2),
                "bound_s": round(bound_s, 2),
                "ratio": round(total_s / bound_s, 2) if bound_s else None,
                "done_p50_s": round(statistics.median(per_node), 2),
                "done_p95_s": round(percentile(per_node, 95), 2),
                "most_unavailable_seen": watcher.most,
                "budget_kept": watcher.most <= budget,
                "watch_events": watcher.events,
                # The fleet's upgrade phase: from the first version change to the last node upgraded.
                "upgrade_cpu": {
                    **cpu.as_dict(),
                    "operator_cpu_s_per_node": round(cpu.operator_s / nodes, 3),
                },
                # VmHWM: the whole run's peak, set-up included.
                "operator_peak_rss_mib": peak_rss,
            }
    finally:
        cp.stop()


def main() -> None:
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("kopf").setLevel(logging.ERROR)
    nodes, budget = sizes()
    with log_dir("winnode-upgrade-") as logs:
        result = run(nodes, budget, logs)
    cpu = result["upgrade_cpu"]
    header = (
        f"{'nodes':>5} {'maxUnav':>7} {'1 node s':>8} {'total s':>8} {'bound s':>8} {'ratio':>6} "
        f"{'p50 done':>8} {'p95 done':>8} {'most unav':>9} {'op cpu s':>8} {'op s/node':>9} "
        f"{'peak MiB':>8} {'world s':>7} {'cp s':>6}"
    )
    print(header)
    print(
        f"{result['nodes']:>5} {result['max_unavailable']:>7} {result['one_node_s']:>8.1f} "
        f"{result['total_s']:>8.1f} {result['bound_s']:>8.1f} {result['ratio']:>6} "
        f"{result['done_p50_s']:>8.1f} {result['done_p95_s']:>8.1f} {result['most_unavailable_seen']:>9} "
        f"{cpu['operator_cpu_s']:>8.1f} {cpu['operator_cpu_s_per_node']:>9.3f} "
        f"{result['operator_peak_rss_mib']:>8.1f} {cpu['world_cpu_s']:>7.1f} {cpu['control_plane_cpu_s']:>6.1f}"
    )
    print(
        f"({result['from']} -> {result['to']}; setup of {nodes + 1} Ready nodes took {result['setup_s']:.0f}s; "
        f"bound = ceil(nodes / maxUnavailable) x one node; host latency {LATENCY_S * 1000:.0f} ms; "
        "CPU over the fleet's upgrade: op = winnode run's process, world = this one, cp = control plane)"
    )
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {OUT}")
    if not result["budget_kept"]:
        # Written and printed first: the figures show by how much.
        raise RuntimeError(
            f"{result['most_unavailable_seen']} nodes unavailable at once, over maxUnavailable {budget}"
        )
