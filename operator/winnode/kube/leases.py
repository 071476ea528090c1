"""coordination.k8s.io/v1 Leases: read, create and update one Lease, guarded by its resourceVersion.

The record is the part of a Lease leader election reads and writes (client-go's LeaderElectionRecord);
`update` sends the resourceVersion it read, so two candidates that both saw an expired Lease cannot
both take it: the second one gets LeaseConflict.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from typing import Any

from winnode.kube.api import ApiError
from winnode.kube.client import Kube, path

GROUP_VERSION = "coordination.k8s.io/v1"
MICROTIME_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"


class LeaseConflict(Exception):
    """Someone else wrote the Lease since we read it (409), or created it first."""


@dataclass(frozen=True)
class LeaseRecord:
    holder: str
    lease_duration_s: int
    acquire_time: datetime.datetime | None
    renew_time: datetime.datetime | None
    transitions: int
    resource_version: str = ""

    @classmethod
    def from_lease(cls, lease: dict[str, Any]) -> LeaseRecord:
        spec = lease.get("spec") or {}
        return cls(
            holder=str(spec.get("holderIdentity") or ""),
            lease_duration_s=int(spec.get("leaseDurationSeconds") or 0),
            acquire_time=parse_microtime(spec.get("acquireTime")),
            renew_time=parse_microtime(spec.get("renewTime")),
            transitions=int(spec.get("leaseTransitions") or 0),
            resource_version=str((lease.get("metadata") or {}).get("resourceVersion") or ""),
        )

    def spec(self) -> dict[str, Any]:
        return {
            "holderIdentity": self.holder or None,
            "leaseDurationSeconds": self.lease_duration_s,
            "acquireTime": format_microtime(self.acquire_time),
            "renewTime": format_microtime(self.renew_time),
            "leaseTransitions": self.transitions,
        }


def parse_microtime(value: object) -> datetime.datetime | None:
    if not value:
        return None
    text = str(value).replace("Z", "+00:00")
    return datetime.datetime.fromisoformat(text)


def format_microtime(value: datetime.datetime | None) -> str | None:
    if value is None:
        return None
    return value.astimezone(datetime.UTC).strftime(MICROTIME_FORMAT)


def _lease_path(namespace: str, name: str = "") -> str:
    parts = ("apis", "coordination.k8s.io", "v1", "namespaces", namespace, "leases")
    return path(*parts, name) if name else path(*parts)


async def get_lease(kube: Kube, namespace: str, name: str) -> LeaseRecord | None:
    lease = await kube.request("GET", _lease_path(namespace, name), missing_ok=True)
    return None if lease is None else LeaseRecord.from_lease(lease)


async def create_lease(kube: Kube, namespace: str, name: str, record: LeaseRecord) -> LeaseRecord:
    body = {
        "apiVersion": GROUP_VERSION,
        "kind": "Lease",
        "metadata": {"name": name, "namespace": namespace},
        "spec": record.spec(),
    }
    try:
        created = await kube.request("POST", _lease_path(namespace), body=body)
    except ApiError as exc:
        if exc.status == 409:
            raise LeaseConflict(f"Lease {namespace}/{name} was created by someone else") from None
        raise
    return LeaseRecord.from_lease(created)


async def update_lease(kube: Kube, namespace: str, name: str, record: LeaseRecord) -> LeaseRecord:
    """Replace the Lease's spec, only if it still has `record.resource_version`."""
    body = {
        "apiVersion": GROUP_VERSION,
        "kind": "Lease",
        "metadata": {"name": name, "namespace": namespace, "resourceVersion": record.resource_version},
        "spec": record.spec(),
    }
    try:
        updated = await kube.request("PUT", _lease_path(namespace, name), body=body)
    except ApiError as exc:
        if exc.status == 409:
            raise LeaseConflict(f"Lease {namespace}/{name} changed since it was read") from None
        raise
    return LeaseRecord.from_lease(updated)
