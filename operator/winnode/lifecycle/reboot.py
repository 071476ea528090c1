"""A reboot the admin asks for (annotation winnode.io/reboot-requested), in the same budget as upgrades:
slot, cordon, drain, reboot, wait for the host to go and come back (a new boot id), start the
services, Node Ready, uncordon, release; the annotation is then removed.

status.upgrade (operation Reboot) records the boot id the host had, so an operator killed while the
host is down resumes by waiting for another one.
"""

from __future__ import annotations

import logging
from typing import Any

from winnode import timeouts
from winnode.api import NodePhase, UpgradeProgress, UpgradeStep
from winnode.host.actions import FactsParams, FactsResult, RebootParams, RebootResult
from winnode.host.errors import HostError
from winnode.lifecycle.context import call, run_action
from winnode.lifecycle.disruption import (
    REBOOT,
    Pass,
    record_step,
    release_slot,
    start_services,
    take_out_of_service,
    uncordon,
)
from winnode.lifecycle.session import (
    Session,
    annotations_of,
    connect,
    installed_version,
    load_credentials,
    remove_annotation,
    wait_node_ready,
)
from winnode.lifecycle.status import C, StepFailure, now
from winnode.settings import FIELD_PREFIX

log = logging.getLogger(__name__)

REBOOT_ANNOTATION = f"{FIELD_PREFIX}/reboot-requested"
# Seconds Windows waits before restarting: long enough for the reboot script to answer over WinRM.
REBOOT_DELAY_S = 2


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
        reason = annotations_of(s).get(REBOOT_ANNOTATION, "")
        await s.events.normal("RebootRequested", f"{REBOOT_ANNOTATION}={reason!r}: cordon, drain, reboot")
    creds = await load_credentials(s)
    if progress.boot_id is None:
        out = await take_out_of_service(s, "reboot")
        if out is not None:
            return out
        host, _ = await connect(s, creds)
        await record_step(s, UpgradeStep.REBOOTING, NodePhase.UPGRADING)
        answer = await call(
            host,
            RebootParams(reason="winnode: reboot requested", delay_s=REBOOT_DELAY_S),
            RebootResult,
            "reboot the host",
            C.BINARIES_INSTALLED,
        )
        progress.boot_id = answer.boot_id
        await s.writer.flush()
        await s.events.normal("Rebooting", f"host of Node {s.node_name} is rebooting")
    await _wait_rebooted(s, creds, progress.boot_id)
    host, _ = await connect(s, creds)
    await record_step(s, UpgradeStep.VERIFYING, NodePhase.UPGRADING)
    await start_services(host)
    await wait_node_ready(s, version, timeouts.UPGRADE_READY)
    await record_step(s, UpgradeStep.UNCORDONING, NodePhase.UPGRADING)
    await uncordon(s)
    await release_slot(s)
    failed = progress.failed_version
    status.upgrade = UpgradeProgress(failed_version=failed) if failed else None
    s.writer.set_phase(NodePhase.READY)
    s.writer.clear_error()
    await s.writer.flush()
    await remove_annotation(s, REBOOT_ANNOTATION)
    s.deps.metrics.upgrades.labels("rebooted").inc()
    await s.events.normal("Rebooted", f"host of Node {s.node_name} rebooted; Node Ready and uncordoned")
    return Pass(ran=True, message="rebooted")


async def _wait_rebooted(s: Session, creds: Any, boot_id: str | None) -> None:
    """Until the host answers with another boot id than `boot_id` (it went down and came back)."""
    poll = timeouts.REBOOT_UP
    async for _ in poll.attempts():
        try:
            host = s.deps.host_factory(s.node, creds)
            facts = await run_action(host, FactsParams(), FactsResult)
            if facts.boot_id != boot_id:
                return
        except HostError as exc:  # refused or timing out while it is down
            log.info("%s: host not back yet: %s", s.name, exc)
    raise StepFailure(
        "RebootTimeout",
        f"the host of Node {s.node_name} did not come back from its reboot within {poll.deadline:.0f}s; "
        "check it on its console",
        condition=C.REACHABLE,
    )
