"""The names (and kubernetes.io/hostname labels) of the cluster's Windows nodes, kept current by a list +
watch, so the webhook answers the by-name cases (policy rule 4) without an API call on the request path.

Only metadata is fetched (PartialObjectMetadata): a Node's status carries image lists of tens of KB, and
the label is all we read. The label selector makes the apiserver report a Node that loses the label as
DELETED and one that gains it as ADDED.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable
from typing import Any

from winnode import timeouts
from winnode.admission.policy import HOSTNAME_LABEL, OS_LABEL, WINDOWS, WindowsNodeNames
from winnode.kube.api import ApiClient, ApiError

log = logging.getLogger(__name__)

NODES_PATH = "/api/v1/nodes"
SELECTOR = f"{OS_LABEL}={WINDOWS}"
METADATA_ONLY = "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1,application/json"
METADATA_ONLY_WATCH = "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1,application/json"


class WatchExpired(Exception):
    """The resourceVersion we watch from is gone (410): list again."""


def _name_if_windows(obj: dict[str, Any]) -> tuple[str, bool]:
    meta = obj.get("metadata") or {}
    labels = meta.get("labels") or {}
    return str(meta.get("name") or ""), labels.get(OS_LABEL) == WINDOWS


def _hostname(obj: dict[str, Any]) -> str:
    labels = (obj.get("metadata") or {}).get("labels") or {}
    return str(labels.get(HOSTNAME_LABEL) or "")


def apply_event(
    names: set[str], event_type: str, obj: dict[str, Any], hostnames: dict[str, str] | None = None
) -> str | None:
    """Update `names` (and `hostnames`, node name -> hostname label) with one watch event; returns the
    resourceVersion to resume from (None for none).

    Raises WatchExpired for a 410 ERROR event.
    """
    if event_type == "ERROR":
        if obj.get("code") == 410:
            raise WatchExpired(str(obj.get("message", "")))
        raise ApiError(
            int(obj.get("code") or 500), str(obj.get("reason") or ""), message=str(obj.get("message") or "")
        )
    name, windows = _name_if_windows(obj)
    hosts = {} if hostnames is None else hostnames
    if event_type in ("ADDED", "MODIFIED") and name:
        if windows:
            names.add(name)
            hosts[name] = _hostname(obj) or name
        else:
            names.discard(name)
            hosts.pop(name, None)
    elif event_type == "DELETED" and name:
        names.discard(name)
        hosts.pop(name, None)
    rv = (obj.get("metadata") or {}).get("resourceVersion")
    return str(rv) if rv else None


class WindowsNodes:
    """A set of Windows node names: fixed (tests) or kept by `run()`."""

    def __init__(
        self, names: Iterable[str] = (), *, synced: bool = False, hostnames: Iterable[str] | None = None
    ) -> None:
        self._names: frozenset[str] = frozenset(names)
        # Without labels (tests), a node's hostname is taken to be its name, as the kubelet sets it.
        self._known = WindowsNodeNames(
            self._names, frozenset(self._names if hostnames is None else hostnames)
        )
        self._synced = asyncio.Event()
        if synced:
            self._synced.set()
        # Monotonic time of the last sign of a working list/watch: a list, any event (bookmarks
        # included), or the server's regular end of a watch. /healthz reads it (stale_for).
        self._last_contact = time.monotonic()

    @classmethod
    def static(cls, names: Iterable[str]) -> WindowsNodes:
        return cls(names, synced=True)

    @property
    def names(self) -> frozenset[str]:
        return self._names

    @property
    def known(self) -> WindowsNodeNames:
        """Names and hostnames together, as the policy reads them."""
        return self._known

    @property
    def synced(self) -> bool:
        return self._synced.is_set()

    def stale_for(self, now: float | None = None) -> float:
        """Seconds since the list/watch last worked."""
        return (time.monotonic() if now is None else now) - self._last_contact

    def _touch(self) -> None:
        self._last_contact = time.monotonic()

    def _publish(self, names: set[str], hostnames: dict[str, str]) -> None:
        # Handlers read `names` without a lock: swap in new frozensets, never mutate the ones they hold.
        self._names = frozenset(names)
        self._known = WindowsNodeNames(self._names, frozenset(hostnames[n] for n in names if n in hostnames))

    async def _list(self, client: ApiClient) -> tuple[set[str], dict[str, str], str]:
        listed = await client.get(NODES_PATH, {"labelSelector": SELECTOR}, accept=METADATA_ONLY)
        names: set[str] = set()
        hostnames: dict[str, str] = {}
        for item in listed.get("items") or []:
            name, windows = _name_if_windows(item)
            if name and windows:
                names.add(name)
                hostnames[name] = _hostname(item) or name
        return names, hostnames, str((listed.get("metadata") or {}).get("resourceVersion") or "")

    async def run(self, client: ApiClient) -> None:
        """List, then watch, for ever (until cancelled); relist when the watch expires."""
        backoff = timeouts.NODE_WATCH_BACKOFF.interval
        while True:
            try:
                names, hostnames, rv = await self._list(client)
                self._publish(names, hostnames)
                self._synced.set()
                self._touch()
                log.info("windows nodes: %d (%s)", len(names), ", ".join(sorted(names)[:10]))
                while True:
                    params = {
                        "labelSelector": SELECTOR,
                        "resourceVersion": rv,
                        "allowWatchBookmarks": "true",
                    }
                    async for event_type, obj in client.watch(
                        NODES_PATH,
                        params,
                        server_timeout_s=timeouts.NODE_WATCH_SERVER_TIMEOUT,
                        accept=METADATA_ONLY_WATCH,
                    ):
                        new_rv = apply_event(names, event_type, obj, hostnames)
                        self._touch()
                        if event_type != "BOOKMARK":
                            self._publish(names, hostnames)
                        rv = new_rv or rv
                    self._touch()
                    backoff = timeouts.NODE_WATCH_BACKOFF.interval
            except asyncio.CancelledError:
                raise
            except WatchExpired:
                log.info("node watch expired; listing again")
                continue
            except Exception as exc:  # keep the last known set and retry: the webhook must stay up
                log.warning("node list/watch failed (retrying in %.1fs): %s", backoff, exc)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, timeouts.NODE_WATCH_BACKOFF.deadline)
