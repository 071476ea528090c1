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

from winnode.lifecycle.context import Deps

log = logging.getLogger(__name__)


async def csr_event(type: str | None, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    if type == "DELETED":
        return
    deps: Deps = memo.deps
    try:
        await deps.approver.approve_csr(dict(body))
    except Exception:
        log.exception(
            "approving CSR %s failed; the next CSR event or configure pass retries",
            body.get("metadata", {}).get("name"),
        )


def register(registry: kopf.OperatorRegistry) -> None:
    kopf.on.event(
        "certificates.k8s.io", "v1", "certificatesigningrequests", id="approve-csr", registry=registry
    )(csr_event)
