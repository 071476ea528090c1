"""A node's place in its WindowsNetwork: the spec it runs (network_rollout.spec_for_node decides
whether a newer one has reached it yet) and the node's pod subnet."""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from winnode import timeouts
from winnode.api import AppliedNetwork, ConditionStatus, WindowsNetwork, WindowsNode, find_condition
from winnode.api.windowsnetwork import WINDOWS_NETWORK, WindowsNetworkSpec
from winnode.api.windowsnode import WINDOWS_NODE
from winnode.kube.api import ApiError
from winnode.kube.client import JSON_MERGE_PATCH, Kube, api_message, path
from winnode.lifecycle import unreadable
from winnode.lifecycle.network_rollout import NodeView, SpecChoice, spec_dict, spec_for_node
from winnode.lifecycle.status import C, StepFailure
from winnode.network.ipam import KubeAllocationStore, SubnetError, allocate_subnet, release_subnet

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class NodeNetwork:
    name: str
    spec: WindowsNetworkSpec
    subnet: str
    # The network's generation `spec` belongs to (older than the network's while the node is held).
    generation: int
    # A spec change is rolling out and has not reached this node yet: it keeps the spec it runs.
    held: bool = False

    def applied(self) -> AppliedNetwork:
        """What the node's status records once it is Ready with this network."""
        return AppliedNetwork(name=self.name, generation=self.generation, spec=spec_dict(self.spec))


async def read_network(kube: Kube, name: str) -> WindowsNetwork | None:
    obj = await kube.request(
        "GET",
        path("apis", WINDOWS_NETWORK.group, WINDOWS_NETWORK.version, WINDOWS_NETWORK.plural, name),
        missing_ok=True,
    )
    return None if obj is None else WindowsNetwork.model_validate(obj)


async def node_network(kube: Kube, node: WindowsNode) -> NodeNetwork:
    """The node's network and its subnet (allocated on first use). Raises StepFailure."""
    name = node.spec.network
    try:
        choice = await _spec_choice(kube, node, name)
        subnet = await allocate_subnet(KubeAllocationStore(kube), name, node.metadata.name, node.node_name)
    except SubnetError as exc:
        raise StepFailure(
            exc.reason, str(exc), condition=C.NETWORK_CONFIGURED, admin=exc.reason != "AllocationConflict"
        ) from exc
    except ApiError as exc:
        raise StepFailure(
            "NetworkUnavailable",
            f"cannot read or update WindowsNetwork {name}: {api_message(exc)}",
            condition=C.NETWORK_CONFIGURED,
        ) from exc
    return NodeNetwork(
        name=name, spec=choice.spec, subnet=subnet, generation=choice.generation, held=choice.held
    )


async def _spec_choice(kube: Kube, node: WindowsNode, name: str) -> SpecChoice:
    """The spec this node runs from network `name`. Only the choice outlives this call: the network
    read whole holds one subnet allocation per node, and every joining node waits its turn at the
    subnet allocator (one writer per network at a time); holding it there made a fleet's bring-up
    cost memory in the square of its size."""
    network = await read_network(kube, name)
    if network is None:
        raise StepFailure(
            "NetworkNotFound",
            f"WindowsNetwork {name} named in spec.network does not exist; create it "
            "(see examples/windowsnetwork-overlay.yaml) or name an existing one",
            condition=C.NETWORK_CONFIGURED,
            admin=True,
        )
    return spec_for_node(
        node.metadata.name,
        node.status.applied_network,
        name,
        network.metadata.generation or 0,
        network.spec,
        network.status.rollout,
    )


async def release_node_subnet(kube: Kube, node: WindowsNode) -> str | None:
    return await release_subnet(KubeAllocationStore(kube), node.spec.network, node.metadata.name)


# --- the network's side: its nodes, its peers, its status --------------------------------------


def _network_path(*sub: str) -> str:
    return path("apis", WINDOWS_NETWORK.group, WINDOWS_NETWORK.version, WINDOWS_NETWORK.plural, *sub)


async def network_members(kube: Kube, name: str) -> list[NodeView]:
    """The rollout's view of every WindowsNode whose spec.network is `name` (a field selector:
    spec.network is selectable), read a page at a time and kept only as views."""
    views: list[NodeView] = []
    async for page in kube.list_pages(
        path("apis", WINDOWS_NODE.group, WINDOWS_NODE.version, WINDOWS_NODE.plural),
        query={"fieldSelector": f"spec.network={name}"},
    ):
        for item in page:
            try:
                node: WindowsNode | None = WindowsNode.model_validate(item)
            except ValidationError:
                # One unreadable WindowsNode (reported on itself) must not stop the network's
                # reconcile: it counts as read without its refused fields, or not at all if those
                # say where it is.
                node = unreadable.salvage(WindowsNode, item)
                if node is None:
                    log.warning(
                        "WindowsNode %s on network %s cannot be read; left out of the network's status",
                        (item.get("metadata") or {}).get("name"),
                        name,
                    )
            if node is not None:
                views.append(node_view(node, name))
    return views


async def network_specs(kube: Kube) -> dict[str, dict[str, Any]]:
    """Every WindowsNetwork's spec by name (for the overlap check between networks)."""
    listing = await kube.request("GET", _network_path())
    return {
        str(item["metadata"]["name"]): dict(item.get("spec") or {}) for item in listing.get("items") or []
    }


def node_view(node: WindowsNode, network: str) -> NodeView:
    applied = node.status.applied_network
    failed = find_condition(node.status.conditions, C.NETWORK_CONFIGURED)
    return NodeView(
        name=node.metadata.name,
        applied_generation=applied.generation if applied is not None and applied.name == network else None,
        phase=node.status.phase,
        deleting=node.metadata.deletion_timestamp is not None,
        paused=node.spec.paused,
        network_failed=failed is not None and failed.status is ConditionStatus.FALSE,
    )


async def update_network_status(
    kube: Kube,
    name: str,
    compute: Callable[[WindowsNetwork], dict[str, Any] | None],
) -> WindowsNetwork | None:
    """Read WindowsNetwork `name`, let `compute` build a status merge patch from it, and write it
    guarded by the resourceVersion read (the subnet allocator writes the same status); retried on
    409. The network as read; None when it is gone."""
    poll = timeouts.SUBNET_ALLOCATION_CONFLICT
    deadline = time.monotonic() + poll.deadline
    while True:
        network = await read_network(kube, name)
        if network is None:
            return None
        patch = compute(network)
        if not patch:
            return network
        body = {"metadata": {"resourceVersion": network.metadata.resource_version}, "status": patch}
        try:
            await kube.request(
                "PATCH",
                _network_path(name, "status"),
                body=body,
                content_type=JSON_MERGE_PATCH,
                missing_ok=True,
            )
            return network
        except ApiError as exc:
            if exc.status != 409 or time.monotonic() >= deadline:
                raise
        await asyncio.sleep(poll.interval * (1 + random.random()))
