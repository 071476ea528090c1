"""Pinned WinRM listener certificates: the pinned one is trusted (self-signed or not), any other is
refused before a single HTTP request, hence before any credentials, reaches the host."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from winnode.host import actions as A
from winnode.host.client import HostClient
from winnode.host.errors import HostTLSError
from winnode.host.pinning import certificate_sha256
from winnode.host.transport import HostConnection, TransportLimits, WinRMTransport
from winnode.settings import Settings
from winnode.testing.cluster import ControlPlane
from winnode.testing.demo import World
from winnode.testing.emulator import EmulatedHost, EmulatorServer, HostSpec

PASSWORD = "Pinned-Pa55word!"
LIMITS = TransportLimits(connect_s=3.0, request_s=10.0, receive_wait_s=1.0, cleanup_s=3.0)
TIMEOUT = 120.0
WRONG = "0" * 64


@pytest.fixture(scope="module")
def server() -> Iterator[EmulatorServer]:
    with EmulatorServer(strict=True) as srv:
        yield srv


@pytest.fixture
async def transport() -> AsyncIterator[WinRMTransport]:
    t = WinRMTransport(Settings(winrm_operation_timeout_s=30.0), limits=LIMITS)
    try:
        yield t
    finally:
        await t.aclose()


def connection(host: EmulatedHost, auth: str, pin: str) -> HostConnection:
    # No caBundle: the emulator's CA is not trusted; the pin alone decides.
    return HostConnection(
        address=host.address,
        port=host.port,
        scheme="https",
        auth=auth,
        username=host.username,
        password=PASSWORD,
        pinned_sha256=pin,
    )


@pytest.mark.parametrize("auth", ["basic", "ntlm"])
async def test_mismatch_sends_nothing_and_the_pin_is_trusted(
    server: EmulatorServer, transport: WinRMTransport, auth: str
) -> None:
    host = server.add_host(HostSpec(hostname=f"pin-{auth}", password=PASSWORD, https=True))
    real = certificate_sha256(host.address, host.port, 5.0)
    with pytest.raises(HostTLSError) as caught:
        await HostClient(connection(host, auth, WRONG), transport).run(A.FactsParams())
    assert caught.value.reason == "CertificatePinMismatch"
    assert "before any credentials were sent" in str(caught.value)
    # Basic would put the password in the very first request: the host saw no request at all.
    assert host.requests == []
    facts = await HostClient(connection(host, auth, real), transport).run(A.FactsParams())
    assert facts.hostname == host.hostname
    assert {r.operation for r in host.requests} >= {"Create", "Command", "Delete"}


@pytest.fixture(scope="module")
def world(control_plane: ControlPlane) -> Iterator[World]:
    with World(control_plane, settings=Settings(metrics_port=0), namespace="wn-pinning") as w:
        w.apply(w.network(name="pinning", clusterCIDR="10.235.0.0/16"))
        yield w


def pinned_node(world: World, host: EmulatedHost, name: str, **winrm: Any) -> dict[str, Any]:
    doc = world.windows_node(host, name, network="pinning")
    doc["spec"]["winrm"].update({"scheme": "https", **winrm})
    doc["spec"]["winrm"].pop("caBundle", None)
    return doc


def test_trust_on_first_use_records_the_pin_and_a_mismatch_is_a_condition(world: World) -> None:
    first = world.add_host(HostSpec.server2022(hostname="pin-tofu", https=True))
    world.apply(pinned_node(world, first, "pin-tofu", trustOnFirstUse=True))
    obj = world.wait_phase("pin-tofu", "Ready", TIMEOUT)
    assert obj["status"]["listenerCertificateSHA256"] == certificate_sha256(first.address, first.port, 5.0)
    assert world.events("pin-tofu", "CertificatePinned")

    other = world.add_host(HostSpec.server2022(hostname="pin-wrong", https=True))
    world.apply(pinned_node(world, other, "pin-wrong", certificateSHA256=WRONG))

    def refused() -> dict[str, Any] | None:
        conditions = (world.get("windowsnode", "pin-wrong") or {}).get("status", {}).get("conditions") or []
        found = [c for c in conditions if c["reason"] == "CertificatePinMismatch"]
        return found[0] if found else None

    found = world.wait_for("the pin mismatch condition", refused, TIMEOUT)
    assert found["status"] == "False"
    assert other.requests == [], "not one request (so no credentials) reached the host"
