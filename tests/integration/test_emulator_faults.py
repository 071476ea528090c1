"""Each injected fault surfaces through unmodified pywinrm as the failure a real host would cause."""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from typing import Any, Literal

import pytest
import requests
from winrm.exceptions import InvalidCredentialsError, WinRMOperationTimeoutError, WSManFaultError
from winrm.protocol import Protocol

from winnode.host.protocol import parse_result
from winnode.testing.artifacts import ArtifactServer, fake_binary, sha256_hex
from winnode.testing.emulator import EmulatedHost, EmulatorServer, HostSpec, run_script_with_pywinrm
from winnode.testing.hostmodel import stdin_for
from winnode.testing.wsman import CODE_SHELL_NOT_FOUND

Transport = Literal["basic", "ntlm", "certificate"]

WAIT_S = 10.0
POLL_S = 0.05


@pytest.fixture(scope="module")
def server() -> Iterator[EmulatorServer]:
    with EmulatorServer(strict=True) as srv:
        yield srv


@pytest.fixture
def host(server: EmulatorServer, request: pytest.FixtureRequest) -> Iterator[EmulatedHost]:
    name = "f-" + request.node.name.removeprefix("test_").replace("_", "-")[:40].strip("-[]")
    emulated = server.add_host(HostSpec(hostname=name, reboot_downtime_s=0.5))
    try:
        yield emulated
    finally:
        server.assert_no_leaked_shells()
        server.remove_host(emulated)


def protocol(host: EmulatedHost, transport: Transport = "basic", **kwargs: Any) -> Protocol:
    return Protocol(
        host.endpoint,
        transport=transport,
        username=host.username,
        password=host.password,
        ca_trust_path=None,
        **kwargs,
    )


def run(
    host: EmulatedHost,
    action: str,
    params: Mapping[str, object] | None = None,
    transport: Transport = "basic",
) -> tuple[dict[str, object], int]:
    stdout, _, code = run_script_with_pywinrm(
        protocol(host, transport), stdin_for(action, dict(params or {}))
    )
    return parse_result(stdout), code


def wait_until(predicate: object, what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        if callable(predicate) and predicate():
            return
        time.sleep(POLL_S)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.mark.parametrize("transport", ["basic", "ntlm"])
def test_auth_failure(host: EmulatedHost, transport: Transport) -> None:
    host.faults.auth_failure = True
    with pytest.raises(InvalidCredentialsError):
        protocol(host, transport).open_shell()
    assert any(r.status == 401 and r.operation == "Rejected" for r in host.requests)
    host.faults.auth_failure = False
    assert run(host, "facts", transport=transport)[1] == 0


def test_auth_failure_on_an_authenticated_connection(host: EmulatedHost) -> None:
    p = protocol(host, "ntlm")
    shell = p.open_shell()
    host.faults.auth_failure = True
    with pytest.raises(InvalidCredentialsError):
        p.run_command(shell, "hostname")
    host.faults.auth_failure = False
    # pywinrm cannot re-key an encrypted session after a 401; a new client (same user) can reach the shell.
    protocol(host, "ntlm").close_shell(shell)


def test_refused_connections(host: EmulatedHost) -> None:
    p = protocol(host)
    shell = p.open_shell()
    host.faults.refuse_connections = True
    wait_until(lambda: not host.up, "the listener to close")
    with pytest.raises(requests.exceptions.ConnectionError):
        p.run_command(shell, "hostname")
    with pytest.raises(requests.exceptions.ConnectionError) as info:
        requests.post(host.endpoint, timeout=2)
    assert "Connection refused" in str(info.value)
    host.faults.refuse_connections = False
    wait_until(lambda: host.up, "the listener to reopen")
    assert run(host, "facts")[1] == 0
    p.close_shell(shell)  # refusing did not reboot the host: the shell is still there


def test_latency(host: EmulatedHost) -> None:
    host.faults.latency_s = 0.2
    p = protocol(host)
    started = time.monotonic()
    shell = p.open_shell()
    p.close_shell(shell)
    assert time.monotonic() - started >= 0.4
    # Slower than the client's read timeout: a transport timeout.
    host.faults.latency_s = 2.5
    with pytest.raises(requests.exceptions.ReadTimeout):
        protocol(host, operation_timeout_sec=1, read_timeout_sec=2).run_command("no-such-shell", "hostname")
    host.faults.latency_s = 0


def test_stall_times_out_then_finishes(host: EmulatedHost) -> None:
    host.faults.stall = True
    p = protocol(host, operation_timeout_sec=1, read_timeout_sec=10)
    shell = p.open_shell()
    command = p.run_command(shell, "hostname")
    started = time.monotonic()
    with pytest.raises(WinRMOperationTimeoutError):
        p.get_command_output_raw(shell, command)
    assert 0.9 <= time.monotonic() - started < 8
    host.faults.stall = False
    assert p.get_command_output(shell, command)[2] == 0
    p.cleanup_command(shell, command)
    p.close_shell(shell)


def test_exit_codes_for_the_next_commands(host: EmulatedHost) -> None:
    host.faults.fail_next(2, exit_code=5)
    first, code1 = run(host, "ensure_directories", {"paths": ["C:\\k"]})
    _second, code2 = run(host, "facts")
    third, code3 = run(host, "ensure_directories", {"paths": ["C:\\k"]})
    assert (code1, code2, code3) == (5, 5, 0)
    assert first["ok"] is False
    assert "injected" in str(first["error"])
    assert third == {"ok": True, "created": ["C:\\k"]}  # the failed run changed nothing
    assert [a.exit_code for a in host.actions] == [5, 5, 0]


def test_reboot_mid_step(host: EmulatedHost) -> None:
    before = host.model.boot_id
    host.faults.reboot_mid_step = True
    run(host, "facts")  # reads never trigger it
    assert host.faults.reboot_mid_step
    p = protocol(host)
    with pytest.raises(requests.exceptions.ConnectionError):
        run_script_with_pywinrm(p, stdin_for("write_file", {"path": "C:\\k\\kubelet.conf", "content": "x"}))
    assert not host.faults.reboot_mid_step
    wait_until(lambda: host.up, "the host to come back")
    assert host.call(lambda m: m.boot_id) != before
    assert host.call(lambda m: m.file("C:\\k\\kubelet.conf") is not None)  # the step had taken effect
    again, code = run(host, "write_file", {"path": "C:\\k\\kubelet.conf", "content": "x"})
    assert code == 0
    assert again["changed"] is False
    facts, _ = run(host, "facts")
    assert facts["boot_id"] != before


def test_shells_do_not_survive_a_reboot(host: EmulatedHost) -> None:
    p = protocol(host)
    shell = p.open_shell()
    host.reboot(downtime_s=0.2)
    with pytest.raises(WSManFaultError) as info:
        p.run_command(shell, "hostname")
    assert info.value.wsman_fault_code == CODE_SHELL_NOT_FOUND


def test_reboot_action(host: EmulatedHost) -> None:
    before = host.call(lambda m: m.boot_id)
    result, code = run(host, "reboot", {"reason": "Containers feature installed", "delay_s": 1})
    assert code == 0
    assert result["boot_id"] == before
    wait_until(lambda: host.call(lambda m: m.boot_id) != before and host.up, "the reboot to happen")
    facts, _ = run(host, "facts")
    assert facts["boot_id"] != before
    assert facts["reboot_pending"] is False


def test_refused_while_rebooting(host: EmulatedHost) -> None:
    host.reboot(downtime_s=1.0, wait=False)
    wait_until(lambda: not host.up, "the host to go down")
    with pytest.raises(requests.exceptions.ConnectionError):
        protocol(host).open_shell()
    wait_until(lambda: host.up, "the host to come back")


def test_checksum_mismatch(host: EmulatedHost) -> None:
    content = fake_binary("kubelet", "v1.37.2")
    with ArtifactServer({"/v1.37.2/bin/windows/amd64/kubelet.exe": content}) as artifacts:
        params = {
            "url": artifacts.url_for("/v1.37.2/bin/windows/amd64/kubelet.exe"),
            "path": "C:\\k\\kubelet.exe",
            "sha256": sha256_hex(content),
        }
        host.faults.checksum_mismatch = True
        result, code = run(host, "fetch_file", params)
        assert code == 1
        assert sha256_hex(content) in str(result["error"])
        assert "actual" in str(result["error"])
        host.faults.checksum_mismatch = False
        result, code = run(host, "fetch_file", params)
        assert code == 0
        assert result["changed"] is True
        result, code = run(host, "fetch_file", params)
        assert code == 0
        assert result["changed"] is False
        assert artifacts.downloads("/v1.37.2/bin/windows/amd64/kubelet.exe") == 2


def test_disk_full(host: EmulatedHost) -> None:
    host.faults.disk_full = True
    result, code = run(host, "write_file", {"path": "C:\\k\\bootstrap.conf", "content": "apiVersion: v1"})
    assert code == 1
    assert "There is not enough space on the disk." in str(result["error"])
    host.faults.disk_full = False
    assert run(host, "write_file", {"path": "C:\\k\\bootstrap.conf", "content": "apiVersion: v1"})[1] == 0
