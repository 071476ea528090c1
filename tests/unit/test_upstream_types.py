"""What winnode sends to a Windows host's network stack, decoded strictly by the upstream Go types
(hack/upstreamtypes: containernetworking/plugins, hcsshim internal/hns and hcn, flannel)."""

from __future__ import annotations

import asyncio
import itertools
import json

import pytest

from winnode.api import WindowsNetworkSpec
from winnode.host import actions as A
from winnode.host.actions import HnsApi
from winnode.lifecycle.steps import hns_differs
from winnode.network.cni import render_cni_config
from winnode.network.hns import HnsHost, external_network_params, hns_network_params
from winnode.network.routes import FLANNEL_PREFIX, flannel_annotations
from winnode.testing.hostmodel import ActionFailed, new_host_model
from winnode.testing.upstreamtypes import Case, Kind, check, check_many, flannel_case

MODES = ("overlay", "l2bridge")


def spec(mode: str, **extra: object) -> WindowsNetworkSpec:
    return WindowsNetworkSpec.model_validate(
        {"mode": mode, "clusterCIDR": "10.244.0.0/16", "serviceCIDR": "10.96.0.0/12", **extra}
    )


SPEC_VARIANTS: dict[str, dict[str, object]] = {
    "plain": {},
    "dns": {"dns": {"servers": ["10.96.0.10"], "search": ["svc.cluster.local", "cluster.local"]}},
    "exceptions": {"outboundNATExceptions": ["192.168.10.0/24", "172.16.0.0/12"]},
    "vxlan": {"vxlan": {"vni": 4100, "port": 4789}},
}


def _cni_cases() -> list[tuple[str, Case]]:
    out = []
    for mode, (variant, extra), host in itertools.product(
        MODES, SPEC_VARIANTS.items(), ("192.168.10.21", None)
    ):
        if variant == "vxlan" and mode != "overlay":
            continue
        text = render_cni_config(spec(mode, **extra), "10.244.3.0/24", host)
        out.append((f"{mode}-{variant}-{host}", Case(Kind.CNI_CONFIG, text)))
    for subnet in ("10.244.250.0/29", "10.244.4.0/23"):
        text = render_cni_config(spec("overlay"), subnet, "192.168.10.21")
        out.append((f"overlay-{subnet}", Case(Kind.CNI_CONFIG, text)))
    return out


def test_every_rendered_cni_config_is_what_the_plugins_decode() -> None:
    cases = _cni_cases()
    verdicts = check_many([c for _, c in cases])
    refused = {name: v.error for (name, _), v in zip(cases, verdicts, strict=True) if not v.ok}
    assert not refused
    assert len(verdicts) >= 12


def test_a_field_the_plugins_do_not_know_is_refused() -> None:
    config = json.loads(render_cni_config(spec("l2bridge"), "10.244.3.0/24", "192.168.10.22"))
    config["policies"][0]["value"]["Settings"]["ExceptionList"] = ["10.0.0.0/8"]
    verdict = check(Case(Kind.CNI_CONFIG, json.dumps(config)))
    assert not verdict.ok
    assert 'unknown field "ExceptionList"' in verdict.error
    config = json.loads(render_cni_config(spec("overlay"), "10.244.3.0/24", "192.168.10.21"))
    config["ipam"]["gateway4"] = "10.244.3.1"
    verdict = check(Case(Kind.CNI_CONFIG, json.dumps(config)))
    assert not verdict.ok
    assert "host-local ipam" in verdict.error


def test_host_local_refuses_a_range_outside_its_subnet() -> None:
    config = json.loads(render_cni_config(spec("overlay"), "10.244.3.0/24", "192.168.10.21"))
    config["ipam"]["rangeStart"] = "10.244.4.3"
    verdict = check(Case(Kind.CNI_CONFIG, json.dumps(config)))
    assert not verdict.ok
    assert "host-local ipam" in verdict.error


@pytest.mark.parametrize("mode", MODES)
def test_flannel_annotations_decode_as_flannel_leases(mode: str) -> None:
    annotations = flannel_annotations(spec(mode), "192.168.10.21", "0E-2A-C0-A8-0A-15")
    written = {k: v for k, v in annotations.items() if v is not None}
    verdict = check(flannel_case(written, FLANNEL_PREFIX))
    assert verdict.ok, verdict.error


def test_flannel_refuses_a_vxlan_lease_without_a_mac() -> None:
    annotations = flannel_annotations(spec("overlay"), "192.168.10.21", None)
    written = {k: v for k, v in annotations.items() if v is not None}
    verdict = check(flannel_case(written, FLANNEL_PREFIX))
    assert not verdict.ok
    assert "hardware addr" in verdict.error


def test_the_old_vxlan_port_request_through_hns_v1_is_refused() -> None:
    """The request winnode used to send: a v2-shaped VxlanPort network policy through HNSCall (v1)."""
    request = {
        "Name": "winnode",
        "Type": "Overlay",
        "Subnets": [
            {
                "AddressPrefix": "10.244.3.0/24",
                "GatewayAddress": "10.244.3.1",
                "Policies": [{"Type": "VSID", "VSID": 4096}],
            }
        ],
        "Policies": [{"Type": "VxlanPort", "Settings": {"Port": 4790}}],
    }
    verdict = check(Case(Kind.HNS_V1_NETWORK, json.dumps(request)))
    assert not verdict.ok
    assert 'HNS v1 has no policy type "VxlanPort"' in verdict.error
    del request["Policies"]
    assert check(Case(Kind.HNS_V1_NETWORK, json.dumps(request))).ok, "the same network without it decodes"


HOSTS = {
    "hns-9.1-v1": HnsHost(version=(9, 1)),
    "server-2019": HnsHost(version=(9, 5), default_adapter="Ethernet"),
    "server-2022": HnsHost(version=(13, 2), default_adapter="Ethernet"),
    "unknown": HnsHost(),
}


def _hns_cases() -> list[tuple[str, Case]]:
    out = []
    for (host_name, host), mode in itertools.product(HOSTS.items(), MODES):
        version = host.version or (7, 2)
        variants: list[dict[str, object]] = [{}, {"adapterName": "Ethernet 2"}]
        if mode == "overlay" and host.version is not None and host.version >= (10, 3):
            variants.append({"vxlan": {"vni": 5000, "port": 4790}})
        for extra in variants:
            network = spec(mode, **extra)
            for params in (
                hns_network_params(network, "10.244.3.0/24", host),
                external_network_params(network, host),
            ):
                kind = Kind.HNS_V2_NETWORK if params.api is HnsApi.V2 else Kind.HNS_V1_NETWORK
                out.append((f"{host_name}-{mode}-{params.name}-{extra}", Case(kind, params.request, version)))
    return out


def test_every_rendered_hns_network_request_is_what_hcsshim_decodes() -> None:
    cases = _hns_cases()
    verdicts = check_many([c for _, c in cases])
    refused = {name: v.error for (name, _), v in zip(cases, verdicts, strict=True) if not v.ok}
    assert not refused
    kinds = {c.kind for _, c in cases}
    assert kinds == {Kind.HNS_V1_NETWORK, Kind.HNS_V2_NETWORK}, "both APIs are exercised"


def test_the_emulated_hns_refuses_the_old_vxlan_port_request() -> None:
    """The emulator consults the checker: the old request is refused as HNS v1 would refuse it."""
    old = json.dumps(
        {
            "Name": "winnode",
            "Type": "Overlay",
            "Subnets": [
                {
                    "AddressPrefix": "10.244.3.0/24",
                    "GatewayAddress": "10.244.3.1",
                    "Policies": [{"Type": "VSID", "VSID": 4096}],
                }
            ],
            "Policies": [{"Type": "VxlanPort", "Settings": {"Port": 4790}}],
        }
    )
    params = hns_network_params(spec("overlay"), "10.244.3.0/24", HnsHost(version=(9, 1)))
    model = new_host_model("w1", os_build=17763)
    with pytest.raises(ActionFailed, match="HNS v1 has no policy type"):
        asyncio.run(model.execute(params.model_copy(update={"request": old})))
    assert "winnode" not in model.hns_networks


def test_the_emulated_hns_refuses_an_unknown_adapter_and_reports_the_description() -> None:
    model = new_host_model("w1", adapters=["Ethernet", "Ethernet 2"])
    host = HnsHost.from_facts(model.facts())
    assert host.default_adapter == "Ethernet"
    assert host.version == (13, 2)
    wrong = hns_network_params(spec("l2bridge", adapterName="Ethernet 9"), "10.244.3.0/24", host)
    with pytest.raises(ActionFailed, match="no network adapter is named 'Ethernet 9'"):
        asyncio.run(model.execute(wrong))
    want = hns_network_params(spec("l2bridge", adapterName="Ethernet 2"), "10.244.3.0/24", host)
    assert asyncio.run(model.execute(want)).changed
    reported = model.hns_networks["winnode"].info()
    assert reported.adapter_name == "Microsoft Hyper-V Network Adapter #2", "HNS reports the description"
    again = asyncio.run(model.execute(want))
    assert not again.changed, "the host's own comparison matches the description"
    assert not hns_differs(reported, want, host.adapter_aliases(want.adapter_name)), "no re-create loop"
    assert hns_differs(reported, want), "comparing with the name alone would loop"


def test_route_sync_requests_are_decoded_at_the_hosts_hns_version() -> None:
    """The RemoteSubnetRoute update hns_routes_sync sends: accepted on HNS 9.2+; before it HNS has
    no hcn API (nor RemoteSubnetRoute) at all."""
    route = A.RemoteSubnetRoute(
        destination_prefix="10.244.9.0/24",
        isolation_id=4096,
        provider_address="10.0.0.9",
        distributed_router_mac="0E-2A-0A-00-00-09",
    )
    sync = A.HnsRoutesSyncParams(
        network="winnode", managed_prefixes=["10.244.0.0/16"], remote_subnet_routes=[route]
    )
    for version, accepted in (((9, 1), False), ((9, 5), True)):
        model = new_host_model("w1", addresses=["10.0.0.1"])
        model.hns_version = version
        asyncio.run(
            model.execute(hns_network_params(spec("overlay"), "10.244.3.0/24", HnsHost(version=version)))
        )
        if accepted:
            assert asyncio.run(model.execute(sync)).added == ["RemoteSubnetRoute 10.244.9.0/24 via 10.0.0.9"]
        else:
            with pytest.raises(ActionFailed, match="V2ApiSupport"):
                asyncio.run(model.execute(sync))


def test_the_external_network_survives_a_pod_network_change() -> None:
    model = new_host_model("w1", addresses=["10.0.0.1"])
    host = HnsHost.from_facts(model.facts())
    for subnet in ("10.244.3.0/24", "10.244.7.0/24"):
        for params in (
            external_network_params(spec("overlay"), host),
            hns_network_params(spec("overlay"), subnet, host),
        ):
            asyncio.run(model.execute(params))
        if subnet == "10.244.3.0/24":
            external_id = model.hns_networks["External"].id
    assert model.hns_networks["winnode"].address_prefix == "10.244.7.0/24"
    assert model.hns_networks["External"].id == external_id, "External was never re-created"
    changed = external_network_params(spec("l2bridge"), host)
    assert not asyncio.run(model.execute(changed)).changed, "an existing External network is kept as it is"
