"""What a WindowsNetwork's nodes should run, and how a spec change rolls across them. All pure.

A WindowsNode records in status.appliedNetwork the network spec (and its generation) it was last
configured with and seen Ready with. When the WindowsNetwork's spec changes, its nodes move to the
new spec ONE AT A TIME, in name order: the network's status.rollout names the node whose turn it is;
that node is reconfigured and must be Ready again with the new generation before the next starts.
Every other node keeps running, and its drift repair keeps holding it to, the spec it has. A failed
node stops the rollout there (the others keep a working network) until it succeeds.

Everything the rollout needs lives in the API objects (the nodes' appliedNetwork, the network's
status.rollout), so an operator restarted mid-rollout carries on with the same node.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from winnode.api import (
    AppliedNetwork,
    Condition,
    ConditionStatus,
    NetworkRollout,
    NodePhase,
    WindowsNetworkConditionType,
    WindowsNetworkSpec,
    set_condition,
)
from winnode.network.overlap import name_list

# WindowsNode condition showing the rollout reconfiguring that node now.
NODE_ROLLOUT_CONDITION = "NetworkRollout"


def spec_dict(spec: WindowsNetworkSpec) -> dict[str, Any]:
    data: dict[str, Any] = spec.model_dump(by_alias=True, exclude_none=True, mode="json")
    return data


@dataclass(frozen=True)
class SpecChoice:
    """The spec a node is configured (or repaired) with, and whether it is held back from a newer one."""

    spec: WindowsNetworkSpec
    generation: int
    held: bool


def spec_for_node(
    node: str,
    applied: AppliedNetwork | None,
    network: str,
    generation: int,
    current: WindowsNetworkSpec,
    rollout: NetworkRollout | None,
) -> SpecChoice:
    """The spec WindowsNode `node` gets from WindowsNetwork `network` (now at `generation`).

    A node that never ran this network takes the current spec (joining disturbs nobody). A node
    running an older generation keeps it unless the rollout has reached it.
    """
    if applied is None or applied.name != network or applied.generation >= generation:
        return SpecChoice(current, generation, held=False)
    if rollout is not None and rollout.node == node and rollout.generation == generation:
        return SpecChoice(current, generation, held=False)
    try:
        old = WindowsNetworkSpec.model_validate(applied.spec)
    except ValueError:
        # A recorded spec this version cannot read: the current one is the only one left to apply.
        return SpecChoice(current, generation, held=False)
    return SpecChoice(old, applied.generation, held=True)


@dataclass(frozen=True)
class NodeView:
    """What the rollout needs to know about one WindowsNode that names the network."""

    name: str
    applied_generation: int | None  # None: never configured with this network
    phase: NodePhase | None
    deleting: bool = False
    paused: bool = False
    network_failed: bool = False  # NetworkConfigured=False


def _lags(node: NodeView, generation: int) -> bool:
    return (
        not node.deleting
        and not node.paused
        and node.applied_generation is not None
        and node.applied_generation < generation
    )


def next_rollout(
    generation: int, nodes: Sequence[NodeView], current: NetworkRollout | None
) -> NetworkRollout | None:
    """The rollout record to keep: whose turn it is now; None when every node runs `generation`.

    The node whose turn it is keeps it until it runs `generation` (or leaves the network), so two
    nodes are never reconfigured for the network at once, also across operator restarts.
    """
    by_name = {n.name: n for n in nodes}
    if current is not None and current.generation == generation and current.node:
        holder = by_name.get(current.node)
        if holder is not None and _lags(holder, generation):
            return current
    lagging = sorted(n.name for n in nodes if _lags(n, generation))
    if not lagging:
        return None
    return NetworkRollout(generation=generation, node=lagging[0])


@dataclass(frozen=True)
class NetworkSummary:
    applied: int
    failed: int
    lagging: list[str]
    nodes: list[str]


def summarize(generation: int, nodes: Sequence[NodeView]) -> NetworkSummary:
    live = [n for n in nodes if not n.deleting]
    applied = [
        n
        for n in live
        if n.applied_generation == generation and n.phase in (NodePhase.READY, NodePhase.DEGRADED)
    ]
    failed = [n for n in live if n.network_failed or n.phase is NodePhase.FAILED]
    return NetworkSummary(
        applied=len(applied),
        failed=len(failed),
        lagging=sorted(n.name for n in live if _lags(n, generation)),
        nodes=sorted(n.name for n in nodes),
    )


def conditions(
    existing: Iterable[Condition],
    *,
    generation: int,
    summary: NetworkSummary,
    rollout: NetworkRollout | None,
    problems: Sequence[str],
    blocked: str | None = None,
) -> list[Condition]:
    """The WindowsNetwork's Valid, InUse, RollingOut and Ready conditions."""
    out = list(existing)
    T = WindowsNetworkConditionType
    if problems:
        out = set_condition(
            out, T.VALID, ConditionStatus.FALSE, "OverlapsOtherNetwork", "; ".join(problems)[:1000]
        )
    else:
        out = set_condition(out, T.VALID, True, "Valid", "ranges do not overlap any other WindowsNetwork")
    if summary.nodes:
        out = set_condition(
            out,
            T.IN_USE,
            True,
            "NamedByWindowsNodes",
            f"{len(summary.nodes)} WindowsNodes use this network: {name_list(summary.nodes)}",
        )
    else:
        out = set_condition(out, T.IN_USE, False, "Unused", "no WindowsNode names this network")
    if rollout is not None:
        done = len(summary.nodes) - len(summary.lagging)
        if blocked:
            reason, message = "Blocked", f"reconfiguring WindowsNode {rollout.node} failed: {blocked}"
        else:
            reason, message = "Reconfiguring", f"reconfiguring WindowsNode {rollout.node}"
        out = set_condition(
            out,
            T.ROLLING_OUT,
            True,
            reason,
            f"generation {generation}: {message}; {done} of {len(summary.nodes)} nodes done, "
            f"waiting: {name_list([n for n in summary.lagging if n != rollout.node]) or 'none'}",
        )
    else:
        out = set_condition(out, T.ROLLING_OUT, False, "UpToDate", f"every node runs generation {generation}")
    if problems:
        ready, reason, message = False, "Invalid", "the spec overlaps another WindowsNetwork (see Valid)"
    elif summary.failed:
        ready, reason, message = False, "NodesFailed", f"{summary.failed} node(s) failed; see their status"
    elif rollout is not None or summary.lagging:
        ready, reason, message = False, "RollingOut", "a spec change is being applied (see RollingOut)"
    else:
        ready, reason, message = True, "Applied", f"applied on {summary.applied} node(s)"
    return set_condition(out, T.READY, ready, reason, message)
