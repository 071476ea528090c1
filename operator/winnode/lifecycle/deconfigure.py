"""What happens when a WindowsNode is deleted (its finalizer): the node leaves the cluster and the host
is left as winnode found it.

  1. cordon, drain through the Eviction API (bounded; PodDisruptionBudgets respected)  DrainBlocked
  2. stop and remove our services, remove the HNS network, firewall rules and our files
  3. delete the Node, revoke bootstrap tokens, release the pod subnet

An unreachable host (or one refusing our credentials) must not block deletion forever: with the
annotation winnode.io/force-delete: "true" the host part is skipped, status.leftOnHost lists what may
be left there and a Warning Event says so. Without it, deletion retries and the status says how to
force it; after DECONFIGURE_UNREACHABLE_GRACE a Warning Event repeats that.
A DrainBlocked condition likewise holds deletion until the drain finishes or deletion is forced.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import UTC, datetime

from winnode import timeouts
from winnode.api import NodePhase
from winnode.host.actions import (
    DefenderExclusionsEnsureParams,
    DefenderExclusionsResult,
    FactsResult,
    FirewallRuleRemoveParams,
    HnsNetworkRemoveParams,
    RemovedResult,
    RemovePathParams,
    ServiceRemoveParams,
)
from winnode.kube.api import ApiError
from winnode.kube.client import api_message
from winnode.kube.drain import drain
from winnode.kube.nodes import NodeUpdateError, delete_node
from winnode.kube.proxy_identity import revoke_kube_proxy_identity
from winnode.kube.tokens import revoke_bootstrap_tokens
from winnode.lifecycle import kubelet_config as kc
from winnode.lifecycle import node_ready, ownership, steps
from winnode.lifecycle.cni_setup import cni_layout
from winnode.lifecycle.context import HostApi, call
from winnode.lifecycle.disruption import cordon
from winnode.lifecycle.network_setup import release_node_subnet
from winnode.lifecycle.session import Session, connect, load_credentials
from winnode.lifecycle.status import C, StepFailure
from winnode.network.cni_plugins import CNI_PLUGINS
from winnode.network.containerd import DEFAULT_LAYOUT
from winnode.network.hns import EXTERNAL_NETWORK_NAME, HNS_NETWORK_NAME
from winnode.network.ipam import SubnetError
from winnode.settings import FIELD_PREFIX

log = logging.getLogger(__name__)

FORCE_DELETE_ANNOTATION = f"{FIELD_PREFIX}/force-delete"


def force_requested(annotations: dict[str, str]) -> bool:
    return annotations.get(FORCE_DELETE_ANNOTATION, "").strip().lower() == "true"


def host_leftovers() -> list[str]:
    """Everything winnode may have put on a host, for an admin to remove by hand."""
    return [
        *(f"service {name}" for name in kc.SERVICES),
        f"HNS network {HNS_NETWORK_NAME}",
        f"firewall rules {kc.FIREWALL_KUBELET}, {kc.FIREWALL_VXLAN}",
        f"Microsoft Defender process exclusions {', '.join(kc.DEFENDER_EXCLUDED_PROCESSES)}",
        *(f"directory {d}" for d in kc.OWNED_DIRECTORIES),
        *(f"directory {d} (when empty)" for d in kc.LOG_PARENTS),
        *(f"file {f}" for f in kc.OWNED_FILES),
        f"CNI plugins {', '.join(CNI_PLUGINS)} in containerd's CNI bin_dir",
    ]


def host_touched(s: Session) -> bool:
    """Whether any configure attempt got as far as changing the host."""
    status = s.writer.status
    touched = (C.BINARIES_INSTALLED, C.NETWORK_CONFIGURED, C.SERVICES_RUNNING)
    return status.installed is not None or any(c.type in touched for c in status.conditions)


async def drain_node(s: Session, force: bool) -> None:
    kube = s.deps.kube
    try:
        await cordon(s, for_removal=True)
        result = await drain(kube, s.node_name, timeouts.DECONFIGURE_DRAIN)
    except (ApiError, NodeUpdateError) as exc:
        message = api_message(exc) if isinstance(exc, ApiError) else str(exc)
        raise StepFailure("DrainFailed", f"cannot drain Node {s.node_name}: {message}") from exc
    if result.done:
        s.writer.condition(C.DRAIN_BLOCKED, False, "Drained", "no pods left to evict")
        return
    message = (
        f"draining Node {s.node_name} before removal: {result.summary()}; fix what blocks it, or set "
        f"annotation {FORCE_DELETE_ANNOTATION}=true on the WindowsNode to remove the node anyway"
    )
    if force:
        s.writer.condition(C.DRAIN_BLOCKED, True, "DrainForced", message)
        await s.events.warning("DrainSkipped", f"deletion forced with pods left: {result.summary()}")
        return
    raise StepFailure("DrainBlocked", message, condition=C.DRAIN_BLOCKED)


def cni_files(facts: FactsResult) -> list[str]:
    """Our CNI configuration and plugins where this host's containerd looks (its defaults when its
    configuration cannot be read any more)."""
    try:
        layout = cni_layout(facts)
    except StepFailure:
        layout = DEFAULT_LAYOUT
    return [layout.conf_file, *(layout.plugin_path(p) for p in CNI_PLUGINS)]


async def clean_host(host: HostApi, owned_files: Sequence[str] = kc.OWNED_FILES) -> list[str]:
    """Remove everything of ours from the host; what was removed."""
    removed: list[str] = []
    infos = await steps.query_services(host, list(kc.SERVICES), None)
    # kube-proxy first: it depends on kubelet.
    for name in reversed(kc.SERVICES):
        info = infos[name]
        if not info.exists:
            continue
        if not kc.is_ours(info.description):
            log.info("service %s on the host is not ours; left alone", name)
            continue
        await _remove(host, ServiceRemoveParams(name=name), f"remove service {name}")
        removed.append(f"service {name}")
    # The pod network, then the External network winnode created before it (network/hns.py); the
    # host's address moves back to its adapter with the last one.
    for network in (HNS_NETWORK_NAME, EXTERNAL_NETWORK_NAME):
        if await _remove(host, HnsNetworkRemoveParams(name=network), f"remove HNS network {network}"):
            removed.append(f"HNS network {network}")
    for rule in (kc.FIREWALL_KUBELET, kc.FIREWALL_VXLAN):
        if await _remove(host, FirewallRuleRemoveParams(name=rule), f"remove firewall rule {rule}"):
            removed.append(f"firewall rule {rule}")
    defender = await call(
        host,
        DefenderExclusionsEnsureParams(processes=list(kc.DEFENDER_EXCLUDED_PROCESSES), present=False),
        DefenderExclusionsResult,
        "remove Microsoft Defender process exclusions",
    )
    if defender.changed:
        removed.append("Microsoft Defender process exclusions")
    for path in owned_files:
        if await _remove(host, RemovePathParams(path=path), f"remove {path}"):
            removed.append(f"file {path}")
    for directory in kc.OWNED_DIRECTORIES:
        if await _remove(host, RemovePathParams(path=directory, recurse=True), f"remove {directory}"):
            removed.append(f"directory {directory}")
    for directory in kc.LOG_PARENTS:
        if await _remove(host, RemovePathParams(path=directory, if_empty=True), f"remove {directory}"):
            removed.append(f"directory {directory}")
    return removed


async def _remove(
    host: HostApi,
    params: ServiceRemoveParams | HnsNetworkRemoveParams | FirewallRuleRemoveParams | RemovePathParams,
    doing: str,
) -> bool:
    return (await call(host, params, RemovedResult, doing)).removed


async def deconfigure(s: Session, *, deletion_started: datetime | None) -> None:
    """Run the whole removal; raises StepFailure (status already updated) to be retried."""
    force = force_requested(s.node.metadata.annotations)
    await node_ready.mirror(s)
    s.writer.set_phase(NodePhase.DRAINING)
    await s.writer.flush()
    await drain_node(s, force)
    s.writer.set_phase(NodePhase.DECONFIGURING)
    await s.writer.flush()
    removed: list[str] = []
    try:
        creds = await load_credentials(s)
        host, facts = await connect(s, creds)
        if await ownership.may_clean(s, host, touched=host_touched(s)):
            removed = await clean_host(host, cni_files(facts))
            await ownership.release(s, host)
    except StepFailure as failure:
        if failure.condition not in (C.REACHABLE, C.AUTHENTICATED, C.CREDENTIALS_AVAILABLE):
            raise
        if not host_touched(s):
            log.info(
                "%s: host never configured and not usable (%s); nothing to clean", s.name, failure.reason
            )
        elif not force:
            failure.message += (
                f"; the host could not be cleaned up. Once it is reachable deletion continues; to remove "
                f"the node without cleaning the host, set annotation {FORCE_DELETE_ANNOTATION}=true "
                f"(`kubectl annotate wn {s.name} {FORCE_DELETE_ANNOTATION}=true`)"
            )
            if deletion_started is not None:
                waited = (datetime.now(UTC) - deletion_started).total_seconds()
                if waited >= timeouts.DECONFIGURE_UNREACHABLE_GRACE:
                    await s.events.warning("DeletionBlocked", failure.message)
            raise
        else:
            left = host_leftovers()
            s.writer.status.left_on_host = left
            # status goes with the object once the finalizer is removed: the Event and the log keep
            # the list for the admin who cleans the host by hand.
            log.warning(
                "%s: deletion forced while host %s was not usable (%s); left on the host: %s",
                s.name,
                s.node.spec.address,
                failure.reason,
                ", ".join(left),
            )
            await s.events.warning(
                "HostNotCleaned",
                f"deletion forced while the host was not usable ({failure.reason}); may be left on "
                f"{s.node.spec.address}: " + ", ".join(left),
            )
    if removed:
        await s.events.normal("HostCleaned", "removed " + ", ".join(removed))
    await s.writer.flush()
    try:
        await delete_node(s.deps.kube, s.node_name)
        node_ready.removed(s)
        await revoke_bootstrap_tokens(s.deps.kube, s.node_name)
        await revoke_kube_proxy_identity(s.deps.kube, s.node_name)
        await release_node_subnet(s.deps.kube, s.node)
    except ApiError as exc:
        raise StepFailure(
            "NodeRemovalFailed", f"cannot remove Node {s.node_name}: {api_message(exc)}"
        ) from exc
    except SubnetError as exc:
        raise StepFailure(exc.reason, str(exc)) from exc
