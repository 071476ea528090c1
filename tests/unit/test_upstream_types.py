"""What winnode sends to a Windows host's network stack, decoded strictly by the upstream Go types
(hack/upstreamtypes: containernetworking/plugins, hcsshim internal/hns and hcn, flannel)."""

from __future__ import annotations

import itertools
import json

import pytest

from winnode.api import WindowsNetworkSpec
from winnode.network.cni import render_cni_config
from winnode.network.routes import FLANNEL_PREFIX, flannel_annotations
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
