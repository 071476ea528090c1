"""Fleet benchmark: `python -m tests.bench fleet`. The operator's own cost per node, measured alone.

`winnode run` runs as its own process, as deployed; this process is the world around it: artifact
mirror, emulated Windows hosts (each answering every HTTP request after LATENCY_S) and their emulated
kubelets. The control plane runs in its own processes. For N WindowsNodes (N = 1, 20, 50 by default;
WINNODE_BENCH_NODES=200 or a comma-separated list for more) it reports, apart for the operator, the
world and the control plane:

- bring-up: from applying N WindowsNodes to all of them Ready: operator CPU seconds per node, WinRM
  commands and HTTP requests per node;
- steady state: a window of STEADY_S (WINNODE_BENCH_STEADY_S) with every node Ready and nothing
  changing: operator CPU milliseconds, WinRM commands and HTTP requests per node-minute, and the
  operator CPU projected to 1,000 nodes;
- the operator's peak RSS (VmHWM of its process).

Between the two, settling: the last joins' annotations still reach their peers' routes, so the
steady window starts once no host got a command for SETTLE_QUIET_S. With two or more N, the steady
cost is split into a fixed part and a per-node part (the smallest and largest N), and that is what
is projected to 1,000 nodes. WINNODE_BENCH_PROFILE=<dir> samples the operator with py-spy for each
phase (<dir>/up-N.txt, steady-N.txt; collapsed stacks).

CPU comes from /proc/<pid>/stat of each process, so what the operator costs is never mixed with what
the emulated world costs. Prints a table and writes bench-results/fleet.json. Never part of the suite.

Emulated kubelets renew their Lease every 10 s, as kubelet does (tests' kubelets renew every 2 s).
Above FULL_MAX_NODES, or for every N with WINNODE_BENCH_LIGHT=1, hosts are light
(testing.kubelet.light): their kubelet registers the same Node, keeps it Ready and renews its Lease,
and leaves out what light.LEFT_OUT lists (TLS bootstrap, serving certificate and server, pod watch,
logs, kube-proxy); a full kubelet's pod watch and kube-proxy's two watches per host are more than one
2-core machine's control plane carries at 1,000 hosts. WINNODE_BENCH_LIGHT=0 keeps full hosts at any
N. Each row says which it used ("mode"), and the table is followed by what light leaves out.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

from tests.bench.lifecycle_bench import node_counts
from tests.bench.measure import OperatorProcess, log_dir

from winnode import timeouts
from winnode.settings import Settings
from winnode.testing.cluster import ControlPlane, start_control_plane
from winnode.testing.demo import World
from winnode.testing.emulator import EmulatedHost, HostSpec
from winnode.testing.kubelet.light import LEFT_OUT

DEFAULT_COUNTS = (1, 20, 50)
LATENCY_S = 0.05
STEADY_S = float(os.environ.get("WINNODE_BENCH_STEADY_S", "120"))
# Drift checks of a Ready node at the operator's interval (WINNODE_DRIFT_INTERVAL_S reaches the
# operator process too); the window must hold several for a per-check figure.
DRIFT_INTERVAL_S = Settings.from_env().drift_interval_s
BRING_UP_DEADLINE_PER_NODE_S = 4.0
BRING_UP_DEADLINE_MIN_S = 180.0
# Past the deadline the bring-up goes on while nodes still turn Ready: it ends after this long without
# one more (a large fleet is slow, not stuck, as long as it moves).
BRING_UP_STALL_S = 300.0
# WINNODE_BENCH_UP_MAX_S cuts the bring-up after this many seconds (0: no cut). The row then has the
# operator's RSS with all N WindowsNodes applied and how many turned Ready, and no steady state: on
# 2 cores a 1,000-node bring-up takes longer than a session can give it.
UP_MAX_S = float(os.environ.get("WINNODE_BENCH_UP_MAX_S", "0") or 0)
# Ready is counted by listing WindowsNodes and Nodes: every POLL_S, and no more often than one list per
# POLL_NODES_PER_S nodes a second (10 s at 1,000 nodes), so the bench's own lists stay a small part of
# the control plane's load. The bring-up time is known to within one interval (reported as poll_s).
POLL_S = 0.5
# Steady state begins once no host got a WinRM command for this long (bounded wait).
SETTLE_QUIET_S = 15.0
SETTLE_MAX_S = 120.0
POLL_NODES_PER_S = 100
# Above this many nodes hosts are light unless WINNODE_BENCH_LIGHT=0.
FULL_MAX_NODES = 200
# Emulated kubelets renew their Lease as kubelet does, not at the tests' faster default.
KUBELET_LEASE_RENEW_S = timeouts.KUBELET_LEASE_RENEW
NAMESPACE = "wn-fleet"
OUT = Path(os.environ.get("WINNODE_BENCH_OUT", "bench-results/fleet.json"))
PROJECT_TO = 1000
# The one command every drift check opens with: the combined read of the host, or (before it existed)
# the facts read.
DRIFT_OPENERS = ("observe", "facts")


def traffic(hosts: list[EmulatedHost], start: float, end: float) -> tuple[int, int]:
    """(HTTP requests, WinRM Command requests) all hosts received between two wall-clock times."""
    requests = commands = 0
    for host in hosts:
        for r in list(host.requests):
            if start <= r.at <= end:
                requests += 1
                commands += r.operation == "Command"
    return requests, commands


def commands_by_action(hosts: list[EmulatedHost], start: float, end: float) -> Counter[str]:
    """How many scripts of each winnode action all hosts ran between two wall-clock times."""
    counts: Counter[str] = Counter()
    for host in hosts:
        for a in list(host.actions):
            if start <= a.at <= end:
                counts[a.action or "?"] += 1
    return counts


def drift_checks(actions: Counter[str]) -> int:
    """Drift checks in a window: each starts with exactly one of DRIFT_OPENERS."""
    return sum(actions[a] for a in DRIFT_OPENERS)


def _pairs(out: str) -> dict[str, str]:
    pairs = (line.split(" ", 1) for line in out.splitlines() if line.strip())
    return {p[0]: (p[1] if len(p) > 1 else "") for p in pairs}


def all_ready(world: World, names: set[str]) -> set[str]:
    """Names whose WindowsNode is in phase Ready and whose Node is Ready. Only names and the two
    fields come back from kubectl (jsonpath), so a thousand-node list costs this process little."""
    each = '{range .items[*]}{.metadata.name} %s{"\\n"}{end}'
    phases = _pairs(
        world.cp.kubectl("get", "windowsnodes", "-o", "jsonpath=" + each % "{.status.phase}").stdout
    )
    ready = '{.status.conditions[?(@.type=="Ready")].status}'
    conditions = _pairs(world.cp.kubectl("get", "nodes", "-o", "jsonpath=" + each % ready).stdout)
    phase_ready = {n for n, phase in phases.items() if phase == "Ready"}
    node_ready = {n for n, status in conditions.items() if status == "True"}
    return names & phase_ready & node_ready


def last_command_at(hosts: list[EmulatedHost]) -> float:
    """Wall-clock time of the newest WinRM command any host received (0.0: none yet)."""
    return max((r.at for h in hosts for r in list(h.requests) if r.operation == "Command"), default=0.0)


def settle(hosts: list[EmulatedHost], count: int) -> float:
    """Until no host got a command for SETTLE_QUIET_S (at most SETTLE_MAX_S + a second per node);
    how long they had been quiet when it returned."""
    deadline = time.monotonic() + SETTLE_MAX_S + count
    while True:
        quiet = time.time() - last_command_at(hosts)
        if quiet >= SETTLE_QUIET_S or time.monotonic() >= deadline:
            return quiet
        time.sleep(min(SETTLE_QUIET_S - quiet, 2.0))


class Profiler:
    """py-spy sampling the operator for one phase, when WINNODE_BENCH_PROFILE names a directory.

    Only samples holding the GIL count (--gil): threads waiting on a host's reply are not CPU. Raw
    collapsed stacks go to <dir>/<phase>.txt."""

    def __init__(self, pid: int, phase: str) -> None:
        self.proc: subprocess.Popen[bytes] | None = None
        where = os.environ.get("WINNODE_BENCH_PROFILE", "").strip()
        spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
        if not where:
            return
        if not Path(spy).exists():
            print("WINNODE_BENCH_PROFILE is set but py-spy is not installed (pip install py-spy)", flush=True)
            return
        Path(where).mkdir(parents=True, exist_ok=True)
        out = Path(where) / f"{phase}.txt"
        cmd = [
            spy,
            "record",
            "--gil",
            "--nonblocking",
            "-r",
            "100",
            "-f",
            "raw",
            "-o",
            str(out),
            "-p",
            str(pid),
        ]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
            self.proc = None


def fixed_and_marginal(runs: list[dict[str, Any]]) -> dict[str, float] | None:
    """Steady operator CPU as fixed + per-node x N, from the smallest and largest measured N.

    ms per node-minute at one N mixes what the operator spends whatever the fleet (leader lease,
    watches, health) with what each node adds; projecting a fleet needs them apart."""
    points = sorted(
        (r["nodes"], r["steady"]["operator_cpu_ms_per_node_minute"] * r["nodes"])
        for r in runs
        if r.get("steady")
    )
    if len(points) < 2 or points[0][0] == points[-1][0]:
        return None
    (n1, total1), (n2, total2) = points[0], points[-1]
    per_node = (total2 - total1) / (n2 - n1)
    fixed = total1 - per_node * n1
    return {
        "from_nodes": n1,
        "to_nodes": n2,
        "fixed_ms_per_minute": round(fixed, 1),
        "per_node_ms_per_minute": round(per_node, 2),
        "projected_cores_at_1000": round((fixed + per_node * PROJECT_TO) / 60_000, 3),
    }


def poll_interval_s(count: int) -> float:
    return max(POLL_S, count / POLL_NODES_PER_S)


def light_mode(count: int) -> bool:
    """Light hosts for this N: WINNODE_BENCH_LIGHT=1 always, =0 never, unset above FULL_MAX_NODES."""
    forced = os.environ.get("WINNODE_BENCH_LIGHT", "").strip()
    if forced:
        return forced not in ("0", "false", "no")
    return count > FULL_MAX_NODES


def bring_up_deadline_s(count: int) -> float:
    return max(BRING_UP_DEADLINE_MIN_S, BRING_UP_DEADLINE_PER_NODE_S * count)


def node_subnet_prefix(count: int) -> int:
    """Per-node pod subnets small enough that the network's /16 holds twice the fleet: its /24s
    hold 256 nodes, and the operator rightly refuses the rest (ClusterCIDRExhausted)."""
    prefix = 24
    while (1 << (prefix - 16)) < 2 * count and prefix < 28:
        prefix += 1
    return prefix


def fleet_counts() -> tuple[int, ...]:
    """WINNODE_FLEET_NODES (comma-separated) alone when set, else the defaults plus WINNODE_BENCH_NODES."""
    only = os.environ.get("WINNODE_FLEET_NODES", "").strip()
    if only:
        return tuple(int(c) for c in only.split(",") if c.strip())
    return node_counts(DEFAULT_COUNTS)


def wait_all_ready(world: World, names: set[str]) -> set[str]:
    """Poll until every name is Ready, the deadline passed with no progress for BRING_UP_STALL_S."""
    count = len(names)
    interval = poll_interval_s(count)
    start = time.monotonic()
    deadline = start + bring_up_deadline_s(count)
    ready: set[str] = set()
    progress_at = start
    while True:
        now_ready = all_ready(world, names)
        now = time.monotonic()
        if len(now_ready) > len(ready):
            progress_at = now
        ready = now_ready
        if len(ready) >= count or (now >= deadline and now - progress_at >= BRING_UP_STALL_S):
            return ready
        if UP_MAX_S and now - start >= UP_MAX_S:
            print(
                f"bring-up cut after {UP_MAX_S:g} s (WINNODE_BENCH_UP_MAX_S): {len(ready)} of {count} Ready"
            )
            return ready
        time.sleep(interval)


def run_once(count: int, workdir: Path, *, light: bool) -> dict[str, Any]:
    cp: ControlPlane = start_control_plane()
    world: World | None = None
    operator: OperatorProcess | None = None
    try:
        world = World(
            cp,
            settings=Settings(metrics_port=0, namespace=NAMESPACE, drift_interval_s=DRIFT_INTERVAL_S),
            namespace=NAMESPACE,
            run_operator=False,
            kubelet_heartbeat_s=KUBELET_LEASE_RENEW_S,
            light_kubelets=light,
        ).start()
        assert world.emulator is not None
        world.apply(world.network(nodeSubnetPrefixLength=node_subnet_prefix(count)))
        hosts = world.emulator.add_hosts(count, HostSpec(), prefix="fleet-")
        world.apply(*(world.credentials_secret(h) for h in hosts))
        for host in hosts:
            host.faults.latency_s = LATENCY_S
        names = {h.hostname.lower() for h in hosts}
        operator = OperatorProcess(cp, world.settings, workdir / f"operator-{count}.log").start()

        # Bring-up.
        cpu0 = operator.cpu()
        t0, wall0 = time.monotonic(), time.time()
        profiler = Profiler(operator.pid, f"up-{count}")
        world.apply(*(world.windows_node(h) for h in hosts))
        ready = wait_all_ready(world, names)
        up_wall = time.monotonic() - t0
        profiler.stop()
        wall1 = time.time()
        up = operator.cpu() - cpu0
        up_requests, up_commands = traffic(hosts, wall0, wall1)
        row: dict[str, Any] = {
            "nodes": count,
            "mode": "light" if light else "full",
            "left_out": list(LEFT_OUT) if light else [],
            "ready": len(ready),
            "bring_up": {
                "wall_s": round(up_wall, 1),
                "poll_s": poll_interval_s(count),
                "operator_cpu_s": round(up.operator_s, 2),
                "operator_cpu_s_per_node": round(up.operator_s / count, 3),
                "world_cpu_s": round(up.world_s, 1),
                "control_plane_cpu_s": round(up.control_plane_s, 1),
                "winrm_commands_per_node": round(up_commands / count, 1),
                "http_requests_per_node": round(up_requests / count, 1),
                "http_requests_per_command": round(up_requests / max(1, up_commands), 1),
                "commands_by_action": dict(sorted(commands_by_action(hosts, wall0, wall1).items())),
            },
        }
        if len(ready) < count:
            row["steady"] = None
            rss, peak = operator.rss_mib()
            row["operator_rss_mib"], row["operator_peak_rss_mib"] = rss, peak
            return row

        # Settling: the last joins' Node changes (VTEP and flannel annotations) reach every peer's
        # routes after all are Ready. Steady state starts once no host got a command for a while.
        settle0, settle_wall0 = operator.cpu(), time.time()
        quiet_for = settle(hosts, count)
        settle_wall1 = time.time()
        settled = operator.cpu() - settle0
        row["settling"] = {
            "wall_s": round(settle_wall1 - settle_wall0, 1),
            "quiet_s": round(quiet_for, 1),
            "operator_cpu_s": round(settled.operator_s, 2),
            "commands_by_action": dict(sorted(commands_by_action(hosts, settle_wall0, settle_wall1).items())),
        }

        # Steady state: everything Ready, nothing changes; the operator only keeps watch.
        cpu0 = operator.cpu()
        wall0 = time.time()
        profiler = Profiler(operator.pid, f"steady-{count}")
        time.sleep(STEADY_S)
        profiler.stop()
        wall1 = time.time()
        steady = operator.cpu() - cpu0
        node_minutes = count * (wall1 - wall0) / 60.0
        requests, commands = traffic(hosts, wall0, wall1)
        actions = commands_by_action(hosts, wall0, wall1)
        checks = drift_checks(actions)
        op_ms = steady.operator_s * 1000 / node_minutes
        row["steady"] = {
            "window_s": round(wall1 - wall0, 1),
            "operator_cpu_ms_per_node_minute": round(op_ms, 1),
            "winrm_commands_per_node_minute": round(commands / node_minutes, 2),
            "http_requests_per_node_minute": round(requests / node_minutes, 1),
            "http_requests_per_command": round(requests / max(1, commands), 1),
            "drift_checks": checks,
            "commands_per_drift_check": round(commands / checks, 2) if checks else None,
            "commands_by_action": dict(sorted(actions.items())),
            "world_cpu_s": round(steady.world_s, 1),
            "control_plane_cpu_s": round(steady.control_plane_s, 1),
            "projected_cores_at_1000": round(op_ms * PROJECT_TO / 60_000, 3),
            "still_ready": len(all_ready(world, names)),
        }
        rss, peak = operator.rss_mib()
        row["operator_rss_mib"], row["operator_peak_rss_mib"] = rss, peak
        return row
    finally:
        if operator is not None:
            operator.stop()
        if world is not None:
            world.stop()
        cp.stop()


def main() -> None:
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    results: dict[str, Any] = {
        "benchmark": "fleet",
        "latency_s": LATENCY_S,
        "steady_window_s": STEADY_S,
        "drift_interval_s": DRIFT_INTERVAL_S,
        "bring_up_cut_s": UP_MAX_S or None,
        "kubelet_lease_renew_s": KUBELET_LEASE_RENEW_S,
        "full_max_nodes": FULL_MAX_NODES,
        "light_left_out": list(LEFT_OUT),
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "runs": [],
    }
    # WINNODE_BENCH_LOG_DIR keeps the operator's logs (operator-<N>.log) after the run.
    with log_dir("winnode-fleet-") as logs:
        for count in fleet_counts():
            light = light_mode(count)
            mode = "light" if light else "full"
            if os.environ.get("WINNODE_BENCH_LIGHT", "").strip():
                why = "WINNODE_BENCH_LIGHT"
            else:
                why = f"N > {FULL_MAX_NODES}" if light else f"N <= {FULL_MAX_NODES}"
            print(f"N={count}: starting with {mode} hosts ({why})...", flush=True)
            try:
                row = run_once(count, logs, light=light)
            except Exception as exc:  # one failed run must not hide the others' rows
                print(f"N={count}: failed: {exc!r}", flush=True)
                results["runs"].append({"nodes": count, "mode": mode, "error": repr(exc)})
                continue
            results["runs"].append(row)
    print(
        f"{'N':>5} {'mode':>5} {'ready':>5} {'up s':>6} {'op cpu/node s':>13} {'cmds/node':>9} {'reqs/node':>9} "
        f"{'settle s':>8} {'op ms/node-min':>14} {'cmds/node-min':>13} {'reqs/node-min':>13} {'cores@1000':>10} {'peak MiB':>8}"
    )
    for r in results["runs"]:
        if "error" in r:
            print(f"{r['nodes']:>5} {r.get('mode', '?'):>5} failed: {r['error']}")
            continue
        up, steady = r["bring_up"], r.get("steady") or {}
        print(
            f"{r['nodes']:>5} {r['mode']:>5} {r['ready']:>5} {up['wall_s']:>6.1f} "
            f"{up['operator_cpu_s_per_node']:>13.3f} "
            f"{up['winrm_commands_per_node']:>9.1f} {up['http_requests_per_node']:>9.1f} "
            f"{(r.get('settling') or {}).get('wall_s', float('nan')):>8.1f} "
            f"{steady.get('operator_cpu_ms_per_node_minute', float('nan')):>14.1f} "
            f"{steady.get('winrm_commands_per_node_minute', float('nan')):>13.2f} "
            f"{steady.get('http_requests_per_node_minute', float('nan')):>13.1f} "
            f"{steady.get('projected_cores_at_1000', float('nan')):>10.3f} {r.get('operator_peak_rss_mib', 0.0):>8.1f}"
        )
    fit = fixed_and_marginal([r for r in results["runs"] if "error" not in r])
    if fit is not None:
        results["steady_fit"] = fit
        print(
            f"steady operator CPU, N={fit['from_nodes']}..{fit['to_nodes']}: "
            f"{fit['fixed_ms_per_minute']:.1f} ms/min fixed + {fit['per_node_ms_per_minute']:.2f} ms/min per node; "
            f"at {PROJECT_TO} nodes {fit['projected_cores_at_1000']:.3f} cores"
        )
    if any(r.get("mode") == "light" for r in results["runs"]):
        print("light hosts leave out: " + "; ".join(LEFT_OUT))
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
