"""Taking a node out of service and giving it back, for upgrade, reboot, deconfigure and a network
re-create: a slot of the cluster-wide budget (kube/slots.py), cordon, drain with DrainBlocked, and
uncordon. One cordon for all of them: winnode marks the Node with CORDONED_ANNOTATION, so it only
ever undoes its own cordon and an admin's stays.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from winnode import timeouts
from winnode.api import NodePhase, UpgradeStep
from winnode.api.windowsnode import WINDOWS_NODE
from winnode.kube.api import ApiError
from winnode.kube.client import JSON_MERGE_PATCH, api_message, path
from winnode.kube.drain import DrainResult, drain
from winnode.kube.nodes import get_node, node_is_unschedulable, set_unschedulable
from winnode.kube.slots import Holder, Slots
from winnode.lifecycle import kubelet_config as kc
from winnode.lifecycle import steps
from winnode.lifecycle.context import HostApi
from winnode.lifecycle.session import Session
from winnode.lifecycle.status import C, StepFailure
from winnode.settings import FIELD_PREFIX

log = logging.getLogger(__name__)

# On the Node: winnode cordoned it (an admin's own cordon is left alone when we finish).
CORDONED_ANNOTATION = f"{FIELD_PREFIX}/cordoned-for"
UPGRADE, REBOOT = "Upgrade", "Reboot"
# Services in stopping order: kube-proxy depends on kubelet.
STOP_ORDER = (kc.KUBE_PROXY_SERVICE, kc.KUBELET_SERVICE)
START_ORDER = (kc.KUBELET_SERVICE, kc.KUBE_PROXY_SERVICE)


@dataclass(frozen=True)
class Pass:
    """What one maintenance pass did. `ran`: an upgrade or reboot pass ran (configure waits);
    `finished`: it ended (else retry after `retry_after`); `blocked`: the wanted version is refused
    or failed before, so configure must not install it in place either."""

    ran: bool = False
    finished: bool = True
    retry_after: float | None = None
    blocked: bool = False
    message: str = ""


NOTHING = Pass()


async def record_step(s: Session, step: UpgradeStep, phase: NodePhase | None = None) -> None:
    progress = s.writer.status.upgrade
    assert progress is not None
    changed = progress.step is not step
    progress.step = step
    if phase is not None:
        s.writer.set_phase(phase)
    await s.writer.flush()
    if changed:
        log.info("%s: %s step %s", s.name, progress.operation, step)
        what = (
            "reboot"
            if progress.operation == REBOOT
            else f"upgrade {progress.from_version} -> {progress.to_version}"
        )
        await s.events.normal("UpgradeStep", f"{what}: {step}")


def budget(s: Session) -> Slots:
    async def stale(name: str, holder: Holder) -> bool:
        obj = await s.deps.kube.request(
            "GET",
            path("apis", WINDOWS_NODE.group, WINDOWS_NODE.version, WINDOWS_NODE.plural, name),
            missing_ok=True,
        )
        return obj is None or ((obj.get("metadata") or {}).get("uid") or "") != holder.uid

    return Slots(s.deps.kube, s.deps.settings.namespace, s.deps.settings.max_unavailable, stale)


async def wait_for_slot(s: Session, reason: str) -> Pass | None:
    """Hold a slot of the budget (None), or a Pass to retry later when none became free in time."""
    slots = budget(s)
    progress = s.writer.status.upgrade
    announced = progress is not None and progress.step is UpgradeStep.WAITING_FOR_SLOT
    waiting = "the slots Lease kept changing under each claim"
    # A release in this process ends the wait between tries at once (no polling of the Lease).
    async for _ in timeouts.UPGRADE_SLOT_WAIT.attempts(slots.wait_released):
        try:
            claim = await slots.claim(s.node_name, s.node.metadata.uid or "", reason)
        except ApiError as exc:
            if exc.status == 409:
                continue  # the Lease kept changing under this claim (others took slots): wait on
            raise StepFailure(
                "SlotUnavailable",
                f"cannot read or update the slots Lease in namespace {s.deps.settings.namespace}: "
                f"{api_message(exc)}; check that the namespace exists and the operator may update Leases there",
            ) from exc
        if claim.granted:
            await s.events.normal("SlotAcquired", f"{reason}: {claim.summary(slots.limit)}")
            return None
        waiting = claim.summary(slots.limit)
        if not announced:
            announced = True
            await record_step(s, UpgradeStep.WAITING_FOR_SLOT)
            await s.events.normal(
                "WaitingForSlot",
                f"{reason} waits for a free slot (maxUnavailable): {waiting}",
            )
    return Pass(
        ran=True,
        finished=False,
        retry_after=timeouts.UPGRADE_SLOT_RETRY,
        message=f"waiting for a slot: {waiting}",
    )


async def release_slot(s: Session) -> None:
    """Give this node's slot of the budget back (its upgrade or reboot ended, or it is being deleted)."""
    await budget(s).release(s.node_name)
    s.deps.metrics.upgrade_in_flight(s.node.metadata.uid or s.name, False)


async def cordon(s: Session, *, for_removal: bool = False) -> None:
    """Cordon the Node and mark it as cordoned by us (an admin's own cordon is left as it is).

    `for_removal` (deconfigure): the Node is about to be deleted, so there is no cordon to undo and
    nothing to mark; a Node that does not exist is nothing to cordon. Otherwise a missing Node is
    StepFailure NodeMissing."""
    if for_removal:
        await set_unschedulable(s.deps.kube, s.node_name, True)
        return
    node = await get_node(s.deps.kube, s.node_name)
    if node is None:
        raise StepFailure(
            "NodeMissing",
            f"Node {s.node_name} does not exist; it cannot be drained",
            condition=C.NODE_REGISTERED,
        )
    annotations = (node.get("metadata") or {}).get("annotations") or {}
    if node_is_unschedulable(node) and CORDONED_ANNOTATION not in annotations:
        return  # an admin cordoned it: it stays cordoned after us
    if CORDONED_ANNOTATION in annotations and node_is_unschedulable(node):
        return
    await s.deps.kube.request(
        "PATCH",
        path("api", "v1", "nodes", s.node_name),
        body={"spec": {"unschedulable": True}, "metadata": {"annotations": {CORDONED_ANNOTATION: s.name}}},
        content_type=JSON_MERGE_PATCH,
    )
    await s.events.normal("Cordoned", f"Node {s.node_name} cordoned")


async def uncordon(s: Session) -> None:
    """Undo our own cordon only."""
    node = await get_node(s.deps.kube, s.node_name)
    if node is None or CORDONED_ANNOTATION not in ((node.get("metadata") or {}).get("annotations") or {}):
        return
    await s.deps.kube.request(
        "PATCH",
        path("api", "v1", "nodes", s.node_name),
        body={"spec": {"unschedulable": None}, "metadata": {"annotations": {CORDONED_ANNOTATION: None}}},
        content_type=JSON_MERGE_PATCH,
    )
    await s.events.normal("Uncordoned", f"Node {s.node_name} uncordoned")


async def cordon_and_drain(s: Session) -> Pass | None:
    """Cordon and drain; None when the node is empty, else the Pass the drain-blocked policy gives."""
    await record_step(s, UpgradeStep.CORDONING, NodePhase.DRAINING)
    try:
        await cordon(s)
    except ApiError as exc:
        raise StepFailure("CordonFailed", f"cannot cordon Node {s.node_name}: {api_message(exc)}") from exc
    await record_step(s, UpgradeStep.DRAINING, NodePhase.DRAINING)
    reported: list[str] = []

    async def on_pass(result: DrainResult) -> None:
        blockers = result.blocked_by or result.failed
        if blockers and blockers != reported:
            reported[:] = blockers
            message = f"drain of Node {s.node_name} held up: {result.summary()}"
            s.writer.condition(C.DRAIN_BLOCKED, True, "EvictionRefused", message)
            await s.writer.flush()
            await s.events.warning("DrainBlocked", message)

    try:
        result = await drain(s.deps.kube, s.node_name, timeouts.UPGRADE_DRAIN, on_pass)
    except ApiError as exc:
        raise StepFailure("DrainFailed", f"cannot drain Node {s.node_name}: {api_message(exc)}") from exc
    if result.done:
        if reported or s.writer.condition_is_true(C.DRAIN_BLOCKED):
            s.writer.condition(C.DRAIN_BLOCKED, False, "Drained", f"Node {s.node_name} was drained")
        await s.writer.flush()
        await s.events.normal("Drained", f"Node {s.node_name} drained")
        return None
    message = (
        f"drain of Node {s.node_name} not finished after {timeouts.UPGRADE_DRAIN:.0f}s: {result.summary()}"
    )
    if s.deps.settings.upgrade_drain_blocked_policy == "wait":
        s.writer.condition(C.DRAIN_BLOCKED, True, "EvictionRefused", message + "; still trying (policy wait)")
        await s.writer.flush()
        return Pass(ran=True, finished=False, retry_after=timeouts.UPGRADE_SLOT_RETRY, message=message)
    # Policy abort: give the node and the slot back; the whole upgrade is tried again later.
    await uncordon(s)
    await release_slot(s)
    s.writer.condition(
        C.DRAIN_BLOCKED,
        True,
        "DrainAborted",
        f"{message}; upgrade paused, node uncordoned, retried in {timeouts.UPGRADE_DRAIN_RETRY:.0f}s "
        "(relax or delete the PodDisruptionBudget to let it through)",
    )
    assert s.writer.status.upgrade is not None
    s.writer.status.upgrade.step = UpgradeStep.WAITING_FOR_SLOT
    s.writer.set_phase(NodePhase.READY)
    await s.writer.flush()
    s.deps.metrics.upgrades.labels("drain_aborted").inc()
    await s.events.warning("DrainAborted", message + "; node uncordoned, retried later")
    return Pass(ran=True, finished=False, retry_after=timeouts.UPGRADE_DRAIN_RETRY, message=message)


async def take_out_of_service(s: Session, reason: str, *, slot_held: bool = False) -> Pass | None:
    """A slot of the budget (unless already held), then cordon and drain: None once the node is out of
    service, else the Pass to return now (no slot free yet, or what the drain-blocked policy says)."""
    if not slot_held:
        claim = await wait_for_slot(s, reason)
        if claim is not None:
            return claim
    s.deps.metrics.upgrade_in_flight(s.node.metadata.uid or s.name, True)
    return await cordon_and_drain(s)


async def stop_services(host: HostApi) -> None:
    for name in STOP_ORDER:
        await steps.stop_service(host, name)


async def start_services(host: HostApi) -> None:
    await steps.start_services(host, list(START_ORDER))
