"""CNI configuration and HNS network parameters of a node."""

from __future__ import annotations

import json

import pytest

from winnode.api import WindowsNetworkSpec
from winnode.host.actions import HnsApi, HnsNetworkType
from winnode.network.cni import cni_config, render_cni_config
from winnode.network.hns import (
    HNS_NETWORK_NAME,
    HnsHost,
    HnsRequestError,
    external_network_params,
    hns_network_params,
    plan_subnet,
)


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
    v2 = HnsHost(version=(13, 2), default_adapter="Ethernet")
    overlay = hns_network_params(spec("overlay", vxlan={"vni": 4100, "port": 4789}), "10.244.3.0/24", v2)
    assert overlay.type is HnsNetworkType.OVERLAY
    assert (overlay.address_prefix, overlay.gateway, overlay.vsid, overlay.vxlan_port) == (
        "10.244.3.0/24",
        "10.244.3.1",
        4100,
        None,
    ), "HNS listens on 4789 by default: no VxlanPort policy is sent for it"
    assert overlay.api is HnsApi.V2
    assert overlay.adapter_name == "Ethernet", "the default-route adapter is sent explicitly"
    assert "VxlanPort" not in overlay.request
    custom = hns_network_params(spec("overlay", vxlan={"vni": 4100, "port": 4790}), "10.244.3.0/24", v2)
    assert custom.vxlan_port == 4790
    assert json.loads(custom.request)["Policies"][-1] == {"Type": "VxlanPort", "Settings": {"Port": 4790}}
    default_vxlan = hns_network_params(spec("overlay"), "10.244.3.0/24", v2)
    assert default_vxlan.vsid == 4096
    assert default_vxlan.vxlan_port is None
    bridge = hns_network_params(spec("l2bridge", adapterName="Ethernet 2"), "10.244.4.0/24", v2)
    assert bridge.type is HnsNetworkType.L2BRIDGE
    assert bridge.vsid is None
    assert bridge.adapter_name == "Ethernet 2", "the WindowsNetwork's adapter wins over the default route's"


def test_hns_api_follows_the_host_version() -> None:
    old = HnsHost(version=(9, 1))
    v1 = hns_network_params(spec("overlay"), "10.244.3.0/24", old)
    assert v1.api is HnsApi.V1
    assert json.loads(v1.request)["Subnets"][0]["Policies"] == [{"Type": "VSID", "VSID": 4096}]
    server_2019 = HnsHost(version=(9, 5))
    assert hns_network_params(spec("overlay"), "10.244.3.0/24", server_2019).api is HnsApi.V2
    with pytest.raises(HnsRequestError, match=r"needs HNS 10\.3") as refused:
        hns_network_params(spec("overlay", vxlan={"vni": 4100, "port": 4790}), "10.244.3.0/24", server_2019)
    assert refused.value.reason == "VxlanPortUnsupported"


def test_external_network_is_kept_once_created() -> None:
    host = HnsHost(version=(13, 2), default_adapter="Ethernet")
    external = external_network_params(spec("overlay"), host)
    assert (external.name, external.address_prefix, external.gateway, external.vsid) == (
        "External",
        "192.168.255.0/30",
        "192.168.255.1",
        9999,
    )
    assert external.keep_existing
    assert external_network_params(spec("l2bridge"), host).vsid is None


def test_adapter_aliases_include_the_interface_description() -> None:
    host = HnsHost(adapters=(("Ethernet", "Microsoft Hyper-V Network Adapter"), ("Ethernet 2", "Intel X710")))
    assert host.adapter_aliases("ethernet 2") == {"ethernet 2", "intel x710"}
    assert host.adapter_aliases(None) == frozenset()


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
