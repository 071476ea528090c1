"""What happens when a WindowsNode is created (or changed, or found again after a restart).

From a bare Windows host to a Ready Kubernetes node, as an ordered list of idempotent steps
(DESIGN §3). Each step reads before it writes, so running the whole flow again after an
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

import asyncio
import ipaddress
import logging
import time
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from kubernetes.client.exceptions import ApiException

from winnode import timeouts
from winnode.api import (
    ConditionStatus,
    HostFacts,
    InstalledVersions,
    NodePhase,
    WindowsNode,
)
from winnode.api.common import parse_ip
from winnode.host.actions import FactsParams, FactsResult
from winnode.host.errors import HostAuthenticationError, HostError, ScriptFailedError
from winnode.kube.client import api_message
from winnode.kube.credentials import Credentials, CredentialsError, read_credentials
from winnode.kube.nodes import (
    NodeNotFoundError,
    NodeUpdateError,
    apply_labels_and_taints,
    get_node,
    node_is_ready,
    node_kubelet_version,
    set_pod_cidr,
)
from winnode.kube.tokens import BootstrapTokenError, ensure_bootstrap_token, revoke_bootstrap_tokens
from winnode.lifecycle import kubelet_config as kc
from winnode.lifecycle import steps
from winnode.lifecycle.approval import approve_for
from winnode.lifecycle.cni_setup import cni_layout, resolve_cni_checksums
from winnode.lifecycle.context import ChecksumError, Deps, ExpectedHost, HostApi, Recorder, run_action
from winnode.lifecycle.csr_policy import Decision
from winnode.lifecycle.network_setup import NodeNetwork, node_network
from winnode.lifecycle.preflight import preflight, summarize
from winnode.lifecycle.status import C, StatusWriter, StepFailure, host_failure, now
from winnode.lifecycle.versions import Version, VersionError, default_version, skew_problem
from winnode.network.cni_plugins import CNI_PLUGINS_VERSION
from winnode.settings import FIELD_PREFIX

log = logging.getLogger(__name__)

# The condition type lives in the API enum; this name stays for the handlers that import it.
PAUSED_CONDITION = C.PAUSED
# Annotation on the Node recording which labels and taints winnode applied (kube.nodes).
MANAGED_ANNOTATION = f"{FIELD_PREFIX}/managed"
READY_PHASES = (NodePhase.READY, NodePhase.DEGRADED)


@dataclass
class Session:
    """One reconcile of one WindowsNode."""

    deps: Deps
    node: WindowsNode
    writer: StatusWriter
    events: Recorder

    @property
    def name(self) -> str:
        return self.node.metadata.name

    @property
    def node_name(self) -> str:
        return self.node.node_name

    @property
    def endpoint(self) -> str:
        winrm = self.node.spec.winrm
        return f"{winrm.scheme}://{self.node.spec.address}:{winrm.effective_port}"

    @property
    def was_ready(self) -> bool:
        return self.writer.initial_phase in READY_PHASES

    async def progress(self, phase: NodePhase) -> None:
        """Show `phase` (a node that was Ready keeps showing Ready while it is re-checked)."""
        if not self.was_ready:
            self.writer.set_phase(phase)
        await self.writer.flush()


# --- steps ---------------------------------------------------------------------------------------


async def load_credentials(s: Session) -> Credentials:
    ref = s.node.spec.winrm.credentials_secret_ref
    try:
        creds = await read_credentials(s.deps.kube, ref, str(s.node.spec.winrm.auth))
    except CredentialsError as exc:
        raise StepFailure(exc.reason, str(exc), condition=C.CREDENTIALS_AVAILABLE, admin=True) from exc
    except ApiException as exc:
        raise StepFailure(
            "SecretUnreadable",
            f"cannot read credentials Secret {ref.namespace}/{ref.name}: {api_message(exc)}",
            condition=C.CREDENTIALS_AVAILABLE,
        ) from exc
    s.writer.condition(
        C.CREDENTIALS_AVAILABLE,
        True,
        "SecretFound",
        f"Secret {ref.namespace}/{ref.name} holds credentials for WinRM auth {s.node.spec.winrm.auth}",
    )
    return creds


def host_facts(facts: FactsResult) -> HostFacts:
    return HostFacts(
        hostname=facts.hostname,
        os_build=facts.os_build,
        os_ubr=facts.os_ubr,
        edition=facts.edition,
        containerd_version=facts.containerd.version,
        addresses=list(facts.addresses),
        reboot_pending=facts.reboot_pending,
    )


def expected_host(node: WindowsNode, facts: FactsResult) -> ExpectedHost:
    """What this host's kubelet may put in its CSRs: the addresses and names the host reported."""
    addresses: set[str] = set()
    for address in facts.addresses:
        try:
            addresses.add(str(ipaddress.ip_address(address)))
        except ValueError:
            continue
    names = {facts.hostname.lower(), node.node_name.lower()}
    if parse_ip(node.spec.address) is not None:
        addresses.add(str(ipaddress.ip_address(node.spec.address)))
    else:
        names.add(node.spec.address.lower())
    return ExpectedHost(
        windows_node=node.metadata.name,
        uid=node.metadata.uid or "",
        addresses=frozenset(addresses),
        hostnames=frozenset(names),
    )


async def connect(s: Session, creds: Credentials) -> tuple[HostApi, FactsResult]:
    """Reach the host and read its facts; sets Reachable and Authenticated."""
    host = s.deps.host_factory(s.node, creds)
    try:
        facts = await run_action(host, FactsParams(), FactsResult)
    except HostAuthenticationError as exc:
        s.writer.condition(C.REACHABLE, True, "ListenerAnswered", f"WinRM listener at {s.endpoint} answers")
        raise host_failure(exc, f"log in to {s.endpoint}") from exc
    except ScriptFailedError as exc:
        # The script ran, so the listener answered and the login worked; what failed is reading
        # the host, which is what the prerequisites are judged on.
        s.writer.condition(C.REACHABLE, True, "Connected", f"WinRM at {s.endpoint} answers")
        s.writer.condition(C.AUTHENTICATED, True, "LoggedIn", f"logged in to {s.endpoint}")
        raise host_failure(exc, f"read host facts on {s.endpoint}", C.PREREQUISITES_MET) from exc
    except HostError as exc:
        failure = host_failure(exc, f"connect to {s.endpoint}")
        if failure.condition == C.REACHABLE:
            s.writer.condition(
                C.AUTHENTICATED, ConditionStatus.UNKNOWN, "NotReached", "the host was not reached"
            )
        raise failure from exc
    s.writer.condition(C.REACHABLE, True, "Connected", f"WinRM at {s.endpoint} answers")
    s.writer.condition(
        C.AUTHENTICATED,
        True,
        "LoggedIn",
        f"logged in as {creds.username or 'certificate user'} with {s.node.spec.winrm.auth}",
    )
    s.writer.status.host = host_facts(facts)
    s.deps.expected_hosts[s.node_name] = expected_host(s.node, facts)
    return host, facts


def remember_credentials(s: Session, creds: Credentials) -> None:
    s.deps.credentials_seen[s.node.metadata.uid or s.name] = creds.resource_version


def check_prerequisites(s: Session, facts: FactsResult) -> None:
    problems = preflight(facts, now=now(), limits=s.deps.preflight_limits)
    reason, message = summarize(problems)
    if problems:
        raise StepFailure(reason, message, condition=C.PREREQUISITES_MET, admin=True)
    s.writer.condition(C.PREREQUISITES_MET, True, reason, message)


async def choose_version(s: Session) -> str:
    try:
        api = await s.deps.apiserver_version()
        api_version = Version.parse(api)
        wanted = (
            Version.parse(s.node.spec.kubernetes_version)
            if s.node.spec.kubernetes_version
            else default_version(api)
        )
    except VersionError as exc:
        raise StepFailure("VersionUnknown", str(exc), condition=C.VERSION_COMPATIBLE) from exc
    except ApiException as exc:
        raise StepFailure(
            "ApiserverVersionUnavailable",
            f"cannot read the apiserver's version: {api_message(exc)}",
            condition=C.VERSION_COMPATIBLE,
        ) from exc
    problem = skew_problem(wanted, api_version)
    if problem:
        raise StepFailure("VersionSkew", problem, condition=C.VERSION_COMPATIBLE, admin=True)
    source = (
        "spec.kubernetesVersion" if s.node.spec.kubernetes_version else "the apiserver's version (default)"
    )
    s.writer.condition(
        C.VERSION_COMPATIBLE,
        True,
        "WithinSkewPolicy",
        f"kubelet {wanted} from {source} may join kube-apiserver {api_version}",
    )
    return str(wanted)


async def resolve_checksums(s: Session, version: str) -> dict[str, str]:
    artifacts = s.node.spec.artifacts
    base_url = artifacts.base_url if artifacts else kc.DEFAULT_ARTIFACTS_URL
    out: dict[str, str] = {}
    for binary in kc.BINARIES:
        given = artifacts.sha256.get(binary) if artifacts else None
        if given:
            out[binary] = given.lower()
            continue
        try:
            out[binary] = await s.deps.checksums.sha256_of(kc.artifact_url(base_url, version, binary))
        except ChecksumError as exc:
            raise StepFailure(exc.reason, str(exc), condition=C.BINARIES_INSTALLED, admin=True) from exc
    return out


async def bootstrap_token(s: Session) -> str:
    try:
        token = await ensure_bootstrap_token(
            s.deps.kube, s.node_name, timedelta(seconds=timeouts.BOOTSTRAP_TOKEN_TTL)
        )
    except (BootstrapTokenError, ApiException) as exc:
        message = api_message(exc) if isinstance(exc, ApiException) else str(exc)
        raise StepFailure("BootstrapTokenFailed", message, condition=C.NODE_REGISTERED) from exc
    return token.value


def primary_address(facts: FactsResult, node: WindowsNode) -> str | None:
    if parse_ip(node.spec.address) is not None:
        return node.spec.address
    return facts.addresses[0] if facts.addresses else None


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
    s.writer.condition(
        C.NETWORK_CONFIGURED,
        True,
        "Configured",
        f"HNS network {desired.hns.name} ({desired.hns.type}) on pod subnet {desired.hns.address_prefix}",
    )
    changes += await steps.ensure_services(host, desired)
    await s.writer.flush()
    return changes


async def _deleted_meanwhile(s: Session) -> bool:
    from winnode.api.windowsnode import WINDOWS_NODE
    from winnode.kube.client import path

    obj = await s.deps.kube.request(
        "GET",
        path("apis", WINDOWS_NODE.group, WINDOWS_NODE.version, WINDOWS_NODE.plural, s.name),
        missing_ok=True,
    )
    return obj is None or bool((obj.get("metadata") or {}).get("deletionTimestamp"))


async def _approve(s: Session) -> None:
    for csr, verdict in await approve_for(s.deps, [s.node_name]):
        if verdict.decision is Decision.REJECT:
            await s.events.warning("CSRNotApproved", f"CSR {csr} left pending: {verdict.reason}")
        elif verdict.decision is Decision.APPROVE:
            await s.events.normal("CSRApproved", f"CSR {csr}: {verdict.reason}")


async def wait_for_node(s: Session, host: HostApi, version: str) -> dict[str, Any]:
    """Approve this node's CSRs as they come and wait for its Node; returns the Node once it exists."""
    poll = timeouts.NODE_JOIN
    deadline = time.monotonic() + poll.deadline
    while True:
        await _approve(s)
        node = await get_node(s.deps.kube, s.node_name)
        if node is not None:
            s.writer.condition(C.NODE_REGISTERED, True, "Registered", f"Node {s.node_name} is registered")
            await s.writer.flush()
            return node
        if time.monotonic() >= deadline:
            infos = await steps.query_services(host, [kc.KUBELET_SERVICE], C.SERVICES_RUNNING)
            state = infos[kc.KUBELET_SERVICE].state
            raise StepFailure(
                "NodeNotRegistered",
                f"Node {s.node_name} did not register within {poll.deadline:.0f}s (kubelet service: "
                f"{state or 'missing'}); check `Get-Content {kc.LOG_DIR}\\kubelet.log` on the host and "
                "that the host reaches the apiserver at "
                f"{s.deps.cluster.server}; pending CSRs: `kubectl get csr`",
                condition=C.NODE_REGISTERED,
            )
        if await _deleted_meanwhile(s):
            raise StepFailure("Deleting", "the WindowsNode is being deleted", condition=None)
        await asyncio.sleep(poll.interval)


async def wait_for_ready(s: Session, version: str) -> None:
    poll = timeouts.NODE_JOIN
    deadline = time.monotonic() + poll.deadline
    wanted = Version.parse(version)
    while True:
        await _approve(s)  # the serving certificate is asked for once the Node exists
        node = await get_node(s.deps.kube, s.node_name)
        reported = node_kubelet_version(node) if node else None
        try:
            version_ok = reported is not None and Version.parse(reported) == wanted
        except VersionError:
            version_ok = False
        if node is not None and node_is_ready(node) and version_ok:
            s.writer.condition(
                C.NODE_READY, True, "KubeletReady", f"Node {s.node_name} is Ready, kubelet {reported}"
            )
            return
        if time.monotonic() >= deadline:
            if node is None:
                why = "it was deleted"
            elif not version_ok:
                why = f"it reports kubelet {reported}, expected {version}"
            else:
                why = "it is not Ready; see `kubectl describe node " + s.node_name + "`"
            raise StepFailure(
                "NodeNotReady",
                f"Node {s.node_name} did not become Ready with kubelet {version} within "
                f"{poll.deadline:.0f}s: {why}",
                condition=C.NODE_READY,
            )
        if await _deleted_meanwhile(s):
            raise StepFailure("Deleting", "the WindowsNode is being deleted", condition=None)
        await asyncio.sleep(poll.interval)


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
    except (NodeUpdateError, ApiException) as exc:
        message = api_message(exc) if isinstance(exc, ApiException) else str(exc)
        raise StepFailure("NodeUpdateFailed", message, condition=C.NODE_REGISTERED) from exc


async def finish_join(s: Session) -> None:
    """The kubelet holds its own client certificate now: its bootstrap token is revoked.

    The bootstrap kubeconfig stays on the host with a dead token in it: kubelet reads it only when
    its own kubeconfig is unusable, and a revoked token gets nothing from the apiserver.
    """
    try:
        revoked = await revoke_bootstrap_tokens(s.deps.kube, s.node_name)
    except ApiException as exc:
        raise StepFailure(
            "BootstrapTokenRevokeFailed", api_message(exc), condition=C.NODE_REGISTERED
        ) from exc
    if revoked:
        log.info("%s: bootstrap token revoked", s.name)


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
        creds = await load_credentials(s)
        host, facts = await connect(s, creds)
        remember_credentials(s, creds)
        await s.progress(NodePhase.PREPARING)
        check_prerequisites(s, facts)
        version = keep_version or await choose_version(s)
        network: NodeNetwork = await node_network(s.deps.kube, s.node)
        s.writer.status.subnet = network.subnet
        s.writer.status.node_name = s.node_name
        layout = cni_layout(facts)
        checksums = {**await resolve_checksums(s, version), **await resolve_cni_checksums(s)}
        existing = await get_node(s.deps.kube, s.node_name)
        token = None if existing is not None else await bootstrap_token(s)
        desired = steps.desired_host(
            s.node,
            network.spec,
            network.subnet,
            version,
            checksums,
            s.deps.cluster,
            bootstrap_token=token,
            host_address=primary_address(facts, s.node),
            cni_layout=layout,
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
        await wait_for_ready(s, version)
        await finish_join(s)
    except StepFailure as failure:
        if host is not None and (kubelet_started_here or not s.was_ready) and failure.reason != "Deleting":
            await _stop_kubelet_after_failure(s, host)
        raise
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
