"""Light emulated kubelets, for benchmarks of many hosts: a Node that registers, renews its Lease and
reports its status, and nothing else.

    hub = LightKubelets(admin_kubeconfig_text)      # one per process
    kubelet = hub.kubelet(KubeletConfig(...))       # what the emulator derives from the kubelet service
    await kubelet.start()                           # returns at once
    ...
    await kubelet.stop()
    await hub.close()

A light kubelet writes the same Node and Lease as the full one (`node.NodePresence`: labels, taints,
addresses, nodeInfo with the kubeletVersion of the binary, conditions), renews the Lease every
KUBELET_LEASE_RENEW (kubelet's own interval) and posts its status when it changed or every
KUBELET_NODE_STATUS_REPORT. It is cheap enough for a thousand in one process because all of them
share one API client and one Node watch:

- requests go over one connection pool as the hub's identity, which impersonates each node
  (`system:node:<name>` in `system:nodes`), so the apiserver's Node authorizer and NodeRestriction
  judge every write as the node's own;
- instead of reading its Node every KUBELET_NODE_STATUS_UPDATE (kubelet's GET), each compares with
  the hub's Node watch, so a Node another component changed (kcm marking it NotReady) is still put
  right at the next update.

What it leaves out is in LEFT_OUT; the benchmarks print it beside their figures.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import tempfile
from pathlib import Path
from typing import Any, Literal

from winnode import timeouts

from .api import ApiClient, ApiError, TransportError, WatchExpired, client_ssl_context, retry_backoff
from .certs import write_private
from .config import (
    ARCH,
    LABEL_OS,
    NODE_USER_PREFIX,
    NODES_GROUP,
    OS,
    KubeletConfig,
    KubeletConfigError,
    KubeletFailedError,
    parse_kubeconfig,
    validate_config,
)
from .node import NodePresence, cancel_and_wait
from .objects import node_identity

log = logging.getLogger(__name__)

Json = dict[str, Any]
LightState = Literal["stopped", "registering", "registered", "ready", "failed"]

# What a light kubelet does not do that the full emulated kubelet does.
LEFT_OUT = (
    "TLS bootstrap (no client CSR; the node's requests are the hub's, impersonating system:node:<name>)",
    "serving certificate (no serving CSR) and the kubelet HTTPS server (no node log query)",
    "pod watch and pod status (pods bound to the node are never run or finished)",
    "kubelet log output on the host",
    "the per-node GET of its Node every 10 s (one shared Node watch instead)",
    "emulated kube-proxy (no Service and EndpointSlice watches, no HNS load balancers)",
)
# The pool every light kubelet's requests share (the Node watch holds one of them).
CONNECTIONS = 16


class NodeClient:
    """Requests of one node through the hub's client, with its identity impersonated."""

    def __init__(self, api: ApiClient, node_name: str, user_agent: str) -> None:
        self._api = api
        self._headers = {
            "Impersonate-User": NODE_USER_PREFIX + node_name,
            "Impersonate-Group": NODES_GROUP,
            "User-Agent": user_agent,
        }

    async def request(
        self,
        method: str,
        path: str,
        *,
        params: Any = None,
        body: Json | None = None,
        content_type: str = "application/json",
    ) -> Json:
        return await self._api.request(
            method, path, params=params, body=body, content_type=content_type, headers=self._headers
        )


class LightKubelets:
    """What all light kubelets of a process share: the API client and the Node watch. Used on one
    event loop (the emulator's); `kubeconfig_text` names the cluster and an identity that may
    impersonate nodes (the test cluster's admin)."""

    def __init__(self, kubeconfig_text: str, *, renew_s: float = timeouts.KUBELET_LEASE_RENEW) -> None:
        self.access = parse_kubeconfig(kubeconfig_text)
        self.renew_s = renew_s
        self._api: ApiClient | None = None
        self._watch: asyncio.Task[None] | None = None
        # Node name -> its status as last seen (watch, or a write's answer).
        self._status: dict[str, Json] = {}

    @property
    def server(self) -> str:
        return self.access.server

    def kubelet(self, config: KubeletConfig) -> LightKubelet:
        return LightKubelet(self, config)

    def client(self) -> ApiClient:
        if self._api is None:
            ctx = client_ssl_context(self.access, None)
            if self.access.client_cert_pem is not None and self.access.client_key_pem is not None:
                # ssl loads a certificate chain from files only: a private file that lives for this call.
                with tempfile.TemporaryDirectory(prefix="winnode-light-") as tmp:
                    bundle = Path(tmp) / "client.pem"
                    write_private(bundle, self.access.client_cert_pem + b"\n" + self.access.client_key_pem)
                    ctx.load_cert_chain(bundle)
            self._api = ApiClient(
                self.access,
                ctx,
                bearer=self.access.token,
                user_agent="winnode-light-kubelets",
                connections=CONNECTIONS,
            )
        return self._api

    def node_client(self, node_name: str, user_agent: str) -> NodeClient:
        self._ensure_watch()
        return NodeClient(self.client(), node_name, user_agent)

    def status(self, node_name: str) -> Json | None:
        """The Node's status as last seen; None when the Node is gone (or not seen yet)."""
        return self._status.get(node_name)

    def note(self, node_name: str, status: Json) -> None:
        self._status[node_name] = status

    async def close(self) -> None:
        task, self._watch = self._watch, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
        api, self._api = self._api, None
        if api is not None:
            await api.close()

    def _ensure_watch(self) -> None:
        if self._watch is None or self._watch.done():
            self._watch = asyncio.get_running_loop().create_task(self._watch_nodes(), name="light kubelets")

    async def _watch_nodes(self) -> None:
        api = self.client()
        selector = {"labelSelector": f"{LABEL_OS}={OS}"}
        next_delay = retry_backoff(timeouts.KUBELET_RETRY_BACKOFF)
        rv = ""

        async def on_event(etype: str, obj: Json) -> bool:
            nonlocal rv
            meta = obj.get("metadata") or {}
            rv = str(meta.get("resourceVersion") or rv)
            name = str(meta.get("name"))
            if etype == "DELETED":
                self._status.pop(name, None)
            elif etype in ("ADDED", "MODIFIED"):
                self._status[name] = obj.get("status") or {}
            return False

        while True:
            try:
                listed = await api.request("GET", "/api/v1/nodes", params=selector)
                rv = str((listed.get("metadata") or {}).get("resourceVersion", ""))
                self._status = {
                    str((n.get("metadata") or {}).get("name")): n.get("status") or {}
                    for n in listed.get("items") or []
                }
                next_delay = retry_backoff(timeouts.KUBELET_RETRY_BACKOFF)
                while True:
                    await api.watch("/api/v1/nodes", {**selector, "resourceVersion": rv}, on_event)
            except WatchExpired:
                continue
            except (ApiError, TransportError) as exc:
                log.warning("light kubelets: Node watch failed: %s", exc)
                await asyncio.sleep(next_delay())


class LightKubelet:
    """One light kubelet. start() returns at once; it then runs as a task of the caller's event loop."""

    state: LightState
    last_error: str | None

    def __init__(self, hub: LightKubelets, config: KubeletConfig) -> None:
        self.hub = hub
        self.config = config
        self.state = "stopped"
        self.last_error = None
        self.node_uid: str | None = None
        self._identity = node_identity(config.node_name)
        self._task: asyncio.Task[None] | None = None

    def __repr__(self) -> str:
        return f"LightKubelet(node={self.config.node_name!r}, state={self.state!r})"

    @property
    def _name(self) -> str:
        return self.config.node_name

    async def start(self) -> None:
        """Check the configuration as the full kubelet does (KubeletConfigError) and start."""
        if self._task is not None and not self._task.done():
            return
        access = parse_kubeconfig(self.config.bootstrap_kubeconfig)
        if access.server != self.hub.server:
            # The hub's identity is valid on its own cluster only; another would refuse this node.
            raise KubeletConfigError(
                f"kubeconfig names {access.server}; light kubelets here reach {self.hub.server} only"
            )
        taints = validate_config(self.config)
        presence = NodePresence(self.config, self._identity, taints, say=self._say, error=self._error)
        self.state = "registering"
        self.last_error = None
        self._task = asyncio.get_running_loop().create_task(self._run(presence), name=f"light {self._name}")

    async def stop(self) -> None:
        task, self._task = self._task, None
        await cancel_and_wait(task)
        self.state = "stopped"

    async def wait(self) -> None:
        """Return once the kubelet no longer runs; raise KubeletFailedError when it ended on its own."""
        task = self._task
        if task is not None:
            await asyncio.wait({task})
        if self.state == "failed":
            raise KubeletFailedError(self.last_error or "kubelet failed")

    def _say(self, message: str) -> None:
        log.debug("%s: %s", self._name, message)

    def _error(self, message: str) -> None:
        self.last_error = message
        log.info("%s: %s", self._name, message)

    async def _run(self, presence: NodePresence) -> None:
        user_agent = f"kubelet.exe/{self.config.kubelet_version} ({OS}/{ARCH}) kubernetes/winnode-light"
        api = self.hub.node_client(self._name, user_agent)
        try:
            node = await presence.register(api)
            self.node_uid = presence.node_uid
            self.hub.note(self._name, node.get("status") or {})
            self.state = "registered"
            loop = asyncio.get_running_loop()
            next_status = loop.time() + timeouts.KUBELET_NODE_STATUS_UPDATE
            while True:
                try:
                    await presence.renew_lease(api)
                    if self.state == "registered":
                        self.state = "ready"
                        self.last_error = None
                except (ApiError, TransportError) as exc:
                    self._error(f"failed to update lease: {exc}")
                if loop.time() >= next_status:
                    next_status = loop.time() + timeouts.KUBELET_NODE_STATUS_UPDATE
                    await self._update_status(presence, api)
                await asyncio.sleep(self.config.heartbeat_interval_s)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self.state = "failed"
            self.last_error = f"unexpected {type(exc).__name__}: {exc}"
            log.exception("%s: light kubelet crashed", self._name)

    async def _update_status(self, presence: NodePresence, api: NodeClient) -> None:
        current = self.hub.status(self._name)
        if current is None:
            # As kubelet's GET of a deleted Node: it is not registered again until kubelet restarts.
            self._error(f"error updating node status: node {self._name} not found")
            return
        try:
            posted = await presence.report_status(api, current)
        except (ApiError, TransportError) as exc:
            self._error(f"error updating node status: {exc}")
            return
        if posted is not None:
            self.hub.note(self._name, posted)
