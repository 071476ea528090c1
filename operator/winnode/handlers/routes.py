"""Route sync wiring: Node and WindowsNode events feed lifecycle.route_sync (one per operator).

WindowsNode events also wake the reconcile of the WindowsNetworks they touch
(lifecycle/network_wakeups.py): one WindowsNode handler, for the reason below.

The one Node event handler also feeds the drift wake-ups (lifecycle/drift_triggers.py): a Node that
leaves Ready or changes kubelet version gets its drift check at once. One handler, not two, because
kopf runs and logs each handler of every Node event."""

from __future__ import annotations

from typing import Any

import kopf

from winnode.api.windowsnode import WINDOWS_NODE
from winnode.lifecycle.route_sync import RouteSync

MEMO_KEY = "route_sync"


def route_sync(memo: kopf.Memo) -> RouteSync:
    """The operator's one RouteSync. kopf hands each object a shallow copy of the operator's memo, so
    it is made at startup (in the shared memo) and only looked up here."""
    existing = memo.get(MEMO_KEY)
    if not isinstance(existing, RouteSync):
        raise RuntimeError("route sync was not started: the startup handler routes-startup did not run")
    return existing


async def startup(memo: kopf.Memo, **_: Any) -> None:
    memo[MEMO_KEY] = RouteSync(memo.deps)


async def node_event(type: str | None, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    node = dict(body)
    memo.deps.drift_wakeups.node_event(type, node)
    route_sync(memo).node_event(type, node)


async def windowsnode_event(type: str | None, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    # Phase changes (a host got its pod network), deletions, pauses: recompute. Other status writes
    # are filtered out, since a pass lists the whole fleet.
    route_sync(memo).windows_node_event(type, body)
    memo.deps.network_wakeups.windows_node_event(type, body)


async def cleanup(memo: kopf.Memo, **_: Any) -> None:
    existing = memo.get(MEMO_KEY)
    if isinstance(existing, RouteSync):
        await existing.stop()


def register(registry: kopf.OperatorRegistry) -> None:
    kopf.on.event("", "v1", "nodes", id="routes-nodes", registry=registry)(node_event)
    kopf.on.event(
        WINDOWS_NODE.group,
        WINDOWS_NODE.version,
        WINDOWS_NODE.plural,
        id="routes-windowsnodes",
        registry=registry,
    )(windowsnode_event)
    kopf.on.startup(id="routes-startup", registry=registry)(startup)
    kopf.on.cleanup(id="routes-cleanup", registry=registry)(cleanup)
