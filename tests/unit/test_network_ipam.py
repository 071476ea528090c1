"""Per-node subnet allocation: the pure chooser, and read-modify-write under concurrency."""

from __future__ import annotations

import asyncio
import ipaddress
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from winnode.api import SubnetAllocation, WindowsNetworkSpec
from winnode.api.common import Condition
from winnode.network import ipam
from winnode.network.ipam import (
    AllocationState,
    SubnetError,
    allocate_subnet,
    choose_subnet,
    first_free_subnet,
    release_subnet,
    subnet_capacity,
)


def spec(cluster: str = "10.244.0.0/16", prefix: int = 24) -> WindowsNetworkSpec:
    return WindowsNetworkSpec.model_validate(
        {
            "mode": "overlay",
            "clusterCIDR": cluster,
            "serviceCIDR": "10.96.0.0/12",
            "nodeSubnetPrefixLength": prefix,
        }
    )


class MemoryStore:
    """A WindowsNetwork status with resourceVersion semantics; each await yields to other tasks so
    concurrent allocators really interleave between read and write."""

    def __init__(
        self, network_spec: WindowsNetworkSpec, pod_cidrs: dict[str, list[str]] | None = None
    ) -> None:
        self.spec = network_spec
        self.allocations: list[SubnetAllocation] = []
        self.conditions: list[Condition] = []
        self.version = 1
        self.conflicts = 0
        self.pod_cidrs = pod_cidrs or {}

    async def read(self, network: str) -> AllocationState | None:
        await asyncio.sleep(random.random() / 1000)
        return AllocationState(self.spec, list(self.allocations), list(self.conditions), str(self.version))

    async def write(
        self,
        network: str,
        allocations: list[SubnetAllocation],
        conditions: list[Condition],
        resource_version: str,
    ) -> bool:
        await asyncio.sleep(random.random() / 1000)
        if resource_version != str(self.version):
            self.conflicts += 1
            return False
        self.allocations, self.conditions = list(allocations), list(conditions)
        self.version += 1
        return True

    async def pod_cidrs_by_node(self) -> dict[str, list[str]]:
        return self.pod_cidrs


@given(
    prefix=st.integers(min_value=21, max_value=28),
    taken=st.lists(st.integers(min_value=0, max_value=15), unique=True, max_size=16),
)
@settings(max_examples=60, deadline=None)
def test_choose_never_overlaps_and_is_inside(prefix: int, taken: list[int]) -> None:
    network = spec("10.10.0.0/20", prefix)
    subnets = [str(s) for s in ipaddress.IPv4Network("10.10.0.0/20").subnets(new_prefix=prefix)]
    allocations = [SubnetAllocation(node=f"n{i}", subnet=subnets[i]) for i in taken if i < len(subnets)]
    chosen = choose_subnet(network, allocations, "new")
    if len(allocations) == len(subnets):
        assert chosen is None
        return
    assert chosen is not None
    net = ipaddress.IPv4Network(chosen)
    assert net.prefixlen == prefix
    assert net.subnet_of(ipaddress.IPv4Network("10.10.0.0/20"))
    assert not any(net.overlaps(ipaddress.IPv4Network(a.subnet)) for a in allocations)


def test_choose_returns_existing_and_skips_foreign_pod_cidrs() -> None:
    network = spec()
    allocations = [SubnetAllocation(node="a", subnet="10.244.0.0/24")]
    assert choose_subnet(network, allocations, "a") == "10.244.0.0/24"
    # A Linux node already uses 10.244.1.0/24 (and a bigger block overlapping .2 and .3).
    assert choose_subnet(network, allocations, "b", ["10.244.1.0/24", "10.244.2.0/23"]) == "10.244.4.0/24"


async def test_concurrent_allocations_in_one_process_take_turns() -> None:
    store = MemoryStore(spec("10.20.0.0/22", 26))  # 16 subnets
    nodes = [f"node-{i}" for i in range(16)]
    results = await asyncio.gather(*(allocate_subnet(store, "net", n) for n in nodes))
    assert len(set(results)) == 16
    assert {a.node: a.subnet for a in store.allocations} == dict(zip(nodes, results, strict=True))
    assert store.conflicts == 0, "allocators of one process wait for each other instead of colliding"


async def test_concurrent_allocations_never_share_a_subnet(monkeypatch: pytest.MonkeyPatch) -> None:
    # Every allocator behaves as its own process: no shared lock, only the resourceVersion guard.
    monkeypatch.setattr(ipam, "_network_lock", lambda network: asyncio.Lock())
    store = MemoryStore(spec("10.20.0.0/22", 26))  # 16 subnets
    nodes = [f"node-{i}" for i in range(16)]
    results = await asyncio.gather(*(allocate_subnet(store, "net", n) for n in nodes))
    assert len(set(results)) == 16
    assert {a.node: a.subnet for a in store.allocations} == dict(zip(nodes, results, strict=True))
    assert store.conflicts > 0, "the test must actually exercise conflicting writes"
    # Allocation is idempotent: asking again returns the same subnet without a write.
    version = store.version
    assert await allocate_subnet(store, "net", "node-3") == results[3]
    assert store.version == version


async def test_exhaustion_is_an_error_and_marks_the_network() -> None:
    store = MemoryStore(spec("10.30.0.0/23", 24))
    assert capacity_of(store) == 2
    await allocate_subnet(store, "net", "a")
    await allocate_subnet(store, "net", "b")
    with pytest.raises(SubnetError) as info:
        await allocate_subnet(store, "net", "c")
    assert info.value.reason == "ClusterCIDRExhausted"
    assert "no free /24 subnet" in str(info.value)
    available = next(c for c in store.conditions if c.type == "SubnetsAvailable")
    assert available.status == "False"
    # Releasing one makes room again.
    assert await release_subnet(store, "net", "a") == "10.30.0.0/24"
    assert await allocate_subnet(store, "net", "c") == "10.30.0.0/24"
    assert await release_subnet(store, "net", "nobody") is None


async def test_existing_pod_cidr_of_the_node_is_kept() -> None:
    store = MemoryStore(spec(), pod_cidrs={"win-1": ["10.244.7.0/24"], "linux-1": ["10.244.0.0/24"]})
    assert await allocate_subnet(store, "net", "wn-1", "win-1") == "10.244.7.0/24"
    assert await allocate_subnet(store, "net", "wn-2", "win-2") == "10.244.1.0/24"


async def test_missing_network() -> None:
    class Empty(MemoryStore):
        async def read(self, network: str) -> AllocationState | None:
            return None

    with pytest.raises(SubnetError) as info:
        await allocate_subnet(Empty(spec()), "gone", "a")
    assert info.value.reason == "NetworkNotFound"
    assert await release_subnet(Empty(spec()), "gone", "a") is None


def capacity_of(store: MemoryStore) -> int:
    return subnet_capacity(store.spec.cluster_cidr, store.spec.node_subnet_prefix_length)


def test_first_free_subnet_agrees_with_checking_every_subnet_against_every_taken_one() -> None:
    """The first gap found from sorted runs is the subnet a plain first-fit scan would choose."""
    rng = random.Random(17)
    for _ in range(300):
        cluster = rng.choice(["10.244.0.0/16", "10.128.0.0/20", "192.168.0.0/22"])
        cluster_net = ipaddress.IPv4Network(cluster)
        prefix = rng.randint(cluster_net.prefixlen + 1, min(cluster_net.prefixlen + 8, 30))
        taken = []
        for _ in range(rng.randint(0, 40)):
            length = rng.randint(max(8, cluster_net.prefixlen - 4), 32)
            start = int(cluster_net.network_address) + rng.randrange(-(1 << 12), cluster_net.num_addresses)
            taken.append(ipaddress.IPv4Network((max(0, start), length), strict=False))
        want = next(
            (s for s in cluster_net.subnets(new_prefix=prefix) if not any(s.overlaps(t) for t in taken)), None
        )
        assert first_free_subnet(cluster, prefix, taken) == want, (cluster, prefix, taken)


def test_a_large_fleet_gets_the_first_subnet_after_its_allocations() -> None:
    network = spec("10.128.0.0/9")
    allocations = [
        SubnetAllocation(node=f"n{i}", subnet=str(ipaddress.IPv4Network((0x0A800000 + i * 256, 24))))
        for i in range(2000)
    ]
    assert choose_subnet(network, allocations, "new") == "10.135.208.0/24"
    assert choose_subnet(network, allocations[1:], "new") == "10.128.0.0/24"
