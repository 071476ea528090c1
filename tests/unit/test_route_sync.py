"""RouteSync coalesces: a burst of Node changes costs each host one route update, and a host whose
routes did not change is not contacted. The hosts are emulated host models; the API is a fake
that serves the three lists route sync reads."""

from __future__ import annotations

import asyncio
import base64
import itertools
from typing import Any

from winnode.host import actions as A
from winnode.lifecycle.route_sync import RouteSync
from winnode.network.hns import HnsHost, network_params
from winnode.network.routes import VTEP_MAC_ANNOTATION
from winnode.settings import Settings
from winnode.testing.hostmodel import HostModel, new_host_model

# The HNS of a fully updated Server 2022 host (the emulator's default build).
HNS_2022 = HnsHost(version=(13, 2))

NETWORK_SPEC = {"mode": "overlay", "clusterCIDR": "10.244.0.0/16", "serviceCIDR": "10.96.0.0/12"}


class FakeKube:
    def __init__(self) -> None:
        self.nodes: dict[str, dict[str, Any]] = {}
        self.windows_nodes: dict[str, dict[str, Any]] = {}

    async def request(self, method: str, path: str, **kwargs: Any) -> Any:
        parts = path.strip("/").split("/")
        if parts[:2] == ["api", "v1"] and parts[2] == "nodes":
            if len(parts) == 3:
                return {"items": list(self.nodes.values())}
            node = self.nodes.get(parts[3])
            if method == "PATCH" and node is not None:
                node["metadata"].setdefault("annotations", {}).update(
                    kwargs["body"]["metadata"]["annotations"]
                )
            return node
        if "secrets" in parts:
            data = {
                k: base64.b64encode(v.encode()).decode()
                for k, v in {"username": "u", "password": "p"}.items()
            }
            return {"metadata": {"resourceVersion": "1"}, "type": "kubernetes.io/basic-auth", "data": data}
        if parts[-1] == "windowsnodes":
            return {"items": list(self.windows_nodes.values())}
        if "windowsnodes" in parts:
            return self.windows_nodes.get(parts[-1])
        if parts[-1] == "windowsnetworks":
            return {"items": [{"metadata": {"name": "net"}, "spec": NETWORK_SPEC}]}
        if "windowsnetworks" in parts:
            return {"metadata": {"name": "net"}, "spec": NETWORK_SPEC}
        raise AssertionError(f"unexpected request {method} {path}")

    async def list_pages(self, path: str, query: Any = None, *, page_size: int = 2) -> Any:
        """Kube.list_pages, two items a page so a pass always reads more than one."""
        items = (await self.request("GET", path, query=query))["items"]
        for start in range(0, len(items), page_size):
            yield items[start : start + page_size]


class ModelHost:
    # Route syncs running at once, over all hosts (a class attribute: reset by each test).
    running = 0
    peak = 0
    # Host name -> loop times its route syncs started.
    started: dict[str, list[float]] = {}

    def __init__(self, model: HostModel, calls: dict[str, int]) -> None:
        self.model = model
        self.calls = calls

    async def run(self, params: A.Params) -> A.Result:
        self.calls[self.model.hostname] = self.calls.get(self.model.hostname, 0) + 1
        ModelHost.started.setdefault(self.model.hostname, []).append(asyncio.get_running_loop().time())
        ModelHost.running += 1
        ModelHost.peak = max(ModelHost.peak, ModelHost.running)
        try:
            await asyncio.sleep(0.01)
            return await self.model.execute(params)
        finally:
            ModelHost.running -= 1


class FakeDeps:
    def __init__(self, kube: FakeKube, models: dict[str, HostModel], calls: dict[str, int]) -> None:
        self.kube = kube
        self.host_factory = lambda node, creds: ModelHost(models[node.metadata.name], calls)
        self.settings = Settings(winrm_global_concurrency=2)


def add(kube: FakeKube, models: dict[str, HostModel], i: int) -> dict[str, Any]:
    name, address, subnet = f"w{i}", f"10.0.0.{i}", f"10.244.{i}.0/24"
    model = new_host_model(name, addresses=[address])
    models[name] = model
    kube.windows_nodes[name] = {
        "metadata": {"name": name, "uid": name},
        "spec": {
            "address": address,
            "network": "net",
            "winrm": {"auth": "basic", "credentialsSecretRef": {"namespace": "n", "name": "s"}},
        },
        "status": {"phase": "Ready", "subnet": subnet},
    }
    node = {
        "metadata": {"name": name, "labels": {"kubernetes.io/os": "windows"}, "annotations": {}},
        "spec": {"podCIDR": subnet},
        "status": {"addresses": [{"type": "InternalIP", "address": address}]},
    }
    kube.nodes[name] = node
    return node


async def _settle(sync: RouteSync, kube: FakeKube, rounds: int = 40) -> None:
    for _ in range(rounds):
        await asyncio.sleep(0.02)
        for node in list(kube.nodes.values()):
            sync.node_event("MODIFIED", node)


def test_a_burst_of_joins_is_one_update_per_host_and_routes_reach_everyone() -> None:
    async def scenario() -> tuple[dict[str, int], dict[str, HostModel], int]:
        kube, models, calls = FakeKube(), {}, {}
        ModelHost.running = ModelHost.peak = 0
        sync = RouteSync(FakeDeps(kube, models, calls), debounce_s=0.2, min_spacing_s=0.0)  # type: ignore[arg-type]
        for i in range(1, 11):
            await models_network(add(kube, models, i), models)
        for node in list(kube.nodes.values()):
            sync.node_event("ADDED", node)  # ten joins at once
        await _settle(sync, kube)
        first_wave = dict(calls)
        # Each host published its VTEP once; that second wave reached every host once more.
        await asyncio.sleep(0.5)
        await _settle(sync, kube)
        idle_before = dict(calls)
        sync.node_event("MODIFIED", kube.nodes["w1"])  # nothing that routing cares about changed
        await asyncio.sleep(0.5)
        await sync.stop()
        assert calls == idle_before, "an unchanged Node contacts no host"
        return first_wave, models, max(calls.values())

    first_wave, models, most = asyncio.run(scenario())
    print(f"route updates per host after a burst of 10 joins: {most}")
    assert most <= 3, f"a burst of 10 joins cost a host {most} updates"
    # Each host's route list is built only by a worker holding one of the transport's slots (2 here).
    assert ModelHost.peak == 2, ModelHost.peak
    for name, model in models.items():
        routes = {
            r["DestinationPrefix"] for r in model.hns_networks["winnode"].policies_of("RemoteSubnetRoute")
        }
        assert len(routes) == 9, (name, routes)
    assert all(v >= 1 for v in first_wave.values())


async def models_network(node: dict[str, Any], models: dict[str, HostModel]) -> None:
    name = node["metadata"]["name"]
    subnet = node["spec"]["podCIDR"]
    await models[name].execute(
        network_params(
            HNS_2022,
            name="winnode",
            type_=A.HnsNetworkType.OVERLAY,
            prefix=subnet,
            gateway=subnet.replace(".0/24", ".1"),
            vsid=4096,
        )
    )
    assert VTEP_MAC_ANNOTATION not in node["metadata"]["annotations"]


def test_joins_one_by_one_update_a_host_at_most_once_per_spacing() -> None:
    """A fleet joining node by node changes every host's routes at every join: each host is updated
    at once after a quiet spell, then at most once per spacing, and ends with every route."""
    spacing = 0.4

    async def scenario() -> tuple[float, dict[str, HostModel]]:
        kube, models, calls = FakeKube(), {}, {}
        ModelHost.running = ModelHost.peak = 0
        ModelHost.started = {}
        sync = RouteSync(
            FakeDeps(kube, models, calls),  # type: ignore[arg-type]
            debounce_s=0.02,
            min_spacing_s=spacing,
            fleet_rate=0.0,
        )
        t0 = asyncio.get_running_loop().time()
        for i in range(1, 13):
            await models_network(add(kube, models, i), models)
            sync.node_event("ADDED", kube.nodes[f"w{i}"])
            await asyncio.sleep(0.1)
        for _ in range(3):
            await asyncio.sleep(spacing)
            await _settle(sync, kube, rounds=10)  # the VTEP MACs published meanwhile
        await asyncio.sleep(spacing + 0.2)
        await sync.stop()
        return t0, models

    t0, models = asyncio.run(scenario())
    started = ModelHost.started
    print("route updates per host while 12 joined one by one:", {h: len(t) for h, t in started.items()})
    assert started["w1"][0] - t0 < spacing, "the first change after a quiet spell waits for no spacing"
    for host, times in started.items():
        gaps = [b - a for a, b in itertools.pairwise(times)]
        assert all(g >= spacing * 0.95 for g in gaps), (host, gaps)
    for name, model in models.items():
        routes = {
            r["DestinationPrefix"] for r in model.hns_networks["winnode"].policies_of("RemoteSubnetRoute")
        }
        assert len(routes) == 11, (name, routes)


def test_a_host_synced_before_its_node_registered_publishes_once_the_node_can_carry_it() -> None:
    """The first sync of a joining host can finish before its kubelet registers the Node; the
    routes then need no new sync, yet the Node must still get the VTEP MAC peers route by."""

    async def scenario() -> tuple[dict[str, Any], int, int]:
        kube, models, calls = FakeKube(), {}, {}
        sync = RouteSync(FakeDeps(kube, models, calls), debounce_s=0.05, min_spacing_s=0.0)  # type: ignore[arg-type]
        for i in (1, 2):
            await models_network(add(kube, models, i), models)
        late = kube.nodes.pop("w2")
        sync.node_event("ADDED", kube.nodes["w1"])
        await _settle(sync, kube, rounds=20)
        before = calls.get("w2", 0)
        assert before >= 1, "w2 synced its routes while its Node was not registered yet"
        assert VTEP_MAC_ANNOTATION not in late["metadata"]["annotations"]
        kube.nodes["w2"] = late
        sync.node_event("ADDED", late)
        await _settle(sync, kube, rounds=20)
        await sync.stop()
        return late, before, calls["w2"]

    node, before, after = asyncio.run(scenario())
    assert node["metadata"]["annotations"].get(VTEP_MAC_ANNOTATION), node["metadata"]
    assert after == before, "w2's own routes did not change when its Node registered: no new sync"


def test_only_what_routing_reads_of_a_windows_node_starts_a_pass() -> None:
    async def scenario() -> list[int]:
        kube, models, calls = FakeKube(), {}, {}
        sync = RouteSync(FakeDeps(kube, models, calls), debounce_s=0.05, min_spacing_s=0.0)  # type: ignore[arg-type]
        body = {
            "metadata": {"name": "w1"},
            "spec": {"network": "net"},
            "status": {"phase": "Ready", "subnet": "10.244.1.0/24", "conditions": []},
        }
        passes = []

        async def after(event: dict[str, Any]) -> None:
            sync.windows_node_event("MODIFIED", event)
            await asyncio.sleep(0.2)
            passes.append(sync.stats.passes)

        await after(body)  # first sight: a pass
        # A condition, a drift repair, Ready <-> Degraded: routing reads none of it.
        await after({**body, "status": {**body["status"], "conditions": [{"type": "Drifted"}]}})
        await after({**body, "status": {**body["status"], "phase": "Degraded"}})
        await after({**body, "status": {**body["status"], "phase": "Deconfiguring"}})  # leaves the routed
        await after({**body, "spec": {"network": "net", "paused": True}})
        sync.windows_node_event("DELETED", body)
        await asyncio.sleep(0.2)
        passes.append(sync.stats.passes)
        await sync.stop()
        return passes

    assert asyncio.run(scenario()) == [1, 1, 1, 2, 3, 4]
