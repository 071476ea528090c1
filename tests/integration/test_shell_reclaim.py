"""Shells a killed operator left on a host are found (WS-Enumeration) and deleted, under the real quota.

Real pywinrm against the emulated host, which lists a user's shells like `winrm enumerate
windows/shell` and refuses a new shell past MaxShellsPerUser (30 by default).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest

from winnode.host import actions as A
from winnode.host.client import HostClient
from winnode.host.shells import SHELL_NAME, NamedShellProtocol, stale
from winnode.host.transport import HostConnection, TransportLimits, WinRMTransport
from winnode.settings import Settings
from winnode.testing.emulator import EmulatedHost, EmulatorServer, HostSpec

PASSWORD = "Shell-Reclaim-Pa55!"
LIMITS = TransportLimits(connect_s=3.0, request_s=10.0, receive_wait_s=1.0, cleanup_s=3.0)


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


def protocol(host: EmulatedHost, name: str) -> NamedShellProtocol:
    p = NamedShellProtocol(
        host.endpoint,
        transport="ntlm",
        username=host.username,
        password=PASSWORD,
        operation_timeout_sec=5,
        read_timeout_sec=10,
    )
    p.shell_name = name
    return p


def leave_shells(host: EmulatedHost, name: str, count: int) -> list[str]:
    """What `count` killed operator processes leave: open shells that nobody deletes."""
    p = protocol(host, name)
    return [p.open_shell(noprofile=True, codepage=65001) for _ in range(count)]


def connection(host: EmulatedHost) -> HostConnection:
    return HostConnection(
        address=host.address, port=host.port, scheme=host.scheme, username=host.username, password=PASSWORD
    )


async def test_first_contact_deletes_shells_of_previous_processes(
    server: EmulatorServer, transport: WinRMTransport
) -> None:
    host = server.add_host(HostSpec(hostname="shr-first", password=PASSWORD))
    assert host.spec.max_shells_per_user == 30, "the default quota"
    left = leave_shells(host, "winnode-0000dead0001", 20) + leave_shells(host, "winnode-0000dead0002", 9)
    admin = protocol(host, "")
    admin.shell_name = "an-admin-session"
    theirs = admin.open_shell(noprofile=True, codepage=65001)
    assert host.open_shells == 30

    listed = protocol(host, SHELL_NAME).enumerate_shells()
    assert {s.shell_id for s in listed} == {*left, theirs}
    assert {s.shell_id for s in stale(listed)} == set(left)

    facts = await HostClient(connection(host), transport).run(A.FactsParams())
    assert facts.hostname == host.hostname
    assert host.open_shells == 1, "only the admin's shell is left"
    assert [r.operation for r in host.requests if r.operation in ("Enumerate", "Pull")][:1] == ["Enumerate"]
    admin.close_shell(theirs, close_session=True)


async def test_quota_refusal_reclaims_and_retries_once(
    server: EmulatorServer, transport: WinRMTransport
) -> None:
    host = server.add_host(HostSpec(hostname="shr-quota", password=PASSWORD))
    client = HostClient(connection(host), transport)
    await client.run(A.FactsParams())  # first contact: the periodic sweep is not due again for a while
    leave_shells(host, "winnode-0000dead0003", 30)
    assert host.open_shells == 30
    await client.run(A.FactsParams())
    faults = [r for r in host.requests if r.operation == "Create" and r.fault_code is not None]
    assert len(faults) == 1, "the host refused one shell for the quota, then the stale ones went"
    assert host.open_shells == 0


async def test_enumeration_pulls_past_one_batch(server: EmulatorServer) -> None:
    host = server.add_host(HostSpec(hostname="shr-many", password=PASSWORD, max_shells_per_user=250))
    left = leave_shells(host, "winnode-0000dead0004", 130)
    listed = protocol(host, SHELL_NAME).enumerate_shells()
    assert [s.shell_id for s in listed] == left
    assert all(s.name == "winnode-0000dead0004" for s in listed)
    assert "Pull" in [r.operation for r in host.requests]
    for shell_id in left:
        protocol(host, SHELL_NAME).close_shell(shell_id, close_session=False)
