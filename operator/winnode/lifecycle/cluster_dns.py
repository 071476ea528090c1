"""The kubelet's clusterDNS: which address pods on a Windows node get as their DNS server.

In order: the WindowsNetwork's dns.servers when the admin set them; else the ClusterIP of the kube-dns
Service in kube-system (the name CoreDNS keeps for compatibility); else the 10th address of
serviceCIDR, the address kubeadm gives that Service (cmd/kubeadm/app/constants GetDNSIP at v1.37.2),
with a Warning Event, since nothing in the cluster confirmed it.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from winnode.api.windowsnetwork import WindowsNetworkSpec
from winnode.kube.client import Kube, path

KUBE_DNS_NAMESPACE = "kube-system"
KUBE_DNS_SERVICE = "kube-dns"
# kubeadm's DNS Service address: this index in the service range.
DNS_INDEX = 10


@dataclass(frozen=True)
class ClusterDNS:
    servers: tuple[str, ...]
    source: str
    # Set when the address is a guess the admin should confirm.
    warning: str | None = None


def tenth_address(service_cidr: str) -> str:
    return str(ipaddress.ip_network(service_cidr, strict=False)[DNS_INDEX])


def choose(network: WindowsNetworkSpec, kube_dns_ip: str | None) -> ClusterDNS:
    """Pure: the clusterDNS for `network`, given the kube-dns Service's ClusterIP (None: no such Service)."""
    if network.dns is not None and network.dns.servers:
        return ClusterDNS(tuple(network.dns.servers), "WindowsNetwork spec.dns.servers")
    if kube_dns_ip and kube_dns_ip != "None":
        return ClusterDNS((kube_dns_ip,), f"Service {KUBE_DNS_NAMESPACE}/{KUBE_DNS_SERVICE}")
    guess = tenth_address(network.service_cidr)
    return ClusterDNS(
        (guess,),
        "10th address of serviceCIDR",
        warning=(
            f"no dns.servers in the WindowsNetwork and no Service {KUBE_DNS_NAMESPACE}/{KUBE_DNS_SERVICE}: "
            f"pods get DNS server {guess} (10th address of serviceCIDR {network.service_cidr}); set "
            "spec.dns.servers if the cluster DNS lives elsewhere"
        ),
    )


async def resolve(kube: Kube, network: WindowsNetworkSpec) -> ClusterDNS:
    if network.dns is not None and network.dns.servers:
        return choose(network, None)
    service = await kube.request(
        "GET",
        path("api", "v1", "namespaces", KUBE_DNS_NAMESPACE, "services", KUBE_DNS_SERVICE),
        missing_ok=True,
    )
    ip = ((service or {}).get("spec") or {}).get("clusterIP")
    return choose(network, str(ip) if ip else None)
