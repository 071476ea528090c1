"""Admission of WindowsNetworks: the checks the CRD schema and its CEL rules cannot make.

The schema already refuses malformed CIDRs, a VNI out of 4096..16777215, a bad port, a node prefix
that does not fit clusterCIDR and a serviceCIDR overlapping the network's own clusterCIDR. What needs
the other objects is checked here:
- CREATE / UPDATE: the ranges must not overlap another WindowsNetwork's (two networks handing out
  the same pod addresses would route pods to the wrong node);
- DELETE: refused while WindowsNodes name the network; the message lists them.

Unlike pod admission (app.py, answered from a watched node set), these answers read the API: a
WindowsNetwork is written a few times in a cluster's life, so one list call per request is cheap,
and a cache could let two networks created at once both pass. The operator's Valid condition and
its deletion finalizer back both checks up.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from pydantic import ValidationError

from winnode.admission.review import AdmissionRequest, AdmissionResponse
from winnode.api.windowsnetwork import WINDOWS_NETWORK, WindowsNetworkSpec
from winnode.api.windowsnode import WINDOWS_NODE
from winnode.network.overlap import name_list, overlapping_networks

log = logging.getLogger(__name__)

KIND = WINDOWS_NETWORK.kind
NETWORKS_PATH = f"/apis/{WINDOWS_NETWORK.group}/{WINDOWS_NETWORK.version}/{WINDOWS_NETWORK.plural}"
NODES_PATH = f"/apis/{WINDOWS_NODE.group}/{WINDOWS_NODE.version}/{WINDOWS_NODE.plural}"


@dataclass(frozen=True)
class Verdict:
    allowed: bool
    message: str = ""


def _validation_message(name: str, exc: ValidationError) -> str:
    parts = []
    for error in exc.errors():
        where = ".".join(str(p) for p in error.get("loc", ()))
        parts.append(f"spec.{where}: {error.get('msg')}" if where else str(error.get("msg")))
    return f"WindowsNetwork {name} is invalid: " + "; ".join(parts)


def judge_write(name: str, spec: Mapping[str, Any], others: Mapping[str, Mapping[str, Any]]) -> Verdict:
    """CREATE or UPDATE of WindowsNetwork `name` with `spec`, given every network's spec by name."""
    try:
        parsed = WindowsNetworkSpec.model_validate(spec)
    except ValidationError as exc:
        return Verdict(False, _validation_message(name, exc))
    problems = overlapping_networks(name, parsed, others)
    if problems:
        return Verdict(False, f"WindowsNetwork {name}: " + "; ".join(problems))
    return Verdict(True)


def judge_delete(name: str, holders: Sequence[str]) -> Verdict:
    if not holders:
        return Verdict(True)
    names = sorted(holders)
    return Verdict(
        False,
        f"WindowsNetwork {name} is used by {len(names)} WindowsNode(s): {name_list(names)}; delete them "
        "or set their spec.network to another WindowsNetwork first",
    )


class Api(Protocol):
    async def get(self, path: str, params: Mapping[str, str] | None = None) -> dict[str, Any]: ...


class NetworkAdmission:
    """Answers WindowsNetwork admission requests with the API reads they need."""

    def __init__(self, api: Api) -> None:
        self.api = api

    async def other_specs(self) -> dict[str, dict[str, Any]]:
        listing = await self.api.get(NETWORKS_PATH)
        return {
            str(item["metadata"]["name"]): dict(item.get("spec") or {}) for item in listing.get("items") or []
        }

    async def holders(self, name: str) -> list[str]:
        listing = await self.api.get(NODES_PATH, {"fieldSelector": f"spec.network={name}"})
        return [str(item["metadata"]["name"]) for item in listing.get("items") or []]

    async def judge(self, request: AdmissionRequest) -> Verdict:
        name = request.name or str((request.object.get("metadata") or {}).get("name", ""))
        if request.operation == "DELETE":
            return judge_delete(name, await self.holders(name))
        if request.operation in ("CREATE", "UPDATE"):
            return judge_write(name, request.object.get("spec") or {}, await self.other_specs())
        return Verdict(True)

    async def respond(self, request: AdmissionRequest) -> AdmissionResponse:
        verdict = await self.judge(request)
        return AdmissionResponse(uid=request.uid, allowed=verdict.allowed, message=verdict.message)
