"""The configure plan of a WindowsNode as host actions, for dry-runs (`winnode render`).

`configure_plan(node, network=..., context=...)` takes the WindowsNode (and optionally its
WindowsNetwork) as plain dicts, as read from YAML, and returns the actions configure runs on a fresh
host, in order: host facts first, then everything `winnode.lifecycle.steps.planned_actions` lists
(directories, binaries, CA, bootstrap kubeconfig, kubelet/kube-proxy/CNI configuration, the HNS
network, services, firewall rules, service starts). `drift_check` is the one read every drift check
of the Ready node starts with (lifecycle/observe.py). Using the lifecycle's own desired state keeps
the dry-run and the real run one source of truth.

What only a live cluster knows (the apiserver URL and CA, the bootstrap token, the node's pod
subnet, published checksums) comes from `PlanContext`; its defaults are visible placeholders, and
`PlanResult.notes` says which ones a plan used. Pure: no I/O.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from winnode.host.actions import (
    DefenderExclusionsEnsureParams,
    EnsureDirectoriesParams,
    FactsParams,
    FetchFileParams,
    FirewallRuleEnsureParams,
    HnsNetworkEnsureParams,
    ObserveParams,
    Params,
    ServiceEnsureParams,
    ServiceStartParams,
    WriteFileParams,
)

PLACEHOLDER_API_SERVER = "https://APISERVER:6443"
PLACEHOLDER_CA = "-----BEGIN CERTIFICATE-----\n(the cluster CA certificate)\n-----END CERTIFICATE-----\n"
# Shaped like a real token (id.secret) so the kubeconfig looks as it will; always redacted in output.
PLACEHOLDER_TOKEN = "abcdef.0123456789abcdef"
UNKNOWN_SHA256 = "0" * 64
# Used when the WindowsNetwork is not given: the example overlay network.
DEFAULT_NETWORK_SPEC: Mapping[str, Any] = {
    "mode": "overlay",
    "clusterCIDR": "10.244.0.0/16",
    "serviceCIDR": "10.96.0.0/12",
    "nodeSubnetPrefixLength": 24,
    "dns": {"servers": ["10.96.0.10"], "search": ["svc.cluster.local", "cluster.local"]},
}


class PlanError(ValueError):
    """The WindowsNode (or WindowsNetwork) cannot be planned; the message says what to fix."""


@dataclass(frozen=True)
class PlanContext:
    """What a plan needs beyond the resources themselves."""

    kubernetes_version: str | None = None  # the apiserver's version, when the spec names none
    api_server: str = PLACEHOLDER_API_SERVER
    ca_pem: str = PLACEHOLDER_CA
    bootstrap_token: str = field(default=PLACEHOLDER_TOKEN, repr=False)
    subnet: str | None = None  # the node's pod subnet; default: the first one of clusterCIDR
    checksums: Mapping[str, str] = field(default_factory=dict)  # file name -> sha256


@dataclass(frozen=True)
class PlannedStep:
    title: str
    params: Params


@dataclass(frozen=True)
class PlanResult:
    windows_node: str
    node_name: str
    version: str
    steps: tuple[PlannedStep, ...]
    notes: tuple[str, ...] = ()
    # What every drift check of the Ready node reads afterwards (one command while nothing drifted).
    drift_check: PlannedStep | None = None


def _validation_message(what: str, exc: ValidationError) -> str:
    problems = "; ".join(
        f"{'.'.join(str(part) for part in error['loc'])}: {error['msg']}" for error in exc.errors()[:10]
    )
    return f"{what} is not valid: {problems}"


def describe(params: Params) -> str:
    """A one-line title for a planned action."""
    if isinstance(params, FactsParams):
        return "read host facts (OS build, features, containerd, disk, addresses)"
    if isinstance(params, ObserveParams):
        return (
            "read host facts, owner marker, files, services, HNS networks, firewall rules and Defender "
            "exclusions"
        )
    if isinstance(params, EnsureDirectoriesParams):
        return f"create directories {', '.join(params.paths)}"
    if isinstance(params, FetchFileParams):
        return f"download {params.url} to {params.path}"
    if isinstance(params, WriteFileParams):
        return f"write {params.path}" + (" (secret)" if params.secret else "")
    if isinstance(params, HnsNetworkEnsureParams):
        return f"HNS network {params.name} ({params.type}, {params.address_prefix})"
    if isinstance(params, ServiceEnsureParams):
        return f"register service {params.name}"
    if isinstance(params, ServiceStartParams):
        return f"start service {params.name}"
    if isinstance(params, FirewallRuleEnsureParams):
        return f"firewall: allow {params.protocol} {params.local_port} ({params.name})"
    if isinstance(params, DefenderExclusionsEnsureParams):
        verb = "exclude" if params.present else "stop excluding"
        return f"Defender: {verb} processes " + ", ".join(params.processes)
    return params.action.replace("_", " ")


def configure_plan(
    node: Mapping[str, Any],
    *,
    network: Mapping[str, Any] | None = None,
    context: PlanContext | None = None,
) -> PlanResult:
    """The actions configure runs for `node` on a fresh host. `network` is a WindowsNetwork object
    (or just its spec); without one the example overlay network is assumed."""
    from winnode.api import WindowsNode
    from winnode.api.windowsnetwork import WindowsNetworkSpec
    from winnode.lifecycle.context import ClusterInfo
    from winnode.lifecycle.kubelet_config import BINARIES, SERVICES
    from winnode.lifecycle.observe import plan as observe_plan
    from winnode.lifecycle.steps import desired_host, planned_actions
    from winnode.network.cni_plugins import CNI_PLUGINS
    from winnode.network.ipam import node_subnets

    context = context or PlanContext()
    notes: list[str] = []
    try:
        resource = WindowsNode.model_validate(dict(node))
    except ValidationError as exc:
        raise PlanError(_validation_message("the WindowsNode", exc)) from None
    spec_data: Mapping[str, Any]
    if network is None:
        spec_data = DEFAULT_NETWORK_SPEC
        notes.append(
            f"WindowsNetwork {resource.spec.network!r} not given: planned with an example overlay network "
            f"(clusterCIDR {DEFAULT_NETWORK_SPEC['clusterCIDR']})"
        )
    else:
        spec_data = network.get("spec", network)
    try:
        network_spec = WindowsNetworkSpec.model_validate(dict(spec_data))
    except ValidationError as exc:
        raise PlanError(_validation_message("the WindowsNetwork", exc)) from None

    version = resource.spec.kubernetes_version or context.kubernetes_version
    if not version:
        from winnode.lifecycle.versions import newest_known_version

        version = newest_known_version()
        notes.append(
            f"spec.kubernetesVersion not set: planned for {version}, the newest version this winnode knows; "
            "the operator installs the apiserver's own version (pass --kubernetes-version to match it)"
        )

    subnet = context.subnet
    if subnet is None:
        subnet = str(
            next(iter(node_subnets(network_spec.cluster_cidr, network_spec.node_subnet_prefix_length)))
        )
        notes.append(f"pod subnet {subnet} assumed (the operator allocates one from clusterCIDR)")

    published = dict(resource.spec.artifacts.sha256) if resource.spec.artifacts else {}
    published.update(context.checksums)
    checksums: dict[str, str] = {}
    for binary in (*BINARIES, *CNI_PLUGINS):
        if binary in published:
            checksums[binary] = published[binary].lower()
        else:
            checksums[binary] = UNKNOWN_SHA256
            notes.append(
                f"sha256 of {binary} unknown offline: shown as zeros (the operator reads <url>.sha256)"
            )
    notes.append(
        "CNI files shown at containerd's default directories; the operator uses the ones the host's "
        "containerd is configured with (`containerd config dump`)"
    )
    notes.append(
        "HNS requests shown in the v1 API (HNSCall) with no adapter named unless the WindowsNetwork names "
        "one; the operator reads the host's HNS version and default-route adapter, and uses hcn (v2) "
        "from HNS 9.2 on"
    )
    if context.api_server == PLACEHOLDER_API_SERVER:
        notes.append(f"apiserver URL shown as {PLACEHOLDER_API_SERVER}")
    if context.ca_pem == PLACEHOLDER_CA:
        notes.append("cluster CA shown as a placeholder")

    address = resource.spec.address
    try:
        ipaddress.ip_address(address)
        host_address: str | None = address
    except ValueError:
        host_address = None

    desired = desired_host(
        resource,
        network_spec,
        subnet,
        version,
        checksums,
        ClusterInfo(server=context.api_server, ca_pem=context.ca_pem),
        bootstrap_token=context.bootstrap_token,
        host_address=host_address,
    )
    actions: list[Params] = [FactsParams(), *planned_actions(desired)]
    drift_read = observe_plan(desired.without_bootstrap(), SERVICES)
    return PlanResult(
        windows_node=resource.metadata.name,
        node_name=resource.node_name,
        version=version,
        steps=tuple(PlannedStep(title=describe(p), params=p) for p in actions),
        notes=tuple(notes),
        drift_check=PlannedStep(title=describe(drift_read), params=drift_read),
    )
