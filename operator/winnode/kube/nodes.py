"""Node objects: read their state, cordon, labels and taints we own, pod CIDR, delete.

Other actors write the same Node at the same time (the kubelet's status, the node lifecycle
controller's not-ready taints, an admin's labels), so every change is either a merge patch of only
the fields we own or a read-modify-write guarded by resourceVersion and retried on conflict.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from winnode import timeouts
from winnode.api.common import Taint
from winnode.kube.api import ApiError
from winnode.kube.client import JSON_MERGE_PATCH, Kube, api_message, path

log = logging.getLogger(__name__)


class NodeNotFoundError(LookupError):
    """The Node object does not exist (not registered yet, or deleted)."""

    def __init__(self, name: str, doing: str) -> None:
        super().__init__(f"Node {name} does not exist, cannot {doing}")
        self.name = name


class NodeUpdateError(RuntimeError):
    """A change to a Node kept conflicting with other writers, or was refused."""


def _node_path(name: str) -> str:
    return path("api", "v1", "nodes", name)


async def get_node(kube: Kube, name: str) -> dict[str, Any] | None:
    """The Node as the API returns it, or None when it does not exist."""
    return await kube.request("GET", _node_path(name), missing_ok=True)


# --- pure readers ------------------------------------------------------------------------------


def node_is_ready(node: dict[str, Any]) -> bool:
    conditions = (node.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


def node_kubelet_version(node: dict[str, Any]) -> str | None:
    version = ((node.get("status") or {}).get("nodeInfo") or {}).get("kubeletVersion")
    return str(version) if version else None


def node_addresses(node: dict[str, Any]) -> list[str]:
    """Addresses the kubelet reported (InternalIP, ExternalIP, Hostname, ...), in order, once each."""
    seen: dict[str, None] = {}
    for entry in (node.get("status") or {}).get("addresses") or []:
        address = entry.get("address")
        if address:
            seen.setdefault(str(address), None)
    return list(seen)


def node_is_unschedulable(node: dict[str, Any]) -> bool:
    return bool((node.get("spec") or {}).get("unschedulable"))


# --- writers -----------------------------------------------------------------------------------


async def _patch(kube: Kube, name: str, patch: dict[str, Any]) -> dict[str, Any] | None:
    return await kube.request(
        "PATCH", _node_path(name), body=patch, content_type=JSON_MERGE_PATCH, missing_ok=True
    )


async def _retry_on_conflict(name: str, doing: str, attempt: Callable[[], Awaitable[bool]]) -> bool:
    """Run `attempt` until it does not hit a 409; its result."""
    poll = timeouts.NODE_UPDATE_CONFLICT
    async for _ in poll.attempts():
        try:
            return await attempt()
        except ApiError as exc:
            if exc.status != 409:
                raise NodeUpdateError(f"cannot {doing} on Node {name}: {api_message(exc)}") from None
    raise NodeUpdateError(
        f"cannot {doing} on Node {name}: it kept changing under us for {poll.deadline:.0f}s"
    )


async def set_unschedulable(kube: Kube, name: str, unschedulable: bool) -> None:
    """Cordon (True) or uncordon (False). No-op when already so, or when the Node does not exist:
    a Node that is not there runs no pods and cannot be scheduled to."""
    node = await get_node(kube, name)
    if node is None:
        log.debug("Node %s does not exist; nothing to %s", name, "cordon" if unschedulable else "uncordon")
        return
    if node_is_unschedulable(node) == unschedulable:
        return
    # null removes the field, as `kubectl uncordon` does; false would be stored the same way.
    await _patch(kube, name, {"spec": {"unschedulable": True if unschedulable else None}})
    log.info("Node %s %s", name, "cordoned" if unschedulable else "uncordoned")


def _taint_dict(taint: Taint) -> dict[str, str]:
    out = {"key": taint.key, "effect": str(taint.effect)}
    if taint.value:
        out["value"] = taint.value
    return out


def _taint_id(taint: dict[str, Any]) -> tuple[str, str]:
    # The apiserver allows one taint per key and effect; that pair is a taint's identity.
    return (str(taint.get("key", "")), str(taint.get("effect", "")))


def _managed_record(annotations: dict[str, str], key: str) -> tuple[set[str], set[tuple[str, str]]]:
    """Labels and taints we applied last time, from our annotation on the Node."""
    raw = annotations.get(key)
    if not raw:
        return set(), set()
    try:
        record = json.loads(raw)
        labels = {str(k) for k in record.get("labels") or []}
        taints = {(str(t[0]), str(t[1])) for t in record.get("taints") or []}
    except (ValueError, TypeError, IndexError, AttributeError):
        log.warning("annotation %s on a Node is not ours to read; treating nothing as managed", key)
        return set(), set()
    return labels, taints


async def apply_labels_and_taints(
    kube: Kube, name: str, labels: dict[str, str], taints: list[Taint], managed_annotation: str
) -> None:
    """Make the Node carry `labels` and `taints`, and drop those we applied earlier but no longer want.

    What we applied is recorded in `managed_annotation` on the Node, so a label removed from the
    WindowsNode spec is removed from the Node too, while labels and taints others set (kubelet,
    admins, controllers) are left alone. A foreign taint with the same key and effect as one of
    ours is taken over (its value set to ours). Raises NodeNotFoundError when the Node is missing.
    """
    wanted_taints = {_taint_id(t): t for t in (_taint_dict(t) for t in taints)}

    async def attempt() -> bool:
        node = await get_node(kube, name)
        if node is None:
            raise NodeNotFoundError(name, "apply labels and taints")
        meta = node.get("metadata") or {}
        current_labels: dict[str, str] = meta.get("labels") or {}
        annotations: dict[str, str] = meta.get("annotations") or {}
        old_labels, old_taints = _managed_record(annotations, managed_annotation)

        label_patch: dict[str, str | None] = {
            k: None for k in sorted(old_labels - labels.keys()) if k in current_labels
        }
        label_patch.update({k: v for k, v in labels.items() if current_labels.get(k) != v})

        current_taints: list[dict[str, Any]] = (node.get("spec") or {}).get("taints") or []
        new_taints: list[dict[str, Any]] = []
        for taint in current_taints:
            tid = _taint_id(taint)
            if tid in wanted_taints:
                want = wanted_taints[tid]
                new_taints.append(
                    taint if taint.get("value") == want.get("value") else _replace_value(taint, want)
                )
            elif tid not in old_taints:
                new_taints.append(taint)
        present = {_taint_id(t) for t in current_taints}
        new_taints.extend(t for tid, t in wanted_taints.items() if tid not in present)

        record = json.dumps(
            {"labels": sorted(labels), "taints": sorted([list(tid) for tid in wanted_taints])},
            separators=(",", ":"),
        )
        taints_changed = new_taints != current_taints
        if not label_patch and not taints_changed and annotations.get(managed_annotation) == record:
            return False
        patch: dict[str, Any] = {
            # The resourceVersion makes this patch fail with 409 if anyone wrote the Node since our
            # read; the taint list is replaced whole, so a concurrent change must not be lost.
            "metadata": {
                "resourceVersion": meta.get("resourceVersion"),
                "labels": label_patch,
                "annotations": {managed_annotation: record},
            },
        }
        if taints_changed:
            patch["spec"] = {"taints": new_taints or None}
        if await _patch(kube, name, patch) is None:
            raise NodeNotFoundError(name, "apply labels and taints")
        return True

    if await _retry_on_conflict(name, "apply labels and taints", attempt):
        log.info("Node %s: labels and taints updated", name)


def _replace_value(current: dict[str, Any], wanted: dict[str, str]) -> dict[str, Any]:
    # timeAdded belongs to the old value (it only matters for NoExecute toleration seconds).
    out = {k: v for k, v in current.items() if k not in ("value", "timeAdded")}
    out.update(wanted)
    return out


async def set_pod_cidr(kube: Kube, name: str, cidr: str) -> bool:
    """Set spec.podCIDR (and podCIDRs) when still empty; whether this call set it.

    The apiserver refuses to change a pod CIDR once set, so a Node that already has one keeps it
    (a different value is logged: the network allocation and the Node disagree). Raises
    NodeNotFoundError when the Node is missing.
    """

    async def attempt() -> bool:
        node = await get_node(kube, name)
        if node is None:
            raise NodeNotFoundError(name, f"set its pod CIDR to {cidr}")
        spec = node.get("spec") or {}
        existing = spec.get("podCIDR") or (spec.get("podCIDRs") or [None])[0]
        if existing:
            if existing != cidr:
                log.warning("Node %s already has pod CIDR %s; %s not applied", name, existing, cidr)
            return False
        patch = {
            "metadata": {"resourceVersion": (node.get("metadata") or {}).get("resourceVersion")},
            "spec": {"podCIDR": cidr, "podCIDRs": [cidr]},
        }
        if await _patch(kube, name, patch) is None:
            raise NodeNotFoundError(name, f"set its pod CIDR to {cidr}")
        log.info("Node %s: pod CIDR %s", name, cidr)
        return True

    return await _retry_on_conflict(name, "set the pod CIDR", attempt)


async def delete_node(kube: Kube, name: str) -> bool:
    """Delete the Node; False when it was already gone."""
    deleted = await kube.request("DELETE", _node_path(name), missing_ok=True)
    if deleted is not None:
        log.info("Node %s deleted", name)
    return deleted is not None
