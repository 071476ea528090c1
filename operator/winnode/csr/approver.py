"""Approve the CertificateSigningRequests of our nodes that pass the policy in csr.policy.judge.

The decision is the policy's; this module reads CSRs, writes the approval and tells the admin: one
Event on the WindowsNode per CSR approved (CSRApproved) or left pending (CSRNotApproved), and the
approvals metric. Nothing is ever denied: a CSR the policy rejects stays pending for an admin to
inspect. Whoever calls (the CSR watch, a configure, upgrade or reboot waiting for its node) gets the
same Events, and a CSR approved by two callers at once is reported once: the loser's write is a 409.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from winnode import timeouts
from winnode.api.windowsnode import WINDOWS_NODE
from winnode.csr.parse import CLIENT_SIGNER, SERVING_SIGNER, CsrParseError, parse_csr
from winnode.csr.policy import DECIDED, Decision, ExpectedHost, ExpectedNode, Verdict, judge, node_name_of
from winnode.kube.api import ApiError
from winnode.kube.client import Kube, api_message, path
from winnode.kube.events import post_event
from winnode.kube.nodes import get_node
from winnode.kube.tokens import find_bootstrap_token_id
from winnode.metrics import OperatorMetrics

log = logging.getLogger(__name__)

APPROVAL_REASON = "WinnodeApproved"
_KUBELET_SIGNERS = (CLIENT_SIGNER, SERVING_SIGNER)
_CSRS = path("apis", "certificates.k8s.io", "v1", "certificatesigningrequests")


def _is_pending(obj: dict[str, Any]) -> bool:
    # As parse_csr reads them: a condition counts when its status is True.
    conditions = (obj.get("status") or {}).get("conditions") or []
    return not any(
        c.get("type") in ("Approved", "Denied", "Failed") and c.get("status", "True") == "True"
        for c in conditions
    )


class _DecidedClaims:
    """The node each decided CSR claims, by uid.

    A decided CSR stays for an hour, two per joining node, and every approval pass lists it again;
    its request cannot change (spec is immutable), so its certificate request is parsed once."""

    def __init__(self, keep: int) -> None:
        self._keep = keep
        self._claims: OrderedDict[str, str | None] = OrderedDict()

    def claim(self, obj: dict[str, Any]) -> str | None:
        uid = str((obj.get("metadata") or {}).get("uid", ""))
        if uid and uid in self._claims:
            self._claims.move_to_end(uid)
            return self._claims[uid]
        node = claimed_node(obj)
        if uid:
            self._claims[uid] = node
            while len(self._claims) > self._keep:
                self._claims.popitem(last=False)
        return node


# Two CSRs per node of a 1,000-node fleet, each a uid and a node name.
_decided_claims = _DecidedClaims(keep=2048)


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
    judged = await _judge_all(kube, expected_for, windows_node_for=windows_node_for)
    return [(name, verdict) for name, _, verdict in judged]


async def _judge_all(
    kube: Kube,
    expected_for: Callable[[str], ExpectedNode | None],
    *,
    windows_node_for: Callable[[str], str] | None = None,
) -> list[tuple[str, str | None, Verdict]]:
    """Judge every kubelet CSR and approve those the policy approves: (CSR, node it claims, verdict).

    The node is None for an unreadable request on a kubelet signer (reported as rejected, since
    it may be an attempt at one of our nodes). See approve_pending.
    """
    results: list[tuple[str, str | None, Verdict]] = []
    # A page at a time: CSRs stay for an hour after their decision, two per joining node.
    async for page in kube.list_pages(_CSRS):
        for obj in page:
            if (obj.get("spec") or {}).get("signerName") not in _KUBELET_SIGNERS:
                continue
            if not _is_pending(obj):
                claimed = _decided_claims.claim(obj)
                if claimed is not None and expected_for(claimed) is not None:
                    results.append((_name(obj), claimed, DECIDED))
                continue
            judged = await _judge_pending(kube, obj, expected_for, windows_node_for)
            if judged is not None:
                results.append(judged)
    return results


def _name(obj: dict[str, Any]) -> str:
    return str((obj.get("metadata") or {}).get("name", ""))


async def _judge_pending(
    kube: Kube,
    obj: dict[str, Any],
    expected_for: Callable[[str], ExpectedNode | None],
    windows_node_for: Callable[[str], str] | None,
) -> tuple[str, str | None, Verdict] | None:
    """Judge one pending kubelet CSR and approve it if the policy does; None when it is not ours
    (another node, or decided meanwhile: the write lost a race)."""
    name = _name(obj)
    try:
        facts = parse_csr(obj)
    except CsrParseError as exc:
        log.warning("%s", exc)
        return name, None, Verdict(Decision.REJECT, str(exc))
    claimed = node_name_of(facts)
    expected = expected_for(claimed) if claimed is not None else None
    verdict = judge(facts, expected)
    if verdict.decision is Decision.NOT_OURS or expected is None:
        return None
    if verdict.approve:
        windows_node = windows_node_for(expected.node_name) if windows_node_for else expected.node_name
        if not await _approve(kube, obj, windows_node, verdict):
            return None
    elif verdict.decision is Decision.REJECT:
        log.warning("CSR %s left pending: %s", name, verdict.reason)
    return name, claimed, verdict


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
    except ApiError as exc:
        if exc.status in (404, 409):
            log.info("CSR %s changed while approving it (%s); judging it again later", name, api_message(exc))
            return False
        raise
    log.info("CSR %s approved for WindowsNode %s: %s", name, windows_node, verdict.reason)
    return True


def claimed_node(csr: dict[str, Any]) -> str | None:
    """The node a kubelet CSR (as the API returns it) claims to be, if it is a kubelet CSR at all."""
    try:
        facts = parse_csr(csr)
    except CsrParseError:
        return None
    return node_name_of(facts)


class Approver:
    """The one place that approves the kubelet CSRs of the nodes we configure, and says so.

    `expected_hosts` (node name -> what its CSRs may claim) is filled by the lifecycle from each
    host's facts; a node missing from it is not judged at all."""

    def __init__(
        self,
        kube: Kube,
        expected_hosts: Mapping[str, ExpectedHost],
        metrics: OperatorMetrics,
        *,
        sweep_spacing_s: float = timeouts.CSR_SWEEP_SPACING,
    ) -> None:
        self._kube = kube
        self._hosts = expected_hosts
        self._metrics = metrics
        self._sweep_spacing_s = sweep_spacing_s
        self._swept_at: float | None = None

    def manages(self, node_name: str) -> bool:
        return node_name in self._hosts

    async def expected_node(self, node_name: str) -> ExpectedNode | None:
        host = self._hosts.get(node_name)
        if host is None:
            return None
        token_id = await find_bootstrap_token_id(self._kube, node_name)
        node = await get_node(self._kube, node_name)
        return ExpectedNode(
            node_name=node_name,
            bootstrap_token_id=token_id,
            addresses=host.addresses,
            hostnames=host.hostnames,
            node_exists=node is not None,
        )

    async def approve_for(self, node_names: Iterable[str]) -> list[tuple[str, Verdict]]:
        """Judge the pending kubelet CSRs of `node_names`, approve the good ones, and post an Event
        on the node's WindowsNode for every CSR approved or left pending.

        This lists every CSR: it is the waits' fallback for the CSR watch (approve_csr), so it runs
        at most once per `sweep_spacing_s` for the whole operator and returns [] when skipped."""
        now = time.monotonic()
        if self._swept_at is not None and now - self._swept_at < self._sweep_spacing_s:
            return []
        self._swept_at = now
        expected: dict[str, ExpectedNode] = {}
        for name in node_names:
            node = await self.expected_node(name)
            if node is not None:
                expected[name] = node
        if not expected:
            return []
        judged = await _judge_all(self._kube, expected.get, windows_node_for=self._windows_node_for)
        for csr, node_name, verdict in judged:
            # An unreadable request may be an attempt at any of them: each is told.
            for target in [node_name] if node_name is not None else list(expected):
                await self._report(csr, target, verdict)
        return [(csr, verdict) for csr, _, verdict in judged]

    async def approve_csr(self, obj: dict[str, Any]) -> Verdict | None:
        """Judge this one pending CSR (as a watch event delivered it) if it claims a node we manage;
        approve it if the policy does, and post the Event. None when it is not ours to judge.

        The event path must not list every CSR: a fleet joining at once makes two CSRs per node."""
        node_name = claimed_node(obj)
        if node_name is None or not _is_pending(obj):
            return None
        expected = await self.expected_node(node_name)
        if expected is None:
            return None
        judged = await _judge_pending(
            self._kube, obj, {node_name: expected}.get, windows_node_for=self._windows_node_for
        )
        if judged is None:
            return None
        csr, _, verdict = judged
        await self._report(csr, node_name, verdict)
        return verdict

    def _windows_node_for(self, node_name: str) -> str:
        host = self._hosts.get(node_name)
        return host.windows_node if host else node_name

    async def _report(self, csr: str, node_name: str, verdict: Verdict) -> None:
        if verdict.decision is Decision.APPROVE:
            kind = "client" if "client" in verdict.reason else "serving"
            self._metrics.csr_approvals.labels(kind).inc()
        host = self._hosts.get(node_name)
        if host is None:
            return
        involved = {
            "apiVersion": WINDOWS_NODE.api_version,
            "kind": WINDOWS_NODE.kind,
            "name": host.windows_node,
            "uid": host.uid,
        }
        if verdict.decision is Decision.APPROVE:
            await post_event(self._kube, involved, "Normal", "CSRApproved", f"CSR {csr}: {verdict.reason}")
        elif verdict.decision is Decision.REJECT:
            await post_event(
                self._kube, involved, "Warning", "CSRNotApproved", f"CSR {csr} left pending: {verdict.reason}"
            )
