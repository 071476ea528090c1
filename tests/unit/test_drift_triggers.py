"""Node events that wake a drift check at once, and those that do not."""

from __future__ import annotations

from typing import Any

from winnode.lifecycle.drift_triggers import DriftWakeups, NodeSeen, trigger


def node(name: str, ready: bool, version: str = "v1.37.2") -> dict[str, Any]:
    return {
        "metadata": {"name": name},
        "status": {
            "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
            "nodeInfo": {"kubeletVersion": version},
        },
    }


def test_trigger_table() -> None:
    ready = NodeSeen(True, "v1.37.2")
    assert trigger(None, NodeSeen(False, "v1.37.2")) is None, "first sight is no change"
    assert trigger(ready, ready) is None
    assert trigger(ready, NodeSeen(False, "v1.37.2")) == "Node left Ready"
    assert trigger(NodeSeen(False, "v1.37.2"), ready) is None, "coming back Ready is the kubelet's news"
    assert trigger(NodeSeen(False, "v1.37.2"), NodeSeen(False, "v1.37.2")) is None, "no check per heartbeat"
    assert trigger(ready, NodeSeen(True, "v1.36.0")) == "kubelet version changed v1.37.2 -> v1.36.0"
    assert trigger(ready, NodeSeen(True, None)) is None, "a status without nodeInfo says nothing"


async def test_a_node_leaving_ready_sets_its_wakeup_once() -> None:
    wakeups = DriftWakeups()
    event = wakeups.wakeup("win-1")
    other = wakeups.wakeup("win-2")
    assert wakeups.node_event("ADDED", node("win-1", True)) is None
    assert wakeups.node_event("MODIFIED", node("win-1", True)) is None
    assert not event.is_set()
    assert wakeups.node_event("MODIFIED", node("win-1", False)) == "Node left Ready"
    assert event.is_set()
    assert not other.is_set()
    event.clear()
    assert wakeups.node_event("MODIFIED", node("win-1", False)) is None
    assert not event.is_set(), "a NotReady node's heartbeats do not keep waking it"
    wakeups.node_event("DELETED", node("win-1", False))
    assert wakeups.node_event("ADDED", node("win-1", False)) is None
