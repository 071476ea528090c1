"""Admission of WindowsNodes: one host, one WindowsNode.

Two WindowsNodes with the same address would both configure the host, undo each other's work on every
drift check, and deleting either would wipe the node of the other. CREATE, and an UPDATE that changes
spec.address, is refused while another WindowsNode has the same address (compared as a host name is:
case-insensitive, without a trailing dot; IP addresses in canonical form) or registers the same Node
name. The operator's ownership marker on the host (lifecycle/ownership.py) backs this up for what
admission cannot see: one machine reached by two different names.

Like networks.py, the answer reads the API: the webhook entry's matchConditions send only CREATE and
address changes here (a few per node lifetime, never the operator's status or metadata writes), and
a fresh list cannot miss a WindowsNode created a moment ago by another replica the way a watched
cache could.
"""

from __future__ import annotations

import copy
import ipaddress
from collections.abc import Iterable, Mapping
from typing import Any, Protocol

from winnode.admission.review import AdmissionRequest, AdmissionResponse
from winnode.api.windowsnode import WINDOWS_NODE

KIND = WINDOWS_NODE.kind
NODES_PATH = f"/apis/{WINDOWS_NODE.group}/{WINDOWS_NODE.version}/{WINDOWS_NODE.plural}"
WEBHOOK_NAME = "windowsnodes.winnode.io"
OPERATIONS = ("CREATE", "UPDATE")
# CREATE and address changes only (nodeName cannot change: a CRD rule refuses it).
MATCH_CONDITIONS = (
    {
        "name": "create-or-address-change",
        "expression": "request.operation == 'CREATE' || object.?spec.?address.orValue('') != oldObject.?spec.?address.orValue('')",
    },
)


def host_key(address: str) -> str:
    """The form two spellings of one address share: canonical IP, or lower-case name without the root dot."""
    text = address.strip()
    try:
        return str(ipaddress.ip_address(text.strip("[]")))
    except ValueError:
        return text.rstrip(".").lower()


def _node_name(obj: Mapping[str, Any]) -> str:
    spec = obj.get("spec") or {}
    return str(spec.get("nodeName") or (obj.get("metadata") or {}).get("name") or "")


def judge(obj: Mapping[str, Any], others: Iterable[Mapping[str, Any]]) -> tuple[bool, str]:
    """(allowed, message) for writing WindowsNode `obj` next to the `others` that exist."""
    meta = obj.get("metadata") or {}
    name = str(meta.get("name") or "")
    address = str((obj.get("spec") or {}).get("address") or "")
    key = host_key(address)
    node_name = _node_name(obj)
    for other in others:
        other_meta = other.get("metadata") or {}
        other_name = str(other_meta.get("name") or "")
        if other_name == name:
            continue
        deleting = (
            " (it is being deleted: create this one once it is gone)"
            if other_meta.get("deletionTimestamp")
            else ""
        )
        other_address = str((other.get("spec") or {}).get("address") or "")
        if address and host_key(other_address) == key:
            return False, (
                f"WindowsNode {name}: spec.address {address} is already the host of WindowsNode "
                f"{other_name}{deleting}; one host can be one node only. Use another address, or delete "
                f"WindowsNode {other_name} first"
            )
        if node_name and _node_name(other) == node_name:
            return False, (
                f"WindowsNode {name}: Node name {node_name} is already used by WindowsNode {other_name}"
                f"{deleting}; set spec.nodeName to a name of its own"
            )
    return True, ""


def webhook_entry(client_config: Mapping[str, Any], timeout_seconds: int) -> dict[str, Any]:
    """The ValidatingWebhookConfiguration entry for WindowsNodes (admission/config.py adds it)."""
    return {
        "name": WEBHOOK_NAME,
        # A copy: a shared dict would be written as a YAML anchor and alias.
        "clientConfig": copy.deepcopy(dict(client_config)),
        "rules": [
            {
                "apiGroups": [WINDOWS_NODE.group],
                "apiVersions": ["*"],
                "operations": list(OPERATIONS),
                "resources": [WINDOWS_NODE.plural],
                "scope": "Cluster",
            }
        ],
        "matchPolicy": "Equivalent",
        "matchConditions": [dict(c) for c in MATCH_CONDITIONS],
        "failurePolicy": "Fail",
        "sideEffects": "None",
        "timeoutSeconds": timeout_seconds,
        "admissionReviewVersions": ["v1"],
    }


class Api(Protocol):
    async def get(self, path: str, params: Mapping[str, str] | None = None) -> dict[str, Any]: ...


class WindowsNodeAdmission:
    """Answers WindowsNode admission requests with one list of the WindowsNodes."""

    def __init__(self, api: Api) -> None:
        self.api = api

    async def respond(self, request: AdmissionRequest) -> AdmissionResponse:
        if request.operation not in OPERATIONS:
            return AdmissionResponse(uid=request.uid, allowed=True)
        listing = await self.api.get(NODES_PATH)
        allowed, message = judge(request.object, listing.get("items") or [])
        return AdmissionResponse(uid=request.uid, allowed=allowed, message=message)
