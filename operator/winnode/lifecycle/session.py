"""The vocabulary every lifecycle operation shares: one reconcile of one WindowsNode (Session), its
credentials and connection, the facts and desired state of its host, one wrapper for host calls,
versions as values, and the wait for its Node to be Ready.

configure, drift, upgrade, reboot and deconfigure speak it; none of them borrows from another.
"""

from __future__ import annotations

import ipaddress
import logging
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar

from winnode import timeouts
from winnode.api import ConditionStatus, HostFacts, NodePhase, WindowsNode
from winnode.api.common import parse_ip
from winnode.api.windowsnetwork import WindowsNetworkSpec
from winnode.api.windowsnode import WINDOWS_NODE
from winnode.csr.policy import ExpectedHost
from winnode.host.actions import FactsParams, FactsResult, ObserveParams, ObserveResult
from winnode.host.errors import HostAuthenticationError, HostError, ScriptFailedError
from winnode.kube.api import ApiError
from winnode.kube.client import JSON_MERGE_PATCH, api_message, path
from winnode.kube.credentials import Credentials, CredentialsError, allowed_namespaces, read_credentials
from winnode.kube.nodes import get_node, node_is_ready, node_kubelet_version
from winnode.kube.proxy_identity import ProxyIdentityError, ensure_kube_proxy_token
from winnode.lifecycle import kubelet_config as kc
from winnode.lifecycle import steps
from winnode.lifecycle.cluster_dns import resolve as resolve_cluster_dns
from winnode.lifecycle.cni_setup import cni_layout
from winnode.lifecycle.context import ChecksumError, Deps, HostApi, Recorder, run_action
from winnode.lifecycle.pinning import pin_first_use
from winnode.lifecycle.status import C, StatusWriter, StepFailure, host_failure
from winnode.lifecycle.versions import Version, VersionError, default_version, skew_problem
from winnode.network.hns import HnsHost

log = logging.getLogger(__name__)
R = TypeVar("R", FactsResult, ObserveResult)

READY_PHASES = (NodePhase.READY, NodePhase.DEGRADED)
# StepFailure reason: the WindowsNode is being deleted; whatever runs stops and deconfigure takes over.
DELETING = "Deleting"


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


# --- credentials, connection, facts -----------------------------------------------------------


async def load_credentials(s: Session) -> Credentials:
    ref = s.node.spec.winrm.credentials_secret_ref
    try:
        creds = await read_credentials(
            s.deps.kube, ref, str(s.node.spec.winrm.auth), allowed_namespaces(s.deps.settings)
        )
    except CredentialsError as exc:
        raise StepFailure(exc.reason, str(exc), condition=C.CREDENTIALS_AVAILABLE, admin=True) from exc
    except ApiError as exc:
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
    return await _reach(s, creds, FactsParams(), FactsResult)


async def observe(
    s: Session, creds: Credentials, params: ObserveParams, *, fallback: ObserveParams | None = None
) -> tuple[HostApi, ObserveResult]:
    """Reach the host and read, in one command, its facts and what `params` names (lifecycle/observe.py);
    sets Reachable and Authenticated as `connect` does. When the script fails on the host, `fallback`
    (the facts alone) is read instead: the steps then read each part and name what fails there."""
    return await _reach(s, creds, params, ObserveResult, fallback=fallback)


async def _reach(
    s: Session,
    creds: Credentials,
    params: FactsParams | ObserveParams,
    result: type[R],
    *,
    fallback: ObserveParams | None = None,
) -> tuple[HostApi, R]:
    host = s.deps.host_factory(await pin_first_use(s.node, s.writer, s.events), creds)
    try:
        try:
            answer = await run_action(host, params, result)
        except ScriptFailedError as exc:
            if fallback is None or fallback == params:
                raise
            log.warning(
                "%s: reading the host in one command failed (%s); reading it part by part", s.name, exc
            )
            answer = await run_action(host, fallback, result)
    except ScriptFailedError as exc:
        raise _read_failure(s, exc) from exc
    except HostAuthenticationError as exc:
        s.writer.condition(C.REACHABLE, True, "ListenerAnswered", f"WinRM listener at {s.endpoint} answers")
        raise host_failure(exc, f"log in to {s.endpoint}") from exc
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
    facts = answer.facts if isinstance(answer, ObserveResult) else answer
    s.writer.status.host = host_facts(facts)
    s.deps.expected_hosts[s.node_name] = expected_host(s.node, facts)
    return host, answer


def _read_failure(s: Session, exc: ScriptFailedError) -> StepFailure:
    # The script ran, so the listener answered and the login worked; what failed is reading
    # the host, which is what the prerequisites are judged on.
    s.writer.condition(C.REACHABLE, True, "Connected", f"WinRM at {s.endpoint} answers")
    s.writer.condition(C.AUTHENTICATED, True, "LoggedIn", f"logged in to {s.endpoint}")
    return host_failure(exc, f"read host facts on {s.endpoint}", C.PREREQUISITES_MET)


def remember_credentials(s: Session, creds: Credentials) -> None:
    s.deps.credentials_seen[s.node.metadata.uid or s.name] = creds.resource_version


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
    except ApiError as exc:
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


def primary_address(facts: FactsResult, node: WindowsNode) -> str | None:
    """The node's IP (kubelet --node-ip, overlay ProviderAddress, OutBoundNAT exception): the IPv4 of
    the interface holding the default route; else spec.address when it is an IP; else the first IPv4
    the host reported. Never a vEthernet, NAT or IPv6 address picked by sort order."""
    if facts.default_route_ipv4:
        return facts.default_route_ipv4
    if parse_ip(node.spec.address) is not None:
        return node.spec.address
    ipv4 = [a for a in facts.addresses if (ip := parse_ip(a)) is not None and ip.version == 4]
    return ipv4[0] if ipv4 else None


async def cluster_dns(s: Session, network: WindowsNetworkSpec, *, warn: bool) -> list[str]:
    try:
        dns = await resolve_cluster_dns(s.deps.kube, network)
    except ApiError as exc:
        raise StepFailure("ClusterDNSUnknown", api_message(exc), condition=C.NETWORK_CONFIGURED) from exc
    if dns.warning and warn:
        await s.events.warning("ClusterDNSGuessed", dns.warning)
    return list(dns.servers)


async def kube_proxy_token(s: Session) -> str:
    """kube-proxy's current ServiceAccount token (renewed when it nears expiry)."""
    try:
        token = await ensure_kube_proxy_token(
            s.deps.kube,
            s.node_name,
            ttl=timedelta(seconds=timeouts.KUBE_PROXY_TOKEN_TTL),
            renew_before=timedelta(seconds=timeouts.KUBE_PROXY_TOKEN_RENEW_BEFORE),
        )
    except (ProxyIdentityError, ApiError) as exc:
        message = api_message(exc) if isinstance(exc, ApiError) else str(exc)
        raise StepFailure("KubeProxyIdentityFailed", message, condition=C.SERVICES_RUNNING) from exc
    return token.token


async def desired_host(
    s: Session,
    network: WindowsNetworkSpec,
    subnet: str,
    version: str,
    checksums: dict[str, str],
    facts: FactsResult,
    *,
    bootstrap_token: str | None = None,
    warn_dns: bool = False,
) -> steps.DesiredHost:
    """What this host should hold (steps.desired_host, the builder the dry run uses too), with
    kube-proxy's current token and the cluster DNS (`warn_dns`: post a Warning when it is guessed)."""
    return steps.desired_host(
        s.node,
        network,
        subnet,
        version,
        checksums,
        s.deps.cluster,
        bootstrap_token=bootstrap_token,
        host_address=primary_address(facts, s.node),
        kube_proxy_token=await kube_proxy_token(s),
        cluster_dns=await cluster_dns(s, network, warn=warn_dns),
        cni_layout=cni_layout(facts),
        hns_host=HnsHost.from_facts(facts),
    )


def annotations_of(s: Session) -> dict[str, str]:
    return dict(s.node.metadata.annotations or {})


async def remove_annotation(s: Session, key: str) -> None:
    await s.deps.kube.request(
        "PATCH",
        path("apis", WINDOWS_NODE.group, WINDOWS_NODE.version, WINDOWS_NODE.plural, s.name),
        body={"metadata": {"annotations": {key: None}}},
        content_type=JSON_MERGE_PATCH,
        missing_ok=True,
    )


# --- versions ------------------------------------------------------------------------------------


def same_version(a: str | Version | None, b: str | Version | None) -> bool:
    """Whether two versions are the same release (v1.33.1 and 1.33.1 are); unparseable ones compare
    as text."""
    if a is None or b is None:
        return False
    try:
        return as_version(a) == as_version(b)
    except VersionError:
        return str(a) == str(b)


def as_version(value: str | Version) -> Version:
    return value if isinstance(value, Version) else Version.parse(value)


def installed_version(s: Session) -> str | None:
    installed = s.writer.status.installed
    return installed.kubelet if installed else None


# --- waiting for the Node ------------------------------------------------------------------------


async def deleted_meanwhile(s: Session) -> bool:
    """The WindowsNode is gone or being deleted: whatever waits for its host should stop now."""
    obj = await s.deps.kube.request(
        "GET",
        path("apis", WINDOWS_NODE.group, WINDOWS_NODE.version, WINDOWS_NODE.plural, s.name),
        missing_ok=True,
    )
    return obj is None or bool((obj.get("metadata") or {}).get("deletionTimestamp"))


async def approve_csrs(s: Session) -> None:
    """Approve this node's pending kubelet CSRs that pass the policy (the approver posts the Events)."""
    await s.deps.approver.approve_for([s.node_name])


async def wait_node_ready(s: Session, version: str | Version, poll: timeouts.Poll) -> None:
    """Until the Node is Ready with kubeletVersion `version`, approving its CSRs meanwhile (a new
    kubelet asks for a serving certificate once its Node exists). StepFailure "NodeNotReady" after
    `poll.deadline`, saying why; StepFailure "Deleting" as soon as the WindowsNode is being deleted."""
    try:
        target: str | Version = as_version(version)  # parsed once, not at every poll
    except VersionError:
        target = str(version)
    wanted = str(version)
    node: dict[str, Any] | None = None
    reported: str | None = None
    async for _ in poll.attempts():
        await approve_csrs(s)
        node = await get_node(s.deps.kube, s.node_name)
        reported = node_kubelet_version(node) if node else None
        if node is not None and node_is_ready(node) and same_version(reported, target):
            s.writer.condition(
                C.NODE_READY, True, "KubeletReady", f"Node {s.node_name} is Ready, kubelet {reported}"
            )
            return
        if await deleted_meanwhile(s):
            raise StepFailure(DELETING, "the WindowsNode is being deleted", condition=None)
    if node is None:
        why = "the Node does not exist"
    elif not same_version(reported, target):
        why = f"it reports kubelet {reported}, expected {wanted}"
    else:
        why = "it is not Ready: " + ready_message(node) + f"; see `kubectl describe node {s.node_name}`"
    raise StepFailure(
        "NodeNotReady",
        f"Node {s.node_name} did not become Ready with kubelet {wanted} within {poll.deadline:.0f}s: {why}",
        condition=C.NODE_READY,
    )


def ready_message(node: dict[str, Any]) -> str:
    """The Node's Ready condition as "reason: message"."""
    for c in (node.get("status") or {}).get("conditions") or []:
        if c.get("type") == "Ready":
            return f"{c.get('reason')}: {c.get('message')}"
    return "no Ready condition"
