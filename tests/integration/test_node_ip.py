"""The node's IP comes from the interface holding the default route: on a host whose default route is on
its second NIC, --node-ip, the overlay ProviderAddress and the OutBoundNAT exception are all that NIC's
IPv4 (not the WinRM address, not a vEthernet, NAT or IPv6 address)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from winnode.lifecycle import kubelet_config as kc
from winnode.settings import Settings
from winnode.testing.cluster import ControlPlane
from winnode.testing.demo import World
from winnode.testing.emulator import HostSpec
from winnode.testing.hostmodel import split_command_line

TIMEOUT = 120.0
SECOND_NIC = "192.168.50.21"


@pytest.fixture(scope="module")
def world(control_plane: ControlPlane) -> Iterator[World]:
    with World(control_plane, settings=Settings(metrics_port=0), namespace="wn-nodeip") as w:
        w.apply(w.network())
        yield w


def test_two_nics_node_ip_is_the_default_route_ipv4(world: World) -> None:
    host = world.add_host(HostSpec.two_nics(hostname="nic-a"))
    facts = host.call(lambda m: m.facts())
    assert facts.default_route_ipv4 == SECOND_NIC
    assert host.address in facts.addresses
    assert "172.29.16.1" in facts.addresses, "the NAT switch's address is reported, just not used"
    world.apply(world.windows_node(host, "nic-a"))
    world.wait_phase("nic-a", "Ready", TIMEOUT)

    def on_host(m: Any) -> tuple[str, dict[str, Any]]:
        return m.service("kubelet").binary_path, json.loads(m.file(kc.CNI_CONF).text)

    binary_path, cni = host.call(on_host)
    assert f"--node-ip={SECOND_NIC}" in split_command_line(binary_path)
    policies = {p["value"]["Type"]: p["value"]["Settings"] for p in cni["policies"]}
    assert policies["ProviderAddress"]["ProviderAddress"] == SECOND_NIC
    assert f"{SECOND_NIC}/32" in policies["OutBoundNAT"]["Exceptions"]
    node = world.must_get("node", "nic-a")
    internal = [a["address"] for a in node["status"]["addresses"] if a["type"] == "InternalIP"]
    assert internal == [SECOND_NIC]
