"""Status that does not mislead: a node serving through a failed upgrade stays Ready with UpgradeFailed;
NodeReady follows the Node when the host goes down; a forced deletion leaves the list of what stayed
on the host in an Event and the log before the object (and its status) is gone."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator

import pytest

from winnode.settings import Settings
from winnode.testing.cluster import ControlPlane
from winnode.testing.demo import World
from winnode.testing.emulator import HostSpec

TIMEOUT = 120.0


@pytest.fixture(scope="module")
def world(control_plane: ControlPlane) -> Iterator[World]:
    with World(
        control_plane, settings=Settings(metrics_port=0, drift_interval_s=2.0), namespace="wn-honest"
    ) as w:
        w.apply(w.network("honest-net", clusterCIDR="10.228.0.0/16"))
        yield w


def unpublished_version(world: World) -> str:
    minor = int(world.version.split(".")[1])
    return f"v1.{minor - 1}.0"


def test_a_failed_upgrade_staging_leaves_the_node_ready_with_upgrade_failed(world: World) -> None:
    host = world.add_host(HostSpec.server2022(hostname="honest-a"))
    world.apply(world.windows_node(host, "honest-a", network="honest-net"))
    world.wait_phase("honest-a", "Ready", TIMEOUT)
    target = unpublished_version(world)  # within the skew policy, but the mirror does not have it
    world.cp.kubectl(
        "patch",
        "windowsnode",
        "honest-a",
        "--type=merge",
        "-p",
        json.dumps({"spec": {"kubernetesVersion": target}}),
    )
    failed = world.wait_for(
        "UpgradeFailed",
        lambda: (c := world.condition("honest-a", "UpgradeFailed")) and c["status"] == "True" and c,
        TIMEOUT,
    )
    assert failed["reason"] == "ChecksumUnavailable"
    assert target in failed["message"]
    assert world.phase("honest-a") == "Ready", "the node was not disrupted: it serves on"
    assert world.condition("honest-a", "NodeReady")["status"] == "True"  # type: ignore[index]
    assert world.deps is not None
    samples = {
        tuple(s.labels.values()): s.value
        for metric in world.deps.metrics.host_errors.collect()
        for s in metric.samples
        if s.name.endswith("_total")
    }
    assert samples.get(("ChecksumUnavailable",), 0) >= 1, samples
    world.cp.kubectl(
        "patch",
        "windowsnode",
        "honest-a",
        "--type=json",
        "-p",
        '[{"op":"remove","path":"/spec/kubernetesVersion"}]',
    )


def test_node_ready_follows_the_node_and_a_forced_deletion_keeps_its_leftovers(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="winnode")
    host = world.add_host(HostSpec.server2022(hostname="honest-b"))
    world.apply(world.windows_node(host, "honest-b", network="honest-net"))
    world.wait_phase("honest-b", "Ready", TIMEOUT)

    # The host goes down for good; the node lifecycle controller marks its Node NotReady (done here
    # at once instead of after node-monitor-grace-period).
    host.reboot(downtime_s=3600, wait=False)
    patch = {"status": {"conditions": [{"type": "Ready", "status": "Unknown", "reason": "NodeStatusUnknown",
                                         "message": "Kubelet stopped posting node status."}]}}  # fmt: skip
    world.cp.kubectl(
        "patch", "node", "honest-b", "--subresource=status", "--type=strategic", "-p", json.dumps(patch)
    )
    not_ready = world.wait_for(
        "NodeReady=False",
        lambda: (c := world.condition("honest-b", "NodeReady")) and c["status"] == "False" and c,
        TIMEOUT,
    )
    assert not_ready["reason"] == "NodeNotReady"
    assert "NodeStatusUnknown" in not_ready["message"]

    world.cp.kubectl("annotate", "windowsnode", "honest-b", "winnode.io/force-delete=true")
    world.cp.kubectl("delete", "windowsnode", "honest-b", "--wait=false")
    world.wait_for("honest-b gone", lambda: world.get("windowsnode", "honest-b") is None, TIMEOUT)
    (event,) = world.events("honest-b", "HostNotCleaned")
    assert "service kubelet" in event["message"]
    assert "HNS network" in event["message"]
    logged = [r for r in caplog.records if "left on the host" in r.getMessage()]
    assert logged, "the leftovers are logged too"
    assert "service kubelet" in logged[0].getMessage()
    assert logged[0].levelno == logging.WARNING


def test_windows_server_2019_is_configured_with_an_os_deprecated_warning(world: World) -> None:
    host = world.add_host(HostSpec.server2019(hostname="honest-c"))
    world.apply(world.windows_node(host, "honest-c", network="honest-net"))
    world.wait_phase("honest-c", "Ready", TIMEOUT)
    condition = world.condition("honest-c", "OSSupported")
    assert condition is not None
    assert (condition["status"], condition["reason"]) == ("False", "OSDeprecated")
    (event,) = world.events("honest-c", "OSDeprecated")
    assert event["type"] == "Warning"
    assert "Windows Server 2019" in event["message"]
    world.cp.kubectl("delete", "windowsnode", "honest-c", "--wait=false")
    world.wait_for("honest-c gone", lambda: world.get("windowsnode", "honest-c") is None, TIMEOUT)
