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

The annotation winnode.io/reboot-requested runs the same budgeted sequence around a reboot
(lifecycle/reboot.py); slot, cordon, drain and uncordon are lifecycle/disruption.py's.

Every step is idempotent and status.upgrade records where a node is, so an operator killed at any
point resumes: staging skips files whose hash matches, a slot already held is kept, the backup is
only taken while the installed binary is not yet the new one, and a node found already running the
new version Ready is only finished (uncordoned, slot released).
"""

from __future__ import annotations

import logging
from typing import Any

from winnode import timeouts
from winnode.api import InstalledVersions, NodePhase, UpgradeProgress, UpgradeStep
from winnode.host.actions import (
    CopyFileParams,
    FetchFileParams,
    FileWriteResult,
    StatFilesParams,
    StatFilesResult,
)
from winnode.kube.nodes import get_node, node_is_ready, node_kubelet_version
from winnode.lifecycle import kubelet_config as kc
from winnode.lifecycle.context import HostApi, R, call
from winnode.lifecycle.disruption import (
    NOTHING,
    REBOOT,
    UPGRADE,
    Pass,
    record_step,
    release_slot,
    start_services,
    stop_services,
    take_out_of_service,
    uncordon,
    wait_for_slot,
)
from winnode.lifecycle.reboot import REBOOT_ANNOTATION, reboot
from winnode.lifecycle.session import (
    DELETING,
    READY_PHASES,
    Session,
    annotations_of,
    choose_version,
    connect,
    installed_version,
    load_credentials,
    remove_annotation,
    resolve_checksums,
    same_version,
    wait_node_ready,
)
from winnode.lifecycle.status import C, StepFailure, now
from winnode.settings import FIELD_PREFIX

log = logging.getLogger(__name__)

RETRY_ANNOTATION = f"{FIELD_PREFIX}/retry-upgrade"
STAGING_DIR = kc.K_DIR + "\\staging"
PREVIOUS_SUFFIX = ".previous"


def staged_path(binary: str) -> str:
    return f"{STAGING_DIR}\\{binary}"


def previous_path(binary: str) -> str:
    return kc.BINARY_PATHS[binary] + PREVIOUS_SUFFIX


def in_progress(s: Session) -> bool:
    upgrade = s.writer.status.upgrade
    return upgrade is not None and upgrade.step is not None


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
    if annotations_of(s).get(REBOOT_ANNOTATION, "").strip():
        return await reboot(s)
    return NOTHING


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
    if RETRY_ANNOTATION not in annotations_of(s):
        return
    upgrade = s.writer.status.upgrade
    if upgrade is not None and upgrade.failed_version:
        await s.events.normal(
            "UpgradeRetryRequested", f"{RETRY_ANNOTATION} set: trying {upgrade.failed_version} again"
        )
        s.writer.status.upgrade = None
        await s.writer.flush()
    await remove_annotation(s, RETRY_ANNOTATION)


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
        claim = await wait_for_slot(s, reason)
        if claim is not None:
            return claim
    try:
        creds = await load_credentials(s)
        host, _ = await connect(s, creds)
        new_sums = await resolve_checksums(s, to_version)
        if not held:
            await record_step(s, UpgradeStep.STAGING)
        await _stage(s, host, to_version, new_sums)
    except StepFailure as failure:
        if held:  # nothing was disrupted yet: the slot goes back to the nodes that can use it
            await release_slot(s)
        # Nothing was disrupted: the node keeps serving (phase Ready); UpgradeFailed says why.
        failure.keeps_serving = True
        if failure.condition in (None, C.BINARIES_INSTALLED):
            failure.condition = C.UPGRADE_FAILED
        raise
    if await _already_upgraded(s, host, to_version, new_sums):
        await _finish(s, to_version, "the host already runs it")
        return Pass(ran=True, message="finished")

    out = await take_out_of_service(s, reason, slot_held=held)
    if out is not None:
        return out

    await record_step(s, UpgradeStep.SWAPPING, NodePhase.UPGRADING)
    swapped = await _swap(s, host, new_sums, from_version)
    if swapped:
        await s.events.normal("BinariesSwapped", "; ".join(swapped))
    await record_step(s, UpgradeStep.STARTING, NodePhase.UPGRADING)
    try:
        await start_services(host)
        await record_step(s, UpgradeStep.VERIFYING, NodePhase.UPGRADING)
        await wait_node_ready(s, to_version, timeouts.UPGRADE_READY)
    except StepFailure as failure:
        if failure.reason == DELETING:
            raise  # deconfigure takes over: nothing to roll back on a host that is being cleaned
        return await _roll_back(s, host, from_version, to_version, f"{failure.reason}: {failure.message}")
    await _finish(s, to_version, f"Node {s.node_name} is Ready with kubelet {to_version}")
    return Pass(ran=True, message="upgraded")


async def _call(host: HostApi, params: Any, expect: type[R], doing: str) -> R:
    return await call(host, params, expect, doing, C.BINARIES_INSTALLED)


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
    await stop_services(host)
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


async def _roll_back(s: Session, host: HostApi, from_version: str, to_version: str, why: str) -> Pass:
    """Put the previous binaries back and get the node Ready on `from_version` again."""
    first = (
        s.writer.status.upgrade is not None and s.writer.status.upgrade.step is not UpgradeStep.ROLLING_BACK
    )
    s.writer.status.last_error = f"UpgradeFailed: {why}"
    await record_step(s, UpgradeStep.ROLLING_BACK, NodePhase.UPGRADING)
    if first:
        await s.events.warning(
            "RollingBack", f"upgrade to {to_version} failed ({why}); putting {from_version} back"
        )
    old_sums = await resolve_checksums(s, from_version)
    bins = [kc.BINARY_PATHS[b] for b in kc.BINARIES]
    stats = await _stat(host, bins)
    todo = [b for b in kc.BINARIES if stats[kc.BINARY_PATHS[b]] != old_sums[b]]
    if todo:
        await stop_services(host)
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
    await start_services(host)
    try:
        await wait_node_ready(s, from_version, timeouts.UPGRADE_READY)
    except StepFailure as failure:
        if failure.reason == DELETING:
            raise
        raise StepFailure(
            "RollbackFailed",
            f"rolled back to {from_version} after {why}, but: {failure.message}",
            condition=C.UPGRADE_FAILED,
        ) from failure
    await uncordon(s)
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
    await record_step(s, UpgradeStep.UNCORDONING, NodePhase.UPGRADING)
    await uncordon(s)
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
