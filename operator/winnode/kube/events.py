"""Kubernetes Events about our objects, as `kubectl describe` shows them.

Posting an Event is best effort: it never raises, since a lost Event must not fail the step it
reports. Repeats are folded into one Event (count, lastTimestamp), as client-go's recorder does,
so a step that fails every few seconds makes one line "x40 over 10m", not forty. Every message
goes through `scrub` first: script output and API errors can carry tokens, keys or passwords.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
import socket
import time
import weakref
from collections import OrderedDict
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

from winnode import timeouts
from winnode.kube.api import ApiError
from winnode.kube.client import JSON_MERGE_PATCH, Kube, api_message, path
from winnode.settings import API_GROUP

log = logging.getLogger(__name__)

# Where Events about cluster-scoped objects go; `kubectl describe` of a cluster-scoped object
# searches all namespaces, and "default" is where the apiserver accepts them.
CLUSTER_SCOPED_EVENT_NAMESPACE = "default"
MAX_MESSAGE = 1024
# Distinct (object, reason, message) keys remembered for aggregation; older ones are forgotten.
_AGGREGATION_CACHE_SIZE = 4096

REDACTED = "<redacted>"
_PEM = re.compile(r"-----BEGIN [A-Z0-9 ]+-----.*?(?:-----END [A-Z0-9 ]+-----|\Z)", re.DOTALL)
# Token shapes: bootstrap tokens (id.secret) and JWTs (service account tokens).
_BOOTSTRAP_TOKEN = re.compile(r"(?<![A-Za-z0-9])[a-z0-9]{6}\.[a-z0-9]{16}(?![A-Za-z0-9])")
_JWT = re.compile(r"\beyJ[A-Za-z0-9_-]+\.eyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*")
# A secret-named key with its value. The key stands alone (not the tail of a hyphenated name such as
# bad-secret or a path), optionally with underscore-joined words before it (client_secret), and the
# value follows `=`, or `:` after a quoted key, or `:` when the value itself is quoted. Prose such as
# "token: the bootstrap token expired" or "Secret default/bad-secret: no key" is left as it is.
_KEY = r"(?<![\w./-])((?:[a-z0-9]+_)*(?:password|passwd|pwd|secret|token))"
_VALUE = r"(\"[^\"]*\"|'[^']*'|[^\s,;&\"'`]+)"
_QUOTED = r"(\"[^\"]*\"|'[^']*')"
_SECRET_PAIR = re.compile(rf"(?i){_KEY}(\s*=\s*){_VALUE}")
_SECRET_QUOTED_KEY = re.compile(rf"(?i)(?<=[\"']){_KEY}([\"']\s*:\s*){_VALUE}")
_SECRET_QUOTED_VALUE = re.compile(rf"(?i){_KEY}(\s*:\s*){_QUOTED}")
# PowerShell / command-line form: -Password <value>
_SECRET_PARAM = re.compile(r"(?i)(?<![\w-])(-(?:password|token|secret)\s+)(\"[^\"]*\"|'[^']*'|\S+)")
# Secret values this process has handled (passwords read from Secrets, tokens it created): redacted
# wherever they turn up, whatever their shape. Bounded; the shortest are skipped (they would redact
# ordinary words).
_KNOWN: OrderedDict[str, None] = OrderedDict()
_KNOWN_LIMIT = 4096
_KNOWN_MIN_LENGTH = 6


def remember_secret(value: str | None) -> None:
    """Have `scrub` redact `value` from now on (a password or token this process handles)."""
    if not value or len(value) < _KNOWN_MIN_LENGTH:
        return
    _KNOWN[value] = None
    _KNOWN.move_to_end(value)
    while len(_KNOWN) > _KNOWN_LIMIT:
        _KNOWN.popitem(last=False)


def scrub(text: str) -> str:
    """`text` with secret values replaced by <redacted>: PEM blocks, token shapes, values of
    secret-named keys, and every secret this process handled. Ordinary words stay as they are."""
    for known in sorted(_KNOWN, key=len, reverse=True):
        if known in text:
            text = text.replace(known, REDACTED)
    text = _PEM.sub(REDACTED, text)
    text = _BOOTSTRAP_TOKEN.sub(REDACTED, text)
    text = _JWT.sub(REDACTED, text)
    for pattern in (_SECRET_PAIR, _SECRET_QUOTED_KEY, _SECRET_QUOTED_VALUE):
        text = pattern.sub(
            lambda m: m.group(1) + m.group(2) + REDACTED if REDACTED not in m.group(3) else m.group(0), text
        )
    return _SECRET_PARAM.sub(lambda m: f"{m.group(1)}{REDACTED}", text)


def _truncate(text: str) -> str:
    return text if len(text) <= MAX_MESSAGE else text[: MAX_MESSAGE - 3] + "..."


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class _Posted:
    namespace: str
    name: str
    count: int
    first_seen: float  # monotonic


class _Aggregator:
    def __init__(self) -> None:
        self.posted: OrderedDict[tuple[str, ...], _Posted] = OrderedDict()
        self.lock = asyncio.Lock()

    def remember(self, key: tuple[str, ...], entry: _Posted) -> None:
        self.posted[key] = entry
        self.posted.move_to_end(key)
        while len(self.posted) > _AGGREGATION_CACHE_SIZE:
            self.posted.popitem(last=False)


_aggregators: weakref.WeakKeyDictionary[Kube, _Aggregator] = weakref.WeakKeyDictionary()


def _aggregator(kube: Kube) -> _Aggregator:
    agg = _aggregators.get(kube)
    if agg is None:
        agg = _aggregators[kube] = _Aggregator()
    return agg


def _event_name(object_name: str, key: tuple[str, ...]) -> str:
    # As client-go: "<object>.<unique hex>"; unique per key and time so a new window is a new Event.
    digest = hashlib.sha256("\0".join(key).encode()).hexdigest()[:8]
    return f"{object_name[:200]}.{time.time_ns():x}{digest}"


async def post_event(
    kube: Kube,
    involved: dict[str, str],
    type_: Literal["Normal", "Warning"],
    reason: str,
    message: str,
    *,
    component: str = "winnode",
) -> None:
    """Record an Event about `involved` ({apiVersion, kind, name, uid}, plus namespace when the
    object is namespaced). Never raises."""
    try:
        await _post(kube, involved, type_, reason, _truncate(scrub(message)), component)
    except Exception as exc:
        why = api_message(exc) if isinstance(exc, ApiError) else f"{type(exc).__name__}: {exc}"
        log.warning(
            "cannot record Event %s for %s %s: %s",
            reason,
            involved.get("kind", "?"),
            involved.get("name", "?"),
            scrub(why),
        )


async def _post(
    kube: Kube, involved: dict[str, str], type_: str, reason: str, message: str, component: str
) -> None:
    namespace = involved.get("namespace") or CLUSTER_SCOPED_EVENT_NAMESPACE
    key = (
        namespace,
        involved.get("apiVersion", ""),
        involved.get("kind", ""),
        involved.get("name", ""),
        involved.get("uid", ""),
        type_,
        reason,
        message,
        component,
    )
    agg = _aggregator(kube)
    async with agg.lock:
        entry = agg.posted.get(key)
        now = time.monotonic()
        if entry is not None and now - entry.first_seen < timeouts.EVENT_AGGREGATION_WINDOW:
            patch = {"count": entry.count + 1, "lastTimestamp": _now()}
            patched = await kube.request(
                "PATCH",
                path("api", "v1", "namespaces", entry.namespace, "events", entry.name),
                body=patch,
                content_type=JSON_MERGE_PATCH,
                missing_ok=True,
            )
            if patched is not None:
                entry.count += 1
                agg.remember(key, entry)
                return
            # Deleted meanwhile (Events live an hour by default): start a new one.
        stamp = _now()
        involved_object = {
            k: involved[k] for k in ("apiVersion", "kind", "name", "uid", "namespace") if involved.get(k)
        }
        name = _event_name(involved.get("name", "object"), key)
        body = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"name": name, "namespace": namespace},
            "involvedObject": involved_object,
            "type": type_,
            "reason": reason,
            "message": message,
            "count": 1,
            "firstTimestamp": stamp,
            "lastTimestamp": stamp,
            "source": {"component": component},
            "reportingComponent": f"{API_GROUP}/{component}",
            "reportingInstance": socket.gethostname()[:128],
        }
        await kube.request("POST", path("api", "v1", "namespaces", namespace, "events"), body=body)
        agg.remember(key, _Posted(namespace=namespace, name=name, count=1, first_seen=now))
