"""Re-creating a node's pod network safely.

HNS cannot change a network in place: re-creating it (a rollout of a new WindowsNetwork spec, or a
drift repair) deletes every endpoint on it, so every running pod loses its network. On a node that
runs pods the operator first takes a slot of the same disruption budget upgrades use
(maxUnavailable), cordons and drains the node (Eviction API, PodDisruptionBudgets respected), and
gives both back once the network is there again. A node without pods (only DaemonSet and mirror
pods, or finished ones) is not drained.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from winnode import timeouts
from winnode.kube import drain as kdrain
from winnode.kube.api import ApiError
from winnode.kube.client import JSON_MERGE_PATCH, api_message, path
from winnode.lifecycle import disruption
from winnode.lifecycle.session import Session
from winnode.lifecycle.status import C, StepFailure
from winnode.network.routes import POD_NETWORK_ANNOTATION


async def workload_pods(s: Session) -> list[str]:
    """Pods on the node that re-creating its network would cut off (namespace/name)."""
    pods = await kdrain._pods_on(s.deps.kube, s.node_name)
    out = []
    for pod in pods:
        phase = (pod.get("status") or {}).get("phase")
        if kdrain.stays_on_node(pod) or phase in ("Succeeded", "Failed"):
            continue
        meta = pod.get("metadata") or {}
        out.append(f"{meta.get('namespace')}/{meta.get('name')}")
    return out


async def cordon_and_drain(s: Session, reason: str) -> None:
    """Take a budget slot, cordon and drain the node, through the disruption budget's own functions. Raises StepFailure to retry later."""
    slots = disruption.budget(s)
    try:
        claim = await slots.claim(s.node_name, s.node.metadata.uid or "", reason)
    except ApiError as exc:
        raise StepFailure("SlotUnavailable", f"cannot claim a disruption slot: {api_message(exc)}") from exc
    if not claim.granted:
        raise StepFailure(
            "WaitingForSlot",
            f"{reason} waits for a free slot (maxUnavailable): {claim.summary(slots.limit)}",
            condition=C.NETWORK_CONFIGURED,
        )
    try:
        await disruption.cordon(s)
        result = await kdrain.drain(s.deps.kube, s.node_name, timeouts.UPGRADE_DRAIN)
    except ApiError as exc:
        await release(s)
        raise StepFailure("DrainFailed", f"cannot drain Node {s.node_name}: {api_message(exc)}") from exc
    if not result.done:
        await release(s)
        raise StepFailure(
            "DrainBlocked",
            f"{reason}: drain of Node {s.node_name} not finished: {result.summary()}; the pod network "
            "is re-created once the node is drained",
            condition=C.DRAIN_BLOCKED,
        )
    await s.events.normal("Drained", f"Node {s.node_name} drained: {reason}")


async def release(s: Session) -> None:
    """Uncordon (our own cordon only) and give the slot back."""
    await disruption.uncordon(s)
    await disruption.release_slot(s)


@dataclass
class RecreateGuard:
    """Passed to steps.ensure_network: drains before a re-creation when pods would be cut off, and
    afterwards marks the Node so route sync programs the new network's routes again (a re-created
    network has none)."""

    s: Session
    drained: bool = False
    recreated: bool = False

    async def before_recreate(self, network: str) -> None:
        self.recreated = True
        pods = await workload_pods(self.s)
        if not pods:
            return
        shown = ", ".join(pods[:5]) + (f" and {len(pods) - 5} more" if len(pods) > 5 else "")
        await cordon_and_drain(self.s, f"re-creating HNS network {network} would cut off {shown}")
        self.drained = True

    async def done(self) -> None:
        if self.recreated:
            self.recreated = False
            await self.s.deps.kube.request(
                "PATCH",
                path("api", "v1", "nodes", self.s.node_name),
                body={"metadata": {"annotations": {POD_NETWORK_ANNOTATION: uuid.uuid4().hex}}},
                content_type=JSON_MERGE_PATCH,
                missing_ok=True,
            )
        if self.drained:
            await release(self.s)
            self.drained = False
