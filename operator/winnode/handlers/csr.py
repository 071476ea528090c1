"""Approve kubelet CSRs as soon as they appear, independent of any running configure.

A configure, upgrade or reboot waiting for its node approves too (lifecycle.session), but it polls; this
watch answers a CSR within the same second, and covers serving-certificate renewals of nodes that
joined long ago. Only CSRs that claim a node we configure are judged; everything else is left alone.
The judging, the approval and the Events are winnode.csr.approver's.
"""

from __future__ import annotations

import logging
from typing import Any

import kopf

from winnode.csr.approver import claimed_node
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
    approver = deps.approver
    if node_name is None or not approver.manages(node_name):
        return
    try:
        await approver.approve_for([node_name])
    except Exception:
        log.exception(
            "approving CSRs of node %s failed; the next CSR event or configure pass retries", node_name
        )


def register(registry: kopf.OperatorRegistry) -> None:
    kopf.on.event(
        "certificates.k8s.io", "v1", "certificatesigningrequests", id="approve-csr", registry=registry
    )(csr_event)
