"""What a reconcile needs from the world, in one object: the Kubernetes API, a way to reach hosts,
artifact checksums, the cluster's address and CA, metrics, and the operator's shared memory
(per-object locks, what the CSR approver expects of each node)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

import aiohttp

from winnode import timeouts
from winnode.api import WindowsNode
from winnode.csr.approver import Approver
from winnode.csr.policy import ExpectedHost
from winnode.host.actions import ObserveParams, Params, Result
from winnode.host.errors import HostError
from winnode.kube.client import Kube
from winnode.kube.credentials import Credentials
from winnode.kube.events import post_event
from winnode.lifecycle.drift_triggers import DriftWakeups
from winnode.lifecycle.network_wakeups import NetworkWakeups
from winnode.lifecycle.preflight import PreflightLimits
from winnode.lifecycle.status import host_failure
from winnode.metrics import OperatorMetrics
from winnode.settings import Settings

log = logging.getLogger(__name__)

R = TypeVar("R", bound=Result)


class HostApi(Protocol):
    """One Windows host, as the lifecycle sees it: run an action, get its typed result."""

    async def run(self, params: Params) -> Result: ...


HostFactory = Callable[[WindowsNode, Credentials], HostApi]


async def run_action(host: HostApi, params: Params, expect: type[R]) -> R:
    """Run `params` on `host` and check that the result is of the type the action promises."""
    result = await host.run(params)
    if isinstance(result, expect):
        return result
    return expect.model_validate(result.model_dump() if isinstance(result, Result) else result)


async def call(host: HostApi, params: Params, expect: type[R], doing: str, condition: str | None = None) -> R:
    """Run one host action; a host error becomes a StepFailure naming what was being done (and the
    condition it falls on when it is not a connection or login problem)."""
    try:
        return await run_action(host, params, expect)
    except HostError as exc:
        raise host_failure(exc, doing, condition) from exc


def default_host_factory(settings: Settings) -> HostFactory:
    """Real hosts over WinRM (winnode.host.client), sharing the process-wide transport and its limits."""
    from winnode.host.client import HostClient, HostConnection, shared_transport

    transport = shared_transport(settings)

    def connect(node: WindowsNode, credentials: Credentials) -> HostApi:
        winrm = node.spec.winrm
        connection = HostConnection(
            address=node.spec.address,
            port=winrm.effective_port,
            scheme=str(winrm.scheme),
            auth=str(winrm.auth),
            username=credentials.username,
            password=credentials.password,
            cert_pem=credentials.cert_pem,
            key_pem=credentials.key_pem,
            ca_bundle=winrm.ca_bundle,
            insecure_skip_verify=winrm.insecure_skip_verify,
            pinned_sha256=winrm.certificate_sha256
            or (node.status.listener_certificate_sha256 if winrm.trust_on_first_use else None),
            name=f"WindowsNode {node.metadata.name}",
            kerberos_hostname=winrm.kerberos_hostname,
        )
        return HostClient(connection, transport)

    return connect


HostPass = Callable[[str], contextlib.AbstractAsyncContextManager[None]]


@contextlib.asynccontextmanager
async def no_host_pass(address: str) -> AsyncIterator[None]:
    """For hosts that are not reached over the WinRM transport (fakes): nothing to share."""
    yield


def default_host_pass(settings: Settings) -> HostPass:
    """The process-wide transport's passes: commands of one reconcile share a shell on their host."""
    from winnode.host.client import shared_transport

    return shared_transport(settings).host_pass


class ChecksumError(RuntimeError):
    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


_SHA256 = re.compile(r"^[0-9a-fA-F]{64}$")


class ChecksumResolver:
    """Expected SHA-256 of artifacts: `<url>.sha256` as published next to the file, cached per URL."""

    def __init__(self) -> None:
        self._cache: dict[str, str] = {}
        self._lock = asyncio.Lock()

    async def sha256_of(self, url: str) -> str:
        if url in self._cache:
            return self._cache[url]
        async with self._lock:
            if url in self._cache:
                return self._cache[url]
            digest = await self._fetch(url + ".sha256")
            self._cache[url] = digest
            return digest

    async def _fetch(self, url: str) -> str:
        timeout = aiohttp.ClientTimeout(total=timeouts.CHECKSUM_FETCH)
        try:
            async with aiohttp.ClientSession(timeout=timeout) as session, session.get(url) as response:
                if response.status != 200:
                    raise ChecksumError(
                        "ChecksumUnavailable",
                        f"{url} answered HTTP {response.status}; publish the file's SHA-256 there or set "
                        "spec.artifacts.sha256 for it",
                    )
                text = await response.text()
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise ChecksumError(
                "ChecksumUnavailable",
                f"cannot read {url} ({type(exc).__name__}: {exc}); the operator reads published "
                "checksums itself: make the mirror reachable from it or set spec.artifacts.sha256",
            ) from None
        token = text.strip().split()[0] if text.strip() else ""
        if not _SHA256.match(token):
            raise ChecksumError(
                "ChecksumUnavailable",
                f"{url} does not hold a SHA-256 (64 hex digits); fix the mirror or set spec.artifacts.sha256",
            )
        return token.lower()


@dataclass(frozen=True)
class ClusterInfo:
    """How a kubelet reaches the apiserver: its URL and the CA that signs its certificate."""

    server: str
    ca_pem: str


def cluster_info_from(kube: Kube, server_override: str = "") -> ClusterInfo:
    credentials = kube.credentials
    if not credentials.ca_pem:
        raise RuntimeError(
            "the operator's kubeconfig names no certificate authority; a kubelet could not verify the apiserver"
        )
    return ClusterInfo(server=server_override or credentials.server, ca_pem=credentials.ca_pem.decode())


@dataclass
class Deps:
    kube: Kube
    settings: Settings
    host_factory: HostFactory
    cluster: ClusterInfo
    metrics: OperatorMetrics
    checksums: ChecksumResolver = field(default_factory=ChecksumResolver)
    preflight_limits: PreflightLimits = field(default_factory=PreflightLimits)
    # Node name -> what its CSRs may claim; filled by configure from host facts.
    expected_hosts: dict[str, ExpectedHost] = field(default_factory=dict)
    # WindowsNode uid -> resourceVersion of the credentials Secret last used successfully.
    credentials_seen: dict[str, str] = field(default_factory=dict)
    # WindowsNode uid -> what its next drift check reads from the host (lifecycle/observe.py), from
    # the desired state its last configure or drift check computed.
    observe_plans: dict[str, ObserveParams] = field(default_factory=dict)
    # Node events that wake a node's drift check before its timer (lifecycle/drift_triggers.py).
    drift_wakeups: DriftWakeups = field(default_factory=DriftWakeups)
    # WindowsNode and WindowsNetwork events that wake a network's reconcile (lifecycle/network_wakeups.py).
    network_wakeups: NetworkWakeups = field(default_factory=NetworkWakeups)
    # One reconcile pass on a host (host/transport.py host_pass): its commands share one shell.
    host_pass: HostPass = no_host_pass
    _locks: dict[str, asyncio.Lock] = field(default_factory=dict)
    _version: tuple[float, str] | None = None
    _approver: Approver | None = None

    @property
    def approver(self) -> Approver:
        """The CSR approver over the hosts this process configures: one, since it spaces the
        waits' CSR listings (timeouts.CSR_SWEEP_SPACING) for the whole process."""
        if self._approver is None:
            self._approver = Approver(self.kube, self.expected_hosts, self.metrics)
        return self._approver

    def lock_for(self, uid: str) -> asyncio.Lock:
        """One reconcile at a time per WindowsNode (configure, drift, deconfigure)."""
        lock = self._locks.get(uid)
        if lock is None:
            lock = self._locks[uid] = asyncio.Lock()
        return lock

    def forget(self, uid: str, node_name: str) -> None:
        self._locks.pop(uid, None)
        self.credentials_seen.pop(uid, None)
        self.observe_plans.pop(uid, None)
        self.expected_hosts.pop(node_name, None)
        self.drift_wakeups.forget(node_name)

    async def apiserver_version(self) -> str:
        cached = self._version
        if cached is not None and time.monotonic() - cached[0] < timeouts.APISERVER_VERSION_CACHE:
            return cached[1]
        info: dict[str, Any] = await self.kube.request("GET", "/version")
        version = str(info.get("gitVersion", ""))
        self._version = (time.monotonic(), version)
        return version


class Recorder:
    """Events about one WindowsNode (`kubectl describe wn <name>` shows them)."""

    def __init__(self, kube: Kube, node: WindowsNode) -> None:
        self._kube = kube
        self._involved = {
            "apiVersion": node.api_version,
            "kind": node.kind,
            "name": node.metadata.name,
            "uid": node.metadata.uid or "",
        }

    async def normal(self, reason: str, message: str) -> None:
        await post_event(self._kube, self._involved, "Normal", reason, message)

    async def warning(self, reason: str, message: str) -> None:
        await post_event(self._kube, self._involved, "Warning", reason, message)
