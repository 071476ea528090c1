"""What keeps a kubelet's Node in the cluster: registration, the Lease in kube-node-lease, status reports.

The full emulated kubelet (`agent`) and the light one of benchmarks (`light`) both keep their Node
through `NodePresence`, so the objects they write are the same: kubelet's registerWithAPIServer,
its node lease controller (k8s.io/component-helpers/apimachinery/lease/controller.go) and its
tryUpdateNodeStatus at v1.37.2.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from winnode import timeouts

from .api import MERGE_PATCH, STRATEGIC_MERGE_PATCH, ApiError, TransportError, retry_backoff
from .certs import utc_now
from .config import NODE_LEASE_NAMESPACE, KubeletConfig
from .objects import (
    NodeIdentity,
    default_labels_patch,
    initial_node,
    micro_time,
    node_status,
    node_status_changed,
)

log = logging.getLogger(__name__)

Json = dict[str, Any]

# k8s.io/component-helpers/apimachinery/lease/controller.go maxUpdateRetries.
LEASE_UPDATE_TRIES = 5


async def cancel_and_wait(task: asyncio.Task[Any] | None) -> None:
    """Cancel a kubelet's task and wait for it to end; a cancellation of the caller itself still
    propagates, the task's own does not."""
    if task is None or task.done():
        return
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        current = asyncio.current_task()
        if current is not None and current.cancelling():
            raise


class Requester(Protocol):
    """The one call NodePresence needs of an API client (ApiClient, or a client acting as a node)."""

    async def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        body: Json | None = None,
        content_type: str = "application/json",
    ) -> Json: ...


class NodePresence:
    """One Node as its kubelet keeps it. `say` and `error` are where the kubelet prints."""

    def __init__(
        self,
        config: KubeletConfig,
        identity: NodeIdentity,
        taints: list[Json],
        *,
        say: Callable[[str], None],
        error: Callable[[str], None],
    ) -> None:
        self.config = config
        self.identity = identity
        self.taints = taints
        self.node_uid: str | None = None
        self._say = say
        self._error = error
        self._lease: Json | None = None
        self._last_status_post = 0.0

    @property
    def name(self) -> str:
        return self.config.node_name

    async def register(self, api: Requester) -> Json:
        """Create the Node, or put kubelet's own labels and its status on one that exists; retried with
        kubelet's backoff until it works. Returns the Node as the apiserver answered."""
        next_delay = retry_backoff(timeouts.KUBELET_REGISTER_BACKOFF)
        while True:
            node = initial_node(self.config, self.identity, self.taints, utc_now())
            try:
                try:
                    created = await api.request("POST", "/api/v1/nodes", body=node)
                    self._registered(created)
                    self._last_status_post = asyncio.get_running_loop().time()
                    self._say("Successfully registered node")
                    return created
                except ApiError as exc:
                    # Forbidden: creating is not allowed, yet the Node may exist (kubelet looks too).
                    if exc.status not in (403, 409):
                        raise
                existing = await api.request("GET", f"/api/v1/nodes/{self.name}")
                log.info("%s: node was previously registered; updating it", self.name)
                if patch := default_labels_patch(self.config, existing):
                    existing = await api.request(
                        "PATCH", f"/api/v1/nodes/{self.name}", body=patch, content_type=MERGE_PATCH
                    )
                self._registered(existing)
                posted = await self.report_status(api, existing.get("status") or {}, force=True)
                return {**existing, "status": posted} if posted is not None else existing
            except (ApiError, TransportError) as exc:
                self._error(f"unable to register node with API server: {exc}")
            await asyncio.sleep(next_delay())

    def _registered(self, node: Json) -> None:
        self.node_uid = str((node.get("metadata") or {}).get("uid"))

    async def report_status(self, api: Requester, current: Json, *, force: bool = False) -> Json | None:
        """Post the node status when it differs from `current` (the Node's status as last seen) or the
        last post is KUBELET_NODE_STATUS_REPORT old; the status the apiserver kept, None if not posted."""
        desired = node_status(self.config, self.identity, now=utc_now(), previous=current)
        loop = asyncio.get_running_loop()
        stale = loop.time() - self._last_status_post >= timeouts.KUBELET_NODE_STATUS_REPORT
        if not (force or stale or node_status_changed(desired, current)):
            return None
        status = dict(desired)
        if current.get("addresses") and current.get("addresses") != desired["addresses"]:
            # addresses is (wrongly) tagged patchStrategy=merge with key "type": a merge would mix old and
            # new addresses of one type. kubelet replaces the whole list the same way.
            status["addresses"] = [{"$patch": "replace"}, *desired["addresses"]]
        patched = await api.request(
            "PATCH",
            f"/api/v1/nodes/{self.name}/status",
            body={"status": status},
            content_type=STRATEGIC_MERGE_PATCH,
        )
        self._last_status_post = loop.time()
        kept: Json = patched.get("status") or desired
        return kept

    async def renew_lease(self, api: Requester) -> None:
        """Renew (or create) the Node's Lease, trying again at once as kubelet's lease controller does
        (retryUpdateLease, maxUpdateRetries): one lost request must not cost a whole renewal interval.
        Raises the last error when every try failed."""
        for attempt in range(LEASE_UPDATE_TRIES):
            try:
                await self._renew_lease_once(api)
                return
            except (ApiError, TransportError):
                if attempt == LEASE_UPDATE_TRIES - 1:
                    raise

    async def _renew_lease_once(self, api: Requester) -> None:
        """One renewal; a refused write makes the next one read the Lease afresh."""
        path = f"/apis/coordination.k8s.io/v1/namespaces/{NODE_LEASE_NAMESPACE}/leases/{self.name}"
        now = micro_time(utc_now())
        owner = [{"apiVersion": "v1", "kind": "Node", "name": self.name, "uid": self.node_uid}]
        if self._lease is None:
            try:
                self._lease = await api.request("GET", path)
            except ApiError as exc:
                if exc.status != 404:
                    raise
                new_lease: Json = {
                    "apiVersion": "coordination.k8s.io/v1",
                    "kind": "Lease",
                    "metadata": {
                        "name": self.name,
                        "namespace": NODE_LEASE_NAMESPACE,
                        "ownerReferences": owner,
                    },
                    "spec": {
                        "holderIdentity": self.name,
                        "leaseDurationSeconds": timeouts.KUBELET_LEASE_DURATION,
                        "renewTime": now,
                    },
                }
                self._lease = await api.request(
                    "POST",
                    f"/apis/coordination.k8s.io/v1/namespaces/{NODE_LEASE_NAMESPACE}/leases",
                    body=new_lease,
                )
                return
        lease = self._lease
        spec = lease.setdefault("spec", {})
        spec.update(
            holderIdentity=self.name, leaseDurationSeconds=timeouts.KUBELET_LEASE_DURATION, renewTime=now
        )
        meta = lease.setdefault("metadata", {})
        # The Lease goes with the Node (garbage collector); a Node re-created meanwhile has a new UID.
        if not any(
            r.get("kind") == "Node" and r.get("uid") == self.node_uid
            for r in meta.get("ownerReferences") or []
        ):
            meta["ownerReferences"] = owner
        try:
            self._lease = await api.request("PUT", path, body=lease)
        except ApiError:
            # Conflict (someone else wrote it) or gone with a deleted Node: read it afresh next beat.
            self._lease = None
            raise
