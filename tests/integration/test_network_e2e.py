"""A WindowsNetwork end to end, with the operator: three nodes on an overlay network, a spec change
rolled across them one node at a time, and a network that cannot go while nodes use it.

Real apiserver + kcm, emulated Windows hosts over real WS-Management, emulated kubelets; the host
model is read to check what each host really got.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import client as k8s
from kubernetes import watch
from kubernetes.client.exceptions import ApiException

from winnode.api import WindowsNetworkSpec
from winnode.host.actions import HnsNetworkType
from winnode.lifecycle import kubelet_config as kc
from winnode.lifecycle.network_rollout import NODE_ROLLOUT_CONDITION
from winnode.network.cni import render_cni_config
from winnode.network.hns import HNS_NETWORK_NAME, plan_subnet
from winnode.settings import Settings
from winnode.testing.cluster import ControlPlane
from winnode.testing.demo import World
from winnode.testing.emulator import EmulatedHost, HostSpec

TIMEOUT = 180.0
NETWORK = "net-e2e"
CLUSTER_CIDR = "10.250.0.0/16"
NAMES = ("net-a", "net-b", "net-c")


@pytest.fixture(scope="module")
def world(control_plane: ControlPlane) -> Iterator[World]:
    with World(
        control_plane, settings=Settings(metrics_port=0, drift_interval_s=2.0), namespace="wn-net"
    ) as w:
        w.apply(w.network(NETWORK, clusterCIDR=CLUSTER_CIDR, vxlan={"vni": 4100, "port": 4789}))
        yield w


@pytest.fixture(scope="module")
def nodes(world: World) -> dict[str, EmulatedHost]:
    hosts = {name: world.add_host(HostSpec.server2022(hostname=name)) for name in NAMES}
    world.apply(*(world.windows_node(host, name, network=NETWORK) for name, host in hosts.items()))
    for name in NAMES:
        world.wait_phase(name, "Ready", TIMEOUT)
    return hosts


def network_spec(world: World) -> tuple[WindowsNetworkSpec, int]:
    obj = world.must_get("windowsnetwork", NETWORK)
    return WindowsNetworkSpec.model_validate(obj["spec"]), int(obj["metadata"]["generation"])


def on_host(host: EmulatedHost) -> dict[str, Any]:
    def take(m: Any) -> dict[str, Any]:
        hns = m.hns_networks[HNS_NETWORK_NAME]
        proxy = m.service(kc.KUBE_PROXY_SERVICE)
        return {
            "hns": (hns.type, hns.address_prefix, hns.gateway, hns.vsid, hns.vxlan_port),
            "cni": m.file(kc.CNI_CONF).text,
            "proxy": (proxy.state.value, proxy.program[1:]),
            "proxy_config": m.file(kc.KUBE_PROXY_CONFIG).text,
        }

    result: dict[str, Any] = host.call(take)
    return result


def check_host(world: World, name: str, host: EmulatedHost, spec: WindowsNetworkSpec) -> None:
    subnet = world.must_get("windowsnode", name)["status"]["subnet"]
    state = on_host(host)
    vxlan = spec.effective_vxlan
    assert vxlan is not None
    assert state["hns"] == (
        HnsNetworkType.OVERLAY,
        subnet,
        plan_subnet(subnet).gateway,
        vxlan.vni,
        None if vxlan.port == 4789 else vxlan.port,  # no VxlanPort policy at HNS's default port
    )
    assert state["cni"] == render_cni_config(spec, subnet, host.address)
    proxy_state, proxy_args = state["proxy"]
    assert proxy_state == "Running"
    assert proxy_args[0] == "--windows-service"
    assert f"--config={kc.KUBE_PROXY_CONFIG}" in proxy_args
    assert state["proxy_config"] == kc.kube_proxy_configuration(name, spec, subnet)


def test_three_overlay_nodes_get_distinct_subnets_and_matching_hosts(
    world: World, nodes: dict[str, EmulatedHost]
) -> None:
    spec, generation = network_spec(world)
    subnets = {n: world.must_get("windowsnode", n)["status"]["subnet"] for n in NAMES}
    assert len(set(subnets.values())) == 3
    assert all(
        ipaddress.ip_network(s).subnet_of(ipaddress.ip_network(CLUSTER_CIDR)) for s in subnets.values()
    )  # type: ignore[arg-type]
    network = world.must_get("windowsnetwork", NETWORK)
    allocations = {a["node"]: a for a in network["status"]["allocations"]}
    for name, host in nodes.items():
        assert allocations[name]["subnet"] == subnets[name]
        assert allocations[name]["sourceVIP"] == plan_subnet(subnets[name]).source_vip
        assert world.must_get("node", name)["spec"]["podCIDR"] == subnets[name]
        check_host(world, name, host, spec)
        proxy_config = on_host(host)["proxy_config"]
        assert f"sourceVip: {allocations[name]['sourceVIP']}" in proxy_config
        assert "mode: kernelspace" in proxy_config
        assert f"networkName: {HNS_NETWORK_NAME}" in proxy_config
        applied = world.must_get("windowsnode", name)["status"]["appliedNetwork"]
        assert (applied["name"], applied["generation"]) == (NETWORK, generation)

    def settled() -> dict[str, Any] | None:
        status = world.must_get("windowsnetwork", NETWORK).get("status") or {}
        conditions = {c["type"]: c for c in status.get("conditions") or []}
        ready = conditions.get("Ready", {}).get("status") == "True"
        return status if ready and status.get("nodesApplied") == 3 else None

    status = world.wait_for("the network's status to count three applied nodes", settled, 60.0)
    conditions = {c["type"]: c for c in status["conditions"]}
    assert conditions["InUse"]["status"] == "True"
    assert all(n in conditions["InUse"]["message"] for n in NAMES)
    assert conditions["Valid"]["status"] == "True"
    assert status["nodesFailed"] == 0
    assert status["observedGeneration"] == generation


class RolloutWatcher:
    """Watches WindowsNodes; remembers which were reconfiguring for the network at the same time."""

    def __init__(self, api: k8s.ApiClient) -> None:
        self.api = k8s.CustomObjectsApi(api)
        self.active: set[str] = set()
        self.max_active = 0
        self.seen: list[str] = []
        self.version: str | None = None
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self.stop.is_set():
            kwargs: dict[str, Any] = {"timeout_seconds": 2}
            if self.version:
                kwargs["resource_version"] = self.version
            try:
                for event in watch.Watch().stream(
                    self.api.list_cluster_custom_object, "winnode.io", "v1alpha1", "windowsnodes", **kwargs
                ):
                    self._record(event)
                    if self.stop.is_set():
                        break
            except ApiException as exc:
                # A resourceVersion too old (410) is listed again, anything else retried: a dead
                # watcher thread would silently miss a node's turn.
                if exc.status == 410:
                    self.version = None
                time.sleep(0.2)

    def _record(self, event: dict[str, Any]) -> None:
        obj = event["object"]
        if event.get("type") == "ERROR" or not isinstance(obj, dict):
            self.version = None
            return
        self.version = obj["metadata"]["resourceVersion"]
        name = obj["metadata"]["name"]
        if name not in NAMES:
            return
        conditions = {c["type"]: c for c in (obj.get("status") or {}).get("conditions") or []}
        rolling = conditions.get(NODE_ROLLOUT_CONDITION, {}).get("status") == "True"
        if rolling and name not in self.active:
            self.active.add(name)
            self.seen.append(name)
        elif not rolling:
            self.active.discard(name)
        self.max_active = max(self.max_active, len(self.active))

    def __enter__(self) -> RolloutWatcher:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(10)


def test_network_change_reaches_every_node_one_at_a_time(
    world: World, nodes: dict[str, EmulatedHost], kube_api: k8s.ApiClient
) -> None:
    _, before = network_spec(world)
    with RolloutWatcher(kube_api) as watcher:
        patch = {"spec": {"vxlan": {"vni": 4200, "port": 4789}, "outboundNATExceptions": ["192.168.50.0/24"]}}
        world.cp.kubectl("patch", "windowsnetwork", NETWORK, "--type=merge", "-p", json.dumps(patch))
        spec, generation = network_spec(world)
        assert generation == before + 1

        def done() -> bool:
            gens = [
                (world.must_get("windowsnode", n)["status"].get("appliedNetwork") or {}).get("generation")
                for n in NAMES
            ]
            status = world.must_get("windowsnetwork", NETWORK).get("status") or {}
            ready = {c["type"]: c["status"] for c in status.get("conditions") or []}.get("Ready")
            return gens == [generation] * 3 and ready == "True" and "rollout" not in status

        world.wait_for("the change to reach every node", done, 3 * TIMEOUT)
    assert watcher.max_active == 1, f"{watcher.max_active} nodes were reconfigured at the same time"
    assert watcher.seen == list(NAMES), f"rollout order {watcher.seen}"
    for name, host in nodes.items():
        check_host(world, name, host, spec)
        assert world.phase(name) == "Ready"
        assert world.events(name, "NetworkApplied"), "a Normal Event says the new network is applied"


def test_rollout_resumes_with_the_same_node_after_an_operator_restart(
    world: World, nodes: dict[str, EmulatedHost], kube_api: k8s.ApiClient
) -> None:
    # Slow hosts, so that the operator is stopped while a node is being reconfigured.
    for host in nodes.values():
        host.faults.latency_s = 0.05
    try:
        with RolloutWatcher(kube_api) as watcher:
            patch = {"spec": {"outboundNATExceptions": ["192.168.60.0/24"]}}
            world.cp.kubectl("patch", "windowsnetwork", NETWORK, "--type=merge", "-p", json.dumps(patch))
            spec, generation = network_spec(world)

            def turn() -> str | None:
                status = world.must_get("windowsnetwork", NETWORK).get("status") or {}
                rollout = status.get("rollout") or {}
                return rollout.get("node") if rollout.get("generation") == generation else None

            world.wait_for("the rollout to start", turn, TIMEOUT)
            world.stop_operator()
            # The turn is recorded in the API, not in the operator's memory: the restarted operator
            # carries on with that node, then the next ones, still one at a time.
            held = turn()
            assert held is not None
            world.start_operator()

            def done() -> bool:
                gens = [
                    (world.must_get("windowsnode", n)["status"].get("appliedNetwork") or {}).get("generation")
                    for n in NAMES
                ]
                return gens == [generation] * 3

            world.wait_for("the change to reach every node after the restart", done, 3 * TIMEOUT)
    finally:
        for host in nodes.values():
            host.faults.latency_s = 0.0
    assert watcher.max_active == 1, f"{watcher.max_active} nodes were reconfigured at the same time"
    assert watcher.seen == list(NAMES), f"rollout order {watcher.seen} (operator stopped during {held})"
    for name, host in nodes.items():
        check_host(world, name, host, spec)


def test_overlap_missed_by_admission_is_flagged_invalid(world: World, nodes: dict[str, EmulatedHost]) -> None:
    # No webhook runs here: the operator's Valid condition is the backstop.
    world.apply(world.network("net-overlap", clusterCIDR="10.250.128.0/17"))

    def invalid() -> dict[str, Any] | None:
        status = world.must_get("windowsnetwork", "net-overlap").get("status") or {}
        valid = {c["type"]: c for c in status.get("conditions") or []}.get("Valid") or {}
        return valid if valid.get("status") == "False" else None

    valid = world.wait_for("net-overlap to be marked invalid", invalid, 60.0)
    assert valid["reason"] == "OverlapsOtherNetwork"
    assert (
        f"spec.clusterCIDR 10.250.128.0/17 overlaps spec.clusterCIDR {CLUSTER_CIDR} of WindowsNetwork {NETWORK}"
        in (valid["message"])
    )
    world.cp.kubectl("delete", "windowsnetwork", "net-overlap", "--timeout=60s")


def test_connection_dropped_by_creating_the_hns_network_is_survived(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="winnode")
    host = world.add_host(HostSpec.server2022(hostname="net-blip"))
    host.faults.hns_network_blip = True
    world.apply(world.network("net-blip", clusterCIDR="10.251.0.0/16"))
    world.apply(world.windows_node(host, "net-blip", network="net-blip"))
    world.wait_phase("net-blip", "Ready", TIMEOUT)
    assert not host.faults.hns_network_blip, "the blip was injected"
    # The blip comes with the first network on the adapter (External, which creates the vSwitch);
    # each network was created once, not again.
    created = [(a.params or {}).get("name") for a in host.actions_named("hns_network_ensure")]
    assert created == ["External", "winnode"], created
    assert world.events("net-blip", "Configured")
    # The Event is one short line; what changed on the host, the reconnect included, is logged.
    configured = [r.getMessage() for r in caplog.records if "net-blip: configured:" in r.getMessage()]
    assert any("reconnected" in m for m in configured), configured
    assert world.events("net-blip", "HostUnreachable") == [], "the drop was not reported as a failure"
    world.cp.kubectl("delete", "windowsnode", "net-blip", "--wait=false")
    world.wait_for("net-blip to be removed", lambda: world.get("windowsnode", "net-blip") is None, TIMEOUT)


def test_deleting_a_network_in_use_is_held_until_no_node_uses_it(
    world: World, nodes: dict[str, EmulatedHost]
) -> None:
    world.cp.kubectl("delete", "windowsnetwork", NETWORK, "--wait=false")

    def blocked() -> dict[str, Any] | None:
        obj = world.must_get("windowsnetwork", NETWORK)
        conditions = {c["type"]: c for c in (obj.get("status") or {}).get("conditions") or []}
        in_use = conditions.get("InUse", {})
        return in_use if in_use.get("reason") == "DeletionBlocked" else None

    in_use = world.wait_for("the deletion to be held", blocked, 60.0)
    assert all(n in in_use["message"] for n in NAMES), in_use["message"]
    assert world.must_get("windowsnetwork", NETWORK)["metadata"]["finalizers"] == ["winnode.io/finalizer"]

    world.cp.kubectl("delete", "windowsnodes", *NAMES, "--wait=false")
    world.wait_for(
        "the WindowsNodes to be removed",
        lambda: all(world.get("windowsnode", n) is None for n in NAMES),
        TIMEOUT,
    )
    world.wait_for("the network to go", lambda: world.get("windowsnetwork", NETWORK) is None, 60.0)
