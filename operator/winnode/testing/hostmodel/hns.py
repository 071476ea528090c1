"""Host Network Service objects and the checker that decodes every HNS request."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from winnode.host import actions as A

if TYPE_CHECKING:
    pass


@dataclass
class HnsNetwork:
    id: str
    name: str
    type: A.HnsNetworkType
    address_prefix: str
    gateway: str
    adapter_name: str | None = None
    vsid: int | None = None
    vxlan_port: int | None = None
    # hcn network policies as HNS reports them ({"Type": ..., "Settings": {...}}): RemoteSubnetRoute,
    # HostRoute, and the DrMacAddress / ProviderAddress the host assigns to an Overlay network.
    policies: list[dict[str, Any]] = field(default_factory=list)
    # Endpoints by IP address: {"name", "host_attached": bool}; pods' sandboxes and the l2bridge gateway.
    endpoints: dict[str, dict[str, Any]] = field(default_factory=dict)

    def policies_of(self, type_: str) -> list[dict[str, Any]]:
        return [dict(p["Settings"]) for p in self.policies if p.get("Type") == type_]

    def info(self) -> A.HnsNetworkInfo:
        return A.HnsNetworkInfo(
            exists=True,
            id=self.id,
            type=self.type,
            address_prefix=self.address_prefix,
            gateway=self.gateway,
            adapter_name=self.adapter_name,
            vsid=self.vsid,
        )


class HnsRequestChecker(Protocol):
    """Would HNS decode this request (a testing.upstreamtypes.Kind value such as "hns-v2-network", JSON
    text) at this version? None: yes; else why not."""

    def __call__(self, kind: str, request: str, version: tuple[int, int]) -> str | None: ...


def _default_hns_checker() -> HnsRequestChecker:
    from winnode.testing.upstreamtypes import Case, Kind, check

    def verdict(kind: str, request: str, version: tuple[int, int]) -> str | None:
        found = check(Case(Kind(kind), request, version))
        return None if found.ok else found.error

    return verdict


# The HNS version of a fully updated host of each build (GET /globals/version), as hcsshim's feature
# ranges place them (hcn/hcnglobals.go at v0.12.9): Server 2019 speaks hcn (V2ApiSupport 9.2+) but has
# no VxlanPort (10.3+); 2022 and 2025 have both.
HNS_VERSION_BY_BUILD: dict[int, tuple[int, int]] = {17763: (9, 5), 20348: (13, 2), 26100: (15, 4)}
