"""The names of the cluster's Windows nodes, kept current by a list + watch, so the webhook answers the
nodeName case without an API call on the request path.

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
from winnode.admission.kubeapi import ApiError, KubeClient
from winnode.admission.policy import OS_LABEL, WINDOWS

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


def apply_event(names: set[str], event_type: str, obj: dict[str, Any]) -> str | None:
    """Update `names` with one watch event; returns the resourceVersion to resume from (None for none).

    Raises WatchExpired for a 410 ERROR event.
    """
    if event_type == "ERROR":
        if obj.get("code") == 410:
            raise WatchExpired(str(obj.get("message", "")))
        raise ApiError(
            int(obj.get("code") or 500), str(obj.get("reason") or ""), str(obj.get("message") or "")
        )
    name, windows = _name_if_windows(obj)
    if event_type in ("ADDED", "MODIFIED") and name:
        if windows:
            names.add(name)
        else:
            names.discard(name)
    elif event_type == "DELETED" and name:
        names.discard(name)
    rv = (obj.get("metadata") or {}).get("resourceVersion")
    return str(rv) if rv else None


class WindowsNodes:
    """A set of Windows node names: fixed (tests) or kept by `run()`."""

    def __init__(self, names: Iterable[str] = (), *, synced: bool = False) -> None:
        self._names: frozenset[str] = frozenset(names)
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
    def synced(self) -> bool:
        return self._synced.is_set()

    def stale_for(self, now: float | None = None) -> float:
        """Seconds since the list/watch last worked."""
        return (time.monotonic() if now is None else now) - self._last_contact

    def _touch(self) -> None:
        self._last_contact = time.monotonic()

    def _publish(self, names: set[str]) -> None:
        # Handlers read `names` without a lock: swap in a new frozenset, never mutate the one they hold.
        self._names = frozenset(names)

    async def _list(self, client: KubeClient) -> tuple[set[str], str]:
        listed = await client.get(NODES_PATH, {"labelSelector": SELECTOR}, accept=METADATA_ONLY)
        names = {n for n, windows in map(_name_if_windows, listed.get("items") or []) if n and windows}
        return names, str((listed.get("metadata") or {}).get("resourceVersion") or "")

    async def run(self, client: KubeClient) -> None:
        """List, then watch, for ever (until cancelled); relist when the watch expires."""
        backoff = timeouts.NODE_WATCH_BACKOFF.interval
        while True:
            try:
                names, rv = await self._list(client)
                self._publish(names)
                self._synced.set()
                self._touch()
                log.info("windows nodes: %d (%s)", len(names), ", ".join(sorted(names)[:10]))
                while True:
                    params = {
                        "labelSelector": SELECTOR,
                        "resourceVersion": rv,
                        "allowWatchBookmarks": "true",
                        "timeoutSeconds": str(int(timeouts.NODE_WATCH_SERVER_TIMEOUT)),
                    }
                    async for event_type, obj in client.watch(NODES_PATH, params, accept=METADATA_ONLY_WATCH):
                        new_rv = apply_event(names, event_type, obj)
                        self._touch()
                        if event_type != "BOOKMARK":
                            self._publish(names)
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
