"""Keep every Windows host routing to every peer Node's pod subnet, as Nodes come and go.

Node events (added, pod CIDR or address set, flannel annotations written, deleted) mark the world
changed. After a short debounce (timeouts.ROUTE_SYNC_DEBOUNCE) one pass reads all Nodes, WindowsNodes
and WindowsNetworks (three list calls), computes each host's routes (network.routes) and hands them
to that host's worker. A worker runs one `hns_routes_sync` action with the whole desired set, and only
when it differs from what it last applied there: a burst of joins costs each host one WinRM command,
not one per join. While a worker is busy, newer desired routes replace older ones (never queued).
After a quiet spell a host is updated at once; then at most once per max(ROUTE_SYNC_MIN_SPACING,
hosts / ROUTE_SYNC_FLEET_RATE) seconds, so a fleet joining node by node does not update every host
at every join.

After an overlay host's sync the operator records the distributed router MAC its HNS reported on the
Node (winnode.io/vtep-mac, and the flannel annotations when the network interoperates with flannel),
which is itself a Node change: peers then add the tunnel to it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from winnode import timeouts
from winnode.api import NodePhase, WindowsNode
from winnode.api.windowsnetwork import WINDOWS_NETWORK, LinuxCNI, NetworkMode, WindowsNetworkSpec
from winnode.api.windowsnode import WINDOWS_NODE
from winnode.host.actions import HnsRoutesSyncParams, HnsRoutesSyncResult
from winnode.host.errors import HostError
from winnode.kube.api import ApiError
from winnode.kube.client import JSON_MERGE_PATCH, path
from winnode.kube.credentials import CredentialsError, read_credentials
from winnode.lifecycle.context import Deps, run_action
from winnode.network.routes import (
    BACKEND_DATA,
    BACKEND_TYPE,
    FLANNEL_ANNOTATIONS,
    POD_NETWORK_ANNOTATION,
    PUBLIC_IP,
    VTEP_MAC_ANNOTATION,
    Peer,
    flannel_annotations,
    peer_from_node,
    peers_from_nodes,
    routes_for,
)

log = logging.getLogger(__name__)

# Phases in which the host holds its pod network (created during Installing).
ROUTED_PHASES = (NodePhase.JOINING, NodePhase.READY, NodePhase.DEGRADED, NodePhase.UPGRADING)
ROUTING_KEYS = (VTEP_MAC_ANNOTATION, BACKEND_TYPE, BACKEND_DATA, PUBLIC_IP, POD_NETWORK_ANNOTATION)


def routing_fingerprint(node: Mapping[str, Any]) -> tuple[Any, ...] | None:
    """What of a Node matters to routing; None when it cannot be routed to yet."""
    peer = peer_from_node(node)
    if peer is None:
        return None
    annotations = (node.get("metadata") or {}).get("annotations") or {}
    return (peer, tuple(annotations.get(k) for k in ROUTING_KEYS))


@dataclass(frozen=True)
class RoutedHost:
    """What of a WindowsNode plan_hosts reads, taken from the raw object.

    Every status write (a condition, an upgrade step, a drift repair) is a WindowsNode event, and a
    pass lists every Node and WindowsNode: only a change of this view may cost one. A pass keeps this
    view of each WindowsNode, never the whole object (tens of KiB each once decoded)."""

    name: str
    node_name: str
    network: str | None
    paused: bool
    deleting: bool
    subnet: str | None
    routed: bool  # its phase is one of ROUTED_PHASES: the host holds its pod network

    @classmethod
    def of(cls, body: Mapping[str, Any]) -> RoutedHost:
        meta = body.get("metadata") or {}
        spec = body.get("spec") or {}
        status = body.get("status") or {}
        name = str(meta.get("name"))
        subnet = status.get("subnet")
        return cls(
            name=name,
            node_name=str(spec.get("nodeName") or name),
            network=spec.get("network"),
            paused=bool(spec.get("paused")),
            deleting=meta.get("deletionTimestamp") is not None,
            subnet=str(subnet) if subnet is not None else None,
            routed=status.get("phase") in ROUTED_PHASES,
        )


@dataclass(frozen=True)
class RoutePlan:
    """One host's routes as their inputs; the route list is built only to be applied.

    A host's routes grow with the fleet, so holding every host's list would be memory in N² (at
    1,000 nodes, about 660 MB). Hosts of one network share one tuple of peers, and `key` tells two
    plans apart without building either: routes_for is a pure function of these inputs."""

    node_name: str
    spec: WindowsNetworkSpec
    subnet: str
    peers: tuple[Peer, ...]
    key: tuple[Any, ...]

    def params(self) -> HnsRoutesSyncParams:
        return routes_for(self.node_name, self.spec, self.subnet, self.peers)


@dataclass
class HostRoutes:
    """One host's worker state."""

    windows_node: str
    wanted: RoutePlan | None = None
    # The key of the plan last applied on the host.
    applied: tuple[Any, ...] | None = None
    # The Node's POD_NETWORK_ANNOTATION when `applied` was: another value means a new HNS network.
    network_mark: str | None = None
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None
    failures: int = 0
    # loop.time() of the last update that ran on the host (ROUTE_SYNC_MIN_SPACING).
    synced_at: float | None = None
    # A sync whose result the Node could not carry yet (not registered, no pod CIDR or address):
    # published once the Node can, even when the routes themselves need no new sync.
    # With the network spec of the plan it applied, which is what publishing reads.
    unpublished: tuple[HnsRoutesSyncResult, WindowsNetworkSpec] | None = None


@dataclass
class RouteSyncStats:
    """Counters for benchmarks and metrics: WinRM commands per host, passes, last apply times."""

    commands: dict[str, int] = field(default_factory=dict)
    passes: int = 0
    # WindowsNode -> monotonic time its current routes were applied.
    applied_at: dict[str, float] = field(default_factory=dict)


class RouteSync:
    def __init__(
        self,
        deps: Deps,
        *,
        debounce_s: float = timeouts.ROUTE_SYNC_DEBOUNCE,
        min_spacing_s: float = timeouts.ROUTE_SYNC_MIN_SPACING,
        fleet_rate: float = timeouts.ROUTE_SYNC_FLEET_RATE,
    ) -> None:
        self.deps = deps
        self.debounce_s = debounce_s
        self.min_spacing_s = min_spacing_s
        self.fleet_rate = fleet_rate
        # A host's route list grows with the fleet: built only by a worker holding one of these, as
        # many as the transport runs commands at once, so a fleet-wide change holds a bounded number
        # of lists (not one per host waiting for the transport: memory in N²).
        self._applying = asyncio.Semaphore(deps.settings.winrm_global_concurrency)
        self.stats = RouteSyncStats()
        self._seen: dict[str, tuple[Any, ...] | None] = {}
        self._seen_windows: dict[str, RoutedHost] = {}
        # Hosts whose worker stopped retrying: any event of theirs starts over.
        self._gave_up: set[str] = set()
        self._dirty = asyncio.Event()
        self._hosts: dict[str, HostRoutes] = {}
        self._dispatcher: asyncio.Task[None] | None = None

    # --- events --------------------------------------------------------------------------------

    def node_event(self, event_type: str | None, node: Mapping[str, Any]) -> None:
        """A Node watch event; marks the world changed when it changes anything routing depends on."""
        name = str((node.get("metadata") or {}).get("name"))
        fingerprint = None if event_type == "DELETED" else routing_fingerprint(node)
        if name in self._seen and self._seen[name] == fingerprint:
            return
        if fingerprint is None and name not in self._seen:
            return
        if fingerprint is None:
            self._seen.pop(name, None)
        else:
            self._seen[name] = fingerprint
        self.poke()

    def windows_node_event(self, event_type: str | None, body: Mapping[str, Any]) -> None:
        """A WindowsNode watch event; marks the world changed when routing reads what changed."""
        name = str((body.get("metadata") or {}).get("name"))
        if event_type == "DELETED":
            if self._seen_windows.pop(name, None) is not None:
                self.poke()
            return
        fingerprint = RoutedHost.of(body)
        if self._seen_windows.get(name) == fingerprint and name not in self._gave_up:
            return
        self._gave_up.discard(name)
        self._seen_windows[name] = fingerprint
        self.poke()

    def poke(self) -> None:
        """Recompute every host's routes soon (a WindowsNode reached its network, say)."""
        self._dirty.set()
        if self._dispatcher is None or self._dispatcher.done():
            self._dispatcher = asyncio.ensure_future(self._dispatch())

    async def stop(self) -> None:
        tasks = [t for t in (self._dispatcher, *(h.task for h in self._hosts.values())) if t is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(BaseException):
                await task

    # --- computing -------------------------------------------------------------------------------

    async def _dispatch(self) -> None:
        while True:
            await self._dirty.wait()
            # Coalesce: whatever else arrives within the debounce is part of this pass.
            await asyncio.sleep(self.debounce_s)
            self._dirty.clear()
            try:
                await self._pass()
            except Exception:
                log.exception("route sync: computing routes failed; retried on the next Node change")
                await asyncio.sleep(timeouts.ROUTE_SYNC_RETRY.interval)
                self._dirty.set()

    async def _pass(self) -> None:
        kube = self.deps.kube
        # Page by page, keeping only what routing reads of each object: at 1,000 nodes the whole
        # lists decoded at once were most of the operator's memory.
        peers: list[Peer] = []
        marks: dict[str, str | None] = {}
        async for page in kube.list_pages(path("api", "v1", "nodes")):
            for item in page:
                meta = item.get("metadata") or {}
                marks[str(meta.get("name"))] = (meta.get("annotations") or {}).get(POD_NETWORK_ANNOTATION)
                if (peer := peer_from_node(item)) is not None:
                    peers.append(peer)
        hosts: list[RoutedHost] = []
        async for page in kube.list_pages(
            path("apis", WINDOWS_NODE.group, WINDOWS_NODE.version, WINDOWS_NODE.plural)
        ):
            hosts.extend(RoutedHost.of(item) for item in page)
        networks = {
            str(item["metadata"]["name"]): WindowsNetworkSpec.model_validate(item.get("spec") or {})
            for item in (
                await kube.request(
                    "GET",
                    path("apis", WINDOWS_NETWORK.group, WINDOWS_NETWORK.version, WINDOWS_NETWORK.plural),
                )
            ).get("items")
            or []
        }
        self.stats.passes += 1
        desired = plan_hosts(peers, hosts, networks)
        for name in [n for n in self._hosts if n not in desired]:
            gone = self._hosts.pop(name)
            if gone.task is not None:
                gone.task.cancel()
        node_names = {h.name: h.node_name for h in hosts}
        for name, params in desired.items():
            host = self._hosts.setdefault(name, HostRoutes(windows_node=name))
            mark = marks.get(node_names.get(name, ""))
            if mark != host.network_mark:
                host.network_mark = mark
                host.applied = None  # the network was re-created: its routes are gone
            if params.key != host.applied or host.wanted is not None:
                host.wanted = params
            elif host.unpublished is None:
                continue
            host.changed.set()
            if host.task is None or host.task.done():
                host.task = asyncio.ensure_future(self._work(host))

    # --- applying --------------------------------------------------------------------------------

    async def _work(self, host: HostRoutes) -> None:
        while True:
            host.changed.clear()
            plan = host.wanted
            if plan is None or plan.key == host.applied:
                host.wanted = None
                if host.unpublished is not None:
                    await self._publish_pending(host)
                return
            wait = self._spacing_left(host)
            if wait > 0:
                # Newer plans replace this one meanwhile; the host gets the latest when its turn comes.
                await asyncio.sleep(wait)
                continue
            async with self._applying:
                ok = await self._apply(host, plan)
            if ok:
                host.applied = plan.key
                host.failures = 0
                if host.wanted is plan:
                    host.wanted = None
            elif not host.changed.is_set() and not await self._retry_wait(host):
                # Retried for a bounded time; a later Node or WindowsNode change starts over.
                host.wanted = None
                self._gave_up.add(host.windows_node)
                return

    def _spacing_left(self, host: HostRoutes) -> float:
        """Seconds until `host` may be updated again (timeouts.ROUTE_SYNC_MIN_SPACING)."""
        if host.synced_at is None:
            return 0.0
        spacing = max(self.min_spacing_s, len(self._hosts) / self.fleet_rate if self.fleet_rate else 0.0)
        return host.synced_at + spacing - asyncio.get_running_loop().time()

    async def _retry_wait(self, host: HostRoutes) -> bool:
        poll = timeouts.ROUTE_SYNC_RETRY
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(host.changed.wait(), poll.interval * (1 + random.random()))
        host.failures += 1
        if host.failures * poll.interval >= poll.deadline:
            host.failures = 0
            return False
        return True

    async def _windows_node(self, name: str) -> WindowsNode | None:
        obj = await self.deps.kube.request(
            "GET",
            path("apis", WINDOWS_NODE.group, WINDOWS_NODE.version, WINDOWS_NODE.plural, name),
            missing_ok=True,
        )
        return None if obj is None else WindowsNode.model_validate(obj)

    async def _apply(self, host: HostRoutes, plan: RoutePlan) -> bool:
        kube = self.deps.kube
        name = host.windows_node
        node = await self._windows_node(name)
        if node is None:
            return True
        try:
            creds = await read_credentials(
                kube, node.spec.winrm.credentials_secret_ref, str(node.spec.winrm.auth)
            )
        except (CredentialsError, ApiError) as exc:
            log.info("route sync: %s: no usable credentials (%s)", name, exc)
            return False
        # Not under the WindowsNode's reconcile lock: configure holds it until the node is Ready,
        # and the node's VTEP must be published before that. The transport already runs one
        # mutating action per host at a time, within its global bound; a network re-created
        # meanwhile is marked on the Node (POD_NETWORK_ANNOTATION) and synced again.
        try:
            result = await run_action(self.deps.host_factory(node, creds), plan.params(), HnsRoutesSyncResult)
        except HostError as exc:
            log.info("route sync: %s: %s", name, exc)
            return False
        finally:
            self.stats.commands[name] = self.stats.commands.get(name, 0) + 1
            host.synced_at = asyncio.get_running_loop().time()
        self.stats.applied_at[name] = time.monotonic()
        if result.added or result.removed:
            log.info("route sync: %s: added %s; removed %s", name, result.added, result.removed)
        host.unpublished = (result, plan.spec)
        if await self._publish(node, result, plan.spec):
            host.unpublished = None
        return True

    async def _publish_pending(self, host: HostRoutes) -> None:
        node = await self._windows_node(host.windows_node)
        if node is None or (host.unpublished is not None and await self._publish(node, *host.unpublished)):
            host.unpublished = None

    async def _publish(
        self, node: WindowsNode, result: HnsRoutesSyncResult, spec: WindowsNetworkSpec
    ) -> bool:
        """Record on the Node what peers (and flannel on Linux) need to reach this host's pods.
        False when the Node cannot carry it yet; its next routing change publishes it then.

        `spec` is the network's as the pass planning these routes read it: the WindowsNetwork read
        again here would be one subnet allocation per node, at every update of every host."""
        kube = self.deps.kube
        current = await kube.request("GET", path("api", "v1", "nodes", node.node_name), missing_ok=True)
        if current is None:
            return False
        peer = peer_from_node(current)
        if peer is None:
            return False
        public_ip = result.provider_address or peer.address
        wanted: dict[str, str | None] = {VTEP_MAC_ANNOTATION: result.distributed_router_mac}
        if spec.mode is NetworkMode.L2BRIDGE or result.distributed_router_mac is not None:
            wanted.update(flannel_annotations(spec, public_ip, result.distributed_router_mac))
        elif spec.linux_cni is LinuxCNI.NONE:
            wanted.update(dict.fromkeys(FLANNEL_ANNOTATIONS))
        have = (current.get("metadata") or {}).get("annotations") or {}
        patch = {k: v for k, v in wanted.items() if have.get(k) != v}
        if not patch:
            return True
        await kube.request(
            "PATCH",
            path("api", "v1", "nodes", node.node_name),
            body={"metadata": {"annotations": patch}},
            content_type=JSON_MERGE_PATCH,
            missing_ok=True,
        )
        return True


def plan_routes(
    nodes: Iterable[Mapping[str, Any]],
    windows_nodes: Iterable[Mapping[str, Any]],
    networks: Mapping[str, WindowsNetworkSpec],
) -> dict[str, HnsRoutesSyncParams]:
    """WindowsNode name -> the routes its host should hold, from the Node and WindowsNode objects. Pure."""
    hosts = [RoutedHost.of(w) for w in windows_nodes]
    plans = plan_hosts(peers_from_nodes(nodes), hosts, networks)
    return {name: plan.params() for name, plan in plans.items()}


def plan_hosts(
    node_peers: Iterable[Peer],
    hosts: Iterable[RoutedHost],
    networks: Mapping[str, WindowsNetworkSpec],
) -> dict[str, RoutePlan]:
    """WindowsNode name -> the plan of the routes its host should hold. Pure.

    `node_peers` are the Nodes that can be routed to (network.routes.peer_from_node).
    Peers of a host: every Linux Node with a pod CIDR, and the Windows Nodes of the same
    WindowsNetwork (another network is another overlay or bridge; they do not share routes).
    A WindowsNode being deleted is nobody's peer any more, so its subnet leaves every host at once.
    """
    hosts = list(hosts)
    by_node_name = {h.node_name: h for h in hosts}
    peers: list[tuple[Peer, str | None]] = []
    for peer in node_peers:
        owner = by_node_name.get(peer.name)
        if peer.windows and owner is None:
            continue  # a Windows node winnode does not manage: its routes are not ours to know
        if owner is not None and owner.deleting:
            continue
        peers.append((peer, owner.network if owner is not None else None))
    out: dict[str, RoutePlan] = {}
    shared: dict[str, _SharedPeers] = {}
    for h in hosts:
        if h.network is None or h.subnet is None or h.paused or h.deleting or not h.routed:
            continue
        spec = networks.get(h.network)
        if spec is None:
            continue
        if h.network not in shared:
            mine = tuple(
                p
                for p, network in peers
                if (network == h.network or network is None)
                and not (
                    network is None and spec.mode is NetworkMode.OVERLAY and spec.linux_cni is LinuxCNI.NONE
                )
            )
            shared[h.network] = _SharedPeers.of(mine, spec)
        group = shared[h.network]
        out[h.name] = RoutePlan(h.node_name, spec, h.subnet, group.peers, group.key(h.node_name, h.subnet))
    return out


_MASK = (1 << 64) - 1


@dataclass(frozen=True)
class _SharedPeers:
    """The peers of one network's hosts, and a key of what each host routes to without building it.

    routes_for leaves out the host itself (by name, or by its own subnet), so a host's key is the
    order-free sum of its peers' hashes minus those: a host's own Node changing (its VTEP published)
    does not change its own key."""

    peers: tuple[Peer, ...]
    spec: WindowsNetworkSpec  # compared by value in keys, never hashed
    total: int
    hashes: tuple[int, ...]
    by_name: dict[str, list[int]]
    by_cidr: dict[str, list[int]]

    @classmethod
    def of(cls, peers: tuple[Peer, ...], spec: WindowsNetworkSpec) -> _SharedPeers:
        hashes = tuple(hash(p) & _MASK for p in peers)
        by_name: dict[str, list[int]] = {}
        by_cidr: dict[str, list[int]] = {}
        for i, p in enumerate(peers):
            by_name.setdefault(p.name, []).append(i)
            by_cidr.setdefault(p.pod_cidr, []).append(i)
        return cls(peers, spec, sum(hashes) & _MASK, hashes, by_name, by_cidr)

    def key(self, node_name: str, subnet: str) -> tuple[Any, ...]:
        left_out = {*self.by_name.get(node_name, ()), *self.by_cidr.get(subnet, ())}
        rest = (self.total - sum(self.hashes[i] for i in left_out)) & _MASK
        return (node_name, subnet, self.spec, rest, len(self.peers) - len(left_out))
