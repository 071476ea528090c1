from __future__ import annotations

from typing import Any

import yaml

from winnode.api.windowsnetwork import WindowsNetworkSpec
from winnode.api.windowsnode import KubeletConfig
from winnode.lifecycle import cluster_dns as cd
from winnode.lifecycle import kubelet_config as kc


def _net(**spec: Any) -> WindowsNetworkSpec:
    return WindowsNetworkSpec.model_validate(
        {"mode": "overlay", "clusterCIDR": "10.244.0.0/16", "serviceCIDR": "10.96.0.0/12", **spec}
    )


def test_spec_servers_win() -> None:
    dns = cd.choose(_net(dns={"servers": ["10.96.0.53"]}), "10.96.0.10")
    assert (dns.servers, dns.warning) == (("10.96.0.53",), None)


def test_kube_dns_service_ip_next() -> None:
    dns = cd.choose(_net(), "10.100.0.3")
    assert (dns.servers, dns.warning) == (("10.100.0.3",), None)


def test_tenth_address_of_service_cidr_with_a_warning() -> None:
    dns = cd.choose(_net(serviceCIDR="10.100.0.0/16"), None)
    assert dns.servers == ("10.100.0.10",)
    assert dns.warning is not None
    assert "10.100.0.10" in dns.warning
    assert "spec.dns.servers" in dns.warning
    assert cd.choose(_net(), "None").servers == ("10.96.0.10",), "a headless kube-dns is no address"


def test_kubelet_configuration_on_windows() -> None:
    config = yaml.safe_load(
        kc.kubelet_configuration(KubeletConfig.model_validate({}), [], _net(), ["10.96.0.10"])
    )
    assert config["clusterDNS"] == ["10.96.0.10"]
    assert "hairpinMode" not in config, "ignored on Windows"
    assert config["enableSystemLogHandler"] is True
    assert config["enableSystemLogQuery"] is True
