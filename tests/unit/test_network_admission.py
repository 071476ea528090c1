"""WindowsNetwork admission verdicts (pure part of admission/networks.py)."""

from __future__ import annotations

from winnode.admission.networks import judge_delete, judge_write

PODS = {"mode": "overlay", "clusterCIDR": "10.244.0.0/16", "serviceCIDR": "10.96.0.0/12"}


def test_overlap_with_another_network_is_refused_naming_field_and_network() -> None:
    lab = {"mode": "l2bridge", "clusterCIDR": "10.244.64.0/18", "serviceCIDR": "10.96.0.0/12"}
    verdict = judge_write("lab", lab, {"pods": PODS, "lab": lab})
    assert not verdict.allowed
    assert "spec.clusterCIDR 10.244.64.0/18 overlaps spec.clusterCIDR 10.244.0.0/16" in verdict.message
    assert "WindowsNetwork pods" in verdict.message
    assert "choose a clusterCIDR outside it" in verdict.message


def test_cluster_cidr_inside_another_networks_service_range_is_refused() -> None:
    odd = {"mode": "overlay", "clusterCIDR": "10.100.0.0/16", "serviceCIDR": "10.0.0.0/24"}
    verdict = judge_write("odd", odd, {"pods": PODS})
    assert not verdict.allowed
    assert "overlaps spec.serviceCIDR 10.96.0.0/12 of WindowsNetwork pods" in verdict.message


def test_disjoint_networks_sharing_the_service_range_are_allowed() -> None:
    lab = {"mode": "l2bridge", "clusterCIDR": "10.245.0.0/16", "serviceCIDR": "10.96.0.0/12"}
    assert judge_write("lab", lab, {"pods": PODS}).allowed
    # An update of a network is not compared with itself.
    assert judge_write("pods", PODS, {"pods": PODS}).allowed


def test_invalid_spec_names_the_field() -> None:
    bad = {**PODS, "vxlan": {"vni": 100}}
    verdict = judge_write("pods", bad, {})
    assert not verdict.allowed
    assert "spec.vxlan.vni" in verdict.message
    assert "4096" in verdict.message


def test_delete_in_use_lists_the_nodes() -> None:
    verdict = judge_delete("pods", ["win-b", "win-a"])
    assert not verdict.allowed
    assert "used by 2 WindowsNode(s): win-a, win-b" in verdict.message
    assert judge_delete("pods", []).allowed
