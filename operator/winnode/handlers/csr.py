"""Approve kubelet CSRs as soon as they appear, independent of any running configure.

A configure waiting for its node to register approves too (lifecycle.configure), but it polls; this
watch answers a CSR within the same second, and covers serving-certificate renewals of nodes that
joined long ago. Only CSRs that claim a node we configure are judged; everything else is left alone.
"""

from __future__ import annotations

import logging
from typing import Any

import kopf

from winnode.api.windowsnode import WINDOWS_NODE
from winnode.csr.expected import approve_for, claimed_node
from winnode.csr.policy import Decision
from winnode.kube.events import post_event
from winnode.lifecycle.context import Deps

log = logging.getLogger(__name__)


def _decided(body: Any) -> bool:
    conditions = (body.get("status") or {}).get("conditions") or []
    return any(c.get("type") in ("Approved", "Denied", "Failed") for c in conditions)


async def csr_event(type: str | None, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    if type == "DELETED" or _decided(body):
        return
    deps: Deps = memo.deps
    node_name = claimed_node(dict(body))
    if node_name is None or node_name not in deps.expected_hosts:
        return
    try:
        results = await approve_for(deps, [node_name])
    except Exception:
        log.exception(
            "approving CSRs of node %s failed; the next CSR event or configure pass retries", node_name
        )
        return
    host = deps.expected_hosts.get(node_name)
    if host is None:
        return
    involved = {
        "apiVersion": WINDOWS_NODE.api_version,
        "kind": WINDOWS_NODE.kind,
        "name": host.windows_node,
        "uid": host.uid,
    }
    for csr, verdict in results:
        if verdict.decision is Decision.APPROVE:
            await post_event(deps.kube, involved, "Normal", "CSRApproved", f"CSR {csr}: {verdict.reason}")
        elif verdict.decision is Decision.REJECT:
            await post_event(
                deps.kube, involved, "Warning", "CSRNotApproved", f"CSR {csr} left pending: {verdict.reason}"
            )


def register(registry: kopf.OperatorRegistry) -> None:
    kopf.on.event(
        "certificates.k8s.io", "v1", "certificatesigningrequests", id="approve-csr", registry=registry
    )(csr_event)
