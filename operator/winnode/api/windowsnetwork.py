"""WindowsNetwork: how pods on Windows nodes are wired (HNS network, pod subnets, DNS, NAT)."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, ClassVar, Literal

from pydantic import ConfigDict, Field, StringConstraints, model_validator

from winnode.api.common import (
    CIDR,
    HOSTNAME,
    LIST_ATOMIC,
    LIST_SET,
    MAX_DNS_SUBDOMAIN,
    ApiModel,
    Conditions,
    CustomResource,
    IPAddress,
    IPv4CIDR,
    PrinterColumn,
    ResourceInfo,
    Rule,
    StatusModel,
    list_map,
    model_rules,
    parse_cidr,
)

VXLAN_MIN_VNI = 4096  # Windows reserves VNIs below 4096
VXLAN_MAX_VNI = 16777215
VXLAN_DEFAULT_PORT = 4789


class NetworkMode(StrEnum):
    L2BRIDGE = "l2bridge"
    OVERLAY = "overlay"


class LinuxCNI(StrEnum):
    """Which CNI the cluster's Linux nodes run, so Windows and Linux pods route to each other."""

    FLANNEL = "flannel"
    NONE = "none"


class WindowsNetworkConditionType(StrEnum):
    """Condition types of a WindowsNetwork (status.conditions[].type)."""

    # Every WindowsNode on this network has it applied.
    READY = "Ready"
    # The clusterCIDR still has free node subnets.
    SUBNETS_AVAILABLE = "SubnetsAvailable"
    # The spec is consistent with the other WindowsNetworks (no overlapping ranges).
    VALID = "Valid"
    # WindowsNodes name this network (it cannot be deleted while they do).
    IN_USE = "InUse"
    # A spec change is being applied across the nodes, one at a time.
    ROLLING_OUT = "RollingOut"


class VXLANConfig(ApiModel):
    """VXLAN settings of an overlay network."""

    vni: int = Field(
        VXLAN_MIN_VNI,
        ge=VXLAN_MIN_VNI,
        le=VXLAN_MAX_VNI,
        description="VXLAN network identifier; Windows needs 4096 or more.",
    )
    port: int = Field(
        VXLAN_DEFAULT_PORT,
        ge=1,
        le=65535,
        description=(
            "UDP port of the VXLAN tunnel; must match the Linux nodes' overlay (flannel uses 4789 "
            "on Windows). Builds older than Windows Server 2022 only support 4789."
        ),
    )


DNSName = Annotated[
    str,
    StringConstraints(min_length=1, max_length=MAX_DNS_SUBDOMAIN, pattern=HOSTNAME),
]


class DNSConfig(ApiModel):
    """DNS settings of the pods' network interfaces."""

    servers: Annotated[list[IPAddress], LIST_ATOMIC, Field(max_length=8)] = Field(
        default_factory=list,
        description="DNS servers in order of preference, usually the cluster DNS Service IP (e.g. 10.96.0.10).",
    )
    search: Annotated[list[DNSName], LIST_ATOMIC, Field(max_length=6)] = Field(
        default_factory=list,
        description="DNS search suffixes, e.g. svc.cluster.local and cluster.local.",
    )


class WindowsNetworkSpec(ApiModel):
    """How pods on the Windows nodes that name this network are wired."""

    model_config = ConfigDict(
        json_schema_extra=model_rules(
            Rule(
                "self.mode == 'overlay' || !has(self.vxlan)",
                "vxlan may only be set when mode is overlay; remove vxlan or use mode overlay",
                field_path=".vxlan",
            ),
            Rule(
                "!isCIDR(self.clusterCIDR) || cidr(self.clusterCIDR).ip().family() != 4 || "
                "self.nodeSubnetPrefixLength > cidr(self.clusterCIDR).prefixLength()",
                "nodeSubnetPrefixLength must be longer than the clusterCIDR prefix, so that clusterCIDR "
                "holds more than one node subnet; use a larger number (24 with a /16 clusterCIDR)",
                field_path=".nodeSubnetPrefixLength",
            ),
            Rule(
                "!isCIDR(self.clusterCIDR) || !isCIDR(self.serviceCIDR) || "
                "!(cidr(self.clusterCIDR).containsCIDR(self.serviceCIDR) || "
                "cidr(self.serviceCIDR).containsCIDR(self.clusterCIDR))",
                "serviceCIDR must not overlap clusterCIDR; set it to the apiserver's --service-cluster-ip-range",
                field_path=".serviceCIDR",
            ),
        )
    )

    mode: Annotated[
        NetworkMode,
        Rule("self == oldSelf", "mode cannot change; create another WindowsNetwork and move nodes to it"),
    ] = Field(
        description=(
            "overlay: pods on different hosts talk through VXLAN tunnels; works on any routed network. "
            "l2bridge: pods share the hosts' L2 segment; needs routes to each node's pod subnet. "
            "Cannot change."
        ),
    )
    cluster_cidr: Annotated[
        IPv4CIDR,
        Rule(
            "self == oldSelf", "clusterCIDR cannot change; create another WindowsNetwork and move nodes to it"
        ),
    ] = Field(
        alias="clusterCIDR",
        description=(
            "IPv4 range pod addresses of these nodes come from, e.g. 10.244.0.0/16 (the cluster's "
            "--cluster-cidr). Each node gets one subnet of it. Cannot change."
        ),
    )
    service_cidr: IPv4CIDR = Field(
        alias="serviceCIDR",
        description="IPv4 range of Service ClusterIPs (the apiserver's --service-cluster-ip-range), e.g. 10.96.0.0/12.",
    )
    node_subnet_prefix_length: Annotated[
        int,
        Rule("self == oldSelf", "nodeSubnetPrefixLength cannot change once subnets are handed out"),
    ] = Field(
        24,
        ge=16,
        le=28,
        description=(
            "Prefix length of each node's pod subnet: 24 gives each node 256 addresses. "
            "Must be longer than clusterCIDR's prefix. Cannot change."
        ),
    )
    vxlan: VXLANConfig | None = Field(
        None,
        description="VXLAN settings (overlay only). Defaults to VNI 4096 on UDP port 4789.",
    )
    dns: DNSConfig | None = Field(None, description="DNS settings handed to pods.")
    adapter_name: Annotated[str, StringConstraints(min_length=1, max_length=256)] | None = Field(
        None,
        description=(
            "Host network adapter the HNS network is bound to, e.g. 'Ethernet 2'. "
            "Defaults to the adapter that holds the host's default route."
        ),
    )
    outbound_nat_exceptions: Annotated[list[CIDR], LIST_SET, Field(max_length=64)] = Field(
        default_factory=list,
        alias="outboundNATExceptions",
        description=(
            "Destinations pods reach with their own address instead of the host's (no outbound "
            "NAT), e.g. the hosts' own network. clusterCIDR and serviceCIDR are always exempt."
        ),
    )

    linux_cni: LinuxCNI = Field(
        LinuxCNI.FLANNEL,
        alias="linuxCNI",
        description=(
            "The CNI of the cluster's Linux nodes. flannel: winnode writes the Node annotations "
            "flannel's Linux agent reads (flannel.alpha.coreos.com/backend-type, backend-data with "
            "the VtepMAC, public-ip), so Linux nodes route to Windows pods, and routes Windows hosts "
            "to Linux nodes from theirs; the Linux flannel must use the same backend (vxlan with this "
            "VNI and port for overlay, host-gw for l2bridge). none: no annotations; Windows hosts "
            "still route to every Node's spec.podCIDR (l2bridge), and the routes from Linux nodes to "
            "Windows pod subnets are made by hand."
        ),
    )

    @property
    def effective_vxlan(self) -> VXLANConfig | None:
        """VXLAN settings to use: the given ones or the defaults for overlay, None for l2bridge."""
        if self.mode is not NetworkMode.OVERLAY:
            return None
        return self.vxlan or VXLANConfig()

    @model_validator(mode="after")
    def _consistent(self) -> WindowsNetworkSpec:
        if self.vxlan is not None and self.mode is not NetworkMode.OVERLAY:
            raise ValueError("vxlan may only be set when mode is overlay; remove vxlan or use mode overlay")
        cluster, service = parse_cidr(self.cluster_cidr), parse_cidr(self.service_cidr)
        if (
            cluster is not None
            and cluster.version == 4
            and self.node_subnet_prefix_length <= cluster.prefixlen
        ):
            raise ValueError(
                "nodeSubnetPrefixLength must be longer than the clusterCIDR prefix, so that clusterCIDR "
                "holds more than one node subnet; use a larger number (24 with a /16 clusterCIDR)"
            )
        if cluster is not None and service is not None and cluster.overlaps(service):
            raise ValueError(
                "serviceCIDR must not overlap clusterCIDR; set it to the apiserver's --service-cluster-ip-range"
            )
        return self


class SubnetAllocation(StatusModel):
    """A node subnet handed out from clusterCIDR."""

    node: str = Field(description="Name of the WindowsNode that holds the subnet.")
    subnet: str = Field(description="The node's pod subnet, e.g. 10.244.3.0/24.")
    source_vip: str | None = Field(
        None,
        alias="sourceVIP",
        description=(
            "Overlay only: the address of the node's subnet reserved as kube-proxy's source VIP "
            "(service traffic leaving the node is SNAT'd to it); never handed to a pod."
        ),
    )


class NetworkRollout(StatusModel):
    """A spec change being applied to the network's nodes, one node at a time."""

    generation: int = Field(
        ge=0, description="metadata.generation being rolled out.", json_schema_extra={"format": "int64"}
    )
    node: str | None = Field(
        None, description="The WindowsNode being reconfigured now; the others wait for it to be Ready."
    )


class WindowsNetworkStatus(StatusModel):
    """Subnets handed out and how far the network is applied to its nodes."""

    model_config = ConfigDict(json_schema_extra={"x-kubernetes-preserve-unknown-fields": True})

    allocations: Annotated[list[SubnetAllocation], list_map("node")] = Field(
        default_factory=list,
        description="Node subnets handed out, one per WindowsNode on this network.",
    )
    nodes_applied: int | None = Field(
        None, ge=0, description="WindowsNodes on which the network is configured as specified."
    )
    nodes_failed: int | None = Field(
        None, ge=0, description="WindowsNodes on which configuring the network failed."
    )
    rollout: NetworkRollout | None = Field(
        None, description="The spec change being applied node by node; absent when none is."
    )
    conditions: Conditions = Field(
        default_factory=list,
        description="Current state in detail: Ready, Valid, InUse, RollingOut, SubnetsAvailable.",
    )
    observed_generation: int | None = Field(
        None,
        ge=0,
        description="metadata.generation of the spec this status describes.",
        json_schema_extra={"format": "int64"},
    )


WINDOWS_NETWORK = ResourceInfo(
    kind="WindowsNetwork",
    plural="windowsnetworks",
    singular="windowsnetwork",
    short_names=("wnet",),
    spec=WindowsNetworkSpec,
    status=WindowsNetworkStatus,
    description=(
        "How pods on Windows nodes are wired: the HNS network mode (overlay or l2bridge), the pod and "
        "Service ranges, per-node pod subnets, DNS and outbound NAT. WindowsNodes name the network they use."
    ),
    printer_columns=(
        PrinterColumn("Mode", ".spec.mode", "overlay or l2bridge."),
        PrinterColumn("Cluster CIDR", ".spec.clusterCIDR", "Range pod addresses come from."),
        PrinterColumn(
            "Nodes", ".status.nodesApplied", "WindowsNodes with the network applied.", type="integer"
        ),
        PrinterColumn(
            "Failed", ".status.nodesFailed", "WindowsNodes where applying failed.", type="integer", priority=1
        ),
        PrinterColumn(
            "Age",
            ".metadata.creationTimestamp",
            "Time since the WindowsNetwork was created.",
            type="date",
        ),
    ),
)


class WindowsNetwork(CustomResource):
    """A whole WindowsNetwork object."""

    info: ClassVar[ResourceInfo] = WINDOWS_NETWORK

    kind: Literal["WindowsNetwork"] = "WindowsNetwork"
    spec: WindowsNetworkSpec
    status: WindowsNetworkStatus = Field(default_factory=WindowsNetworkStatus)
