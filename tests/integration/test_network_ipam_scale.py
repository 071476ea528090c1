"""Pod subnets through the real apiserver: 200 WindowsNodes allocating at once get 200 distinct
subnets, recorded in the WindowsNetwork's status; a released subnet is not handed out again while a
Node still carries it as its pod CIDR."""

from __future__ import annotations

import asyncio
import ipaddress
import itertools
import json
import time
from collections.abc import Iterator

import pytest

from winnode.deploy.crdgen import render_all
from winnode.kube.client import Kube
from winnode.network.hns import plan_subnet
from winnode.network.ipam import KubeAllocationStore, allocate_subnet, release_subnet
from winnode.testing.cluster import ControlPlane

NETWORK = "ipam-scale"
CLUSTER_CIDR = "10.230.0.0/16"
NODES = 200
TEST_LABEL = "winnode.io/test"


def windows_node(name: str) -> dict[str, object]:
    return {
        "apiVersion": "winnode.io/v1alpha1",
        "kind": "WindowsNode",
        "metadata": {"name": name, "labels": {TEST_LABEL: NETWORK}},
        "spec": {
            "address": "192.0.2.10",
            "network": NETWORK,
            "winrm": {"credentialsSecretRef": {"namespace": "default", "name": "none"}},
        },
    }


@pytest.fixture(scope="module")
def kube(control_plane: ControlPlane) -> Iterator[Kube]:
    control_plane.kubectl("apply", "-f", "-", input="---\n".join(render_all().values()))
    control_plane.kubectl(
        "wait", "--for=condition=established", "--timeout=60s", "crd/windowsnodes.winnode.io",
        "crd/windowsnetworks.winnode.io",
    )  # fmt: skip
    network = {
        "apiVersion": "winnode.io/v1alpha1",
        "kind": "WindowsNetwork",
        "metadata": {"name": NETWORK},
        "spec": {"mode": "overlay", "clusterCIDR": CLUSTER_CIDR, "serviceCIDR": "10.0.0.0/24"},
    }
    items = [network, *(windows_node(f"scale-{i:03d}") for i in range(NODES))]
    doc = {"apiVersion": "v1", "kind": "List", "items": items}
    deadline = time.monotonic() + 60
    while control_plane.kubectl("apply", "-f", "-", input=json.dumps(doc), check=False).returncode:
        # Right after a CRD is established its storage may still be initializing.
        assert time.monotonic() < deadline, "could not create the WindowsNodes"
        time.sleep(1)
    k = Kube.from_kubeconfig(control_plane.kubeconfig)
    try:
        yield k
    finally:
        k.close()
        control_plane.kubectl("delete", "windowsnodes", "-l", f"{TEST_LABEL}={NETWORK}", "--wait=false")
        control_plane.kubectl("delete", "node", "scale-lin", "--ignore-not-found")
        control_plane.kubectl("delete", "windowsnetwork", NETWORK, "--ignore-not-found", "--wait=false")


def test_200_concurrent_allocations_get_distinct_subnets(kube: Kube, control_plane: ControlPlane) -> None:
    store = KubeAllocationStore(kube)
    names = [f"scale-{i:03d}" for i in range(NODES)]

    async def all_at_once() -> list[str]:
        return list(await asyncio.gather(*(allocate_subnet(store, NETWORK, n) for n in names)))

    started = time.monotonic()
    subnets = kube.run_blocking(all_at_once())
    elapsed = time.monotonic() - started
    nets = [ipaddress.IPv4Network(s) for s in subnets]
    assert len(set(subnets)) == NODES, "two nodes got the same subnet"
    cluster = ipaddress.IPv4Network(CLUSTER_CIDR)
    assert all(n.subnet_of(cluster) and n.prefixlen == 24 for n in nets)
    ordered = sorted(nets)
    assert all(not a.overlaps(b) for a, b in itertools.pairwise(ordered))

    # Persistent and deterministic: the status holds exactly these, and asking again returns the same.
    status = json.loads(control_plane.kubectl("get", "windowsnetwork", NETWORK, "-o", "json").stdout)[
        "status"
    ]
    recorded = {a["node"]: a for a in status["allocations"]}
    assert {n: recorded[n]["subnet"] for n in names} == dict(zip(names, subnets, strict=True))
    assert all(recorded[n]["sourceVIP"] == plan_subnet(recorded[n]["subnet"]).source_vip for n in names)
    again = kube.run_blocking(allocate_subnet(store, NETWORK, names[7]))
    assert again == subnets[7]
    available = {c["type"]: c for c in status["conditions"]}["SubnetsAvailable"]
    assert available["status"] == "True"
    assert available["message"] == f"{256 - NODES} of 256 node subnets free"
    print(f"{NODES} concurrent allocations through the apiserver: {elapsed:.1f}s")


def test_released_subnet_is_not_reused_while_a_node_carries_it(
    kube: Kube, control_plane: ControlPlane
) -> None:
    store = KubeAllocationStore(kube)
    released = kube.run_blocking(release_subnet(store, NETWORK, "scale-000"))
    assert released is not None
    # A Node still carries the released subnet as its pod CIDR (say a Linux node was given it).
    node = {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": "scale-lin"},
        "spec": {"podCIDR": released, "podCIDRs": [released]},
    }
    control_plane.kubectl("apply", "-f", "-", input=json.dumps(node))
    fresh = kube.run_blocking(allocate_subnet(store, NETWORK, "scale-000"))
    assert fresh != released
    control_plane.kubectl("delete", "node", "scale-lin")
    assert kube.run_blocking(release_subnet(store, NETWORK, "scale-000")) == fresh
