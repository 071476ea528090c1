"""What a drift check reads, and which parts of the host differ from the desired state (pure).

A drift check reads the host once (the `observe` action: facts, owner marker, files, services, HNS
networks, firewall rules, Defender exclusions) and then runs only the steps whose part differs, so
a healthy node costs one command per check. What to observe comes from the desired state of the
previous check (`plan`); a part the observation does not cover counts as differing, and its step
then reads the host itself, as configure's steps always do.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TypeVar

from winnode.host.actions import (
    FileStat,
    FirewallRuleEnsureParams,
    FirewallRuleInfo,
    HnsNetworkInfo,
    ObserveParams,
    ObserveResult,
    ServiceInfo,
    ServiceState,
)
from winnode.lifecycle.steps import DesiredFile, DesiredHost, hns_differs, lookup_stat, service_differs

V = TypeVar("V")

# Before the first desired state is known (a node this process has not checked yet): the facts and
# the owner marker only. The steps read everything else themselves.
FIRST = ObserveParams()


def plan(desired: DesiredHost, start: Sequence[str]) -> ObserveParams:
    """The observe action covering every part of `desired`, and the services that must run."""
    services = [s.name for s in desired.services]
    services += [n for n in start if n.casefold() not in {s.casefold() for s in services}]
    return ObserveParams(
        files=[f.path for f in desired.files],
        services=services,
        hns_networks=[n.name for n in (desired.external, desired.hns) if n is not None],
        firewall_rules=[r.name for r in desired.firewall],
        defender_processes=list(desired.defender.processes) if desired.defender is not None else [],
    )


@dataclass(frozen=True)
class Drift:
    """The parts of a host that differ from the desired state (or were not observed)."""

    files: tuple[DesiredFile, ...] = ()
    # A file to be replaced is in use by a service that runs: replacing it stops the service.
    stops_services: bool = False
    network: bool = False
    firewall: tuple[FirewallRuleEnsureParams, ...] = ()
    defender: bool = False
    services: bool = False
    start: tuple[str, ...] = ()

    @property
    def clean(self) -> bool:
        return not (
            self.files or self.network or self.firewall or self.defender or self.services or self.start
        )

    @property
    def service_states_hold(self) -> bool:
        """Whether the observed service states are still true after the repairs (nothing stopped one)."""
        return not (self.stops_services or self.services)

    def parts(self) -> list[str]:
        out: list[str] = []
        if self.files:
            out.append("files " + ", ".join(f.path for f in self.files))
        if self.network:
            out.append("HNS network")
        if self.firewall:
            out.append("firewall rules " + ", ".join(r.name for r in self.firewall))
        if self.defender:
            out.append("Defender exclusions")
        if self.services:
            out.append("service registration")
        if self.start:
            out.append("services not running " + ", ".join(self.start))
        return out


def _folded(mapping: Mapping[str, V], key: str) -> V | None:
    if key in mapping:
        return mapping[key]
    return {k.casefold(): v for k, v in mapping.items()}.get(key.casefold())


def firewall_rule_differs(info: FirewallRuleInfo | None, want: FirewallRuleEnsureParams) -> bool:
    """The comparison of templates/firewall_rule_ensure.ps1 ($same): display name with case, the
    rest as PowerShell's -eq compares (without case)."""
    if info is None or not info.exists:
        return True
    return not (
        info.display_name == want.display_name
        and (info.direction or "").casefold() == want.direction.casefold()
        and (info.action or "").casefold() == "allow"
        and bool(info.enabled)
        and (info.protocol or "").casefold() == want.protocol.casefold()
        and info.local_port == str(want.local_port)
    )


def _defender_differs(desired: DesiredHost, seen: ObserveResult) -> bool:
    want = desired.defender
    if want is None:
        return False
    if seen.defender is None:
        return True
    if not seen.defender.running:
        return False  # defender_exclusions_ensure changes nothing where Defender does not run
    excluded = {p.casefold() for p in seen.defender.excluded}
    if want.present:
        return any(p.casefold() not in excluded for p in want.processes)
    return any(p.casefold() in excluded for p in want.processes)


def drift(desired: DesiredHost, seen: ObserveResult, start: Sequence[str]) -> Drift:
    """Which parts of the host differ from `desired`; `start` names the services that must run."""
    stale: list[DesiredFile] = []
    stops = False
    for f in desired.files:
        st = lookup_stat(seen.files, f.path) or FileStat(exists=False)
        if st.exists and st.sha256 and st.sha256.lower() == f.sha256:
            continue
        stale.append(f)
        user = _folded(seen.services, f.service) if f.service else None
        if f.service and st.exists and (user is None or user.state is not ServiceState.STOPPED):
            stops = True
    networks = seen.hns_networks
    network = any(
        networks is None
        or _folded(networks, want.name) is None
        or hns_differs(
            _folded(networks, want.name) or HnsNetworkInfo(exists=False), want, desired.adapter_aliases
        )
        for want in (desired.external, desired.hns)
        if want is not None
    )
    services = any(
        (info := _folded(seen.services, want.name)) is None or service_differs(info, want)
        for want in desired.services
    )
    not_running = tuple(
        name
        for name in start
        if (info := _folded(seen.services, name)) is None
        or not info.exists
        or info.state is not ServiceState.RUNNING
    )
    return Drift(
        files=tuple(stale),
        stops_services=stops,
        network=network,
        firewall=tuple(
            r for r in desired.firewall if firewall_rule_differs(_folded(seen.firewall_rules, r.name), r)
        ),
        defender=_defender_differs(desired, seen),
        services=services,
        start=not_running,
    )


def known_services(seen: ObserveResult, names: Sequence[str]) -> dict[str, ServiceInfo] | None:
    """The observed services `names`, when the observation covers them all; else None (read again)."""
    out: dict[str, ServiceInfo] = {}
    for name in names:
        info = _folded(seen.services, name)
        if info is None:
            return None
        out[name] = info
    return out
