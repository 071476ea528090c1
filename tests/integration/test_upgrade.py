"""Rolling upgrades of kubelet/kube-proxy against the real apiserver and emulated Windows hosts.

A fleet upgraded under maxUnavailable (a watcher on Nodes counts unschedulable/NotReady ones), a
drain held up by a PodDisruptionBudget, a new kubelet that never turns Ready (rolled back, not
retried), a version the skew policy refuses, and a reboot asked for by annotation.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator
from typing import Any

import pytest

from winnode import timeouts
from winnode.lifecycle import kubelet_config as kc
from winnode.lifecycle.disruption import CORDONED_ANNOTATION
from winnode.lifecycle.reboot import REBOOT_ANNOTATION
from winnode.lifecycle.upgrade import RETRY_ANNOTATION, previous_path
from winnode.lifecycle.versions import Version
from winnode.settings import Settings
from winnode.testing import upgrades
from winnode.testing.cluster import ControlPlane
from winnode.testing.demo import World
from winnode.testing.emulator import EmulatedHost
from winnode.testing.upgrades import (
    UnavailableWatcher,
    installed_binary,
    node_ready,
    set_version,
    upgraded,
    versions,
)

NAMESPACE = "wn-upgrade"
TIMEOUT = 180.0


@pytest.fixture(scope="module")
def world(control_plane: ControlPlane) -> Iterator[World]:
    settings = Settings(metrics_port=0, drift_interval_s=4.0, namespace=NAMESPACE, max_unavailable=2)
    with World(control_plane, settings=settings, namespace=NAMESPACE) as w:
        w.apply(w.network(name="upgrade", clusterCIDR="10.247.0.0/16"))
        assert w.artifacts is not None
        w.artifacts.publish_release(old_version(w))
        yield w


def old_version(world: World) -> str:
    return versions(world)[0]


def new_version(world: World) -> str:
    return versions(world)[1]


def set_budget(world: World, max_unavailable: int) -> None:
    assert world.deps is not None
    world.deps.settings = dataclasses.replace(world.deps.settings, max_unavailable=max_unavailable)


def fleet(world: World, prefix: str, count: int, version: str) -> list[tuple[str, EmulatedHost]]:
    return upgrades.fleet(world, prefix, count, version, network="upgrade", timeout=TIMEOUT)


def slot_holders(world: World) -> list[str]:
    return upgrades.slot_holders(world, NAMESPACE)


def run_fleet_upgrade(world: World, prefix: str, count: int, max_unavailable: int) -> None:
    set_budget(world, max_unavailable)
    old, new = old_version(world), new_version(world)
    nodes = fleet(world, prefix, count, old)
    with UnavailableWatcher(world.cp, prefix) as watcher:
        assert watcher.most == 0, watcher.unavailable
        started = time.monotonic()
        for name, _ in nodes:
            set_version(world, name, new)
        for name, _ in nodes:
            world.wait_for(f"{name} on {new}", lambda n=name: upgraded(world, n, new), TIMEOUT)  # type: ignore[misc]
        elapsed = time.monotonic() - started
    assert watcher.most <= max_unavailable, f"{watcher.most} nodes unavailable at once: {watcher.unavailable}"
    # The budget was used, not bypassed: nodes really were cordoned, in parallel where allowed.
    assert watcher.most >= min(2, max_unavailable), watcher.most
    assert len(watcher.errors) < 5, watcher.errors
    for name, host in nodes:
        assert installed_binary(host, kc.KUBELET_EXE) == new
        assert installed_binary(host, kc.KUBE_PROXY_EXE) == new
        assert installed_binary(host, previous_path("kubelet.exe")) == old
        assert world.events(name, "Upgraded"), name
        assert not (world.must_get("node", name)["metadata"].get("annotations") or {}).get(
            CORDONED_ANNOTATION
        )
    assert slot_holders(world) == []
    print(f"\n{count} nodes upgraded {old} -> {new} with maxUnavailable {max_unavailable} in {elapsed:.1f}s")


def test_fleet_upgrade_respects_max_unavailable(world: World) -> None:
    run_fleet_upgrade(world, "fleet", 6, 2)
    assert world.deps is not None
    assert world.deps.metrics.upgrades.labels("succeeded")._value.get() >= 6
    assert world.deps.metrics.upgrades_in_flight._value.get() == 0


@pytest.mark.slow
def test_fleet_of_twenty_upgrade_respects_max_unavailable(world: World) -> None:
    run_fleet_upgrade(world, "big", 20, 3)


def test_pdb_blocks_drain_aborts_then_finishes_once_released(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A short drain bound, so the default policy (abort: uncordon, release, retry later) shows.
    monkeypatch.setattr(timeouts, "UPGRADE_DRAIN", 6.0)
    monkeypatch.setattr(timeouts, "UPGRADE_DRAIN_RETRY", 2.0)
    set_budget(world, 2)
    old, new = old_version(world), new_version(world)
    ((name, host),) = fleet(world, "pdb", 1, old)
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "guarded", "namespace": NAMESPACE, "labels": {"app": "guarded"}},
        "spec": {
            "nodeName": name,
            "os": {"name": "windows"},
            "automountServiceAccountToken": False,
            "terminationGracePeriodSeconds": 0,
            "containers": [{"name": "app", "image": "mcr.microsoft.com/windows/nanoserver:ltsc2022"}],
        },
    }
    pdb = {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": {"name": "guard", "namespace": NAMESPACE},
        "spec": {"minAvailable": 1, "selector": {"matchLabels": {"app": "guarded"}}},
    }
    world.wait_for("default ServiceAccount", lambda: world.get("serviceaccount", "default", NAMESPACE), 60)
    world.apply(pod, pdb)

    def pod_ready() -> bool:
        obj = world.get("pod", "guarded", NAMESPACE) or {}
        return (obj.get("status") or {}).get("phase") == "Running"

    world.wait_for("pod guarded Running", pod_ready, 60)
    world.wait_for(
        "PDB sees the pod healthy",
        lambda: ((world.get("pdb", "guard", NAMESPACE) or {}).get("status") or {}).get("currentHealthy") == 1,
        60,
    )
    set_version(world, name, new)

    def blocked() -> dict[str, Any] | None:
        c = world.condition(name, "DrainBlocked")
        return c if c and c["status"] == "True" else None

    condition = world.wait_for("DrainBlocked", blocked, TIMEOUT)
    assert f"{NAMESPACE}/guard" in condition["message"], condition
    assert world.phase(name) == "Draining"
    assert world.must_get("node", name)["spec"].get("unschedulable") is True
    assert installed_binary(host, kc.KUBELET_EXE) == old  # nothing swapped while pods are still there
    assert world.events(name, "DrainBlocked")

    # Blocked past the bound: the drain is given up for now, the node and its slot given back.
    world.wait_for("DrainAborted", lambda: world.events(name, "DrainAborted"), 60)
    world.wait_for(
        "node uncordoned", lambda: not world.must_get("node", name)["spec"].get("unschedulable"), 30
    )
    assert world.get("pod", "guarded", NAMESPACE) is not None
    assert installed_binary(host, kc.KUBELET_EXE) == old

    world.cp.kubectl("delete", "pdb", "guard", "-n", NAMESPACE)
    world.wait_for(f"{name} on {new}", lambda: upgraded(world, name, new), TIMEOUT)
    assert world.get("pod", "guarded", NAMESPACE) is None  # evicted, never deleted by us
    condition = world.condition(name, "DrainBlocked")
    assert condition is not None
    assert condition["status"] == "False"


def test_kubelet_never_ready_rolls_back_and_is_not_retried(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(timeouts, "UPGRADE_READY", timeouts.Poll(interval=0.5, deadline=8.0))
    set_budget(world, 2)
    old, new = old_version(world), new_version(world)
    ((name, host),) = fleet(world, "sick", 1, old)
    host.kubelet_never_ready.add(new)
    set_version(world, name, new)

    def failed() -> dict[str, Any] | None:
        c = world.condition(name, "UpgradeFailed")
        return c if c and c["status"] == "True" else None

    condition = world.wait_for("UpgradeFailed", failed, TIMEOUT)
    assert new in condition["message"], condition
    assert "NodeNotReady" in condition["message"], condition
    world.wait_for(f"{name} back on {old}", lambda: upgraded(world, name, old), TIMEOUT)
    status = world.must_get("windowsnode", name)["status"]
    assert status["upgrade"]["failedVersion"] == new
    assert installed_binary(host, kc.KUBELET_EXE) == old
    assert slot_holders(world) == []
    assert world.events(name, "RollingBack")

    # Not retried in a loop: over a window of several drift intervals no new attempt starts.
    swaps = len(host.actions_named("copy_file"))
    started = len(world.events(name, "UpgradeStarted"))
    time.sleep(10)
    assert len(host.actions_named("copy_file")) == swaps
    assert len(world.events(name, "UpgradeStarted")) == started == 1
    assert upgraded(world, name, old)

    # The rest of the spec still applies while that version stays refused: a new label reaches the
    # Node, on the old version, without another attempt at the new one.
    world.cp.kubectl(
        "patch", "windowsnode", name, "--type=merge", "-p", '{"spec":{"labels":{"example.com/pool":"blue"}}}'
    )
    world.wait_for(
        "the new label on the Node",
        lambda: world.must_get("node", name)["metadata"]["labels"].get("example.com/pool") == "blue",
        TIMEOUT,
    )
    assert len(host.actions_named("copy_file")) == swaps
    assert installed_binary(host, kc.KUBELET_EXE) == old
    assert upgraded(world, name, old)

    # Fixed, and asked to try again: the same version goes through.
    host.kubelet_never_ready.clear()
    world.cp.kubectl("annotate", "windowsnode", name, f"{RETRY_ANNOTATION}=true")
    world.wait_for(f"{name} on {new} after the retry", lambda: upgraded(world, name, new), TIMEOUT)
    obj = world.must_get("windowsnode", name)
    assert RETRY_ANNOTATION not in (obj["metadata"].get("annotations") or {})
    assert not (obj["status"].get("upgrade") or {}).get("failedVersion")


def test_version_newer_than_apiserver_is_refused(world: World) -> None:
    old = old_version(world)
    api = Version.parse(world.version)
    too_new = f"v{api.major}.{api.minor + 1}.0"
    ((name, host),) = fleet(world, "skew", 1, old)
    set_version(world, name, too_new)

    def blocked() -> dict[str, Any] | None:
        c = world.condition(name, "UpgradeBlocked")
        return c if c and c["status"] == "True" else None

    condition = world.wait_for("UpgradeBlocked", blocked, 60)
    assert condition["reason"] == "VersionSkew"
    assert "newer than kube-apiserver" in condition["message"]
    assert world.phase(name) == "Ready"
    assert not world.must_get("node", name)["spec"].get("unschedulable")
    assert installed_binary(host, kc.KUBELET_EXE) == old
    assert world.events(name, "UpgradeRefused")


def test_reboot_requested_by_annotation(world: World) -> None:
    set_budget(world, 2)
    ((name, host),) = fleet(world, "boot", 1, old_version(world))
    boots = host.call(lambda m: m.boot_count)
    world.cp.kubectl("annotate", "windowsnode", name, f"{REBOOT_ANNOTATION}=patch Tuesday")

    def done() -> bool:
        obj = world.get("windowsnode", name) or {}
        return (
            REBOOT_ANNOTATION not in (obj["metadata"].get("annotations") or {})
            and (obj.get("status") or {}).get("phase") == "Ready"
        )

    world.wait_for("reboot done", done, TIMEOUT)
    assert host.call(lambda m: m.boot_count) == boots + 1
    assert world.events(name, "Rebooted")
    node = world.must_get("node", name)
    assert not node["spec"].get("unschedulable")
    assert node_ready(node)
    assert slot_holders(world) == []


def test_upgrade_posts_csr_events(world: World) -> None:
    """The new kubelet's serving CSR is approved while the upgrade waits for Ready, and the admin sees
    it on the WindowsNode whichever approver (the CSR watch or the upgrade's wait) got there first."""
    set_budget(world, 2)
    old, new = old_version(world), new_version(world)
    ((name, host),) = fleet(world, "csrev", 1, old)
    before = {e["metadata"]["name"] for e in world.events(name, "CSRApproved")}
    # No serving certificate to reuse: the new kubelet asks for one as it starts.
    (host.state_dir / "kubelet" / "pki" / "kubelet-server-current.pem").unlink()
    set_version(world, name, new)
    world.wait_for(f"{name} on {new}", lambda: upgraded(world, name, new), TIMEOUT)
    kubelet = host.kubelet
    assert kubelet is not None
    assert kubelet.serving_csr_name, "the new kubelet asked for no serving certificate"
    csr = kubelet.serving_csr_name

    def approved_event() -> list[dict[str, Any]]:
        return [
            e
            for e in world.events(name, "CSRApproved")
            if e["metadata"]["name"] not in before and csr in e["message"]
        ]

    (event,) = world.wait_for(f"a CSRApproved Event for {csr}", approved_event, 30)
    assert "serving certificate" in event["message"], event
    assert event["type"] == "Normal"


def test_upgrade_of_deleted_windowsnode_stops_at_once(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    """Deleted while its upgrade waits for a kubelet that never turns Ready: the wait ends at once
    (no rollback, no waiting out UPGRADE_READY) and deletion cleans up and gives the slot back."""
    ready_deadline = 120.0
    monkeypatch.setattr(timeouts, "UPGRADE_READY", timeouts.Poll(interval=0.5, deadline=ready_deadline))
    set_budget(world, 2)
    old, new = old_version(world), new_version(world)
    ((name, host),) = fleet(world, "gone", 1, old)
    host.kubelet_never_ready.add(new)
    set_version(world, name, new)

    def verifying() -> bool:
        obj = world.get("windowsnode", name) or {}
        return ((obj.get("status") or {}).get("upgrade") or {}).get("step") == "Verifying"

    world.wait_for(f"{name} waiting for Ready on {new}", verifying, TIMEOUT)
    started = time.monotonic()
    world.cp.kubectl("delete", "windowsnode", name, "--wait=false")
    world.wait_for(f"{name} removed", lambda: world.get("windowsnode", name) is None, ready_deadline / 2)
    elapsed = time.monotonic() - started
    assert elapsed < ready_deadline / 2, elapsed
    assert not world.events(name, "RollingBack")
    assert world.get("node", name) is None
    assert slot_holders(world) == []
