"""CNI network configuration for a Windows node (the win-bridge / win-overlay plugins).

The layout follows the reference configurations of the Windows container networking plugins
(github.com/microsoft/windows-container-networking): host-local IPAM over the node's pod subnet,
outbound NAT for everything but the cluster's own ranges, and a route that sends Service traffic
through the host so kube-proxy's load balancers apply.
"""

from __future__ import annotations

import json
from typing import Any

from winnode.api.windowsnetwork import NetworkMode, WindowsNetworkSpec
from winnode.network.hns import CNI_NETWORK_NAME, plan_subnet

CNI_VERSION = "0.3.0"
# The plugins' policy format 2: HNS v2 policies ({"Type", "Settings"}), what HNS on Windows Server
# 2019 and later speaks natively; format 1 ("ExceptionList", "ROUTE") goes through a v1 shim.
POLICY_API_VERSION = 2
PLUGIN_FOR_MODE = {NetworkMode.L2BRIDGE: "win-bridge", NetworkMode.OVERLAY: "win-overlay"}


def _endpoint_policy(type_: str, settings: dict[str, Any]) -> dict[str, Any]:
    return {"name": "EndpointPolicy", "value": {"Type": type_, "Settings": settings}}


def nat_exceptions(spec: WindowsNetworkSpec, host_address: str | None) -> list[str]:
    """Destinations pods reach with their own address: the cluster's pod and Service ranges, the
    node itself and the admin's outboundNATExceptions, in that order, without duplicates."""
    out: list[str] = []
    host = [f"{host_address}/32"] if host_address else []
    for cidr in (spec.cluster_cidr, spec.service_cidr, *host, *spec.outbound_nat_exceptions):
        if cidr not in out:
            out.append(cidr)
    return out


def cni_config(spec: WindowsNetworkSpec, subnet: str, host_address: str | None) -> dict[str, Any]:
    """The CNI network configuration (as a dict) of a node with pod subnet `subnet`.

    `host_address` is the node's own IP: with l2bridge, traffic from pods to it is routed through
    the host (otherwise pods cannot reach their own node); with overlay it is the provider address
    the VXLAN tunnel of the node's endpoints starts from.
    """
    plan = plan_subnet(subnet)
    policies: list[dict[str, Any]] = [
        _endpoint_policy("OutBoundNAT", {"Exceptions": nat_exceptions(spec, host_address)}),
        # Service traffic goes through the host's vSwitch, where kube-proxy's load balancers live.
        _endpoint_policy("SDNRoute", {"DestinationPrefix": spec.service_cidr, "NeedEncap": True}),
    ]
    if spec.mode is NetworkMode.L2BRIDGE and host_address:
        policies.append(
            _endpoint_policy("SDNRoute", {"DestinationPrefix": f"{host_address}/32", "NeedEncap": True})
        )
    if spec.mode is NetworkMode.OVERLAY and host_address:
        policies.append(_endpoint_policy("ProviderAddress", {"ProviderAddress": host_address}))
    config: dict[str, Any] = {
        "cniVersion": CNI_VERSION,
        "name": CNI_NETWORK_NAME,
        "type": PLUGIN_FOR_MODE[spec.mode],
        "apiVersion": POLICY_API_VERSION,
        "capabilities": {"portMappings": True, "dns": True},
        "ipam": {
            "type": "host-local",
            "subnet": plan.subnet,
            "rangeStart": plan.range_start,
            "rangeEnd": plan.range_end,
            "routes": [{"dst": "0.0.0.0/0", "gw": plan.gateway}],
        },
        "policies": policies,
    }
    if spec.dns is not None and (spec.dns.servers or spec.dns.search):
        config["dns"] = {"Nameservers": list(spec.dns.servers), "Search": list(spec.dns.search)}
    return config


def render_cni_config(spec: WindowsNetworkSpec, subnet: str, host_address: str | None) -> str:
    """The configuration file's text: stable key order, so an unchanged config has an unchanged hash."""
    return json.dumps(cni_config(spec, subnet, host_address), indent=2, sort_keys=True) + "\n"
