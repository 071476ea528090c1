"""CNI configuration and HNS network parameters of a node."""

from __future__ import annotations

import json

import pytest

from winnode.api import WindowsNetworkSpec
from winnode.host.actions import HnsNetworkType
from winnode.network.cni import cni_config, render_cni_config
from winnode.network.hns import HNS_NETWORK_NAME, hns_network_params, plan_subnet


def spec(mode: str, **extra: object) -> WindowsNetworkSpec:
    return WindowsNetworkSpec.model_validate(
        {"mode": mode, "clusterCIDR": "10.244.0.0/16", "serviceCIDR": "10.96.0.0/12", **extra}
    )


def _policies(config: dict[str, object], type_: str) -> list[dict[str, object]]:
    return [p["value"]["Settings"] for p in config["policies"] if p["value"]["Type"] == type_]  # type: ignore[attr-defined,index]


def test_overlay_config() -> None:
    network = spec(
        "overlay",
        dns={"servers": ["10.96.0.10"], "search": ["svc.cluster.local"]},
        outboundNATExceptions=["192.168.10.0/24", "10.96.0.0/12"],
    )
    config = cni_config(network, "10.244.3.0/24", "192.168.10.21")
    assert config["type"] == "win-overlay"
    assert config["apiVersion"] == 2
    assert config["name"] == HNS_NETWORK_NAME
    assert config["ipam"] == {
        "type": "host-local",
        "subnet": "10.244.3.0/24",
        "rangeStart": "10.244.3.3",
        "rangeEnd": "10.244.3.254",
        "routes": [{"dst": "0.0.0.0/0", "gw": "10.244.3.1"}],
    }
    # cluster and service ranges and the node itself are always exempt; duplicates collapse.
    assert _policies(config, "OutBoundNAT") == [
        {"Exceptions": ["10.244.0.0/16", "10.96.0.0/12", "192.168.10.21/32", "192.168.10.0/24"]}
    ]
    assert _policies(config, "SDNRoute") == [{"DestinationPrefix": "10.96.0.0/12", "NeedEncap": True}], (
        "overlay needs no route to the host itself"
    )
    assert _policies(config, "ProviderAddress") == [{"ProviderAddress": "192.168.10.21"}]
    assert config["dns"] == {"Nameservers": ["10.96.0.10"], "Search": ["svc.cluster.local"]}


def test_l2bridge_routes_to_host_and_omits_empty_dns() -> None:
    config = cni_config(spec("l2bridge"), "10.244.9.0/24", "192.168.10.22")
    assert config["type"] == "win-bridge"
    routes = [p["DestinationPrefix"] for p in _policies(config, "SDNRoute")]
    assert routes == ["10.96.0.0/12", "192.168.10.22/32"]
    assert _policies(config, "ProviderAddress") == []
    assert "dns" not in config


def test_rendering_is_stable_json() -> None:
    network = spec("overlay")
    text = render_cni_config(network, "10.244.3.0/24", None)
    assert text == render_cni_config(network, "10.244.3.0/24", None)
    assert json.loads(text) == cni_config(network, "10.244.3.0/24", None)
    assert text.endswith("\n")


def test_hns_parameters() -> None:
    overlay = hns_network_params(spec("overlay", vxlan={"vni": 4100, "port": 4789}), "10.244.3.0/24")
    assert overlay.type is HnsNetworkType.OVERLAY
    assert (overlay.address_prefix, overlay.gateway, overlay.vsid, overlay.vxlan_port) == (
        "10.244.3.0/24",
        "10.244.3.1",
        4100,
        None,
    ), "HNS listens on 4789 by default: no VxlanPort policy is sent for it"
    custom = hns_network_params(spec("overlay", vxlan={"vni": 4100, "port": 4790}), "10.244.3.0/24")
    assert custom.vxlan_port == 4790
    default_vxlan = hns_network_params(spec("overlay"), "10.244.3.0/24")
    assert default_vxlan.vsid == 4096
    assert default_vxlan.vxlan_port is None
    bridge = hns_network_params(spec("l2bridge", adapterName="Ethernet 2"), "10.244.4.0/24")
    assert bridge.type is HnsNetworkType.L2BRIDGE
    assert bridge.vsid is None
    assert bridge.adapter_name == "Ethernet 2"


def test_subnet_plan_limits() -> None:
    plan = plan_subnet("10.244.5.16/28")
    assert (plan.gateway, plan.source_vip, plan.range_start, plan.range_end) == (
        "10.244.5.17",
        "10.244.5.18",
        "10.244.5.19",
        "10.244.5.30",
    )
    with pytest.raises(ValueError, match="too small"):
        plan_subnet("10.244.5.0/30")
