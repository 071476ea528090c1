"""Drain a Node through the Eviction API, the way `kubectl drain` does, PodDisruptionBudgets respected.

Pods are only ever evicted, never deleted: an eviction the apiserver refuses (HTTP 429, a PDB
would be violated) is retried on the next pass and the PDB is reported, so an admin can see what
holds the drain up. DaemonSet pods (the DaemonSet controller would put them right back, and they
tolerate unschedulable) and mirror pods (the kubelet's static pods; the API cannot remove them)
stay.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from winnode import timeouts
from winnode.kube.api import ApiError
from winnode.kube.client import Kube, api_message, api_status, path

log = logging.getLogger(__name__)

MIRROR_POD_ANNOTATION = "kubernetes.io/config.mirror"
# Evictions in flight at once for one node: enough to drain 110 pods in a few round trips without
# flooding the apiserver (each takes a worker thread).
EVICTION_CONCURRENCY = 8


@dataclass(frozen=True)
class DrainResult:
    done: bool
    remaining: list[str]  # "ns/name" of pods still on the node
    blocked_by: list[str]  # "ns/pdb-name" of PodDisruptionBudgets refusing eviction
    # "ns/name: why" of evictions refused for another reason than a PDB (e.g. RBAC).
    failed: list[str] = field(default_factory=list)

    def summary(self) -> str:
        """One line for a condition message or an Event."""
        if self.done:
            return "no pods left to evict"
        parts = [f"{len(self.remaining)} pod(s) still on the node"]
        if self.blocked_by:
            parts.append(f"eviction refused by PodDisruptionBudget {', '.join(self.blocked_by)}")
        if self.failed:
            parts.append(f"eviction failed: {'; '.join(self.failed)}")
        return "; ".join(parts)


def _key(pod: dict[str, Any]) -> str:
    meta = pod.get("metadata") or {}
    return f"{meta.get('namespace', '')}/{meta.get('name', '')}"


def is_daemonset_pod(pod: dict[str, Any]) -> bool:
    owners = (pod.get("metadata") or {}).get("ownerReferences") or []
    return any(o.get("kind") == "DaemonSet" and o.get("controller") for o in owners)


def is_mirror_pod(pod: dict[str, Any]) -> bool:
    return MIRROR_POD_ANNOTATION in ((pod.get("metadata") or {}).get("annotations") or {})


def is_terminating(pod: dict[str, Any]) -> bool:
    return bool((pod.get("metadata") or {}).get("deletionTimestamp"))


def stays_on_node(pod: dict[str, Any]) -> bool:
    """Pods a drain leaves in place."""
    return is_daemonset_pod(pod) or is_mirror_pod(pod)


def selector_matches(selector: dict[str, Any] | None, labels: dict[str, str]) -> bool:
    """metav1.LabelSelector semantics: a null selector matches nothing, an empty one everything."""
    if selector is None:
        return False
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr.get("key", ""), expr.get("operator"), expr.get("values") or []
        if op == "In" and labels.get(key) not in values:
            return False
        if op == "NotIn" and key in labels and labels[key] in values:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
        if op not in ("In", "NotIn", "Exists", "DoesNotExist"):
            return False
    return True


async def _pods_on(kube: Kube, node_name: str) -> list[dict[str, Any]]:
    listing = await kube.request(
        "GET", path("api", "v1", "pods"), query={"fieldSelector": f"spec.nodeName={node_name}"}
    )
    return list(listing.get("items") or [])


class _PdbCache:
    """The PDBs of each namespace, read at most once per pass and only after a refusal."""

    def __init__(self, kube: Kube) -> None:
        self._kube = kube
        self._by_namespace: dict[str, list[dict[str, Any]]] = {}
        self._lock = asyncio.Lock()

    async def matching(self, pod: dict[str, Any]) -> list[str]:
        meta = pod.get("metadata") or {}
        namespace = str(meta.get("namespace", ""))
        async with self._lock:
            if namespace not in self._by_namespace:
                listing = await self._kube.request(
                    "GET", path("apis", "policy", "v1", "namespaces", namespace, "poddisruptionbudgets")
                )
                self._by_namespace[namespace] = list(listing.get("items") or [])
        labels = meta.get("labels") or {}
        return [
            f"{namespace}/{(pdb.get('metadata') or {}).get('name', '')}"
            for pdb in self._by_namespace[namespace]
            if selector_matches((pdb.get("spec") or {}).get("selector"), labels)
        ]


@dataclass
class _Outcome:
    gone: bool = False
    blocked_by: list[str] = field(default_factory=list)
    failure: str | None = None


async def _evict(kube: Kube, pod: dict[str, Any], pdbs: _PdbCache) -> _Outcome:
    meta = pod.get("metadata") or {}
    namespace, name = str(meta.get("namespace", "")), str(meta.get("name", ""))
    body = {
        "apiVersion": "policy/v1",
        "kind": "Eviction",
        "metadata": {"name": name, "namespace": namespace},
        # Evict this very pod, not a namesake created after our list.
        "deleteOptions": {"preconditions": {"uid": meta.get("uid")}} if meta.get("uid") else {},
    }
    try:
        await kube.request(
            "POST", path("api", "v1", "namespaces", namespace, "pods", name, "eviction"), body=body
        )
    except ApiError as exc:
        if exc.status == 404:
            return _Outcome(gone=True)
        if exc.status == 409:
            # The uid precondition failed: the pod we listed is gone and another took its name.
            return _Outcome(gone=True)
        if exc.status == 429:
            return _Outcome(blocked_by=await pdbs.matching(pod))
        if exc.status == 500 and "more than one PodDisruptionBudget" in api_message(exc):
            # The eviction API refuses pods covered by several PDBs; an admin must resolve that.
            return _Outcome(blocked_by=await pdbs.matching(pod), failure=api_message(exc))
        causes = (api_status(exc).get("details") or {}).get("causes") or []
        if exc.status == 403 and any(c.get("reason") == "NamespaceTerminating" for c in causes):
            # The namespace controller deletes the pod anyway; wait for it.
            return _Outcome()
        return _Outcome(failure=api_message(exc))
    return _Outcome()


async def drain_once(kube: Kube, node_name: str) -> DrainResult:
    """One pass: ask to evict every pod on the node that a drain moves; report what is left.

    Pods already being deleted are not asked again; they count as remaining until they are gone.
    `done` is True only when no such pod is left on the node.
    """
    pods = [p for p in await _pods_on(kube, node_name) if not stays_on_node(p)]
    to_evict = [p for p in pods if not is_terminating(p)]
    pdbs = _PdbCache(kube)
    gate = asyncio.Semaphore(EVICTION_CONCURRENCY)

    async def one(pod: dict[str, Any]) -> _Outcome:
        async with gate:
            return await _evict(kube, pod, pdbs)

    outcomes = dict(
        zip([_key(p) for p in to_evict], await asyncio.gather(*(one(p) for p in to_evict)), strict=True)
    )
    remaining = sorted(k for k in (_key(p) for p in pods) if not (k in outcomes and outcomes[k].gone))
    blocked = sorted({b for o in outcomes.values() for b in o.blocked_by})
    failed = sorted(f"{k}: {o.failure}" for k, o in outcomes.items() if o.failure)
    evicted = sum(1 for o in outcomes.values() if not o.gone and not o.blocked_by and not o.failure)
    if evicted:
        log.info("drain %s: %d pod(s) evicted, %d remaining", node_name, evicted, len(remaining))
    return DrainResult(done=not remaining, remaining=remaining, blocked_by=blocked, failed=failed)


async def drain(
    kube: Kube,
    node_name: str,
    timeout_s: float,
    on_pass: Callable[[DrainResult], Awaitable[None]] | None = None,
) -> DrainResult:
    """Passes of drain_once until the node is empty or `timeout_s` has passed; the last result.

    `on_pass` sees every unfinished pass, so a caller can show at once which PodDisruptionBudget holds
    the drain up instead of only when it gives up."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = await drain_once(kube, node_name)
        if result.done:
            return result
        if on_pass is not None:
            await on_pass(result)
        left = deadline - time.monotonic()
        if left <= 0:
            log.info("drain %s not finished after %.0fs: %s", node_name, timeout_s, result.summary())
            return result
        await asyncio.sleep(min(timeouts.DRAIN_PASS_INTERVAL, left))
