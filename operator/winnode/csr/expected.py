"""Approving the kubelet CSRs of the nodes we configure: what each node may ask for, then the policy.

The policy itself is csr.policy.judge; the API work is csr.approver. Here we build
each node's ExpectedNode from what configure learnt (host facts) and from the cluster (the node's
outstanding bootstrap token, whether its Node exists yet).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from winnode.csr.approver import approve_pending
from winnode.csr.parse import CsrParseError, parse_csr
from winnode.csr.policy import Decision, ExpectedNode, Verdict, node_name_of
from winnode.kube.nodes import get_node
from winnode.kube.tokens import find_bootstrap_token_id
from winnode.lifecycle.context import Deps

log = logging.getLogger(__name__)


async def expected_node(deps: Deps, node_name: str) -> ExpectedNode | None:
    host = deps.expected_hosts.get(node_name)
    if host is None:
        return None
    token_id = await find_bootstrap_token_id(deps.kube, node_name)
    node = await get_node(deps.kube, node_name)
    return ExpectedNode(
        node_name=node_name,
        bootstrap_token_id=token_id,
        addresses=host.addresses,
        hostnames=host.hostnames,
        node_exists=node is not None,
    )


async def approve_for(deps: Deps, node_names: Iterable[str]) -> list[tuple[str, Verdict]]:
    """Judge pending kubelet CSRs of `node_names` (those we configure) and approve the good ones."""
    expected: dict[str, ExpectedNode] = {}
    for name in node_names:
        node = await expected_node(deps, name)
        if node is not None:
            expected[name] = node
    if not expected:
        return []

    def windows_node_for(node_name: str) -> str:
        host = deps.expected_hosts.get(node_name)
        return host.windows_node if host else node_name

    results = await approve_pending(deps.kube, expected.get, windows_node_for=windows_node_for)
    for _, verdict in results:
        if verdict.decision is Decision.APPROVE:
            kind = "client" if "client" in verdict.reason else "serving"
            deps.metrics.csr_approvals.labels(kind).inc()
    return results


def claimed_node(csr: dict[str, Any]) -> str | None:
    """The node a kubelet CSR (as the API returns it) claims to be, if it is a kubelet CSR at all."""
    try:
        facts = parse_csr(csr)
    except CsrParseError:
        return None
    return node_name_of(facts)
