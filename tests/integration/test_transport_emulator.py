"""HostClient and the WinRM transport against emulated Windows hosts, over real loopback sockets.

Every auth mode end to end, every injected fault surfacing as its typed error, a script far beyond
cmd.exe's command-line limit, and no shell left open on a host after any of it.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from winnode.host import actions as A
from winnode.host.client import HostClient
from winnode.host.errors import (
    HostAuthenticationError,
    HostTimeoutError,
    HostTLSError,
    HostUnreachableError,
    ScriptFailedError,
)
from winnode.host.scripts import render
from winnode.host.transport import HostConnection, TransportLimits, WinRMTransport
from winnode.network.hns import HnsHost, network_params
from winnode.settings import Settings
from winnode.testing.artifacts import ArtifactServer, fake_binary, sha256_hex
from winnode.testing.emulator import EmulatedHost, EmulatorServer, HostSpec

# The HNS of a fully updated Server 2022 host (the emulator's default build).
HNS_2022 = HnsHost(version=(13, 2))

PASSWORD = "Emulated-Pa55word!"
LIMITS = TransportLimits(connect_s=3.0, request_s=10.0, receive_wait_s=1.0, cleanup_s=3.0)
WAIT_S = 15.0


@pytest.fixture(scope="module")
def server() -> Iterator[EmulatorServer]:
    with EmulatorServer(strict=True) as srv:
        yield srv


@pytest.fixture(autouse=True)
def no_leaked_shells(server: EmulatorServer) -> Iterator[None]:
    yield
    # Deletes that raced a reboot or a dropped connection settle within a moment.
    deadline = time.monotonic() + 5
    while server.leaked_shells() and time.monotonic() < deadline:
        time.sleep(0.05)
    server.assert_no_leaked_shells()


@pytest.fixture
async def transport() -> AsyncIterator[WinRMTransport]:
    t = WinRMTransport(Settings(winrm_global_concurrency=16, winrm_operation_timeout_s=30.0), limits=LIMITS)
    try:
        yield t
    finally:
        await t.aclose()


@pytest.fixture
def host(server: EmulatorServer, request: pytest.FixtureRequest) -> Iterator[EmulatedHost]:
    name = "t-" + request.node.name.removeprefix("test_").replace("_", "-")[:40].strip("-[]")
    emulated = server.add_host(HostSpec(hostname=name, password=PASSWORD, reboot_downtime_s=0.5))
    try:
        yield emulated
    finally:
        server.remove_host(emulated)


@pytest.fixture(scope="module")
def https_host(server: EmulatorServer) -> EmulatedHost:
    return server.add_host(HostSpec.server2019(hostname="t-https", password=PASSWORD, https=True))


def connection(host: EmulatedHost, auth: str = "ntlm", **overrides: Any) -> HostConnection:
    values: dict[str, Any] = {
        "address": host.address,
        "port": host.port,
        "scheme": host.scheme,
        "auth": auth,
        "username": host.username,
        "password": PASSWORD,
        "ca_bundle": host.ca_pem,
        "name": host.hostname,
    }
    values.update(overrides)
    return HostConnection(**values)


def client(host: EmulatedHost, transport: WinRMTransport, auth: str = "ntlm", **overrides: Any) -> HostClient:
    return HostClient(connection(host, auth, **overrides), transport)


async def wait_until(predicate: Any, what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        if predicate():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


# --- auth modes ---------------------------------------------------------------------------------------


async def test_ntlm_over_http_encrypts_every_message(host: EmulatedHost, transport: WinRMTransport) -> None:
    facts = await client(host, transport, "ntlm").run(A.FactsParams())
    assert facts.hostname == host.hostname
    assert facts.os_build == 20348
    assert facts.containerd.installed
    operations = [
        r for r in host.requests if r.operation in ("Create", "Command", "Send", "Receive", "Delete")
    ]
    assert operations
    assert all(r.encrypted for r in operations)
    assert [r.operation for r in operations][:3] == ["Create", "Command", "Send"]
    signals = [r for r in host.requests if r.operation == "Signal"]
    assert len(signals) == 1, "the command was terminated"
    assert host.actions_named("facts")[0].ok


@pytest.mark.parametrize("auth", ["basic", "ntlm"])
async def test_password_auth_over_https_with_the_ca(
    https_host: EmulatedHost, transport: WinRMTransport, auth: str
) -> None:
    facts = await client(https_host, transport, auth).run(A.FactsParams())
    assert facts.hostname == "t-https"
    assert facts.os_build == 17763


async def test_certificate_auth(https_host: EmulatedHost, transport: WinRMTransport) -> None:
    issued = https_host.issue_client_cert()
    c = client(
        https_host,
        transport,
        "certificate",
        username=None,
        password=None,
        cert_pem=issued.cert_pem,
        key_pem=issued.key_pem,
    )
    result = await c.run(A.EnsureDirectoriesParams(paths=["C:\\k\\cert-auth"]))
    assert result.created == ["C:\\k\\cert-auth"]
    assert https_host.actions_named("ensure_directories")[-1].user == "Administrator"
    # A certificate the host maps to nobody is refused.
    stranger = https_host.server.issue_client_cert("mallory@localhost")
    with pytest.raises(HostAuthenticationError):
        await client(
            https_host,
            transport,
            "certificate",
            username=None,
            password=None,
            cert_pem=stranger.cert_pem,
            key_pem=stranger.key_pem,
        ).run(A.FactsParams())


async def test_unknown_ca_is_a_tls_error_and_skip_verify_is_explicit(
    https_host: EmulatedHost, transport: WinRMTransport
) -> None:
    other_ca = EmulatorServer().ca.cert_pem
    with pytest.raises(HostTLSError) as info:
        await client(https_host, transport, ca_bundle=other_ca).run(A.FactsParams())
    assert info.value.reason == "TLSVerificationFailed"
    assert "certificate verify failed" in info.value.message
    # Without a caBundle the default trust store applies: the emulator's CA is not in it.
    with pytest.raises(HostTLSError):
        await client(https_host, transport, ca_bundle=None).run(A.FactsParams())
    facts = await client(https_host, transport, ca_bundle=None, insecure_skip_verify=True).run(
        A.FactsParams()
    )
    assert facts.hostname == "t-https"


# --- a whole sequence of actions ---------------------------------------------------------------------------


async def test_actions_round_trip_through_the_host_model(
    host: EmulatedHost, transport: WinRMTransport
) -> None:
    c = client(host, transport)
    binary = fake_binary("kubelet", "v1.37.2")
    with ArtifactServer({"/v1.37.2/kubelet.exe": binary}) as artifacts:
        url = artifacts.url_for("/v1.37.2/kubelet.exe")
        fetched = await c.run(
            A.FetchFileParams(url=url, path="C:\\k\\kubelet.exe", sha256=sha256_hex(binary))
        )
        assert fetched.changed
        assert fetched.sha256 == sha256_hex(binary)
        again = await c.run(A.FetchFileParams(url=url, path="C:\\k\\kubelet.exe", sha256=sha256_hex(binary)))
        assert not again.changed
        assert artifacts.downloads("/v1.37.2/kubelet.exe") == 1
    written = await c.run(
        A.WriteFileParams(path="C:\\k\\config.yaml", content="kind: KubeletConfiguration\n")
    )
    assert written.changed
    stats = await c.run(A.StatFilesParams(paths=["C:\\k\\config.yaml", "C:\\k\\missing"]))
    assert stats.files["C:\\k\\config.yaml"].sha256 == written.sha256
    assert not stats.files["C:\\k\\missing"].exists
    ensured = await c.run(
        A.ServiceEnsureParams(
            # Not "kubelet": starting that one on an emulated host boots an emulated kubelet.
            name="demo-agent",
            binary_path='"C:\\k\\kubelet.exe" --windows-service --hostname-override=win-01',
            display_name="Demo agent",
            description="Managed by winnode (test)",
            dependencies=["containerd"],
        )
    )
    assert ensured.created
    started = await c.run(A.ServiceStartParams(name="demo-agent"))
    assert started.state is A.ServiceState.RUNNING
    assert started.changed
    query = await c.run(A.ServiceQueryParams(names=["demo-agent", "nope"]))
    assert query.services["demo-agent"].dependencies == ["containerd"]
    assert not query.services["nope"].exists
    network = await c.run(
        network_params(
            HNS_2022,
            name="winnode",
            type_=A.HnsNetworkType.OVERLAY,
            prefix="10.244.3.0/24",
            gateway="10.244.3.1",
            vsid=4096,
            vxlan_port=4789,
        )
    )
    assert network.created
    rule = await c.run(
        A.FirewallRuleEnsureParams(
            name="winnode-kubelet", display_name="kubelet", protocol="TCP", local_port=10250
        )
    )
    assert rule.changed
    stopped = await c.run(A.ServiceStopParams(name="demo-agent"))
    assert stopped.state is A.ServiceState.STOPPED
    removed = await c.run(A.RemovePathParams(path="C:\\k", recurse=True))
    assert removed.removed


async def test_a_90_kb_script_crosses_the_wire(host: EmulatedHost, transport: WinRMTransport) -> None:
    content = ("kubelet configuration line with ünïcödé 漢字\n" * 2200)[: 90 * 1024]
    params = A.WriteFileParams(path="C:\\k\\big.yaml", content=content)
    result = await client(host, transport).run(params)
    assert result.sha256 == hashlib.sha256(content.encode("utf-8")).hexdigest()
    assert result.size == len(content.encode("utf-8"))
    assert host.call(lambda model: model.file("C:\\k\\big.yaml")).text == content


async def test_scripts_are_split_to_fit_a_small_envelope(server: EmulatorServer) -> None:
    small = server.add_host(HostSpec(hostname="t-small-envelope", password=PASSWORD, max_envelope_size_kb=64))
    limits = TransportLimits(receive_wait_s=1.0, max_envelope_size=64 * 1024)
    t = WinRMTransport(Settings(winrm_global_concurrency=2), limits=limits)
    try:
        content = "x" * (120 * 1024)
        params = A.WriteFileParams(path="C:\\k\\x", content=content)
        result = await client(small, t).run(params)
        assert result.size == len(content)
        sends = [r for r in small.requests if r.operation == "Send"]
        stdin = render(params).stdin
        assert len(sends) == -(-len(stdin) // limits.send_chunk_size) >= 3
        assert not [r for r in small.requests if r.operation == "TooLarge"]
    finally:
        await t.aclose()
        server.remove_host(small)


# --- faults ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("auth", ["basic", "ntlm"])
async def test_auth_failure(host: EmulatedHost, transport: WinRMTransport, auth: str) -> None:
    host.faults.auth_failure = True
    with pytest.raises(HostAuthenticationError) as info:
        await client(host, transport, auth).run(A.FactsParams())
    assert info.value.reason == "AuthenticationFailed"
    assert host.hostname in info.value.message
    assert PASSWORD not in info.value.message
    host.faults.auth_failure = False
    assert (await client(host, transport, auth).run(A.FactsParams())).hostname == host.hostname


async def test_wrong_password(host: EmulatedHost, transport: WinRMTransport) -> None:
    with pytest.raises(HostAuthenticationError) as info:
        await client(host, transport, password="not-it").run(A.FactsParams())
    assert "credentials Secret" in info.value.message
    assert "not-it" not in info.value.message


async def test_refused_connections(host: EmulatedHost, transport: WinRMTransport) -> None:
    host.faults.refuse_connections = True
    await wait_until(lambda: not host.up, "the listener to close")
    with pytest.raises(HostUnreachableError) as info:
        await client(host, transport).run(A.FactsParams())
    assert info.value.reason == "ConnectionRefused"
    assert not info.value.command_sent
    assert "Connection refused" in info.value.message
    host.faults.refuse_connections = False
    await wait_until(lambda: host.up, "the listener to reopen")
    await client(host, transport).run(A.FactsParams())


async def test_latency_slows_but_succeeds(host: EmulatedHost, transport: WinRMTransport) -> None:
    host.faults.latency_s = 0.1
    started = time.monotonic()
    await client(host, transport, "basic").run(A.FactsParams())
    # Create, Command, Send, Receive, Signal, Delete: six requests.
    assert time.monotonic() - started >= 0.6


async def test_latency_beyond_the_deadline_is_a_timeout(
    host: EmulatedHost, transport: WinRMTransport
) -> None:
    host.faults.latency_s = 0.4
    c = client(host, transport, "basic", name=host.hostname)
    c.timeout_s = 1.0
    with pytest.raises(HostTimeoutError) as info:
        await c.run(A.EnsureDirectoriesParams(paths=["C:\\k"]))
    assert info.value.reason == "HostTimeout"
    host.faults.latency_s = 0.0


async def test_stall_ends_at_our_deadline_and_the_shell_is_deleted(
    host: EmulatedHost, transport: WinRMTransport
) -> None:
    host.faults.stall = True
    c = client(host, transport)
    c.timeout_s = 2.0
    started = time.monotonic()
    with pytest.raises(HostTimeoutError) as info:
        await c.run(A.FactsParams())
    assert 1.9 <= time.monotonic() - started < 8
    assert "did not finish within 2s" in info.value.message
    assert any(r.fault_code == 2150858793 for r in host.requests), "OperationTimeout faults were retried"
    assert host.open_shells == 0
    host.faults.stall = False


async def test_exit_code(host: EmulatedHost, transport: WinRMTransport) -> None:
    host.faults.fail_next(exit_code=3)
    with pytest.raises(ScriptFailedError) as info:
        await client(host, transport).run(A.EnsureDirectoriesParams(paths=["C:\\k"]))
    assert info.value.exit_code == 3
    assert info.value.reason == "ScriptFailed"
    assert "injected failure" in info.value.error
    assert (await client(host, transport).run(A.EnsureDirectoriesParams(paths=["C:\\k"]))).created == [
        "C:\\k"
    ]


async def test_reboot_mid_step_loses_the_connection_and_the_step_can_be_rerun(
    host: EmulatedHost, transport: WinRMTransport
) -> None:
    c = client(host, transport)
    before = (await c.run(A.FactsParams())).boot_id
    host.faults.reboot_mid_step = True
    with pytest.raises(HostUnreachableError) as info:
        await c.run(A.WriteFileParams(path="C:\\k\\a.txt", content="a"))
    assert info.value.reason == "ConnectionLost"
    assert info.value.command_sent
    await wait_until(lambda: host.up, "the host to come back")
    again = await c.run(A.WriteFileParams(path="C:\\k\\a.txt", content="a"))
    assert not again.changed, "the interrupted step had done its work; rerunning changes nothing"
    assert (await c.run(A.FactsParams())).boot_id != before


async def test_one_connection_and_one_logon_serve_successive_commands(
    host: EmulatedHost, transport: WinRMTransport
) -> None:
    c = client(host, transport)

    def logon_requests() -> int:
        return sum(1 for r in host.requests if r.operation in ("Auth", "Probe"))

    await c.run(A.FactsParams())
    first = logon_requests()
    assert first >= 2, "the first command logged on (NTLM legs, then the encryption session probe)"
    for _ in range(3):
        await c.run(A.FactsParams())
    assert host.connections_accepted == 1
    assert logon_requests() == first, "no handshake after the first: the logon was reused"
    assert all(r.encrypted for r in host.requests if r.operation in ("Command", "Send", "Receive"))


@pytest.mark.parametrize("scheme", ["http", "https"])
async def test_a_connection_cut_mid_command_is_not_run_twice_and_the_next_operation_reconnects(
    server: EmulatorServer, transport: WinRMTransport, scheme: str
) -> None:
    host = server.add_host(HostSpec(hostname=f"t-cut-{scheme}", password=PASSWORD, https=scheme == "https"))
    try:
        c = client(host, transport)
        await c.run(A.FactsParams())
        assert host.connections_accepted == 1
        host.faults.drop_mid_command = True
        with pytest.raises(HostUnreachableError) as info:
            await c.run(A.WriteFileParams(path="C:\\k\\cut.txt", content="once"))
        assert info.value.command_sent, "the script reached the host: a transport error, not a retry"
        assert len(host.actions_named("write_file")) == 1
        facts = await c.run(A.FactsParams())
        assert facts.hostname == host.hostname
        assert host.connections_accepted >= 2, "the next operation connected and logged on again"
        assert len(host.actions_named("write_file")) == 1, "the cut action was not run again"
        again = await c.run(A.WriteFileParams(path="C:\\k\\cut.txt", content="once"))
        assert not again.changed, "the cut write had done its work on the host"
        # A shell whose Delete could not reach the host is reclaimed by the next sweep; the
        # sweep here is forced so no shell stays behind.
        transport._swept.clear()
        await c.run(A.FactsParams())
    finally:
        server.remove_host(host)


async def test_checksum_mismatch(host: EmulatedHost, transport: WinRMTransport) -> None:
    binary = fake_binary("kube-proxy", "v1.37.2")
    host.faults.checksum_mismatch = True
    with ArtifactServer({"/kube-proxy.exe": binary}) as artifacts, pytest.raises(ScriptFailedError) as info:
        await client(host, transport).run(
            A.FetchFileParams(
                url=artifacts.url_for("/kube-proxy.exe"),
                path="C:\\k\\kube-proxy.exe",
                sha256=sha256_hex(binary),
            )
        )
    assert "Checksum mismatch" in info.value.error
    assert info.value.exit_code == 1
    assert host.call(lambda model: model.file("C:\\k\\kube-proxy.exe")) is None


async def test_disk_full(host: EmulatedHost, transport: WinRMTransport) -> None:
    host.faults.disk_full = True
    with pytest.raises(ScriptFailedError) as info:
        await client(host, transport).run(A.WriteFileParams(path="C:\\k\\x", content="x"))
    assert "not enough space" in info.value.error


async def test_secret_content_never_appears_in_errors(host: EmulatedHost, transport: WinRMTransport) -> None:
    token = "abcdef.0123456789abcdef"
    host.faults.disk_full = True
    with pytest.raises(ScriptFailedError) as info:
        await client(host, transport).run(
            A.WriteFileParams(path="C:\\k\\bootstrap-kubelet.conf", content=f"token: {token}\n", secret=True)
        )
    assert token not in str(info.value)
    assert host.actions_named("write_file")[-1].params["content"] == "<redacted>"


async def test_mutating_actions_on_one_host_take_turns(host: EmulatedHost, transport: WinRMTransport) -> None:
    host.faults.latency_s = 0.02
    c = client(host, transport)
    await asyncio.gather(*(c.run(A.WriteFileParams(path=f"C:\\k\\f{i}", content=str(i))) for i in range(6)))
    commands = [r for r in host.requests if r.operation in ("Create", "Delete")]
    # Shells of mutating actions never overlap: each Create is followed by its Delete.
    assert [r.operation for r in commands] == ["Create", "Delete"] * 6
