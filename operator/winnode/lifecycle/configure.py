"""What happens when a WindowsNode is created (or changed, or found again after a restart).

From a bare Windows host to a Ready Kubernetes node, as an ordered list of idempotent steps
(docs/architecture.md). Each step reads before it writes, so running the whole flow again after an
interruption at any point only does what is still missing:

  1. spec + credentials Secret                         CredentialsAvailable
  2. connect, host facts                               Reachable, Authenticated
  3. preflight (build, Containers, containerd, disk,   PrerequisitesMet
     clock, pending reboot)
  4. version (default: the apiserver's; skew policy)   VersionCompatible
  5. network: pod subnet from the WindowsNetwork
  6. bootstrap token (short TTL) while the Node does not exist yet
  7. host: directories, binaries (SHA-256 checked),    BinariesInstalled
     CA, bootstrap kubeconfig, kubelet and kube-proxy
     configuration, CNI config; HNS network;           NetworkConfigured
     services and firewall
  8. start kubelet; approve its CSRs after checking    ServicesRunning
     them; wait for the Node to register; kube-proxy   NodeRegistered
  9. pod CIDR, labels and taints; wait for Ready with  NodeReady
     the expected kubeletVersion
 10. revoke the bootstrap token; phase Ready

A failure becomes a condition with a reason, lastError, a Warning Event and a StepFailure the
handler turns into a retry with backoff. When a step fails after kubelet was started on a node
that had not been Ready before, kubelet is stopped again so that a half-configured node never
shows Ready; a node that was Ready keeps running (its workloads matter more than the change).
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

from winnode import timeouts
from winnode.api import InstalledVersions, NodePhase
from winnode.host.actions import FactsResult
from winnode.kube.api import ApiError
from winnode.kube.client import api_message
from winnode.kube.nodes import (
    NodeNotFoundError,
    NodeUpdateError,
    apply_labels_and_taints,
    get_node,
    set_pod_cidr,
)
from winnode.kube.tokens import BootstrapTokenError, ensure_bootstrap_token, revoke_bootstrap_tokens
from winnode.lifecycle import apiserver, ownership, steps
from winnode.lifecycle import kubelet_config as kc
from winnode.lifecycle import observe as observation
from winnode.lifecycle.cni_setup import cni_layout, resolve_cni_checksums
from winnode.lifecycle.context import HostApi
from winnode.lifecycle.network_setup import NodeNetwork, node_network
from winnode.lifecycle.preflight import os_deprecation, preflight, summarize
from winnode.lifecycle.session import (
    Session,
    approve_csrs,
    choose_version,
    connect,
    deleted_meanwhile,
    desired_host,
    load_credentials,
    remember_credentials,
    resolve_checksums,
    wait_node_ready,
)
from winnode.lifecycle.status import C, StepFailure, now
from winnode.network.cni_plugins import CNI_PLUGINS_VERSION
from winnode.settings import FIELD_PREFIX

log = logging.getLogger(__name__)

# The condition type lives in the API enum; this name stays for the handlers that import it.
PAUSED_CONDITION = C.PAUSED
# Annotation on the Node recording which labels and taints winnode applied (kube.nodes).
MANAGED_ANNOTATION = f"{FIELD_PREFIX}/managed"


# --- steps ---------------------------------------------------------------------------------------


def check_prerequisites(s: Session, facts: FactsResult) -> str | None:
    """Raises StepFailure for a host that cannot be configured; a warning for one that is configured
    although its Windows release is past support."""
    problems = preflight(facts, now=now(), limits=s.deps.preflight_limits)
    reason, message = summarize(problems)
    if problems:
        raise StepFailure(reason, message, condition=C.PREREQUISITES_MET, admin=True)
    s.writer.condition(C.PREREQUISITES_MET, True, reason, message)
    deprecated = os_deprecation(facts)
    if deprecated is None:
        s.writer.condition(C.OS_SUPPORTED, True, "Supported", f"{facts.os_caption} is supported")
        return None
    s.writer.condition(C.OS_SUPPORTED, False, deprecated.reason, deprecated.message)
    return deprecated.message


async def bootstrap_token(s: Session) -> str:
    try:
        token = await ensure_bootstrap_token(
            s.deps.kube, s.node_name, timedelta(seconds=timeouts.BOOTSTRAP_TOKEN_TTL)
        )
    except (BootstrapTokenError, ApiError) as exc:
        message = api_message(exc) if isinstance(exc, ApiError) else str(exc)
        raise StepFailure("BootstrapTokenFailed", message, condition=C.NODE_REGISTERED) from exc
    return token.value


async def install(s: Session, host: HostApi, desired: steps.DesiredHost) -> list[str]:
    # Imported here: network_disruption builds on this module (Session) and on upgrade.
    from winnode.lifecycle import network_disruption

    changes: list[str] = []
    changes += await steps.ensure_directories(host, desired)
    changes += await steps.ensure_files(host, desired)
    s.writer.condition(
        C.BINARIES_INSTALLED,
        True,
        "Installed",
        f"kubelet and kube-proxy {desired.version} and CNI plugins {CNI_PLUGINS_VERSION} installed, "
        "SHA-256 verified",
    )
    s.writer.status.installed = InstalledVersions(
        kubelet=desired.version, kube_proxy=desired.version, cni_plugins=CNI_PLUGINS_VERSION
    )
    await s.writer.flush()
    guard = network_disruption.RecreateGuard(s)
    changes += await steps.ensure_network(host, desired, guard.before_recreate)
    await guard.done()
    changes += await steps.ensure_firewall(host, desired)
    changes += await steps.ensure_defender(host, desired)
    s.writer.condition(
        C.NETWORK_CONFIGURED,
        True,
        "Configured",
        f"HNS network {desired.hns.name} ({desired.hns.type}) on pod subnet {desired.hns.address_prefix}",
    )
    changes += await steps.ensure_services(host, desired)
    await s.writer.flush()
    return changes


async def wait_for_node(s: Session, host: HostApi, version: str) -> dict[str, Any]:
    """Approve this node's CSRs as they come and wait for its Node; returns the Node once it exists."""
    poll = timeouts.NODE_JOIN
    async for _ in poll.attempts():
        await approve_csrs(s)
        node = await get_node(s.deps.kube, s.node_name)
        if node is not None:
            s.writer.condition(C.NODE_REGISTERED, True, "Registered", f"Node {s.node_name} is registered")
            await s.writer.flush()
            return node
        if await deleted_meanwhile(s):
            raise StepFailure("Deleting", "the WindowsNode is being deleted", condition=None)
    infos = await steps.query_services(host, [kc.KUBELET_SERVICE], C.SERVICES_RUNNING)
    state = infos[kc.KUBELET_SERVICE].state
    raise StepFailure(
        "NodeNotRegistered",
        f"Node {s.node_name} did not register within {poll.deadline:.0f}s (kubelet service: "
        f"{state or 'missing'}); check `Get-Content {kc.KUBELET_LOG}` on the host and "
        "that the host reaches the apiserver at "
        f"{s.deps.cluster.server}; pending CSRs: `kubectl get csr`",
        condition=C.NODE_REGISTERED,
    )


async def apply_node_settings(s: Session, subnet: str) -> None:
    node = s.node
    labels = dict(node.spec.labels)
    try:
        await set_pod_cidr(s.deps.kube, s.node_name, subnet)
        await apply_labels_and_taints(
            s.deps.kube, s.node_name, labels, list(node.spec.taints), MANAGED_ANNOTATION
        )
    except NodeNotFoundError as exc:
        raise StepFailure("NodeVanished", str(exc), condition=C.NODE_REGISTERED) from exc
    except (NodeUpdateError, ApiError) as exc:
        message = api_message(exc) if isinstance(exc, ApiError) else str(exc)
        raise StepFailure("NodeUpdateFailed", message, condition=C.NODE_REGISTERED) from exc


async def finish_join(s: Session, host: HostApi) -> list[str]:
    """The kubelet holds its own client certificate now: its bootstrap token is revoked and the
    bootstrap kubeconfig leaves the host (kubelet reads it only while its own kubeconfig is unusable;
    pkg/kubelet/certificate/bootstrap/bootstrap.go LoadClientCert)."""
    try:
        revoked = await revoke_bootstrap_tokens(s.deps.kube, s.node_name)
    except ApiError as exc:
        raise StepFailure(
            "BootstrapTokenRevokeFailed", api_message(exc), condition=C.NODE_REGISTERED
        ) from exc
    if revoked:
        log.info("%s: bootstrap token revoked", s.name)
    return await steps.remove_bootstrap_kubeconfig(host)


# --- the flow ------------------------------------------------------------------------------------


async def set_paused(s: Session, paused: bool) -> None:
    """spec.paused: no host changes; the phase stays what it was."""
    if paused:
        s.writer.condition(
            C.PAUSED,
            True,
            "PausedBySpec",
            "spec.paused is true: winnode does not configure, repair or upgrade this host",
        )
    else:
        s.writer.condition(C.PAUSED, False, "Resumed", "spec.paused is false")
    await s.writer.flush()


async def configure(s: Session, *, keep_version: str | None = None) -> list[str]:
    """Run the whole flow; the host changes made. Raises StepFailure (status already updated).

    `keep_version`: install this version instead of choosing one: the wanted version is refused or was
    rolled back, and the rest of the spec (labels, taints, kubelet settings...) still has to apply."""
    kubelet_started_here = False
    host: HostApi | None = None
    try:
        await s.progress(NodePhase.CONNECTING)
        apiserver.require_known(s)
        creds = await load_credentials(s)
        reached, facts = await connect(s, creds)
        # `host` stays None until the host is ours: a failure before must not stop another's kubelet.
        await ownership.claim(s, reached)
        host = reached
        remember_credentials(s, creds)
        await s.progress(NodePhase.PREPARING)
        deprecated = check_prerequisites(s, facts)
        if deprecated:
            await s.events.warning("OSDeprecated", deprecated)
        version = keep_version or await choose_version(s)
        network: NodeNetwork = await node_network(s.deps.kube, s.node)
        s.writer.status.subnet = network.subnet
        s.writer.status.node_name = s.node_name
        cni_layout(facts)  # a containerd without CNI directories fails here, before anything is written
        checksums = {**await resolve_checksums(s, version), **await resolve_cni_checksums(s)}
        existing = await get_node(s.deps.kube, s.node_name)
        token = None if existing is not None else await bootstrap_token(s)
        desired = await desired_host(
            s, network.spec, network.subnet, version, checksums, facts, bootstrap_token=token, warn_dns=True
        )
        await s.progress(NodePhase.INSTALLING)
        changes = await install(s, host, desired)
        started = await steps.start_services(host, [kc.KUBELET_SERVICE])
        kubelet_started_here = bool(started)
        changes += started
        await s.progress(NodePhase.JOINING)
        await wait_for_node(s, host, version)
        changes += await steps.start_services(host, [kc.KUBE_PROXY_SERVICE])
        s.writer.condition(C.SERVICES_RUNNING, True, "Running", "kubelet and kube-proxy are running")
        await apply_node_settings(s, network.subnet)
        await wait_node_ready(s, version, timeouts.NODE_JOIN)
        changes += await finish_join(s, host)
    except StepFailure as failure:
        if host is not None and (kubelet_started_here or not s.was_ready) and failure.reason != "Deleting":
            await _stop_kubelet_after_failure(s, host)
        raise
    # The next drift check reads all of this in one command.
    s.deps.observe_plans[s.node.metadata.uid or s.name] = observation.plan(
        desired.without_bootstrap(), kc.SERVICES
    )
    # Ready with this network spec: the network's rollout counts the node as done.
    s.writer.status.applied_network = network.applied()
    s.writer.set_phase(NodePhase.READY)
    s.writer.clear_error()
    s.writer.observed()
    await s.writer.flush()
    return changes


async def _stop_kubelet_after_failure(s: Session, host: HostApi) -> None:
    try:
        info = (await steps.query_services(host, [kc.KUBELET_SERVICE], None))[kc.KUBELET_SERVICE]
        ours = info.exists and kc.is_ours(info.description)
        if ours and await steps.stop_service(host, kc.KUBELET_SERVICE, None):
            s.writer.condition(
                C.SERVICES_RUNNING,
                False,
                "StoppedAfterFailure",
                "kubelet was stopped because configuring the node failed; it starts again on the next try",
            )
            log.info("%s: kubelet stopped after a failed configure step", s.name)
    except StepFailure as exc:
        log.info("%s: could not stop kubelet after a failed step: %s", s.name, exc)
