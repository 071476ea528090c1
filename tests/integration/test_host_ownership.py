"""One host, one WindowsNode, held on the host itself.

Replays what used to lose a working node: a second WindowsNode names the host of a Ready one (here
with no webhook in front, as when admission is bypassed or the host is reached under another name).
The second is refused with a condition naming the owner, the first stays Ready and its host is not
touched (no drift repairs, no stopped kubelet), and deleting the second removes nothing from the host.
Deleting the owner then cleans the host and its marker, after which another WindowsNode may take it.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from winnode.lifecycle.kubelet_config import LOG_ROOT
from winnode.settings import Settings
from winnode.testing.cluster import ControlPlane
from winnode.testing.demo import World
from winnode.testing.emulator import EmulatedHost, HostSpec

TIMEOUT = 120.0
# Drift checks every 2 s: several run on the owner while the intruder is refused.
DRIFT_INTERVAL_S = 2.0


@pytest.fixture(scope="module")
def world(control_plane: ControlPlane) -> Iterator[World]:
    with World(
        control_plane,
        settings=Settings(metrics_port=0, drift_interval_s=DRIFT_INTERVAL_S),
        namespace="wn-owner",
    ) as w:
        w.apply(w.network("owner-net", clusterCIDR="10.226.0.0/16"))
        yield w


LOGS = LOG_ROOT.lower() + "\\"


def host_state(host: EmulatedHost) -> dict[str, Any]:
    def take(m: Any) -> dict[str, Any]:
        return {
            "services": {k: (s.binary_path, s.state.value) for k, s in m.services.items()},
            # Logs are written by the running kubelet and kube-proxy themselves, not by winnode.
            "files": {k: f.sha256 for k, f in m.files.items() if not k.startswith(LOGS)},
            "dirs": set(m.directories),
            "hns": {k: n.address_prefix for k, n in m.hns_networks.items()},
            "firewall": set(m.firewall_rules),
            "owner": (m.owner_uid, m.owner_name),
            "guid": m.machine_guid,
        }

    return host.call(take)


def node_ready(world: World, name: str) -> bool:
    node = world.get("node", name)
    conditions = ((node or {}).get("status") or {}).get("conditions") or []
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)


def test_a_second_windows_node_never_takes_a_ready_host(world: World) -> None:
    host = world.add_host(HostSpec.server2022(hostname="own-a"))
    owner = world.windows_node(host, "own-a", network="owner-net")
    world.apply(owner)
    ready = world.wait_phase("own-a", "Ready", TIMEOUT)
    owner_uid = ready["metadata"]["uid"]
    guid = ready["status"]["host"]["machineGuid"]
    before = host_state(host)
    assert before["owner"] == (owner_uid, "own-a")
    assert before["guid"] == guid
    assert world.condition("own-a", "HostOwned")["reason"] == "OwnedByThisNode"  # type: ignore[index]

    intruder = world.windows_node(host, "own-b", network="owner-net")
    world.apply(intruder)
    refused = world.wait_for(
        "own-b refused",
        lambda: (c := world.condition("own-b", "HostOwned")) and c["status"] == "False" and c,
        TIMEOUT,
    )
    assert refused["reason"] == "OwnedByOtherWindowsNode"
    assert "belongs to WindowsNode own-a" in refused["message"]
    assert guid in refused["message"]
    assert world.phase("own-b") == "Failed"
    assert world.must_get("windowsnode", "own-b")["status"]["host"]["machineGuid"] == guid

    # Let the owner's drift check and the intruder's retries run for a while: nothing moves.
    time.sleep(4 * DRIFT_INTERVAL_S)
    assert host_state(host) == before
    assert world.phase("own-a") == "Ready"
    assert node_ready(world, "own-a")
    assert world.events("own-a", "DriftRepaired") == []
    assert world.get("node", "own-b") is None

    # Deleting the intruder removes nothing from the host and leaves the owner's node alone.
    world.cp.kubectl("delete", "windowsnode", "own-b", "--wait=false")
    world.wait_for("own-b gone", lambda: world.get("windowsnode", "own-b") is None, TIMEOUT)
    assert host_state(host) == before
    time.sleep(2 * DRIFT_INTERVAL_S)
    assert world.phase("own-a") == "Ready"
    assert node_ready(world, "own-a")
    assert world.events("own-a", "DriftRepaired") == []
    assert world.condition("own-a", "NodeReady")["status"] == "True"  # type: ignore[index]

    # The owner's own deletion cleans the host and removes its marker; then the host is free.
    world.cp.kubectl("delete", "windowsnode", "own-a", "--wait=false")
    world.wait_for("own-a gone", lambda: world.get("windowsnode", "own-a") is None, TIMEOUT)
    after = host_state(host)
    assert after["owner"] == (None, None)
    assert "kubelet" not in after["services"]
    assert after["hns"] == {}

    world.apply(world.windows_node(host, "own-c", network="owner-net"))
    taken = world.wait_phase("own-c", "Ready", TIMEOUT)
    assert host_state(host)["owner"] == (taken["metadata"]["uid"], "own-c")
    world.cp.kubectl("delete", "windowsnode", "own-c", "--wait=false")
    world.wait_for("own-c gone", lambda: world.get("windowsnode", "own-c") is None, TIMEOUT)


def test_a_marker_left_by_a_deleted_windows_node_is_taken_over(world: World) -> None:
    host = world.add_host(HostSpec.server2022(hostname="own-d"))
    host.call(lambda m: setattr(m, "owner_uid", "5f0c1d2e-0000-4000-8000-000000000001"))
    host.call(lambda m: setattr(m, "owner_name", "long-gone"))
    world.apply(world.windows_node(host, "own-d", network="owner-net"))
    obj = world.wait_phase("own-d", "Ready", TIMEOUT)
    assert host_state(host)["owner"] == (obj["metadata"]["uid"], "own-d")
    taken = world.events("own-d", "HostTakenOver")
    assert taken
    assert "long-gone" in taken[0]["message"]
    world.cp.kubectl("delete", "windowsnode", "own-d", "--wait=false")
    world.wait_for("own-d gone", lambda: world.get("windowsnode", "own-d") is None, TIMEOUT)
