"""What the cluster already tells us about a node wakes its drift check at once.

The periodic drift check of a healthy node can be rare (Settings.drift_interval_s) because the two
changes that matter most are visible on the Node without asking the host: the Node leaving Ready
(the kubelet stopped, the host went down, its network broke) and a kubelet version other than the
one last seen (someone replaced the binary). Each Node event from the operator's one Node watch is
passed to `DriftWakeups.node_event`; `trigger` decides, and the node's drift daemon waits on
`wakeup(node_name)` besides its timer.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from winnode.kube.nodes import node_is_ready, node_kubelet_version


@dataclass(frozen=True)
class NodeSeen:
    ready: bool
    kubelet_version: str | None


def seen(node: dict[str, Any]) -> NodeSeen:
    return NodeSeen(node_is_ready(node), node_kubelet_version(node))


def trigger(before: NodeSeen | None, now: NodeSeen) -> str | None:
    """Why the change from `before` to `now` calls for a drift check now, or None.

    The first sight of a Node (operator start, a new node) is no reason: the daemon's first check
    comes soon after start anyway."""
    if before is None:
        return None
    if before.ready and not now.ready:
        return "Node left Ready"
    if before.kubelet_version and now.kubelet_version and before.kubelet_version != now.kubelet_version:
        return f"kubelet version changed {before.kubelet_version} -> {now.kubelet_version}"
    return None


class DriftWakeups:
    """Per Node name: the state last seen and the event a drift daemon waits on (one event loop)."""

    def __init__(self) -> None:
        self._seen: dict[str, NodeSeen] = {}
        self._events: dict[str, asyncio.Event] = {}
        self.reasons: dict[str, str] = {}

    def wakeup(self, node_name: str) -> asyncio.Event:
        event = self._events.get(node_name)
        if event is None:
            event = self._events[node_name] = asyncio.Event()
        return event

    def node_event(self, kind: str | None, node: dict[str, Any]) -> str | None:
        """Record a Node watch event; the reason a check was woken, if one was."""
        name = str((node.get("metadata") or {}).get("name") or "")
        if not name:
            return None
        if kind == "DELETED":
            self._seen.pop(name, None)
            return None
        now = seen(node)
        reason = trigger(self._seen.get(name), now)
        self._seen[name] = now
        if reason is not None:
            self.reasons[name] = reason
            self.wakeup(name).set()
        return reason

    def forget(self, node_name: str) -> None:
        self._seen.pop(node_name, None)
        self._events.pop(node_name, None)
        self.reasons.pop(node_name, None)
