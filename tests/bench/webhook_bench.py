"""Admission webhook benchmark: `python -m tests.bench webhook`.

1. The webhook alone: AdmissionReviews POSTed over TLS (kept-alive connections) at concurrency 1, 8 and 32;
   requests/s and p50/p99 latency, for an admitted and a denied review.
2. Pod creates through a real apiserver: latency of creating a one-container Windows pod with no admission
   objects, with the ValidatingAdmissionPolicy only, and with the policy plus the webhook.

Prints a table and writes bench-results/webhook.json. Never part of the test suite.
"""

from __future__ import annotations

import asyncio
import json
import os
import platform
import statistics
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import aiohttp

from winnode.testing.admission import AdmissionEnv, SyncApi, free_port, wait_for
from winnode.testing.cluster import start_control_plane

CONCURRENCY = (1, 8, 32)
# Requests per concurrency level; bounded so the whole benchmark takes well under a minute.
REQUESTS = {1: 500, 8: 2000, 32: 3000}
POD_CREATES = 150
OUT = Path("bench-results") / "webhook.json"


def review(uid: str, containers: int) -> bytes:
    return json.dumps(
        {
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "request": {
                "uid": uid,
                "kind": {"group": "", "version": "v1", "kind": "Pod"},
                "resource": {"group": "", "version": "v1", "resource": "pods"},
                "namespace": "bench",
                "operation": "CREATE",
                "object": {
                    "metadata": {"name": "web", "namespace": "bench"},
                    "spec": {
                        "nodeSelector": {"kubernetes.io/os": "windows"},
                        "containers": [{"name": f"c{i}", "image": "img"} for i in range(containers)],
                    },
                },
            },
        }
    ).encode()


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    k = max(0, min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1))))
    return ordered[k]


async def hammer(url: str, ssl_ctx: Any, concurrency: int, total: int, body: bytes) -> dict[str, float]:
    latencies: list[float] = []
    errors = 0
    remaining = total
    connector = aiohttp.TCPConnector(ssl=ssl_ctx, limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def worker() -> None:
            nonlocal remaining, errors
            while remaining > 0:
                remaining -= 1
                start = time.perf_counter()
                async with session.post(url, data=body, headers={"Content-Type": "application/json"}) as resp:
                    await resp.read()
                    if resp.status != 200:
                        errors += 1
                latencies.append(time.perf_counter() - start)

        async def warm() -> None:
            async with session.post(url, data=body, headers={"Content-Type": "application/json"}) as resp:
                await resp.read()

        # Open every connection first, so TLS handshakes are not counted as request latency.
        await asyncio.gather(*(warm() for _ in range(concurrency)))
        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        wall = time.perf_counter() - started
    return {
        "requests": float(len(latencies)),
        "errors": float(errors),
        "rps": len(latencies) / wall,
        "p50_ms": percentile(latencies, 50) * 1000,
        "p99_ms": percentile(latencies, 99) * 1000,
    }


def pod_create_latency(api: SyncApi, namespace: str, label: str) -> dict[str, float]:
    latencies = []
    for i in range(POD_CREATES):
        obj = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": f"{label}-{i}", "namespace": namespace},
            "spec": {"os": {"name": "windows"}, "containers": [{"name": "app", "image": "img"}]},
        }
        start = time.perf_counter()
        status, doc = api.request("POST", f"/api/v1/namespaces/{namespace}/pods", obj)
        latencies.append(time.perf_counter() - start)
        if status != 201:
            raise RuntimeError(f"pod create failed ({label}): {status} {doc.get('message')}")
    api.request("DELETE", f"/api/v1/namespaces/{namespace}/pods", params={"gracePeriodSeconds": "0"})
    return {
        "creates": float(len(latencies)),
        "mean_ms": statistics.fmean(latencies) * 1000,
        "p50_ms": percentile(latencies, 50) * 1000,
        "p99_ms": percentile(latencies, 99) * 1000,
    }


def main() -> None:
    results: dict[str, Any] = {"machine": {"python": platform.python_version(), "cpus": os.cpu_count()}}
    with tempfile.TemporaryDirectory(prefix="winnode-bench-") as tmp:
        cp = start_control_plane(Path(tmp) / "cp")
        api = SyncApi.from_kubeconfig(cp.kubeconfig)
        env = AdmissionEnv(api, uuid.uuid4().hex[:6], Path(tmp))
        try:
            env.setup_namespaces()
            plain_ns = f"bench-plain-{env.suffix}"
            env.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": plain_ns}})
            results["pod_create"] = {"no admission": pod_create_latency(api, plain_ns, "plain")}

            env.setup_policy()
            probe: dict[str, Any] = {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": "probe", "namespace": env.namespace},
                "spec": {
                    "os": {"name": "windows"},
                    "containers": [{"name": "a", "image": "i"}, {"name": "b", "image": "i"}],
                },
            }
            wait_for(lambda: env.dry_run_create(probe)[0] == 403, "policy in force")
            results["pod_create"]["policy only"] = pod_create_latency(api, env.namespace, "vap")

            port = free_port()
            env.setup_webhook_config(port)
            env.webhook = env.start_webhook(cp.kubeconfig, port=port)
            probe["spec"]["containers"] = probe["spec"]["containers"][:1]
            before = env.webhook.request_count(env.ca_context())
            wait_for(
                lambda: (
                    env.dry_run_create(probe)[0] == 201
                    and env.webhook is not None
                    and env.webhook.request_count(env.ca_context()) > before
                ),
                "webhook in the path",
            )
            results["pod_create"]["policy + webhook"] = pod_create_latency(api, env.namespace, "hook")

            ctx = env.ca_context()
            results["webhook"] = {}
            for verdict, containers in (("admit", 1), ("deny", 2)):
                for c in CONCURRENCY:
                    row = asyncio.run(
                        hammer(env.webhook.url, ctx, c, REQUESTS[c], review(f"bench-{c}", containers))
                    )
                    results["webhook"][f"{verdict} c={c}"] = row
        finally:
            if env.webhook is not None:
                env.webhook.stop()
            try:
                env.teardown()
            finally:
                api.close()
                cp.stop()

    print(f"\n{'webhook over TLS':<24}{'requests':>10}{'req/s':>10}{'p50 ms':>10}{'p99 ms':>10}{'errors':>8}")
    for name, row in results["webhook"].items():
        print(
            f"{name:<24}{row['requests']:>10.0f}{row['rps']:>10.0f}{row['p50_ms']:>10.2f}{row['p99_ms']:>10.2f}{row['errors']:>8.0f}"
        )
    print(f"\n{'pod create (apiserver)':<24}{'creates':>10}{'mean ms':>10}{'p50 ms':>10}{'p99 ms':>10}")
    for name, row in results["pod_create"].items():
        print(
            f"{name:<24}{row['creates']:>10.0f}{row['mean_ms']:>10.2f}{row['p50_ms']:>10.2f}{row['p99_ms']:>10.2f}"
        )
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nwrote {OUT}")


if __name__ == "__main__":
    main()
