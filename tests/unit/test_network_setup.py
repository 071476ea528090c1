"""A node waiting for its subnet keeps only the spec it will run, not the whole WindowsNetwork."""

from __future__ import annotations

import gc
from typing import Any

import pytest
from tests.unit.test_api_models import NETWORK_SPEC, NODE_SPEC

from winnode.api import WindowsNetwork, WindowsNode
from winnode.lifecycle import network_setup

FLEET = 500


class NetworkApi:
    """GET of one WindowsNetwork holding a subnet allocation per node of a large fleet."""

    async def request(self, method: str, path: str, **kw: Any) -> Any:
        assert (method, path.rsplit("/", 1)[-1]) == ("GET", "overlay")
        allocations = [
            {"node": f"win-{i:04d}", "subnet": f"10.{128 + i // 256}.{i % 256}.0/24"} for i in range(FLEET)
        ]
        return {
            "apiVersion": "winnode.io/v1alpha1",
            "kind": "WindowsNetwork",
            "metadata": {"name": "overlay", "generation": 3, "resourceVersion": "7"},
            "spec": {**NETWORK_SPEC, "clusterCIDR": "10.128.0.0/9"},
            "status": {"allocations": allocations},
        }


def live_networks() -> int:
    gc.collect()
    return sum(isinstance(o, WindowsNetwork) for o in gc.get_objects())


async def test_the_network_read_whole_is_let_go_before_waiting_for_a_subnet(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    held_while_waiting: list[int] = []

    async def allocate_subnet(store: Any, network: str, node: str, node_name: str | None = None) -> str:
        # Stands for the wait at the allocator's per-network lock, where a whole fleet may queue.
        held_while_waiting.append(live_networks())
        return "10.250.0.0/24"

    monkeypatch.setattr(network_setup, "allocate_subnet", allocate_subnet)
    node = WindowsNode.model_validate({"metadata": {"name": "win-0001"}, "spec": NODE_SPEC})
    before = live_networks()

    got = await network_setup.node_network(NetworkApi(), node)  # type: ignore[arg-type]

    assert held_while_waiting == [before]
    assert (got.name, got.subnet, got.generation, got.held) == ("overlay", "10.250.0.0/24", 3, False)
    assert got.spec.cluster_cidr == "10.128.0.0/9"
