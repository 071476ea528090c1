"""Lifecycle benchmark: `python -m tests.bench lifecycle`.

Time from applying N WindowsNodes at once to every one of them being Ready (WindowsNode phase Ready
and its Node's Ready condition True), for N = 1, 10 and 50. WINNODE_BENCH_NODES=200 (or a
comma-separated list) adds more counts, left out by default because 200 takes minutes on two cores.
Each N gets a fresh local control plane, artifact mirror, emulator and in-process operator, so runs
do not see each other's objects. Time to Ready is sampled every POLL_S.

Every emulated host answers each HTTP request after LATENCY_S, so the WinRM critical path is
visible: for each node, the sum of the emulated latency of the requests it received until it was
Ready is the time a strictly sequential client must have spent waiting on the network (an upper
bound when the operator overlaps read-only requests). Operator overhead is p50 time to Ready minus
that critical path (median over the nodes): apiserver round trips, kopf, scheduling, the emulated
kubelet's bootstrap and queueing behind other nodes on this machine's cores.

Operator, emulator and emulated kubelets share this Python process, so its CPU seconds and RSS are
theirs together; the control plane's CPU (etcd, kube-apiserver, kcm) is reported apart. Prints a
table and writes bench-results/lifecycle.json. Never part of the test suite.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Any, cast

import kubernetes.client
from tests.bench.measure import cpu_of_pid_s, cpu_self_s, rss_mib

from winnode.host import client as host_client
from winnode.settings import Settings
from winnode.testing.cluster import ControlPlane, start_control_plane
from winnode.testing.demo import World
from winnode.testing.emulator import EmulatedHost, HostSpec

DEFAULT_COUNTS = (1, 10, 50)
LATENCY_S = 0.05
DEADLINE_S = 300.0
# Larger runs get longer: on two cores a node costs about 1.2 s of wall time at N=50 (operator,
# emulator, kubelets and control plane share them), so a fixed DEADLINE_S cuts N=200 short.
DEADLINE_PER_NODE_S = 3.0
POLL_S = 0.2
NAMESPACE = "wn-bench"
OUT = Path("bench-results") / "lifecycle.json"


def node_counts(defaults: tuple[int, ...] = DEFAULT_COUNTS) -> tuple[int, ...]:
    """`defaults` plus the counts in WINNODE_BENCH_NODES (comma-separated)."""
    extra = os.environ.get("WINNODE_BENCH_NODES", "").strip()
    if not extra:
        return defaults
    return tuple(sorted({*defaults, *(int(c) for c in extra.split(",") if c.strip())}))


def deadline_s(count: int) -> float:
    return max(DEADLINE_S, DEADLINE_PER_NODE_S * count)


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return 0.0
    index = min(len(ordered) - 1, max(0, round(p / 100 * (len(ordered) - 1))))
    return ordered[index]


def ready_names(api: kubernetes.client.ApiClient, names: set[str]) -> set[str]:
    """Names whose WindowsNode is in phase Ready and whose Node is Ready."""
    listing = kubernetes.client.CustomObjectsApi(api).list_cluster_custom_object(
        "winnode.io", "v1alpha1", "windowsnodes", _request_timeout=30
    )
    wns: list[dict[str, Any]] = cast(dict[str, Any], listing)["items"]
    phase_ready = {
        i["metadata"]["name"] for i in wns if ((i.get("status") or {}).get("phase")) == "Ready"
    } & names
    if not phase_ready:
        return set()
    nodes = kubernetes.client.CoreV1Api(api).list_node(_request_timeout=30).items
    node_ready = {
        n.metadata.name
        for n in nodes
        if n.metadata
        and any(c.type == "Ready" and c.status == "True" for c in (n.status and n.status.conditions) or [])
    }
    return phase_ready & node_ready


def host_requests(host: EmulatedHost, until: float) -> tuple[int, int]:
    """(HTTP requests, WinRM Command requests) a host received up to wall-clock time `until`."""
    records = [r for r in list(host.requests) if r.at <= until]
    return len(records), sum(1 for r in records if r.operation == "Command")


def run_once(count: int) -> dict[str, Any]:
    # Each run's operator has its own event loop, but the process-wide WinRM transport outlives it,
    # and its global limit (an asyncio.Semaphore) is bound to the loop that first had to wait on it
    # (N=50 is over the limit): the next, larger run would fail every WinRM call with "bound to a
    # different event loop". Every run starts with a fresh transport.
    host_client._shared = None
    cp: ControlPlane = start_control_plane()
    world: World | None = None
    api: kubernetes.client.ApiClient | None = None
    try:
        api = cp.api_client()
        world = World(cp, settings=Settings(metrics_port=0), namespace=NAMESPACE).start()
        assert world.emulator is not None
        world.apply(world.network())
        hosts = world.emulator.add_hosts(count, HostSpec(), prefix="bench-")
        world.apply(*(world.credentials_secret(h) for h in hosts))
        for host in hosts:
            host.faults.latency_s = LATENCY_S
        by_name = {h.hostname.lower(): h for h in hosts}
        names = set(by_name)

        cp_pids = list(cp.component_pids.values())
        cp_cpu0 = sum(cpu_of_pid_s(p) for p in cp_pids)
        cpu0 = cpu_self_s()
        start = time.monotonic()
        world.apply(*(world.windows_node(h) for h in hosts))
        ready_at: dict[str, float] = {}
        ready_wall: dict[str, float] = {}
        deadline = start + deadline_s(count)
        while len(ready_at) < count and time.monotonic() < deadline:
            fresh = ready_names(api, names - set(ready_at))
            now, now_wall = time.monotonic(), time.time()
            for name in fresh:
                ready_at[name] = now - start
                ready_wall[name] = now_wall
            if len(ready_at) < count:
                time.sleep(POLL_S)
        wall = time.monotonic() - start
        cpu = cpu_self_s() - cpu0
        cp_cpu = sum(cpu_of_pid_s(p) for p in cp_pids) - cp_cpu0
        rss, peak = rss_mib()

        requests, commands, critical = [], [], []
        for name, host in by_name.items():
            n_req, n_cmd = host_requests(host, ready_wall.get(name, time.time()))
            requests.append(n_req)
            commands.append(n_cmd)
            critical.append(n_req * LATENCY_S)
        times = list(ready_at.values())
        p50 = percentile(times, 50)
        critical_s = statistics.median(critical)
        last_error = {}
        if len(ready_at) < count:
            items = json.loads(world.cp.kubectl("get", "windowsnodes", "-o", "json").stdout)["items"]
            for i in items:
                if i["metadata"]["name"] not in ready_at:
                    status = i.get("status") or {}
                    last_error[i["metadata"]["name"]] = f"{status.get('phase')}: {status.get('lastError')}"
        return {
            "nodes": count,
            "deadline_s": deadline_s(count),
            "ready": len(ready_at),
            "timed_out": len(ready_at) < count,
            "wall_s": round(wall, 2),
            "p50_s": round(p50, 2),
            "p99_s": round(percentile(times, 99), 2),
            "max_s": round(max(times), 2) if times else 0.0,
            "requests_per_node": round(statistics.median(requests), 1),
            "commands_per_node": round(statistics.median(commands), 1),
            "commands_per_node_min_max": [min(commands), max(commands)],
            "critical_path_s": round(critical_s, 2),
            "overhead_s": round(p50 - critical_s, 2),
            "cpu_s": round(cpu, 1),
            "control_plane_cpu_s": round(cp_cpu, 1),
            "rss_mib": rss,
            "peak_rss_mib": peak,
            "not_ready": dict(sorted(last_error.items())[:10]),
        }
    finally:
        if api is not None:
            api.close()  # type: ignore[no-untyped-call]
        if world is not None:
            world.stop()
        cp.stop()


def main() -> None:
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # kopf runs in a thread here and says so at WARNING.
    logging.getLogger("kopf._core.reactor.running").setLevel(logging.ERROR)
    settings = Settings(metrics_port=0)
    results: dict[str, Any] = {
        "benchmark": "lifecycle",
        "latency_s": LATENCY_S,
        "deadline_s": DEADLINE_S,
        "deadline_per_node_s": DEADLINE_PER_NODE_S,
        "poll_s": POLL_S,
        "winrm_global_concurrency": settings.winrm_global_concurrency,
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "runs": [],
    }
    for count in node_counts():
        print(f"N={count}: starting...", flush=True)
        try:
            row = run_once(count)
        except Exception as exc:  # one failed run must not hide the others' rows
            print(f"N={count}: failed: {exc!r}", flush=True)
            results["runs"].append({"nodes": count, "error": repr(exc)})
            continue
        results["runs"].append(row)
        print(f"N={count}: {row['ready']}/{count} Ready in {row['wall_s']:.1f}s", flush=True)

    print(
        f"{'N':>4} {'ready':>6} {'wall s':>7} {'p50 s':>6} {'p99 s':>6} {'cmds':>5} {'reqs':>5} "
        f"{'crit s':>6} {'ovh s':>6} {'cpu s':>6} {'cp cpu':>6} {'rss MiB':>8} {'peak':>6}"
    )
    for r in results["runs"]:
        if "error" in r:
            print(f"{r['nodes']:>4} failed: {r['error']}")
            continue
        print(
            f"{r['nodes']:>4} {r['ready']:>6} {r['wall_s']:>7.1f} {r['p50_s']:>6.1f} {r['p99_s']:>6.1f} "
            f"{r['commands_per_node']:>5.0f} {r['requests_per_node']:>5.0f} {r['critical_path_s']:>6.1f} "
            f"{r['overhead_s']:>6.1f} {r['cpu_s']:>6.1f} {r['control_plane_cpu_s']:>6.1f} "
            f"{r['rss_mib']:>8.1f} {r['peak_rss_mib']:>6.1f}"
        )
        for name, error in r["not_ready"].items():
            print(f"     not Ready: {name}: {error}")
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
