"""One host, one WindowsNode: the owner marker on the host, and who may change or clean it.

Two WindowsNodes that reach the same host (the same address twice, or an IP and a DNS name of one
machine) would undo each other's configuration, and deleting either would wipe the other's node.
Admission refuses the same address twice (admission/windowsnodes.py); this module holds the rule on
the host itself, whatever names it is reached by:

- configure and the drift check claim the host before changing anything: the owning WindowsNode's
  UID goes into the host's registry (HKLM\\SOFTWARE\\winnode, templates/host_owner_set.ps1) by a
  compare-and-set on the host. A host owned by another WindowsNode that still exists is refused with
  condition HostOwned=False naming it, and nothing on the host is touched (not even kubelet stopped);
- a marker left by a WindowsNode that no longer exists (a forced deletion of an unreachable host) is
  taken over, with a Warning Event saying from whom;
- deconfigure cleans the host only while it owns it, and then removes the marker.

The host's MachineGuid goes into status.host.machineGuid: two WindowsNodes showing the same one are
the same machine.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

from winnode.api import HostFacts
from winnode.api.windowsnode import WINDOWS_NODE
from winnode.host.actions import HostOwnerQueryParams, HostOwnerResult, HostOwnerSetParams
from winnode.host.errors import HostError
from winnode.kube.api import ApiError
from winnode.kube.client import api_message, path
from winnode.lifecycle.context import HostApi, run_action
from winnode.lifecycle.status import C, StepFailure, host_failure

if TYPE_CHECKING:  # configure imports this module
    from winnode.lifecycle.session import Session

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Owner:
    """The WindowsNode a host's marker names, as found in the cluster."""

    uid: str
    name: str
    exists: bool
    deleting: bool = False


async def query(host: HostApi, doing: str) -> HostOwnerResult:
    try:
        return await run_action(host, HostOwnerQueryParams(), HostOwnerResult)
    except HostError as exc:
        raise host_failure(exc, doing) from exc


async def find_owner(s: Session, uid: str, name: str | None) -> Owner:
    """The WindowsNode with this UID, if it still exists (a UID is never reused, a name may be)."""
    try:
        async for page in s.deps.kube.list_pages(
            path("apis", WINDOWS_NODE.group, WINDOWS_NODE.version, WINDOWS_NODE.plural)
        ):
            for item in page:
                meta = item.get("metadata") or {}
                if meta.get("uid") == uid:
                    return Owner(uid, str(meta.get("name")), True, bool(meta.get("deletionTimestamp")))
    except ApiError as exc:
        raise StepFailure(
            "OwnerUnknown",
            f"cannot check which WindowsNode owns host {s.node.spec.address}: {api_message(exc)}",
            condition=C.HOST_OWNED,
        ) from exc
    return Owner(uid, name or "(unknown)", False)


def record_identity(s: Session, marker: HostOwnerResult) -> None:
    if s.writer.status.host is None:
        s.writer.status.host = HostFacts()
    s.writer.status.host.machine_guid = marker.machine_guid


def owned_by_other_message(s: Session, owner: Owner, guid: str) -> str:
    state = " (being deleted; retried once it released the host)" if owner.deleting else ""
    return (
        f"host {s.node.spec.address} (MachineGuid {guid}) belongs to WindowsNode {owner.name}{state}; "
        f"winnode changes nothing on it for {s.name}. Delete WindowsNode {s.name} if it was created by "
        f"mistake, or delete {owner.name} first to hand the host over"
    )


async def claim(s: Session, host: HostApi) -> None:
    """Make this WindowsNode the host's owner, or raise StepFailure(OwnedByOtherWindowsNode)."""
    uid = s.node.metadata.uid or ""
    if not uid:
        # Objects from the API always carry one; a hand-built test object without one cannot own.
        raise StepFailure(
            "InternalError", f"WindowsNode {s.name} has no metadata.uid", condition=C.HOST_OWNED
        )
    marker = await query(host, f"read the owner marker on {s.endpoint}")
    record_identity(s, marker)
    expected: str | None = None
    if marker.owner_uid is not None and marker.owner_uid != uid:
        owner = await find_owner(s, marker.owner_uid, marker.owner_name)
        if owner.exists:
            raise StepFailure(
                "OwnedByOtherWindowsNode",
                owned_by_other_message(s, owner, marker.machine_guid),
                condition=C.HOST_OWNED,
                admin=True,
            )
        expected = marker.owner_uid
    if marker.owner_uid != uid:
        try:
            result = await run_action(
                host,
                HostOwnerSetParams(owner_uid=uid, owner_name=s.name, expected_uid=expected),
                HostOwnerResult,
            )
        except HostError as exc:
            raise host_failure(exc, f"mark host {s.endpoint} as owned by {s.name}", C.HOST_OWNED) from exc
        record_identity(s, result)
        if expected is not None:
            await s.events.warning(
                "HostTakenOver",
                f"host was marked by WindowsNode {marker.owner_name or expected}, which no longer exists; "
                f"{s.name} owns it now",
            )
            log.warning(
                "%s: took over host %s from deleted WindowsNode %s (uid %s)",
                s.name,
                s.node.spec.address,
                marker.owner_name,
                expected,
            )
    _owned(s, marker.machine_guid)


async def confirm(s: Session, host: HostApi, marker: HostOwnerResult | None) -> None:
    """`claim`, with the marker as already read (the drift check's observation): a host marked as
    this WindowsNode's needs no further command."""
    uid = s.node.metadata.uid or ""
    if marker is None or not uid or marker.owner_uid != uid:
        await claim(s, host)
        return
    record_identity(s, marker)
    _owned(s, marker.machine_guid)


def _owned(s: Session, machine_guid: str) -> None:
    s.writer.condition(
        C.HOST_OWNED,
        True,
        "OwnedByThisNode",
        f"host {s.node.spec.address} (MachineGuid {machine_guid}) is marked as owned by {s.name}",
    )


async def may_clean(s: Session, host: HostApi, *, touched: bool) -> bool:
    """Whether deconfigure may remove winnode's things from this host.

    Yes when the marker names this WindowsNode. With no marker, only when this WindowsNode's status
    says it changed the host (a host configured before markers existed). Never when another
    WindowsNode owns it: that one's node runs there.
    """
    uid = s.node.metadata.uid or ""
    marker = await query(host, f"read the owner marker on {s.endpoint}")
    record_identity(s, marker)
    if marker.owner_uid == uid and uid:
        return True
    if marker.owner_uid is None:
        return touched
    owner = await find_owner(s, marker.owner_uid, marker.owner_name)
    if not owner.exists:
        # Its owner is gone; whoever configures the host next takes it over. Nothing here is ours.
        return False
    log.info(
        "%s: host %s belongs to WindowsNode %s; leaving it untouched",
        s.name,
        s.node.spec.address,
        owner.name,
    )
    await s.events.normal(
        "HostLeftToOwner", f"host belongs to WindowsNode {owner.name}; nothing was removed from it"
    )
    return False


async def release(s: Session, host: HostApi) -> None:
    """Remove this WindowsNode's marker (after its things were removed from the host)."""
    uid = s.node.metadata.uid or ""
    try:
        await run_action(host, HostOwnerSetParams(owner_uid=None, expected_uid=uid), HostOwnerResult)
    except HostError as exc:
        raise host_failure(exc, f"remove the owner marker from {s.endpoint}") from exc
