"""Approve the CertificateSigningRequests of our nodes that pass the policy in lifecycle.csr_policy.

The decision is the policy's; this module only reads CSRs and writes the approval. Nothing is ever
denied: a CSR the policy rejects stays pending for an admin to inspect, and is reported to the
caller, which tells the admin (condition, Event).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from kubernetes.client.exceptions import ApiException

from winnode.csr.parse import CLIENT_SIGNER, SERVING_SIGNER, CsrParseError, parse_csr
from winnode.csr.policy import Decision, ExpectedNode, Verdict, judge, node_name_of
from winnode.kube.client import Kube, api_message, path

log = logging.getLogger(__name__)

APPROVAL_REASON = "WinnodeApproved"
_KUBELET_SIGNERS = (CLIENT_SIGNER, SERVING_SIGNER)
_CSRS = path("apis", "certificates.k8s.io", "v1", "certificatesigningrequests")


def _is_pending(obj: dict[str, Any]) -> bool:
    conditions = (obj.get("status") or {}).get("conditions") or []
    return not any(c.get("type") in ("Approved", "Denied", "Failed") for c in conditions)


async def approve_pending(
    kube: Kube,
    expected_for: Callable[[str], ExpectedNode | None],
    *,
    windows_node_for: Callable[[str], str] | None = None,
) -> list[tuple[str, Verdict]]:
    """Judge every kubelet CSR and approve those the policy approves.

    `expected_for(node_name)` says what we know of a node we manage (None: not ours).
    `windows_node_for(node_name)` names its WindowsNode for the approval message (default: the node
    name, which is the WindowsNode's unless spec.nodeName differs).
    Returns (CSR name, verdict) for every CSR that concerns one of our nodes: approved just now,
    rejected, or already decided. An unreadable request on a kubelet signer is reported as
    rejected, since it may be an attempt at one of our nodes.
    """
    listing = await kube.request("GET", _CSRS)
    results: list[tuple[str, Verdict]] = []
    for obj in listing.get("items") or []:
        spec = obj.get("spec") or {}
        name = str((obj.get("metadata") or {}).get("name", ""))
        if spec.get("signerName") not in _KUBELET_SIGNERS:
            continue
        try:
            facts = parse_csr(obj)
        except CsrParseError as exc:
            if _is_pending(obj):
                log.warning("%s", exc)
                results.append((name, Verdict(Decision.REJECT, str(exc))))
            continue
        claimed = node_name_of(facts)
        expected = expected_for(claimed) if claimed is not None else None
        verdict = judge(facts, expected)
        if verdict.decision is Decision.NOT_OURS or expected is None:
            # Includes CSRs of other nodes that are already decided: not ours to report.
            continue
        if verdict.approve:
            windows_node = windows_node_for(expected.node_name) if windows_node_for else expected.node_name
            if not await _approve(kube, obj, windows_node, verdict):
                continue
        elif verdict.decision is Decision.REJECT:
            log.warning("CSR %s left pending: %s", name, verdict.reason)
        results.append((name, verdict))
    return results


async def _approve(kube: Kube, obj: dict[str, Any], windows_node: str, verdict: Verdict) -> bool:
    """Write the Approved condition; False when the CSR changed or vanished meanwhile (the next
    pass judges it again)."""
    name = str((obj.get("metadata") or {}).get("name", ""))
    status = dict(obj.get("status") or {})
    status["conditions"] = [
        *(status.get("conditions") or []),
        {
            "type": "Approved",
            "status": "True",
            "reason": APPROVAL_REASON,
            "message": f"approved by winnode for WindowsNode {windows_node}: {verdict.reason}",
            "lastUpdateTime": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        },
    ]
    # The object as read, resourceVersion included: a concurrent approve or deny makes this a 409.
    body = {**obj, "status": status}
    try:
        await kube.request("PUT", f"{_CSRS}/{path(name).lstrip('/')}/approval", body=body)
    except ApiException as exc:
        if exc.status in (404, 409):
            log.info("CSR %s changed while approving it (%s); judging it again later", name, api_message(exc))
            return False
        raise
    log.info("CSR %s approved for WindowsNode %s: %s", name, windows_node, verdict.reason)
    return True
