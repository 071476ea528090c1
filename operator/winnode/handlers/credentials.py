"""A changed credentials Secret is acted on within seconds.

A WindowsNode whose credentials were refused waits out a growing retry delay (up to a minute), and
one that is Ready only notices a rotated password at its next configure. Instead the operator
watches the Secrets in the namespaces it may read credentials from (its own, plus those an admin
opted in, see kube/credentials.py) and at once checks every WindowsNode that names the Secret
that changed: the drift check for a node configured for its spec (it verifies the new credentials
on the running node), a configure pass for any other. Both are the passes kopf runs (same lock, same
status and Events); a retry kopf had scheduled later finds nothing to change.

kopf cannot scope one resource's watch to a namespace while it serves the others cluster-wide, so
this is a watch of our own, started and stopped with the operator.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import kopf

from winnode import timeouts
from winnode.api.windowsnode import WINDOWS_NODE
from winnode.kube.client import path
from winnode.kube.credentials import allowed_namespaces
from winnode.lifecycle import drift
from winnode.lifecycle.context import Deps

log = logging.getLogger(__name__)

_TASKS = "credential_watch_tasks"


async def referencing(deps: Deps, namespace: str, name: str) -> list[tuple[str, str]]:
    """(name, uid) of the WindowsNodes whose credentialsSecretRef is namespace/name."""
    out: list[tuple[str, str]] = []
    async for page in deps.kube.list_pages(
        path("apis", WINDOWS_NODE.group, WINDOWS_NODE.version, WINDOWS_NODE.plural)
    ):
        for item in page:
            ref = (((item.get("spec") or {}).get("winrm") or {}).get("credentialsSecretRef")) or {}
            meta = item.get("metadata") or {}
            if (
                ref.get("namespace") == namespace
                and ref.get("name") == name
                and not meta.get("deletionTimestamp")
            ):
                out.append((str(meta.get("name")), str(meta.get("uid", ""))))
    return out


async def secret_changed(deps: Deps, namespace: str, name: str) -> None:
    """A node configured for its spec gets the drift check (which verifies changed credentials on the
    running node, without stopping it); any other gets a configure pass."""
    from winnode.handlers.windowsnode import Unreadable, configure_handler, drift_pass, open_session

    for node, uid in await referencing(deps, namespace, name):
        log.info("credentials Secret %s/%s changed: checking WindowsNode %s", namespace, name, node)
        try:
            s = await open_session(deps, node)
            if s is None:
                continue
            if drift.due(s):
                await drift_pass(deps, node, uid)
            else:
                await configure_handler(name=node, uid=uid, retry=0, memo=kopf.Memo(deps=deps))
        except Unreadable:
            pass  # reported on the node; nothing to run until its spec is fixed
        except (kopf.TemporaryError, kopf.PermanentError):
            pass  # recorded in the node's status and Events; kopf's own retry goes on
        except Exception:
            log.exception("reconfiguring WindowsNode %s after its Secret changed failed", node)


async def watch_namespace(deps: Deps, namespace: str) -> None:
    """List, then watch the Secrets of `namespace` for ever (bounded reconnect backoff)."""
    secrets = path("api", "v1", "namespaces", namespace, "secrets")
    versions: dict[str, str] = {}
    running: set[asyncio.Task[None]] = set()

    def changed_now(name: str) -> None:
        # A pass may take minutes (a host to configure): the watch goes on meanwhile.
        task = asyncio.get_running_loop().create_task(secret_changed(deps, namespace, name))
        running.add(task)
        task.add_done_callback(running.discard)

    delay = timeouts.CREDENTIALS_WATCH_BACKOFF.interval
    while True:
        try:
            listing = await deps.kube.request("GET", secrets)
            current = {
                str(i["metadata"]["name"]): str(i["metadata"].get("resourceVersion", ""))
                for i in listing.get("items") or []
            }
            # Changes while the watch was down count too.
            changed = [n for n, v in current.items() if n in versions and versions[n] != v]
            versions = current
            for name in changed:
                changed_now(name)
            rv = str((listing.get("metadata") or {}).get("resourceVersion", ""))
            async for kind, obj in deps.kube.watch(
                secrets, {"resourceVersion": rv, "allowWatchBookmarks": "true"},
                server_timeout_s=int(timeouts.CREDENTIALS_WATCH_SERVER_TIMEOUT),
            ):  # fmt: skip
                meta = obj.get("metadata") or {}
                name = str(meta.get("name", ""))
                if kind == "ERROR":
                    break  # resourceVersion too old: list again
                if kind not in ("ADDED", "MODIFIED", "DELETED") or not name:
                    continue
                version = str(meta.get("resourceVersion", ""))
                if kind != "DELETED" and versions.get(name) == version:
                    continue
                if kind == "DELETED":
                    versions.pop(name, None)
                else:
                    versions[name] = version
                changed_now(name)
            delay = timeouts.CREDENTIALS_WATCH_BACKOFF.interval
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning(
                "watching Secrets in %s failed (%s); retrying in %.0fs", namespace, type(exc).__name__, delay
            )
            await asyncio.sleep(delay)
            delay = min(delay * 2, timeouts.CREDENTIALS_WATCH_BACKOFF.deadline)


async def start(memo: kopf.Memo, **_: Any) -> None:
    deps: Deps = memo.deps
    memo[_TASKS] = [
        asyncio.get_running_loop().create_task(watch_namespace(deps, ns), name=f"credentials watch {ns}")
        for ns in sorted(allowed_namespaces(deps.settings))
    ]


async def stop(memo: kopf.Memo, **_: Any) -> None:
    tasks: list[asyncio.Task[None]] = memo.get(_TASKS) or []
    for task in tasks:
        task.cancel()
    for task in tasks:
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task


def register(registry: kopf.OperatorRegistry) -> None:
    kopf.on.startup(id="credentials-watch", registry=registry)(start)
    kopf.on.cleanup(id="credentials-watch-stop", registry=registry)(stop)
