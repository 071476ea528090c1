"""A WindowsNode the cluster stored but the operator's model refuses (stored under a looser schema).

The CRD is loosened for a moment, as an older schema would have been, so the apiserver stores values
today's model refuses; then the real schema is restored. The operator must say which field is
wrong (condition and Event), keep the network's reconcile going for the healthy nodes, and let the
object be deleted: the host cleaned when the object says which host it is, leftOnHost otherwise.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from winnode.lifecycle import kubelet_config as kc
from winnode.settings import Settings
from winnode.testing.cluster import ControlPlane
from winnode.testing.demo import World
from winnode.testing.emulator import HostSpec

ROOT = Path(__file__).resolve().parents[2]
TIMEOUT = 120.0
NETWORK = "unreadable"
SPEC = "/spec/versions/0/schema/openAPIV3Schema/properties/spec/properties"
BAD_URL = "https://mirror\u00a0.example/k8s"


@pytest.fixture(scope="module")
def world(control_plane: ControlPlane) -> Iterator[World]:
    with World(
        control_plane, settings=Settings(metrics_port=0, drift_interval_s=2.0), namespace="wn-unreadable"
    ) as w:
        w.apply(w.network(name=NETWORK, clusterCIDR="10.242.0.0/16"))
        yield w


@contextmanager
def loosened(world: World, *removed: str) -> Iterator[None]:
    """The WindowsNode CRD without these schema keywords (JSON pointers) until the block ends."""
    patch = [{"op": "remove", "path": p} for p in removed]
    world.cp.kubectl("patch", "crd", "windowsnodes.winnode.io", "--type=json", "-p", json.dumps(patch))
    try:
        yield
    finally:
        world.cp.kubectl("apply", "-f", str(ROOT / "crds" / "windowsnodes.winnode.io.yaml"))


def create_loosely(world: World, doc: dict[str, Any], *removed: str) -> None:
    # The apiserver needs a moment to serve a changed schema: retry the create until it is stored.
    with loosened(world, *removed):

        def stored() -> bool:
            out = world.cp.kubectl("create", "-f", "-", input=json.dumps(doc), check=False)
            return out.returncode == 0 or "AlreadyExists" in out.stderr

        world.wait_for("the loosened schema to be served", stored, 30.0)


def condition(world: World, name: str, type_: str) -> dict[str, Any] | None:
    obj = world.get("windowsnode", name) or {}
    found = [c for c in (obj.get("status") or {}).get("conditions") or [] if c["type"] == type_]
    return found[0] if found else None


def test_unreadable_spec_is_named_and_the_network_goes_on(world: World) -> None:
    healthy = world.add_host(HostSpec.server2022(hostname="unr-ok"))
    world.apply(world.windows_node(healthy, "unr-ok", network=NETWORK))
    bad_host = world.add_host(HostSpec.server2022(hostname="unr-bad"))
    doc = world.windows_node(bad_host, "unr-bad", network=NETWORK)
    doc["spec"]["artifacts"]["baseURL"] = BAD_URL
    create_loosely(world, doc, f"{SPEC}/artifacts/properties/baseURL/x-kubernetes-validations")

    found = world.wait_for(
        "SpecReadable=False on unr-bad", lambda: condition(world, "unr-bad", "SpecReadable"), TIMEOUT
    )
    assert found["status"] == "False"
    assert found["reason"] == "SpecUnreadable"
    assert "spec.artifacts.baseURL" in found["message"]
    events = world.wait_for(
        "the SpecUnreadable Event", lambda: world.events("unr-bad", "SpecUnreadable"), TIMEOUT
    )
    assert "spec.artifacts.baseURL" in events[0]["message"]
    assert bad_host.actions == [], "winnode did not touch the host of an object it cannot read"

    # The healthy node on the same network joins, and the network's status counts it.
    world.wait_phase("unr-ok", "Ready", TIMEOUT)

    def counted() -> bool:
        network = world.must_get("windowsnetwork", NETWORK)
        allocations = (network.get("status") or {}).get("allocations") or []
        return (
            any(a["node"] == "unr-ok" for a in allocations)
            and (network["status"].get("nodesApplied") or 0) >= 1
        )

    world.wait_for("the network to count the healthy node", counted, TIMEOUT)

    # Deleting the unreadable object finishes; it says which host it is, so that host is cleaned.
    world.cp.kubectl("delete", "windowsnode", "unr-bad", "--wait=false")
    world.wait_for("unr-bad gone", lambda: world.get("windowsnode", "unr-bad") is None, TIMEOUT)
    assert bad_host.call(lambda m: m.service(kc.KUBELET_SERVICE)) is None


def test_unreadable_host_fields_leave_the_host_and_report_it(world: World) -> None:
    host = world.add_host(HostSpec.server2022(hostname="unr-addr"))
    doc = world.windows_node(host, "unr-addr", network=NETWORK)
    doc["spec"]["nodeName"] = "Not_A_DNS_Name"
    create_loosely(world, doc, f"{SPEC}/nodeName/x-kubernetes-validations")
    found = world.wait_for(
        "SpecReadable=False on unr-addr", lambda: condition(world, "unr-addr", "SpecReadable"), TIMEOUT
    )
    assert "spec.nodeName" in found["message"]

    world.cp.kubectl("delete", "windowsnode", "unr-addr", "--wait=false")
    world.wait_for("unr-addr gone", lambda: world.get("windowsnode", "unr-addr") is None, TIMEOUT)
    events = world.events("unr-addr", "HostNotCleaned")
    assert events, "an Event says the host was not cleaned"
    assert "spec.nodeName" in events[0]["message"]
    assert "service kubelet" in events[0]["message"]
