"""Bootstrap tokens: the short-lived credential a new kubelet uses to ask for its client certificate.

One token per node, as a `bootstrap.kubernetes.io/token` Secret in kube-system
(https://kubernetes.io/docs/reference/access-authn-authz/bootstrap-tokens/). The apiserver
authenticates it as `system:bootstrap:<token-id>` in groups `system:bootstrappers` and
`system:bootstrappers:winnode`; kcm's token cleaner deletes it once expired. The token id is what
the CSR policy checks a client CSR's requester against, so a token minted for one node cannot get
a certificate for another.
"""

from __future__ import annotations

import base64
import binascii
import logging
import secrets
import string
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from winnode.kube.api import ApiError
from winnode.kube.client import Kube, api_message, path
from winnode.settings import FIELD_PREFIX

log = logging.getLogger(__name__)

NAMESPACE = "kube-system"
SECRET_TYPE = "bootstrap.kubernetes.io/token"
SECRET_PREFIX = "bootstrap-token-"
EXTRA_GROUP = "system:bootstrappers:winnode"
NODE_LABEL = f"{FIELD_PREFIX}/node"
# The label holds the node name when it fits a label value (63 characters); the annotation always
# holds it in full, and is what ownership is decided on.
NODE_ANNOTATION = f"{FIELD_PREFIX}/node"
MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
MANAGED_BY = "winnode"

_ALPHABET = string.ascii_lowercase + string.digits
TOKEN_ID_LENGTH = 6
TOKEN_SECRET_LENGTH = 16
_MAX_LABEL_VALUE = 63
# A random id can collide with an existing token; a fresh one is drawn this many times.
_CREATE_ATTEMPTS = 5


class BootstrapTokenError(RuntimeError):
    """The token Secret could not be created or read."""


@dataclass(frozen=True)
class BootstrapToken:
    token_id: str
    secret: str = field(repr=False)
    expires: datetime

    @property
    def value(self) -> str:
        """The bearer token as a kubelet presents it: "<id>.<secret>"."""
        return f"{self.token_id}.{self.secret}"

    @property
    def username(self) -> str:
        """Who the apiserver says the holder is (the requester of the CSRs it creates)."""
        return f"system:bootstrap:{self.token_id}"

    def remaining(self, now: datetime | None = None) -> timedelta:
        return self.expires - (now or datetime.now(UTC))


def _random(length: int) -> str:
    return "".join(secrets.choice(_ALPHABET) for _ in range(length))


def _rfc3339(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse_time(value: str) -> datetime | None:
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def _label_value(node_name: str) -> str:
    # Node names are DNS subdomains: lower-case alphanumerics, '-' and '.', which are also valid in
    # label values; only the length can be too much. A longer name is cut (label values must end
    # in an alphanumeric); the annotation tells same-prefix nodes apart.
    return node_name[:_MAX_LABEL_VALUE].rstrip("-.")


def _decode(data: dict[str, str], key: str) -> str | None:
    raw = data.get(key)
    if raw is None:
        return None
    try:
        return base64.b64decode(raw, validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return None


def _token_of(secret: dict[str, Any]) -> BootstrapToken | None:
    """The token held by a Secret, or None when it is malformed or not a token."""
    if secret.get("type") != SECRET_TYPE:
        return None
    data = secret.get("data") or {}
    token_id = _decode(data, "token-id")
    token_secret = _decode(data, "token-secret")
    expiration = _decode(data, "expiration")
    expires = _parse_time(expiration) if expiration else None
    name = (secret.get("metadata") or {}).get("name", "")
    if not token_id or not token_secret or expires is None or name != SECRET_PREFIX + token_id:
        return None
    return BootstrapToken(token_id=token_id, secret=token_secret, expires=expires)


async def _node_token_secrets(kube: Kube, node_name: str) -> list[dict[str, Any]]:
    """This node's token Secrets, newest first."""
    listing = await kube.request(
        "GET",
        path("api", "v1", "namespaces", NAMESPACE, "secrets"),
        query={
            "labelSelector": f"{NODE_LABEL}={_label_value(node_name)}",
            "fieldSelector": f"type={SECRET_TYPE}",
        },
    )
    items = [
        s
        for s in listing.get("items") or []
        if ((s.get("metadata") or {}).get("annotations") or {}).get(NODE_ANNOTATION) == node_name
    ]
    items.sort(key=lambda s: (s.get("metadata") or {}).get("creationTimestamp") or "", reverse=True)
    return items


async def _delete_secret(kube: Kube, name: str) -> bool:
    deleted = await kube.request(
        "DELETE", path("api", "v1", "namespaces", NAMESPACE, "secrets", name), missing_ok=True
    )
    return deleted is not None


async def find_bootstrap_token(kube: Kube, node_name: str) -> BootstrapToken | None:
    """This node's newest unexpired token."""
    now = datetime.now(UTC)
    for secret in await _node_token_secrets(kube, node_name):
        token = _token_of(secret)
        if token is not None and token.expires > now:
            return token
    return None


async def find_bootstrap_token_id(kube: Kube, node_name: str) -> str | None:
    """The id of this node's newest unexpired token: the one its client CSR must come from."""
    token = await find_bootstrap_token(kube, node_name)
    return token.token_id if token else None


async def ensure_bootstrap_token(kube: Kube, node_name: str, ttl: timedelta) -> BootstrapToken:
    """A token for `node_name` valid for at least half of `ttl`.

    The newest existing token is reused while more than half of `ttl` is left on it, so a
    reconcile that runs again (operator restarted, step retried) hands the host the same token.
    Otherwise a new one is created and the node's older tokens are deleted.
    """
    if ttl <= timedelta(0):
        raise ValueError(f"bootstrap token TTL must be positive, got {ttl}")
    existing = await _node_token_secrets(kube, node_name)
    now = datetime.now(UTC)
    for secret in existing:
        token = _token_of(secret)
        if token is not None and token.remaining(now) > ttl / 2:
            return token
    token = await _create(kube, node_name, ttl)
    for secret in existing:
        name = (secret.get("metadata") or {}).get("name", "")
        if name and name != SECRET_PREFIX + token.token_id:
            await _delete_secret(kube, name)
    log.info("bootstrap token %s created for node %s, expires %s", token.token_id, node_name, token.expires)
    return token


async def _create(kube: Kube, node_name: str, ttl: timedelta) -> BootstrapToken:
    # Whole seconds: the expiration is stored with second precision, and the returned object should
    # say exactly what a later read of the Secret will say.
    expires = (datetime.now(UTC) + ttl).replace(microsecond=0)
    for _ in range(_CREATE_ATTEMPTS):
        token = BootstrapToken(
            token_id=_random(TOKEN_ID_LENGTH), secret=_random(TOKEN_SECRET_LENGTH), expires=expires
        )
        body = {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {
                "name": SECRET_PREFIX + token.token_id,
                "namespace": NAMESPACE,
                "labels": {NODE_LABEL: _label_value(node_name), MANAGED_BY_LABEL: MANAGED_BY},
                "annotations": {NODE_ANNOTATION: node_name},
            },
            "type": SECRET_TYPE,
            "stringData": {
                "token-id": token.token_id,
                "token-secret": token.secret,
                "expiration": _rfc3339(expires),
                "description": f"winnode: joins Windows node {node_name}",
                "usage-bootstrap-authentication": "true",
                "auth-extra-groups": EXTRA_GROUP,
            },
        }
        try:
            await kube.request("POST", path("api", "v1", "namespaces", NAMESPACE, "secrets"), body=body)
        except ApiError as exc:
            if exc.status == 409:
                continue
            # The apiserver's message names the Secret and the problem; it never echoes the data.
            raise BootstrapTokenError(
                f"cannot create bootstrap token Secret {NAMESPACE}/{SECRET_PREFIX}{token.token_id} "
                f"for node {node_name}: {api_message(exc)}"
            ) from None
        return token
    raise BootstrapTokenError(
        f"cannot create a bootstrap token for node {node_name}: "
        f"{_CREATE_ATTEMPTS} random token ids were all taken in {NAMESPACE}"
    )


async def revoke_bootstrap_tokens(kube: Kube, node_name: str) -> int:
    """Delete every token of `node_name`; how many were deleted."""
    count = 0
    for secret in await _node_token_secrets(kube, node_name):
        name = (secret.get("metadata") or {}).get("name", "")
        if name and await _delete_secret(kube, name):
            count += 1
    if count:
        log.info("revoked %d bootstrap token(s) of node %s", count, node_name)
    return count
