"""The rollout policy of a WindowsNetwork spec change: one node at a time, resumable, held nodes."""

from __future__ import annotations

from winnode.api import AppliedNetwork, ConditionStatus, NetworkRollout, NodePhase, WindowsNetworkSpec
from winnode.lifecycle.network_rollout import (
    NodeView,
    conditions,
    next_rollout,
    spec_dict,
    spec_for_node,
    summarize,
)
from winnode.network.overlap import overlapping_networks

OLD = WindowsNetworkSpec.model_validate(
    {"mode": "overlay", "clusterCIDR": "10.244.0.0/16", "serviceCIDR": "10.96.0.0/12"}
)
NEW = OLD.model_copy(update={"outbound_nat_exceptions": ["192.168.0.0/16"]})


def view(name: str, gen: int | None, phase: NodePhase = NodePhase.READY, **kw: bool) -> NodeView:
    return NodeView(name=name, applied_generation=gen, phase=phase, **kw)


def test_one_node_at_a_time_in_name_order_and_resumable() -> None:
    nodes = [view("c", 1), view("a", 1), view("b", 1)]
    turn = next_rollout(2, nodes, None)
    assert turn == NetworkRollout(generation=2, node="a")
    # The holder keeps its turn until it runs generation 2 (also after an operator restart).
    assert next_rollout(2, nodes, turn) == turn
    nodes[1] = view("a", 2)
    assert next_rollout(2, nodes, turn) == NetworkRollout(generation=2, node="b")
    assert next_rollout(2, [view("a", 2), view("b", 2), view("c", 2)], turn) is None


def test_new_deleting_and_paused_nodes_are_not_rolled() -> None:
    nodes = [view("new", None), view("gone", 1, deleting=True), view("paused", 1, paused=True)]
    assert next_rollout(2, nodes, None) is None


def test_a_newer_change_restarts_the_turn() -> None:
    nodes = [view("a", 2), view("b", 1)]
    assert next_rollout(3, nodes, NetworkRollout(generation=2, node="b")) == NetworkRollout(
        generation=3, node="a"
    )


def test_held_nodes_keep_their_spec_until_their_turn() -> None:
    applied = AppliedNetwork(name="pods", generation=1, spec=spec_dict(OLD))
    held = spec_for_node("b", applied, "pods", 2, NEW, NetworkRollout(generation=2, node="a"))
    assert (held.spec, held.generation, held.held) == (OLD, 1, True)
    turn = spec_for_node("a", applied, "pods", 2, NEW, NetworkRollout(generation=2, node="a"))
    assert (turn.spec, turn.generation, turn.held) == (NEW, 2, False)
    joining = spec_for_node("z", None, "pods", 2, NEW, NetworkRollout(generation=2, node="a"))
    assert (joining.spec, joining.held) == (NEW, False)
    moved = spec_for_node("b", applied.model_copy(update={"name": "other"}), "pods", 2, NEW, None)
    assert moved.spec == NEW


def test_overlap_with_other_networks_names_field_and_network() -> None:
    others = {
        "pods": spec_dict(OLD),
        "lab": {"clusterCIDR": "10.244.128.0/17", "serviceCIDR": "10.96.0.0/12"},
        "far": {"mode": "l2bridge", "clusterCIDR": "172.20.0.0/16", "serviceCIDR": "10.96.0.0/12"},
    }
    problems = overlapping_networks("pods", OLD, others)
    assert problems == [
        "spec.clusterCIDR 10.244.0.0/16 overlaps spec.clusterCIDR 10.244.128.0/17 of WindowsNetwork lab; "
        "choose a clusterCIDR outside it"
    ]
    assert overlapping_networks("far", WindowsNetworkSpec.model_validate(others["far"]), others) == []


def test_conditions_and_counts() -> None:
    nodes = [view("a", 2), view("b", 1), view("c", 1, network_failed=True, phase=NodePhase.FAILED)]
    summary = summarize(2, nodes)
    assert (summary.applied, summary.failed, summary.lagging) == (1, 1, ["b", "c"])
    rollout = NetworkRollout(generation=2, node="b")
    conds = {c.type: c for c in conditions([], generation=2, summary=summary, rollout=rollout, problems=[])}
    assert conds["InUse"].status is ConditionStatus.TRUE
    assert "a, b, c" in conds["InUse"].message
    assert conds["RollingOut"].reason == "Reconfiguring"
    assert "WindowsNode b" in conds["RollingOut"].message
    assert conds["Ready"].status is ConditionStatus.FALSE
    done = summarize(2, [view("a", 2)])
    conds = {c.type: c for c in conditions([], generation=2, summary=done, rollout=None, problems=[])}
    assert (conds["Ready"].status, conds["RollingOut"].status) == (
        ConditionStatus.TRUE,
        ConditionStatus.FALSE,
    )
