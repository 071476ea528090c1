"""kube-proxy's own identity on each Windows node: a ServiceAccount and short-lived bound tokens.

Why not the kubelet's identity: the Node authorizer does not let a node list or watch
discovery.k8s.io/endpointslices (plugin/pkg/auth/authorizer/rbac/bootstrappolicy NodeRules, v1.37.2),
so kube-proxy would be Forbidden. Why a ServiceAccount and not a client certificate: a TokenRequest
token is revoked the moment its ServiceAccount is deleted (the apiserver checks that the bound object
still exists with the same uid on every request), whereas a certificate stays valid until it expires.

- One ServiceAccount per node, `kube-proxy-<node>`, in the namespace NAMESPACE. The shipped
  ClusterRoleBinding (winnode.kube.rbac.BINDINGS) grants the whole namespace's group
  `system:serviceaccounts:winnode-kube-proxy` the apiserver's own `system:node-proxier` ClusterRole
  (services, endpoints and endpointslices list/watch; nodes get/list/watch; events), nothing more.
- Tokens come from the TokenRequest API, valid for timeouts.KUBE_PROXY_TOKEN_TTL, and are replaced
  once less than timeouts.KUBE_PROXY_TOKEN_RENEW_BEFORE is left. The current one is kept in a Secret
  of the same name, so every reconcile hands the host the same token until it is renewed.
- On the host the token is a file named by the kubeconfig's `tokenFile`, which client-go re-reads
  (k8s.io/client-go/transport/token_source.go, NewCachedFileTokenSource): a renewed token is picked up
  without restarting kube-proxy.
- Deleting the WindowsNode deletes the ServiceAccount (revoking every token at once) and the Secret.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from winnode.kube.api import ApiError
from winnode.kube.client import Kube, api_message, path
from winnode.kube.tokens import MANAGED_BY, MANAGED_BY_LABEL, NODE_ANNOTATION

log = logging.getLogger(__name__)

NAMESPACE = "winnode-kube-proxy"
GROUP = f"system:serviceaccounts:{NAMESPACE}"
# The apiserver's own role for kube-proxy (plugin/pkg/auth/authorizer/rbac/bootstrappolicy/policy.go).
CLUSTER_ROLE = "system:node-proxier"
PREFIX = "kube-proxy-"
_MAX_NAME = 253
_EXPIRES_KEY = "expires"
_TOKEN_KEY = "token"
_UID_KEY = "serviceaccount-uid"


class ProxyIdentityError(RuntimeError):
    """The ServiceAccount, its token or the Secret holding it could not be made."""


@dataclass(frozen=True)
class ProxyToken:
    token: str = field(repr=False)
    expires: datetime
    service_account: str

    @property
    def username(self) -> str:
        return f"system:serviceaccount:{NAMESPACE}:{self.service_account}"

    def remaining(self, now: datetime | None = None) -> timedelta:
        return self.expires - (now or datetime.now(UTC))


def account_name(node_name: str) -> str:
    """`kube-proxy-<node>`; a node name too long for that gets a hashed suffix instead."""
    name = PREFIX + node_name
    if len(name) <= _MAX_NAME:
        return name
    digest = hashlib.sha256(node_name.encode()).hexdigest()[:16]
    return f"{PREFIX}{node_name[: _MAX_NAME - len(PREFIX) - 17].rstrip('-.')}-{digest}"


def _ns(*segments: str) -> str:
    return path("api", "v1", "namespaces", NAMESPACE, *segments)


def _parse_time(value: str) -> datetime | None:
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def _decode(data: dict[str, str], key: str) -> str | None:
    raw = data.get(key)
    if raw is None:
        return None
    try:
        return base64.b64decode(raw, validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return None


def _meta(name: str, node_name: str) -> dict[str, Any]:
    return {
        "name": name,
        "namespace": NAMESPACE,
        "labels": {MANAGED_BY_LABEL: MANAGED_BY},
        "annotations": {NODE_ANNOTATION: node_name},
    }


async def _service_account(kube: Kube, name: str, node_name: str) -> dict[str, Any]:
    existing = await kube.request("GET", _ns("serviceaccounts", name), missing_ok=True)
    if existing is not None:
        return existing
    body = {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": _meta(name, node_name)}
    try:
        return await kube.request("POST", _ns("serviceaccounts"), body=body)
    except ApiError as exc:
        if exc.status == 409:
            return await kube.request("GET", _ns("serviceaccounts", name))
        raise ProxyIdentityError(
            f"cannot create ServiceAccount {NAMESPACE}/{name} for kube-proxy on node {node_name}: "
            f"{api_message(exc)}"
        ) from None


def _stored(secret: dict[str, Any] | None, sa_uid: str, name: str) -> ProxyToken | None:
    if secret is None:
        return None
    data = secret.get("data") or {}
    token = _decode(data, _TOKEN_KEY)
    expires_raw = _decode(data, _EXPIRES_KEY)
    expires = _parse_time(expires_raw) if expires_raw else None
    # A token of an earlier ServiceAccount of the same name is dead: the apiserver checks the uid.
    if not token or expires is None or _decode(data, _UID_KEY) != sa_uid:
        return None
    return ProxyToken(token, expires, name)


async def _request_token(kube: Kube, name: str, ttl: timedelta) -> ProxyToken:
    body = {
        "apiVersion": "authentication.k8s.io/v1",
        "kind": "TokenRequest",
        "spec": {"expirationSeconds": int(ttl.total_seconds())},
    }
    try:
        answer = await kube.request("POST", _ns("serviceaccounts", name, "token"), body=body)
    except ApiError as exc:
        raise ProxyIdentityError(
            f"cannot request a token for ServiceAccount {NAMESPACE}/{name}: {api_message(exc)}"
        ) from None
    status = answer.get("status") or {}
    expires = _parse_time(str(status.get("expirationTimestamp") or ""))
    token = status.get("token")
    if not token or expires is None:
        raise ProxyIdentityError(f"the TokenRequest for {NAMESPACE}/{name} returned no token")
    return ProxyToken(str(token), expires, name)


async def ensure_kube_proxy_token(
    kube: Kube, node_name: str, *, ttl: timedelta, renew_before: timedelta
) -> ProxyToken:
    """The token kube-proxy on `node_name` should hold: the stored one while more than
    `renew_before` is left on it, else a fresh one (stored before it is returned)."""
    if renew_before >= ttl:
        raise ValueError(f"renew_before ({renew_before}) must be shorter than the token TTL ({ttl})")
    name = account_name(node_name)
    account = await _service_account(kube, name, node_name)
    sa_uid = str((account.get("metadata") or {}).get("uid") or "")
    secret = await kube.request("GET", _ns("secrets", name), missing_ok=True)
    current = _stored(secret, sa_uid, name)
    if current is not None and current.remaining() > renew_before:
        return current
    fresh = await _request_token(kube, name, ttl)
    meta = _meta(name, node_name)
    body: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": meta,
        "type": "Opaque",
        "stringData": {
            _TOKEN_KEY: fresh.token,
            _EXPIRES_KEY: fresh.expires.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            _UID_KEY: sa_uid,
        },
    }
    try:
        if secret is None:
            await kube.request("POST", _ns("secrets"), body=body)
        else:
            meta["resourceVersion"] = (secret.get("metadata") or {}).get("resourceVersion")
            await kube.request("PUT", _ns("secrets", name), body=body)
    except ApiError as exc:
        raise ProxyIdentityError(
            f"cannot store the kube-proxy token of node {node_name} in Secret {NAMESPACE}/{name}: "
            f"{api_message(exc)}"
        ) from None
    log.info("kube-proxy token for node %s renewed, expires %s", node_name, fresh.expires)
    return fresh


async def revoke_kube_proxy_identity(kube: Kube, node_name: str) -> bool:
    """Delete the ServiceAccount (every token it issued stops working) and the stored token."""
    name = account_name(node_name)
    account = await kube.request("DELETE", _ns("serviceaccounts", name), missing_ok=True)
    secret = await kube.request("DELETE", _ns("secrets", name), missing_ok=True)
    if account is not None or secret is not None:
        log.info("revoked the kube-proxy identity of node %s", node_name)
    return account is not None
