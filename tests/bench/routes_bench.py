"""Route sync benchmark: `python -m tests.bench routes`.

Applies N WindowsNodes at once (default 200; WINNODE_BENCH_ROUTE_NODES=50 on a busy machine) on
an overlay WindowsNetwork and measures, until every node is Ready and every host routes to every
other:

- WinRM commands per host spent on route sync (`hns_routes_sync` actions the emulated host ran):
  coalescing keeps this a small constant while N peers join, where one update per join would be N;
- the time from a node turning Ready (WindowsNode phase and Node condition) until every host that
  was Ready by then holds a RemoteSubnetRoute to its pod subnet (sampled every POLL_S).

Operator, emulator and kubelets share this process. Prints a table and writes
bench-results/routes.json. Never part of the test suite.
"""

from __future__ import annotations

import json
import os
import statistics
import time
from pathlib import Path
from typing import Any

from tests.bench.lifecycle_bench import percentile, ready_names

from winnode.host import client as host_client
from winnode.network.hns import HNS_NETWORK_NAME
from winnode.settings import Settings
from winnode.testing.cluster import start_control_plane
from winnode.testing.demo import World
from winnode.testing.emulator import EmulatedHost, HostSpec

DEFAULT_NODES = 200
DEADLINE_PER_NODE_S = 4.0
POLL_S = 0.5
NAMESPACE = "wn-bench-routes"
OUT = Path("bench-results") / "routes.json"


def node_count() -> int:
    return int(os.environ.get("WINNODE_BENCH_ROUTE_NODES", "").strip() or DEFAULT_NODES)


def routes_of(host: EmulatedHost) -> set[str]:
    def read(m: Any) -> set[str]:
        net = m.hns_networks.get(HNS_NETWORK_NAME)
        return (
            set() if net is None else {r["DestinationPrefix"] for r in net.policies_of("RemoteSubnetRoute")}
        )

    result: set[str] = host.call(read)
    return result


def run(count: int) -> dict[str, Any]:
    host_client._shared = None
    cp = start_control_plane()
    world: World | None = None
    api = None
    try:
        api = cp.api_client()
        world = World(cp, settings=Settings(metrics_port=0), namespace=NAMESPACE).start()
        assert world.emulator is not None
        world.apply(world.network(clusterCIDR="10.128.0.0/14", nodeSubnetPrefixLength=24))
        hosts = world.emulator.add_hosts(count, HostSpec(), prefix="rt-")
        world.apply(*(world.credentials_secret(h) for h in hosts))
        by_name = {h.hostname.lower(): h for h in hosts}
        names = set(by_name)
        start = time.monotonic()
        world.apply(*(world.windows_node(h) for h in hosts))
        ready_at: dict[str, float] = {}
        routed_at: dict[str, float] = {}
        subnets: dict[str, str] = {}
        deadline = start + DEADLINE_PER_NODE_S * count + 120
        while len(routed_at) < count and time.monotonic() < deadline:
            now = time.monotonic() - start
            for name in ready_names(api, names - set(ready_at)):
                ready_at[name] = now
            missing = [n for n in ready_at if n not in subnets]
            if missing:
                items = json.loads(world.cp.kubectl("get", "windowsnodes", "-o", "json").stdout)["items"]
                for item in items:
                    subnet = (item.get("status") or {}).get("subnet")
                    if subnet:
                        subnets[item["metadata"]["name"]] = subnet
            held = {n: routes_of(by_name[n]) for n in ready_at}
            for name in ready_at:
                if name in routed_at or name not in subnets:
                    continue
                if all(subnets[name] in held[peer] for peer in ready_at if peer != name):
                    routed_at[name] = now
            time.sleep(POLL_S)
        wall = time.monotonic() - start
        syncs = [h.actions_named("hns_routes_sync") for h in hosts]
        commands = [len(a) for a in syncs]
        failed = [sum(1 for a in each if not a.ok) for each in syncs]
        idle = [
            sum(
                1
                for a in each
                if a.ok and not (a.result or {}).get("added") and not (a.result or {}).get("removed")
            )
            for each in syncs
        ]
        if os.environ.get("WINNODE_BENCH_DEBUG"):
            for a in syncs[0]:
                print(a.ok, a.exit_code, str(a.result)[:300])
        lag = [routed_at[n] - ready_at[n] for n in routed_at]
        return {
            "nodes": count,
            "ready": len(ready_at),
            "all_routed": len(routed_at),
            "wall_s": round(wall, 1),
            "route_sync_commands_per_host_median": statistics.median(commands) if commands else 0,
            "route_sync_commands_per_host_max": max(commands, default=0),
            "route_sync_commands_per_host_min": min(commands, default=0),
            "route_sync_failed_per_host_median": statistics.median(failed) if failed else 0,
            "route_sync_without_change_per_host_median": statistics.median(idle) if idle else 0,
            "peers_per_host": count - 1,
            "ready_to_routed_p50_s": round(percentile(lag, 50), 2) if lag else None,
            "ready_to_routed_p99_s": round(percentile(lag, 99), 2) if lag else None,
            "ready_to_routed_max_s": round(max(lag), 2) if lag else None,
        }
    finally:
        if api is not None:
            api.close()  # type: ignore[no-untyped-call]
        if world is not None:
            world.stop()
        cp.stop()


def main() -> None:
    result = run(node_count())
    OUT.parent.mkdir(exist_ok=True)
    OUT.write_text(json.dumps(result, indent=2) + "\n")
    width = max(len(k) for k in result)
    for key, value in result.items():
        print(f"{key:<{width}}  {value}")
    print(f"wrote {OUT}")
