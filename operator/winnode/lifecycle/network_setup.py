"""A node's place in its WindowsNetwork: the network's spec and the node's pod subnet."""

from __future__ import annotations

from dataclasses import dataclass

from kubernetes.client.exceptions import ApiException

from winnode.api import WindowsNetwork, WindowsNode
from winnode.api.windowsnetwork import WINDOWS_NETWORK, WindowsNetworkSpec
from winnode.kube.client import Kube, api_message, path
from winnode.lifecycle.status import C, StepFailure
from winnode.network.ipam import KubeAllocationStore, SubnetError, allocate_subnet, release_subnet


@dataclass(frozen=True)
class NodeNetwork:
    name: str
    spec: WindowsNetworkSpec
    subnet: str


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
        network = await read_network(kube, name)
        if network is None:
            raise StepFailure(
                "NetworkNotFound",
                f"WindowsNetwork {name} named in spec.network does not exist; create it "
                "(see examples/windowsnetwork-overlay.yaml) or name an existing one",
                condition=C.NETWORK_CONFIGURED,
                admin=True,
            )
        subnet = await allocate_subnet(KubeAllocationStore(kube), name, node.metadata.name, node.node_name)
    except SubnetError as exc:
        raise StepFailure(
            exc.reason, str(exc), condition=C.NETWORK_CONFIGURED, admin=exc.reason != "AllocationConflict"
        ) from exc
    except ApiException as exc:
        raise StepFailure(
            "NetworkUnavailable",
            f"cannot read or update WindowsNetwork {name}: {api_message(exc)}",
            condition=C.NETWORK_CONFIGURED,
        ) from exc
    return NodeNetwork(name=name, spec=network.spec, subnet=subnet)


async def release_node_subnet(kube: Kube, node: WindowsNode) -> str | None:
    return await release_subnet(KubeAllocationStore(kube), node.spec.network, node.metadata.name)
