"""What wakes a WindowsNetwork's reconcile: a change it would see, not a clock.

A network's reconcile lists every WindowsNode on it, so polling it every few seconds costs the
operator in proportion to the fleet even when nothing changes. Instead, the operator's one
WindowsNode watch passes each event to `NetworkWakeups.windows_node_event`, which wakes a network
only when a field its status and rollout read (network_setup.node_view) changed on one of its nodes;
a WindowsNetwork event wakes every network, since each one's overlap check reads all of them. The
daemon keeps a slow timer as a fallback (timeouts.NETWORK_RECHECK).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

from winnode.api.windowsnode import WindowsNodeConditionType


def network_view(body: Mapping[str, Any]) -> tuple[str | None, tuple[Any, ...]]:
    """(the WindowsNode's spec.network, what node_view reads of it), from the raw object."""
    meta = body.get("metadata") or {}
    spec = body.get("spec") or {}
    status = body.get("status") or {}
    applied = status.get("appliedNetwork") or {}
    configured = next(
        (
            c.get("status")
            for c in status.get("conditions") or []
            if c.get("type") == WindowsNodeConditionType.NETWORK_CONFIGURED
        ),
        None,
    )
    network = spec.get("network")
    view = (
        applied.get("name"),
        applied.get("generation"),
        status.get("phase"),
        meta.get("deletionTimestamp") is not None,
        bool(spec.get("paused")),
        configured,
    )
    return (str(network) if network else None), view


class NetworkWakeups:
    """WindowsNetwork name -> the event its reconcile daemon waits on (one event loop)."""

    def __init__(self) -> None:
        self._seen: dict[str, tuple[str | None, tuple[Any, ...]]] = {}
        self._events: dict[str, asyncio.Event] = {}

    def wakeup(self, network: str) -> asyncio.Event:
        event = self._events.get(network)
        if event is None:
            event = self._events[network] = asyncio.Event()
        return event

    def windows_node_event(self, event_type: str | None, body: Mapping[str, Any]) -> set[str]:
        """Record a WindowsNode watch event; the networks it woke."""
        name = str((body.get("metadata") or {}).get("name") or "")
        if not name:
            return set()
        before = self._seen.pop(name, None)
        now = None if event_type == "DELETED" else network_view(body)
        if now is not None:
            self._seen[name] = now
        if before == now:
            return set()
        woken = {seen[0] for seen in (before, now) if seen is not None and seen[0]}
        for network in woken:
            self.wakeup(network).set()
        return woken

    def network_event(self) -> None:
        """A WindowsNetwork changed: every network looks again (overlaps are checked between them)."""
        for event in self._events.values():
            event.set()

    def forget(self, network: str) -> None:
        self._events.pop(network, None)
