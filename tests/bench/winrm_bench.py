"""WinRM transport benchmark: `python -m tests.bench winrm`.

Whole host actions (render, Create/Command/Send/Receive/Signal/Delete over real loopback sockets,
result parsing) through HostClient and the transport against emulated hosts, at concurrency 1, 16
and 64, for two workloads:

- facts: read-only, so several may run on one host at once;
- write_file (4 KB): mutating, so each host runs one at a time and concurrency comes from many hosts.

Auth is NTLM over http, with every message sealed, the default for hosts without an https listener.
Client and emulator share one Python process (and its GIL), and every operation opens a fresh
Protocol (a new NTLM handshake), so the ceiling is CPU on this machine, not the transport's limits;
past it, more concurrency only adds queueing to the latencies. Prints operations/s and p50/p99
latency and writes bench-results/winrm.json. Never part of the test suite.
"""

from __future__ import annotations

import asyncio
import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from winnode.host import actions as A
from winnode.host.client import HostClient
from winnode.host.transport import HostConnection, TransportLimits, WinRMTransport
from winnode.settings import Settings
from winnode.testing.emulator import EmulatedHost, EmulatorServer, HostSpec

CONCURRENCY = (1, 16, 64)
# Operations per concurrency level: a few hundred, so the whole run stays around a minute.
OPERATIONS = {1: 150, 16: 400, 64: 400}
HOSTS = 16
PASSWORD = "Bench-Pa55word!"
AUTH = "ntlm"
OUT = Path("bench-results") / "winrm.json"
CONTENT = "x" * 4096


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return 0.0
    index = min(len(ordered) - 1, max(0, round(p / 100 * (len(ordered) - 1))))
    return ordered[index]


def connection(host: EmulatedHost) -> HostConnection:
    return HostConnection(
        address=host.address,
        port=host.port,
        scheme=host.scheme,
        auth=AUTH,
        username=host.username,
        password=PASSWORD,
        name=host.hostname,
    )


async def run_level(
    hosts: list[EmulatedHost], concurrency: int, operations: int, make: Callable[[int], A.Params]
) -> dict[str, Any]:
    settings = Settings(winrm_global_concurrency=concurrency, winrm_operation_timeout_s=60.0)
    latencies: list[float] = []
    errors: dict[str, int] = {}
    async with WinRMTransport(settings, limits=TransportLimits()) as transport:
        clients = [HostClient(connection(h), transport) for h in hosts]
        queue: asyncio.Queue[int] = asyncio.Queue()
        for i in range(operations):
            queue.put_nowait(i)

        async def worker() -> None:
            while True:
                try:
                    i = queue.get_nowait()
                except asyncio.QueueEmpty:
                    return
                started = time.perf_counter()
                try:
                    await clients[i % len(clients)].run(make(i))
                except Exception as exc:
                    reason = getattr(exc, "reason", type(exc).__name__)
                    errors[reason] = errors.get(reason, 0) + 1
                    continue
                latencies.append(time.perf_counter() - started)

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        wall = time.perf_counter() - started
    return {
        "concurrency": concurrency,
        "operations": operations,
        "succeeded": len(latencies),
        "errors": errors,
        "seconds": round(wall, 3),
        "ops_per_s": round(len(latencies) / wall, 1) if wall else 0.0,
        "p50_ms": round(percentile(latencies, 50) * 1000, 1),
        "p99_ms": round(percentile(latencies, 99) * 1000, 1),
        "mean_ms": round(statistics.fmean(latencies) * 1000, 1) if latencies else 0.0,
    }


WORKLOADS: dict[str, Callable[[int], A.Params]] = {
    "facts": lambda i: A.FactsParams(),
    "write_file 4KB": lambda i: A.WriteFileParams(
        path=f"C:\\k\\bench\\f{i % 8}.txt", content=f"{i}\n{CONTENT}"
    ),
}


def main() -> None:
    results: dict[str, Any] = {
        "benchmark": "winrm",
        "auth": AUTH,
        "hosts": HOSTS,
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "workloads": {},
    }
    with EmulatorServer(strict=True) as server:
        hosts = server.add_hosts(HOSTS, HostSpec(password=PASSWORD), prefix="bench-")
        for name, make in WORKLOADS.items():
            rows = [asyncio.run(run_level(hosts, c, OPERATIONS[c], make)) for c in CONCURRENCY]
            results["workloads"][name] = rows
        server.assert_no_leaked_shells()

    print(
        f"{'workload':<16} {'conc':>5} {'ops':>5} {'ok':>5} {'ops/s':>8} {'p50 ms':>8} {'p99 ms':>8}  errors"
    )
    for name, rows in results["workloads"].items():
        for row in rows:
            errors = ", ".join(f"{k}={v}" for k, v in sorted(row["errors"].items())) or "-"
            print(
                f"{name:<16} {row['concurrency']:>5} {row['operations']:>5} {row['succeeded']:>5} "
                f"{row['ops_per_s']:>8.1f} {row['p50_ms']:>8.1f} {row['p99_ms']:>8.1f}  {errors}"
            )
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
