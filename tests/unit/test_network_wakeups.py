"""A WindowsNetwork's reconcile is woken by what it would see change, and by nothing else."""

from __future__ import annotations

import copy
from typing import Any

from winnode.lifecycle.network_wakeups import NetworkWakeups


def windows_node(name: str = "w1", network: str = "net-a") -> dict[str, Any]:
    return {
        "metadata": {"name": name, "resourceVersion": "1"},
        "spec": {"network": network, "address": "10.0.0.1"},
        "status": {
            "phase": "Ready",
            "appliedNetwork": {"name": network, "generation": 1},
            "conditions": [
                {"type": "NetworkConfigured", "status": "True"},
                {"type": "Drifted", "status": "False"},
            ],
        },
    }


def test_first_sight_wakes_its_network_and_an_unchanged_view_wakes_nothing() -> None:
    wakeups = NetworkWakeups()
    body = windows_node()
    assert wakeups.windows_node_event("ADDED", body) == {"net-a"}
    assert wakeups.wakeup("net-a").is_set()
    wakeups.wakeup("net-a").clear()

    # A status write the network does not read: another condition, a resourceVersion.
    other = copy.deepcopy(body)
    other["metadata"]["resourceVersion"] = "2"
    other["status"]["conditions"][1]["status"] = "True"
    other["spec"]["address"] = "10.0.0.2"
    assert wakeups.windows_node_event("MODIFIED", other) == set()
    assert not wakeups.wakeup("net-a").is_set()


def test_each_field_the_rollout_reads_wakes_it() -> None:
    def changed(edit: Any) -> set[str]:
        wakeups = NetworkWakeups()
        body = windows_node()
        wakeups.windows_node_event("ADDED", body)
        after = copy.deepcopy(body)
        edit(after)
        return wakeups.windows_node_event("MODIFIED", after)

    assert changed(lambda b: b["status"].update(phase="Degraded")) == {"net-a"}
    assert changed(lambda b: b["status"]["appliedNetwork"].update(generation=2)) == {"net-a"}
    assert changed(lambda b: b["status"]["conditions"][0].update(status="False")) == {"net-a"}
    assert changed(lambda b: b["spec"].update(paused=True)) == {"net-a"}
    assert changed(lambda b: b["metadata"].update(deletionTimestamp="2026-12-05T00:00:00Z")) == {"net-a"}
    # Moving to another network: both the one left and the one joined look again.
    assert changed(lambda b: b["spec"].update(network="net-b")) == {"net-a", "net-b"}


def test_a_deleted_windows_node_wakes_its_network_and_a_network_event_wakes_all() -> None:
    wakeups = NetworkWakeups()
    wakeups.windows_node_event("ADDED", windows_node("w1", "net-a"))
    wakeups.windows_node_event("ADDED", windows_node("w2", "net-b"))
    for name in ("net-a", "net-b"):
        wakeups.wakeup(name).clear()
    assert wakeups.windows_node_event("DELETED", windows_node("w1", "net-a")) == {"net-a"}
    assert wakeups.windows_node_event("DELETED", windows_node("w1", "net-a")) == set()
    wakeups.wakeup("net-a").clear()
    wakeups.network_event()
    assert wakeups.wakeup("net-a").is_set()
    assert wakeups.wakeup("net-b").is_set()
