"""What happens when the version of a Ready node changes (or an admin asks for a reboot).

spec.kubernetesVersion changed, or it is unset and the apiserver's version (the default) changed:

  1. version: the skew policy decides (a refused version says why:     UpgradeBlocked
     UpgradeBlocked, no retry until the spec changes)
  2. stage: the host downloads the new kubelet.exe and kube-proxy.exe into C:\\k\\staging and checks
     their SHA-256; nothing runs differently yet
  3. slot: one of Settings.max_unavailable slots of the cluster-wide budget (kube/slots.py); the
     node waits in step WaitingForSlot, still Ready and schedulable
  4. cordon, drain through the Eviction API; a PodDisruptionBudget       DrainBlocked
     that refuses evictions is named at once; after timeouts.UPGRADE_DRAIN
     the drain-blocked policy applies: abort (uncordon, release, retry later) or wait
  5. swap: stop kube-proxy and kubelet, keep the running binaries as <name>.previous, copy the staged
     ones into place
  6. start kubelet and kube-proxy; wait for the Node to be Ready with the new kubeletVersion
  7. uncordon, release the slot; status.installed is the new version; phase Ready

If the new kubelet fails to start or does not turn Ready in timeouts.UPGRADE_READY, the previous
binaries go back (step RollingBack), the node turns Ready on the old version, condition
UpgradeFailed says why and status.upgrade.failedVersion records the version, which is not tried
again until spec.kubernetesVersion changes or the annotation winnode.io/retry-upgrade is set.

The annotation winnode.io/reboot-requested runs the same budgeted sequence around a reboot:
slot, cordon, drain, reboot, wait for the host to go and come back (a new boot id), Node Ready,
uncordon, release; the annotation is then removed.

Every step is idempotent and status.upgrade records where a node is, so an operator killed at any
point resumes: staging skips files whose hash matches, a slot already held is kept, the backup is
only taken while the installed binary is not yet the new one, and a node found already running the
new version Ready is only finished (uncordoned, slot released).
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Any

from kubernetes.client.exceptions import ApiException

from winnode import timeouts
from winnode.api import InstalledVersions, NodePhase, UpgradeProgress, UpgradeStep
from winnode.api.windowsnode import WINDOWS_NODE
from winnode.host.actions import (
    CopyFileParams,
    FactsParams,
    FactsResult,
    FetchFileParams,
    FileWriteResult,
    RebootParams,
    RebootResult,
    StatFilesParams,
    StatFilesResult,
)
from winnode.host.errors import HostError
from winnode.kube.client import JSON_MERGE_PATCH, api_message, path
from winnode.kube.drain import DrainResult, drain
from winnode.kube.nodes import get_node, node_is_ready, node_is_unschedulable, node_kubelet_version
from winnode.kube.slots import Holder, Slots
from winnode.lifecycle import kubelet_config as kc
from winnode.lifecycle import steps
from winnode.lifecycle.approval import approve_for
from winnode.lifecycle.configure import (
    READY_PHASES,
    Session,
    choose_version,
    connect,
    load_credentials,
    resolve_checksums,
)
from winnode.lifecycle.context import HostApi, R, run_action
from winnode.lifecycle.status import C, StepFailure, host_failure, now
from winnode.lifecycle.versions import Version, VersionError
from winnode.settings import FIELD_PREFIX

log = logging.getLogger(__name__)

RETRY_ANNOTATION = f"{FIELD_PREFIX}/retry-upgrade"
REBOOT_ANNOTATION = f"{FIELD_PREFIX}/reboot-requested"
# On the Node: winnode cordoned it (an admin's own cordon is left alone when we finish).
CORDONED_ANNOTATION = f"{FIELD_PREFIX}/cordoned-for"
STAGING_DIR = kc.K_DIR + "\\staging"
PREVIOUS_SUFFIX = ".previous"
UPGRADE, REBOOT = "Upgrade", "Reboot"
# Services in stopping order: kube-proxy depends on kubelet.
STOP_ORDER = (kc.KUBE_PROXY_SERVICE, kc.KUBELET_SERVICE)
START_ORDER = (kc.KUBELET_SERVICE, kc.KUBE_PROXY_SERVICE)
# Seconds Windows waits before restarting: long enough for the reboot script to answer over WinRM.
REBOOT_DELAY_S = 2


def staged_path(binary: str) -> str:
    return f"{STAGING_DIR}\\{binary}"


def previous_path(binary: str) -> str:
    return kc.BINARY_PATHS[binary] + PREVIOUS_SUFFIX


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


def in_progress(s: Session) -> bool:
    upgrade = s.writer.status.upgrade
    return upgrade is not None and upgrade.step is not None


def installed_version(s: Session) -> str | None:
    installed = s.writer.status.installed
    return installed.kubelet if installed else None


def same_version(a: str | None, b: str | None) -> bool:
    if a is None or b is None:
        return False
    try:
        return Version.parse(a) == Version.parse(b)
    except VersionError:
        return a == b


# --- deciding ------------------------------------------------------------------------------------


async def maintenance(s: Session) -> Pass:
    """Run the upgrade or reboot this node needs now (one pass); NOTHING when it needs neither."""
    status = s.writer.status
    current = installed_version(s)
    if current is None:
        return NOTHING  # never configured: configure installs whatever version is wanted
    if in_progress(s):
        assert status.upgrade is not None
        if status.upgrade.operation == REBOOT:
            return await reboot(s)
        # A version refused mid-way does not strand a cordoned node: it finishes what it started.
        target = await _wanted_version(s) or status.upgrade.to_version or current
        return await upgrade(s, target)
    if status.phase not in READY_PHASES:
        return NOTHING  # a node that is not Ready yet is configured in place: nothing to drain
    await _consume_retry_request(s)
    wanted = await _wanted_version(s)
    if wanted is None:
        return Pass(blocked=True)
    if not same_version(wanted, current):
        failed = status.upgrade.failed_version if status.upgrade else None
        if same_version(failed, wanted):
            return Pass(blocked=True)
        return await upgrade(s, wanted)
    if _annotations(s).get(REBOOT_ANNOTATION, "").strip():
        return await reboot(s)
    return NOTHING


def _annotations(s: Session) -> dict[str, str]:
    return dict(s.node.metadata.annotations or {})


async def _wanted_version(s: Session) -> str | None:
    """The version the spec (or the apiserver's default) asks for; None when the skew policy refuses it
    (UpgradeBlocked and VersionCompatible say why; nothing retries until the spec changes)."""
    try:
        wanted = await choose_version(s)
    except StepFailure as failure:
        if failure.reason != "VersionSkew":
            raise
        first = not s.writer.condition_is_true(C.UPGRADE_BLOCKED)
        s.writer.condition(C.VERSION_COMPATIBLE, False, failure.reason, failure.message)
        s.writer.condition(C.UPGRADE_BLOCKED, True, failure.reason, failure.message)
        s.writer.observed()  # handled: the refusal is the answer to this spec
        await s.writer.flush()
        if first:
            await s.events.warning("UpgradeRefused", failure.message)
        return None
    if s.writer.condition_is_true(C.UPGRADE_BLOCKED):
        s.writer.condition(C.UPGRADE_BLOCKED, False, "WithinSkewPolicy", f"{wanted} may be installed")
    return wanted


async def _consume_retry_request(s: Session) -> None:
    """winnode.io/retry-upgrade: forget the failed version (so it is tried once more) and the annotation."""
    if RETRY_ANNOTATION not in _annotations(s):
        return
    upgrade = s.writer.status.upgrade
    if upgrade is not None and upgrade.failed_version:
        await s.events.normal(
            "UpgradeRetryRequested", f"{RETRY_ANNOTATION} set: trying {upgrade.failed_version} again"
        )
        s.writer.status.upgrade = None
        await s.writer.flush()
    await _remove_annotation(s, RETRY_ANNOTATION)


async def _remove_annotation(s: Session, key: str) -> None:
    await s.deps.kube.request(
        "PATCH",
        path("apis", WINDOWS_NODE.group, WINDOWS_NODE.version, WINDOWS_NODE.plural, s.name),
        body={"metadata": {"annotations": {key: None}}},
        content_type=JSON_MERGE_PATCH,
        missing_ok=True,
    )


# --- the upgrade ---------------------------------------------------------------------------------


async def upgrade(s: Session, to_version: str) -> Pass:
    """One pass of the upgrade of `s` to `to_version`, from wherever status.upgrade says it is."""
    status = s.writer.status
    progress = status.upgrade
    from_version = installed_version(s) or to_version
    if progress is None or progress.step is None or not same_version(progress.to_version, to_version):
        if progress is not None and progress.step is not None:
            # The target changed mid-way: the version to fall back on stays the one the node ran
            # before (what the .previous binaries hold).
            from_version = progress.from_version or from_version
        status.upgrade = progress = UpgradeProgress(
            operation=UPGRADE,
            from_version=from_version,
            to_version=to_version,
            step=UpgradeStep.STAGING,
            started_at=now(),
        )
        s.writer.condition(
            C.UPGRADE_FAILED, False, "Upgrading", f"upgrading kubelet {from_version} -> {to_version}"
        )
        await s.writer.flush()
        await s.events.normal(
            "UpgradeStarted", f"upgrading kubelet and kube-proxy {from_version} -> {to_version}"
        )
    from_version = progress.from_version or from_version
    if progress.step is UpgradeStep.ROLLING_BACK:
        creds = await load_credentials(s)
        host, _ = await connect(s, creds)
        return await _roll_back(s, host, from_version, to_version, s.writer.status.last_error or "resumed")

    reason = f"upgrade to {to_version}"
    # Staged in an earlier pass and waiting: no host work until a slot is free. With hundreds of
    # nodes queued, re-connecting and re-checking every staged file on each pass would take the
    # operator's CPU and the hosts' WinRM away from the nodes that hold the slots.
    held = progress.step is UpgradeStep.WAITING_FOR_SLOT
    if held:
        claim = await _wait_for_slot(s, reason)
        if claim is not None:
            return claim
    try:
        creds = await load_credentials(s)
        host, _ = await connect(s, creds)
        new_sums = await resolve_checksums(s, to_version)
        if not held:
            await _step(s, UpgradeStep.STAGING)
        await _stage(s, host, to_version, new_sums)
    except StepFailure:
        if held:  # nothing was disrupted yet: the slot goes back to the nodes that can use it
            await release_slot(s)
        raise
    if await _already_upgraded(s, host, to_version, new_sums):
        await _finish(s, to_version, "the host already runs it")
        return Pass(ran=True, message="finished")

    if not held:
        claim = await _wait_for_slot(s, reason)
        if claim is not None:
            return claim
    s.deps.metrics.upgrade_in_flight(s.node.metadata.uid or s.name, True)
    drained = await _cordon_and_drain(s)
    if drained is not None:
        return drained

    await _step(s, UpgradeStep.SWAPPING, NodePhase.UPGRADING)
    swapped = await _swap(s, host, new_sums, from_version)
    if swapped:
        await s.events.normal("BinariesSwapped", "; ".join(swapped))
    await _step(s, UpgradeStep.STARTING, NodePhase.UPGRADING)
    try:
        await _start(host)
        await _step(s, UpgradeStep.VERIFYING, NodePhase.UPGRADING)
        await _wait_ready(s, to_version)
    except StepFailure as failure:
        return await _roll_back(s, host, from_version, to_version, f"{failure.reason}: {failure.message}")
    await _finish(s, to_version, f"Node {s.node_name} is Ready with kubelet {to_version}")
    return Pass(ran=True, message="upgraded")


async def _step(s: Session, step: UpgradeStep, phase: NodePhase | None = None) -> None:
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


async def _call(host: HostApi, params: Any, expect: type[R], doing: str) -> R:
    try:
        return await run_action(host, params, expect)
    except HostError as exc:
        raise host_failure(exc, doing, C.BINARIES_INSTALLED) from exc


async def _stat(host: HostApi, paths: list[str]) -> dict[str, str | None]:
    """SHA-256 of each path on the host (None: no such file)."""
    result = await _call(
        host, StatFilesParams(paths=paths), StatFilesResult, "read the state of the binaries"
    )
    folded = {k.casefold(): v for k, v in result.files.items()}
    out: dict[str, str | None] = {}
    for p in paths:
        st = folded.get(p.casefold())
        out[p] = st.sha256.lower() if st is not None and st.exists and st.sha256 else None
    return out


async def _stage(s: Session, host: HostApi, version: str, sums: dict[str, str]) -> None:
    """Download the new binaries beside the running ones; nothing is disrupted yet."""
    artifacts = s.node.spec.artifacts
    base_url = artifacts.base_url if artifacts else kc.DEFAULT_ARTIFACTS_URL
    for binary in kc.BINARIES:
        url = kc.artifact_url(base_url, version, binary)
        await _call(
            host,
            FetchFileParams(url=url, path=staged_path(binary), sha256=sums[binary]),
            FileWriteResult,
            f"stage {binary} {version} from {url}",
        )


async def _already_upgraded(s: Session, host: HostApi, version: str, sums: dict[str, str]) -> bool:
    """The swap happened and the new kubelet is Ready (an operator killed after verifying)."""
    stats = await _stat(host, [kc.BINARY_PATHS[b] for b in kc.BINARIES])
    if any(stats[kc.BINARY_PATHS[b]] != sums[b] for b in kc.BINARIES):
        return False
    node = await get_node(s.deps.kube, s.node_name)
    return node is not None and node_is_ready(node) and same_version(node_kubelet_version(node), version)


def _slots(s: Session) -> Slots:
    async def stale(name: str, holder: Holder) -> bool:
        obj = await s.deps.kube.request(
            "GET",
            path("apis", WINDOWS_NODE.group, WINDOWS_NODE.version, WINDOWS_NODE.plural, name),
            missing_ok=True,
        )
        return obj is None or ((obj.get("metadata") or {}).get("uid") or "") != holder.uid

    return Slots(s.deps.kube, s.deps.settings.namespace, s.deps.settings.max_unavailable, stale)


async def _wait_for_slot(s: Session, reason: str) -> Pass | None:
    """Hold a slot of the budget (None), or a Pass to retry later when none became free in time."""
    slots = _slots(s)
    poll = timeouts.UPGRADE_SLOT_WAIT
    deadline = time.monotonic() + poll.deadline
    progress = s.writer.status.upgrade
    announced = progress is not None and progress.step is UpgradeStep.WAITING_FOR_SLOT
    while True:
        try:
            claim = await slots.claim(s.node_name, s.node.metadata.uid or "", reason)
        except ApiException as exc:
            raise StepFailure(
                "SlotUnavailable",
                f"cannot read or update the slots Lease in namespace {s.deps.settings.namespace}: "
                f"{api_message(exc)}; check that the namespace exists and the operator may update Leases there",
            ) from exc
        if claim.granted:
            await s.events.normal("SlotAcquired", f"{reason}: {claim.summary(slots.limit)}")
            return None
        if not announced:
            announced = True
            await _step(s, UpgradeStep.WAITING_FOR_SLOT)
            await s.events.normal(
                "WaitingForSlot",
                f"{reason} waits for a free slot (maxUnavailable): {claim.summary(slots.limit)}",
            )
        if time.monotonic() >= deadline:
            return Pass(
                ran=True,
                finished=False,
                retry_after=timeouts.UPGRADE_SLOT_RETRY,
                message=f"waiting for a slot: {claim.summary(slots.limit)}",
            )
        await asyncio.sleep(poll.interval)


async def release_slot(s: Session) -> None:
    """Give this node's slot of the budget back (its upgrade or reboot ended, or it is being deleted)."""
    await _slots(s).release(s.node_name)
    s.deps.metrics.upgrade_in_flight(s.node.metadata.uid or s.name, False)


async def _cordon(s: Session) -> None:
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


async def _uncordon(s: Session) -> None:
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


async def _cordon_and_drain(s: Session) -> Pass | None:
    """Cordon and drain; None when the node is empty, else the Pass the drain-blocked policy gives."""
    await _step(s, UpgradeStep.CORDONING, NodePhase.DRAINING)
    try:
        await _cordon(s)
    except ApiException as exc:
        raise StepFailure("CordonFailed", f"cannot cordon Node {s.node_name}: {api_message(exc)}") from exc
    await _step(s, UpgradeStep.DRAINING, NodePhase.DRAINING)
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
    except ApiException as exc:
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
    await _uncordon(s)
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


async def _stop(host: HostApi) -> None:
    for name in STOP_ORDER:
        await steps.stop_service(host, name)


async def _start(host: HostApi) -> None:
    await steps.start_services(host, list(START_ORDER))


async def _swap(s: Session, host: HostApi, new_sums: dict[str, str], from_version: str) -> list[str]:
    """Stop the services, keep the running binaries as .previous, put the staged ones in place.

    A binary that already is the new one is left alone, so a swap resumed after a crash never
    overwrites the kept previous binary with the new one; nor does a binary that is not the version
    to fall back on (a target changed mid-way), when that version's checksums are known."""
    try:
        keep: dict[str, str] | None = await resolve_checksums(s, from_version)
    except StepFailure as failure:
        log.info("%s: checksums of %s unknown (%s); keeping whatever runs", s.name, from_version, failure)
        keep = None
    bins = [kc.BINARY_PATHS[b] for b in kc.BINARIES]
    stats = await _stat(host, bins)
    todo = [b for b in kc.BINARIES if stats[kc.BINARY_PATHS[b]] != new_sums[b]]
    if not todo:
        return []
    await _stop(host)
    changes: list[str] = []
    for binary in todo:
        target = kc.BINARY_PATHS[binary]
        current = stats[target]
        if current is not None and (keep is None or current == keep[binary]):
            await _call(
                host,
                CopyFileParams(source=target, path=previous_path(binary), sha256=current),
                FileWriteResult,
                f"keep {target} as {previous_path(binary)}",
            )
        await _call(
            host,
            CopyFileParams(source=staged_path(binary), path=target, sha256=new_sums[binary]),
            FileWriteResult,
            f"put the staged {binary} in place",
        )
        changes.append(f"{binary} replaced (previous kept as {previous_path(binary)})")
    return changes


async def _wait_ready(s: Session, version: str) -> None:
    """The Node Ready with kubeletVersion `version` within timeouts.UPGRADE_READY, else StepFailure."""
    poll = timeouts.UPGRADE_READY
    deadline = time.monotonic() + poll.deadline
    while True:
        await approve_for(s.deps, [s.node_name])  # a new serving certificate may be asked for
        node = await get_node(s.deps.kube, s.node_name)
        reported = node_kubelet_version(node) if node else None
        if node is not None and node_is_ready(node) and same_version(reported, version):
            s.writer.condition(
                C.NODE_READY, True, "KubeletReady", f"Node {s.node_name} is Ready, kubelet {reported}"
            )
            return
        if time.monotonic() >= deadline:
            if node is None:
                why = "the Node does not exist"
            elif not same_version(reported, version):
                why = f"it reports kubelet {reported}"
            else:
                why = "it is not Ready: " + _ready_message(node)
            raise StepFailure(
                "NodeNotReady",
                f"Node {s.node_name} did not become Ready with kubelet {version} within {poll.deadline:.0f}s; {why}",
                condition=C.NODE_READY,
            )
        await asyncio.sleep(poll.interval)


def _ready_message(node: dict[str, Any]) -> str:
    for c in (node.get("status") or {}).get("conditions") or []:
        if c.get("type") == "Ready":
            return f"{c.get('reason')}: {c.get('message')}"
    return "no Ready condition"


async def _roll_back(s: Session, host: HostApi, from_version: str, to_version: str, why: str) -> Pass:
    """Put the previous binaries back and get the node Ready on `from_version` again."""
    first = (
        s.writer.status.upgrade is not None and s.writer.status.upgrade.step is not UpgradeStep.ROLLING_BACK
    )
    s.writer.status.last_error = f"UpgradeFailed: {why}"
    await _step(s, UpgradeStep.ROLLING_BACK, NodePhase.UPGRADING)
    if first:
        await s.events.warning(
            "RollingBack", f"upgrade to {to_version} failed ({why}); putting {from_version} back"
        )
    old_sums = await resolve_checksums(s, from_version)
    bins = [kc.BINARY_PATHS[b] for b in kc.BINARIES]
    stats = await _stat(host, bins)
    todo = [b for b in kc.BINARIES if stats[kc.BINARY_PATHS[b]] != old_sums[b]]
    if todo:
        await _stop(host)
    for binary in todo:
        previous = await _stat(host, [previous_path(binary)])
        if previous[previous_path(binary)] != old_sums[binary]:
            raise StepFailure(
                "RollbackImpossible",
                f"{previous_path(binary)} on the host is not {binary} {from_version}; cannot roll back. "
                f"Set spec.kubernetesVersion to a version that works, or copy {binary} {from_version} "
                f"to {kc.BINARY_PATHS[binary]} on the host",
                condition=C.UPGRADE_FAILED,
                admin=True,
            )
        await _call(
            host,
            CopyFileParams(
                source=previous_path(binary), path=kc.BINARY_PATHS[binary], sha256=old_sums[binary]
            ),
            FileWriteResult,
            f"put {binary} {from_version} back",
        )
    await _start(host)
    try:
        await _wait_ready(s, from_version)
    except StepFailure as failure:
        raise StepFailure(
            "RollbackFailed",
            f"rolled back to {from_version} after {why}, but: {failure.message}",
            condition=C.UPGRADE_FAILED,
        ) from failure
    await _uncordon(s)
    await release_slot(s)
    status = s.writer.status
    status.upgrade = UpgradeProgress(
        operation=UPGRADE,
        from_version=from_version,
        to_version=to_version,
        failed_version=to_version,
        started_at=status.upgrade.started_at if status.upgrade else None,
    )
    status.installed = InstalledVersions(
        kubelet=from_version,
        kube_proxy=from_version,
        cni_plugins=status.installed.cni_plugins if status.installed else None,
    )
    message = (
        f"upgrade to {to_version} failed and was rolled back to {from_version}: {why}. Not retried until "
        f"spec.kubernetesVersion changes or the annotation {RETRY_ANNOTATION} is set"
    )
    s.writer.condition(C.UPGRADE_FAILED, True, "RolledBack", message)
    s.writer.set_phase(NodePhase.READY)
    s.writer.observed()
    await s.writer.flush()
    s.deps.metrics.upgrades.labels("rolled_back").inc()
    await s.events.warning("UpgradeFailed", message)
    return Pass(ran=True, blocked=True, message=message)


async def _finish(s: Session, version: str, detail: str) -> None:
    await _step(s, UpgradeStep.UNCORDONING, NodePhase.UPGRADING)
    await _uncordon(s)
    await release_slot(s)
    status = s.writer.status
    previous = status.upgrade.from_version if status.upgrade else None
    status.upgrade = None
    status.installed = InstalledVersions(
        kubelet=version,
        kube_proxy=version,
        cni_plugins=status.installed.cni_plugins if status.installed else None,
    )
    s.writer.condition(
        C.BINARIES_INSTALLED,
        True,
        "Installed",
        f"kubelet and kube-proxy {version} installed, SHA-256 verified",
    )
    s.writer.condition(C.UPGRADE_FAILED, False, "Upgraded", f"upgraded from {previous} to {version}")
    s.writer.set_phase(NodePhase.READY)
    s.writer.clear_error()
    await s.writer.flush()
    s.deps.metrics.upgrades.labels("succeeded").inc()
    await s.events.normal("Upgraded", f"kubelet and kube-proxy {previous} -> {version}: {detail}")


# --- reboot --------------------------------------------------------------------------------------


async def reboot(s: Session) -> Pass:
    """One pass of a budgeted reboot (annotation winnode.io/reboot-requested)."""
    status = s.writer.status
    version = installed_version(s) or ""
    progress = status.upgrade
    if progress is None or progress.step is None or progress.operation != REBOOT:
        failed = progress.failed_version if progress else None
        status.upgrade = progress = UpgradeProgress(
            operation=REBOOT, from_version=version, to_version=version, step=UpgradeStep.WAITING_FOR_SLOT,
            started_at=now(), failed_version=failed,
        )  # fmt: skip
        await s.writer.flush()
        reason = _annotations(s).get(REBOOT_ANNOTATION, "")
        await s.events.normal("RebootRequested", f"{REBOOT_ANNOTATION}={reason!r}: cordon, drain, reboot")
    creds = await load_credentials(s)
    if progress.boot_id is None:
        claim = await _wait_for_slot(s, "reboot")
        if claim is not None:
            return claim
        s.deps.metrics.upgrade_in_flight(s.node.metadata.uid or s.name, True)
        drained = await _cordon_and_drain(s)
        if drained is not None:
            return drained
        host, _ = await connect(s, creds)
        await _step(s, UpgradeStep.REBOOTING, NodePhase.UPGRADING)
        answer = await _call(
            host,
            RebootParams(reason="winnode: reboot requested", delay_s=REBOOT_DELAY_S),
            RebootResult,
            "reboot the host",
        )
        progress.boot_id = answer.boot_id
        await s.writer.flush()
        await s.events.normal("Rebooting", f"host of Node {s.node_name} is rebooting")
    await _wait_rebooted(s, creds, progress.boot_id)
    host, _ = await connect(s, creds)
    await _step(s, UpgradeStep.VERIFYING, NodePhase.UPGRADING)
    await _start(host)
    await _wait_ready(s, version)
    await _step(s, UpgradeStep.UNCORDONING, NodePhase.UPGRADING)
    await _uncordon(s)
    await release_slot(s)
    failed = progress.failed_version
    status.upgrade = UpgradeProgress(failed_version=failed) if failed else None
    s.writer.set_phase(NodePhase.READY)
    s.writer.clear_error()
    await s.writer.flush()
    await _remove_annotation(s, REBOOT_ANNOTATION)
    s.deps.metrics.upgrades.labels("rebooted").inc()
    await s.events.normal("Rebooted", f"host of Node {s.node_name} rebooted; Node Ready and uncordoned")
    return Pass(ran=True, message="rebooted")


async def _wait_rebooted(s: Session, creds: Any, boot_id: str | None) -> None:
    """Until the host answers with another boot id than `boot_id` (it went down and came back)."""
    poll = timeouts.REBOOT_UP
    deadline = time.monotonic() + poll.deadline
    while True:
        try:
            host = s.deps.host_factory(s.node, creds)
            facts = await run_action(host, FactsParams(), FactsResult)
            if facts.boot_id != boot_id:
                return
        except HostError as exc:  # refused or timing out while it is down
            log.info("%s: host not back yet: %s", s.name, exc)
        if time.monotonic() >= deadline:
            raise StepFailure(
                "RebootTimeout",
                f"the host of Node {s.node_name} did not come back from its reboot within {poll.deadline:.0f}s; "
                "check it on its console",
                condition=C.REACHABLE,
            )
        await asyncio.sleep(poll.interval)
