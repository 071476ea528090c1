"""Drift check of a Ready node: read the host, put back whatever changed, say what was repaired.

Runs periodically per WindowsNode (handlers/windowsnode.py). One command reads the host (the
`observe` action, lifecycle/observe.py): its facts (so logging in re-verifies the credentials and a
changed Secret is picked up), the owner marker, and every part of the desired state: files by
SHA-256 (a replaced binary, an edited or deleted configuration file), the HNS networks, firewall
rules, Defender exclusions, the services' registration and that they run. Only the steps configure
uses for the parts that differ run then, without the bootstrap parts, so a healthy node costs that
one command. Whatever a step had to change becomes one Normal Event "DriftRepaired". Finally the
Node's own readiness is mirrored in NodeReady and the phase (Ready or Degraded).
"""

from __future__ import annotations

import logging

from winnode.api import NodePhase
from winnode.host.actions import ObserveResult
from winnode.kube.nodes import get_node, node_is_ready
from winnode.lifecycle import kubelet_config as kc
from winnode.lifecycle import network_disruption, node_ready, ownership, steps
from winnode.lifecycle import observe as observation
from winnode.lifecycle.cni_setup import resolve_cni_checksums
from winnode.lifecycle.context import HostApi
from winnode.lifecycle.network_setup import node_network
from winnode.lifecycle.session import (
    READY_PHASES,
    Session,
    desired_host,
    load_credentials,
    observe,
    resolve_checksums,
)
from winnode.lifecycle.status import C, StepFailure

log = logging.getLogger(__name__)


def due(s: Session) -> bool:
    """Whether a drift check applies now: a node whose current spec was configured successfully.

    That includes one the drift check itself found Degraded or Failed (a wrong password put in its
    Secret, say): the next check is what notices the fix. A node whose configure has not succeeded
    for its current spec belongs to the configure handler and its retries.
    """
    status = s.writer.status
    return (
        not s.node.spec.paused
        and status.phase in (*READY_PHASES, NodePhase.FAILED)
        and status.installed is not None
        and status.installed.kubelet is not None
        and status.observed_generation == s.node.metadata.generation
    )


async def drift_check(s: Session) -> list[str]:
    """Repair the host; the repairs made. Raises StepFailure (the caller records it)."""
    status = s.writer.status
    version = status.installed.kubelet if status.installed else None
    if version is None:
        return []
    await node_ready.mirror(s)  # before the host: a host that is down must not keep NodeReady=True
    creds = await load_credentials(s)
    uid = s.node.metadata.uid or s.name
    seen = s.deps.credentials_seen.get(uid)
    plan = s.deps.observe_plans.get(uid, observation.FIRST)
    host, observed = await observe(s, creds, plan, fallback=observation.FIRST)
    await ownership.confirm(s, host, observed.owner)
    if seen is not None and seen != creds.resource_version:
        await s.events.normal(
            "CredentialsVerified",
            f"credentials Secret changed (resourceVersion {creds.resource_version}); logging in with it works",
        )
    s.deps.credentials_seen[uid] = creds.resource_version
    network = await node_network(s.deps.kube, s.node)
    checksums = {**await resolve_checksums(s, version), **await resolve_cni_checksums(s)}
    desired = await desired_host(s, network.spec, network.subnet, version, checksums, observed.facts)
    s.deps.observe_plans[uid] = observation.plan(desired, kc.SERVICES)
    repairs = await repair(s, host, desired, observed)
    s.writer.condition(C.BINARIES_INSTALLED, True, "Installed", f"kubelet and kube-proxy {version} verified")
    s.writer.condition(C.SERVICES_RUNNING, True, "Running", "kubelet and kube-proxy are running")
    s.writer.condition(C.NETWORK_CONFIGURED, True, "Configured", f"HNS network {desired.hns.name} present")
    if repairs:
        s.deps.metrics.drift_repairs.inc(len(repairs))
        await s.events.normal("DriftRepaired", "; ".join(repairs))
        log.info("%s: drift repaired: %s", s.name, "; ".join(repairs))
    node = await get_node(s.deps.kube, s.node_name)
    if node is None:
        raise StepFailure(
            "NodeMissing",
            f"Node {s.node_name} does not exist although its kubelet runs; it re-registers by itself "
            "within a minute, otherwise restart the kubelet service on the host",
            condition=C.NODE_REGISTERED,
        )
    if node_is_ready(node):
        s.writer.condition(C.NODE_READY, True, "KubeletReady", f"Node {s.node_name} is Ready")
        s.writer.set_phase(NodePhase.READY)
        s.writer.clear_error()
    else:
        raise StepFailure(
            "NodeNotReady",
            f"Node {s.node_name} is not Ready; see `kubectl describe node {s.node_name}`",
            condition=C.NODE_READY,
        )
    await s.writer.flush()
    return repairs


async def repair(s: Session, host: HostApi, desired: steps.DesiredHost, observed: ObserveResult) -> list[str]:
    """Run the steps of the parts that differ from `desired`, handing each what was observed."""
    drift = observation.drift(desired, observed, kc.SERVICES)
    if drift.clean:
        return []
    log.debug("%s: to check or repair: %s", s.name, "; ".join(drift.parts()))
    services = observation.known_services(observed, [*(w.name for w in desired.services), *kc.SERVICES])
    repairs: list[str] = []
    if drift.files:
        repairs += await steps.ensure_files(
            host, desired, files=drift.files, stats=observed.files, services=services
        )
    if drift.network:
        guard = network_disruption.RecreateGuard(s)
        repairs += await steps.ensure_network(
            host, desired, guard.before_recreate, known=observed.hns_networks
        )
        await guard.done()
    if drift.firewall:
        repairs += await steps.ensure_firewall(host, desired, rules=drift.firewall)
    if drift.defender:
        repairs += await steps.ensure_defender(host, desired)
    if drift.services:
        repairs += await steps.ensure_services(
            host, desired, known=services if not drift.stops_services else None
        )
    if drift.start or not drift.service_states_hold:
        repairs += await steps.start_services(
            host, list(kc.SERVICES), known=services if drift.service_states_hold else None
        )
    return repairs
