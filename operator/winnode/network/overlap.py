"""Rules between WindowsNetworks that the webhook, the network handler and the rollout share: two
networks must not overlap (clusterCIDR against clusterCIDR and serviceCIDR), and lists of names in
messages stay short."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from winnode.api.common import parse_cidr
from winnode.api.windowsnetwork import WindowsNetworkSpec

# Names shown in one message before "and N more".
MAX_NAMES = 20


def name_list(names: Sequence[str]) -> str:
    shown = ", ".join(names[:MAX_NAMES])
    more = len(names) - MAX_NAMES
    return shown + (f" and {more} more" if more > 0 else "")


def overlapping_networks(
    name: str, spec: WindowsNetworkSpec, others: Mapping[str, Mapping[str, Any]]
) -> list[str]:
    """Problems of `spec` against the other WindowsNetworks' specs (name -> spec dict): every pair
    of clusterCIDR/serviceCIDR that overlaps, as sentences naming the field and the other network."""
    problems: list[str] = []
    mine = {"clusterCIDR": spec.cluster_cidr, "serviceCIDR": spec.service_cidr}
    for other_name in sorted(others):
        if other_name == name:
            continue
        other = others[other_name]
        for field, cidr in mine.items():
            net = parse_cidr(cidr)
            if net is None:
                continue
            # Two networks may share one serviceCIDR: it is the cluster's single Service range.
            other_fields = ("clusterCIDR",) if field == "serviceCIDR" else ("clusterCIDR", "serviceCIDR")
            for other_field in other_fields:
                theirs = parse_cidr(str(other.get(other_field) or ""))
                if theirs is None or theirs.version != net.version:
                    continue
                if net.overlaps(theirs):
                    problems.append(
                        f"spec.{field} {cidr} overlaps spec.{other_field} {theirs} of WindowsNetwork "
                        f"{other_name}; choose a {field} outside it"
                    )
    return problems
