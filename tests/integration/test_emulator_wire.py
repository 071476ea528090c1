"""Unmodified pywinrm against emulated hosts over real TCP: auth, shells, streams, faults of the protocol.

No Kubernetes here: "integration" in the sense that every byte crosses a loopback socket.
"""

from __future__ import annotations

import base64
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import pytest
import requests
import spnego
import xmltodict
from winrm import Session
from winrm.exceptions import (
    InvalidCredentialsError,
    WinRMOperationTimeoutError,
    WinRMTransportError,
    WSManFaultError,
)
from winrm.protocol import Protocol

from winnode.host.protocol import parse_result
from winnode.testing.emulator import EmulatedHost, EmulatorServer, HostSpec, run_script_with_pywinrm
from winnode.testing.hostmodel import script_for
from winnode.testing.wsman import (
    CODE_INVALID_HEADER,
    CODE_QUOTA_MAX_SHELLS,
    CODE_SHELL_NOT_FOUND,
    STATUS_CONTROL_C_EXIT,
)

Transport = Literal["basic", "ntlm", "certificate"]

PASSWORD = "Emulated-Pa55word!"


@pytest.fixture(scope="module")
def server() -> Iterator[EmulatorServer]:
    with EmulatorServer(strict=True) as srv:
        yield srv


@pytest.fixture(scope="module")
def http_host(server: EmulatorServer) -> EmulatedHost:
    return server.add_host(HostSpec.server2022(hostname="wire-http", password=PASSWORD))


@pytest.fixture(scope="module")
def https_host(server: EmulatorServer) -> EmulatedHost:
    return server.add_host(HostSpec.server2019(hostname="wire-https", password=PASSWORD, https=True))


@pytest.fixture(scope="module")
def ca_file(https_host: EmulatedHost, tmp_path_factory: pytest.TempPathFactory) -> str:
    assert https_host.ca_pem is not None
    path = tmp_path_factory.mktemp("ca") / "ca.pem"
    path.write_text(https_host.ca_pem)
    return str(path)


@pytest.fixture(autouse=True)
def no_leaks(server: EmulatorServer) -> Iterator[None]:
    yield
    server.assert_no_leaked_shells()


def protocol(host: EmulatedHost, transport: Transport = "basic", **kwargs: Any) -> Protocol:
    options: dict[str, Any] = {"username": host.username, "password": host.password, "ca_trust_path": None}
    options.update(kwargs)
    return Protocol(host.endpoint, transport=transport, **options)


def run_cmd(
    p: Protocol, command: str, args: list[str] | None = None, *, codepage: int = 65001
) -> tuple[bytes, bytes, int]:
    shell = p.open_shell(codepage=codepage)
    try:
        command_id = p.run_command(shell, command, args or [])
        try:
            return p.get_command_output(shell, command_id)
        finally:
            p.cleanup_command(shell, command_id)
    finally:
        p.close_shell(shell, close_session=False)


# --- authentication ------------------------------------------------------------------------------


def test_basic_over_http_with_session(http_host: EmulatedHost) -> None:
    session = Session(
        f"{http_host.address}:{http_host.port}", auth=(http_host.username, PASSWORD), ca_trust_path=None
    )
    result = session.run_cmd("hostname")
    assert (result.status_code, result.std_out) == (0, b"wire-http\r\n")
    assert {"Create", "Command", "Receive", "Signal", "Delete"} <= {r.operation for r in http_host.requests}


def test_ntlm_over_http_encrypts_every_message(http_host: EmulatedHost) -> None:
    http_host.clear_records()
    p = protocol(http_host, "ntlm")
    assert run_cmd(p, "whoami") == (b"wire-http\\administrator\r\n", b"", 0)
    wsman = [
        r for r in http_host.requests if r.operation in ("Create", "Command", "Receive", "Signal", "Delete")
    ]
    assert wsman
    assert all(r.encrypted and r.user == "Administrator" for r in wsman)
    assert [r.operation for r in http_host.requests[:3]] == ["Auth", "Auth", "Probe"]


@pytest.mark.parametrize(
    "options",
    [
        {"transport": "basic"},
        {"transport": "ntlm"},  # channel bindings of the TLS certificate are checked
        {"transport": "ntlm", "message_encryption": "always"},
    ],
    ids=["basic", "ntlm-cbt", "ntlm-encrypted"],
)
def test_password_auth_over_https(https_host: EmulatedHost, ca_file: str, options: dict[str, Any]) -> None:
    p = protocol(https_host, ca_trust_path=ca_file, **options)
    assert run_cmd(p, "hostname") == (b"wire-https\r\n", b"", 0)


def test_certificate_auth_over_https(https_host: EmulatedHost, ca_file: str, tmp_path: Path) -> None:
    cert, key = https_host.issue_client_cert().write(tmp_path, "client")
    p = Protocol(
        https_host.endpoint,
        transport="certificate",
        cert_pem=str(cert),
        cert_key_pem=str(key),
        ca_trust_path=ca_file,
    )
    assert run_cmd(p, "whoami") == (b"wire-https\\administrator\r\n", b"", 0)
    # A certificate nobody mapped to an account is refused.
    stranger, stranger_key = https_host.server.issue_client_cert("mallory@localhost").write(
        tmp_path, "stranger"
    )
    p = Protocol(
        https_host.endpoint,
        transport="certificate",
        cert_pem=str(stranger),
        cert_key_pem=str(stranger_key),
        ca_trust_path=ca_file,
    )
    with pytest.raises(InvalidCredentialsError):
        p.open_shell()


def test_serving_certificate_is_verified_against_the_ca(https_host: EmulatedHost, tmp_path: Path) -> None:
    other = tmp_path / "other-ca.pem"
    other.write_text(EmulatorServer().ca.cert_pem)
    with pytest.raises(requests.exceptions.SSLError):
        protocol(https_host, ca_trust_path=str(other)).open_shell()


@pytest.mark.parametrize("transport", ["basic", "ntlm"])
def test_wrong_password_is_a_401(http_host: EmulatedHost, transport: Transport) -> None:
    with pytest.raises(InvalidCredentialsError):
        protocol(http_host, transport, password="wrong").open_shell()
    with pytest.raises(InvalidCredentialsError):
        protocol(http_host, transport, username="Guest").open_shell()


def test_401_lists_the_enabled_schemes(server: EmulatorServer, http_host: EmulatedHost) -> None:
    response = requests.post(http_host.endpoint, data=b"<x/>", timeout=5)
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == 'Negotiate, Basic realm="WSMAN"'
    ntlm_only = server.add_host(hostname="wire-ntlm-only", auth_modes=("ntlm",))
    try:
        assert requests.post(ntlm_only.endpoint, timeout=5).headers["WWW-Authenticate"] == "Negotiate"
        with pytest.raises(InvalidCredentialsError):
            protocol(ntlm_only, "basic").open_shell()
        assert run_cmd(protocol(ntlm_only, "ntlm"), "hostname")[0] == b"wire-ntlm-only\r\n"
    finally:
        server.remove_host(ntlm_only)


# --- commands and streams ------------------------------------------------------------------------


def test_script_sent_over_stdin_in_chunks(http_host: EmulatedHost) -> None:
    http_host.clear_records()
    script = script_for("ensure_directories", {"paths": ["C:\\k", "C:\\k\\pki"]})
    stdout, stderr, code = run_script_with_pywinrm(protocol(http_host, "ntlm"), script, chunk_size=40)
    assert code == 0
    assert stderr == ""
    assert parse_result(stdout) == {"ok": True, "created": ["C:\\k", "C:\\k\\pki"]}
    sends = [r for r in http_host.requests if r.operation == "Send"]
    assert len(sends) >= len(script) // 40
    assert sends[-1].action == "ensure_directories"
    assert [a.action for a in http_host.actions] == ["ensure_directories"]
    assert http_host.call(lambda m: m.is_dir("c:\\K\\PKI"))


def test_more_echoes_stdin(http_host: EmulatedHost) -> None:
    p = protocol(http_host)
    shell = p.open_shell()
    try:
        command = p.run_command(shell, "more")
        p.send_command_input(shell, command, b"line one\n", end=False)
        p.send_command_input(shell, command, b"line two\n", end=True)
        assert p.get_command_output(shell, command) == (b"line one\r\nline two\r\n", b"", 0)
        p.cleanup_command(shell, command)
    finally:
        p.close_shell(shell)


def test_shell_codepage_is_honoured(http_host: EmulatedHost) -> None:
    p = protocol(http_host)
    assert run_cmd(p, "echo", ["héllo"], codepage=65001)[0] == "héllo\r\n".encode()
    assert run_cmd(p, "echo", ["héllo"], codepage=437)[0] == "héllo\r\n".encode("cp437")


def test_large_output_is_split_across_receives(http_host: EmulatedHost) -> None:
    content = bytes(range(32, 127)) * 4000  # 380 KB, beyond one 150 KB envelope
    http_host.call(lambda m: m.write_bytes("C:\\big.txt", content))
    http_host.clear_records()
    stdout, _, code = run_cmd(protocol(http_host), "type", ["C:\\big.txt"])
    assert code == 0
    assert stdout == content
    assert sum(1 for r in http_host.requests if r.operation == "Receive") >= 3


def test_unknown_program_and_exit_codes(http_host: EmulatedHost) -> None:
    p = protocol(http_host)
    assert run_cmd(p, "ipconfig", ["/all"]) == (
        b"",
        b"'ipconfig' is not recognized as an internal or external command,\r\noperable program or batch file.\r\n",
        1,
    )
    assert run_cmd(p, "cmd", ["/c", "exit", "/b", "7"])[2] == 7


def test_arbitrary_powershell_is_refused_in_strict_mode(http_host: EmulatedHost) -> None:
    session = Session(http_host.endpoint, auth=(http_host.username, PASSWORD), ca_trust_path=None)
    result = session.run_ps("Get-Service")
    assert result.status_code == 1
    assert b"runs only winnode scripts" in result.std_err or b"runs only winnode scripts" in result.std_out


# --- limits and faults of the protocol -----------------------------------------------------------


def test_operation_timeout_fault_while_a_command_runs(http_host: EmulatedHost) -> None:
    p = protocol(http_host, operation_timeout_sec=1, read_timeout_sec=5)
    shell = p.open_shell()
    try:
        http_host.faults.stall = True
        command = p.run_command(shell, "hostname")
        with pytest.raises(WinRMOperationTimeoutError):
            p.get_command_output_raw(shell, command)
        timeouts = [r for r in http_host.requests if r.operation == "Receive" and r.status == 500]
        assert timeouts
        assert timeouts[-1].fault_code == 2150858793
        http_host.faults.stall = False
        assert p.get_command_output(shell, command) == (b"wire-http\r\n", b"", 0)
        p.cleanup_command(shell, command)
    finally:
        http_host.faults.stall = False
        p.close_shell(shell)


def test_unknown_shell_and_command_faults(http_host: EmulatedHost) -> None:
    p = protocol(http_host)
    with pytest.raises(WSManFaultError) as info:
        p.run_command("00000000-0000-0000-0000-000000000000", "hostname")
    assert info.value.wsman_fault_code == CODE_SHELL_NOT_FOUND
    assert info.value.code == 500
    assert "shell was not found" in info.value.reason
    shell = p.open_shell()
    with pytest.raises(WSManFaultError) as info:
        p.get_command_output_raw(shell, "11111111-1111-1111-1111-111111111111")
    assert info.value.wsman_fault_code == CODE_SHELL_NOT_FOUND
    p.close_shell(shell)
    with pytest.raises(WSManFaultError) as info:
        p.close_shell(shell)
    assert info.value.wsman_fault_code == CODE_SHELL_NOT_FOUND


def test_cmd_line_limit(http_host: EmulatedHost) -> None:
    p = protocol(http_host)
    fits = "x" * (8191 - len("echo "))
    assert run_cmd(p, "echo " + fits)[0] == fits.encode() + b"\r\n"
    assert run_cmd(p, "echo " + fits + "y") == (b"", b"The command line is too long.\r\n", 1)
    long_line = [r for r in http_host.requests if r.operation == "Command"][-1].command_line
    assert long_line is not None
    assert len(long_line) == 8192


@pytest.mark.parametrize("transport", ["basic", "ntlm"])
def test_envelope_over_max_envelope_size(server: EmulatorServer, transport: Transport) -> None:
    host = server.add_host(hostname=f"wire-small-{transport}", max_envelope_size_kb=16, password=PASSWORD)
    try:
        p = protocol(host, transport)
        shell = p.open_shell()
        command = p.run_command(shell, "more")
        with pytest.raises(WinRMTransportError) as info:
            p.send_command_input(shell, command, b"x" * 16 * 1024, end=True)
        assert info.value.code == 413
        assert [r.operation for r in host.requests if r.status == 413] == ["TooLarge"]
        p.send_command_input(shell, command, b"fits\n", end=True)  # the connection is still usable
        assert p.get_command_output(shell, command)[0] == b"fits\r\n"
        p.cleanup_command(shell, command)
        p.close_shell(shell)
    finally:
        server.remove_host(host)


def test_shells_per_user_quota(server: EmulatorServer) -> None:
    host = server.add_host(hostname="wire-quota", max_shells_per_user=3, password=PASSWORD)
    p = protocol(host)
    shells = [p.open_shell() for _ in range(3)]
    try:
        with pytest.raises(WSManFaultError) as info:
            p.open_shell()
        assert info.value.wsman_fault_code == CODE_QUOTA_MAX_SHELLS
        assert "maximum number of 3 concurrent shells" in info.value.response
    finally:
        for shell in shells:
            p.close_shell(shell, close_session=False)
    p.close_shell(p.open_shell())
    server.remove_host(host)


def test_leaked_shells_are_reported(server: EmulatorServer, http_host: EmulatedHost) -> None:
    p = protocol(http_host)
    shell = p.open_shell()
    command = p.run_command(shell, "more")
    with pytest.raises(AssertionError, match=r"wire-http: .*more"):
        server.assert_no_leaked_shells()
    assert http_host.open_shells == 1
    p.close_shell(shell)  # deleting the shell also ends its command
    assert http_host.open_shells == 0
    del command


def test_raw_soap_fault_shape(http_host: EmulatedHost) -> None:
    auth = base64.b64encode(f"{http_host.username}:{PASSWORD}".encode()).decode()
    response = requests.post(
        http_host.endpoint,
        data=b"<not-soap/>",
        headers={"Authorization": f"Basic {auth}", "Content-Type": "application/soap+xml;charset=UTF-8"},
        timeout=5,
    )
    assert response.status_code == 500
    assert b"w:SchemaValidationError" in response.content
    assert b'Code="2150858817"' in response.content


def test_ctrl_c_ends_a_running_command(http_host: EmulatedHost) -> None:
    p = protocol(http_host)
    shell = p.open_shell()
    try:
        http_host.faults.stall = True
        command = p.run_command(shell, "hostname")
        request = {
            "env:Envelope": p.build_wsman_header(
                action="http://schemas.microsoft.com/wbem/wsman/1/windows/shell/Signal",
                resource_uri="http://schemas.microsoft.com/wbem/wsman/1/windows/shell/cmd",
                shell_id=shell,
            )
        }
        request["env:Envelope"]["env:Body"] = {
            "rsp:Signal": {
                "@CommandId": command,
                "rsp:Code": "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/signal/ctrl_c",
            }
        }
        p.send_message(xmltodict.unparse(request))
        assert p.get_command_output(shell, command) == (b"", b"", STATUS_CONTROL_C_EXIT)
        p.cleanup_command(shell, command)
    finally:
        http_host.faults.stall = False
        p.close_shell(shell)


def test_invalid_operation_timeout_header(http_host: EmulatedHost) -> None:
    p = protocol(http_host)
    request = {
        "env:Envelope": p.build_wsman_header(
            action="http://schemas.xmlsoap.org/ws/2004/09/transfer/Create",
            resource_uri="http://schemas.microsoft.com/wbem/wsman/1/windows/shell/cmd",
        )
    }
    request["env:Envelope"]["env:Header"]["w:OperationTimeout"] = "P"
    request["env:Envelope"]["env:Body"] = {"rsp:Shell": {"rsp:InputStreams": "stdin"}}
    with pytest.raises(WSManFaultError) as info:
        p.send_message(xmltodict.unparse(request))
    assert info.value.wsman_fault_code == CODE_INVALID_HEADER
    assert "invalid timeout field in the SOAP header: P" in info.value.reason


def test_busy_address_is_skipped(tmp_path: Path) -> None:
    squatter = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        squatter.bind(("127.0.12.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        with EmulatorServer(base_address="127.0.12.1", state_dir=tmp_path) as server:
            host = server.add_host(port=port, password=PASSWORD)
            assert (host.address, host.port) == ("127.0.12.2", port)
            second = server.add_host(port=port, password=PASSWORD)
            assert second.address == "127.0.12.3"
            assert run_cmd(protocol(host), "hostname")[0] == f"{host.hostname}\r\n".encode()
            with pytest.raises(ValueError, match="loopback"):
                server.add_host(address="10.0.0.1")
    finally:
        squatter.close()


def test_certificate_mapping_and_foreign_ca(server: EmulatorServer, tmp_path: Path) -> None:
    from winnode.testing.winauth import CertificateAuthority

    corporate = CertificateAuthority("corp issuing CA")
    host = server.add_host(
        hostname="wire-certmap",
        https=True,
        client_ca_pem=corporate.cert_pem,
        client_cert_users={"ops@corp.example": "Administrator"},
    )
    try:
        assert host.ca_pem is not None
        ca = tmp_path / "ca.pem"
        ca.write_text(host.ca_pem)
        cert, key = corporate.issue_client_cert("ops@corp.example").write(tmp_path, "ops")
        p = Protocol(
            host.endpoint,
            transport="certificate",
            cert_pem=str(cert),
            cert_key_pem=str(key),
            ca_trust_path=str(ca),
        )
        assert run_cmd(p, "whoami")[0] == b"wire-certmap\\administrator\r\n"
        # Signed by a CA the host does not trust: the TLS handshake itself fails.
        foreign, foreign_key = server.issue_client_cert("ops@corp.example").write(tmp_path, "foreign")
        p = Protocol(
            host.endpoint,
            transport="certificate",
            cert_pem=str(foreign),
            cert_key_pem=str(foreign_key),
            ca_trust_path=str(ca),
        )
        with pytest.raises(requests.exceptions.RequestException):
            p.open_shell()
    finally:
        server.remove_host(host)


def test_spnego_wrapped_negotiate(http_host: EmulatedHost) -> None:
    client = spnego.client(
        http_host.username,
        PASSWORD,
        hostname=http_host.address,
        service="http",
        protocol="negotiate",
        options=spnego.NegotiateOptions.use_negotiate,
    )
    token = client.step()
    with requests.Session() as session:  # one keep-alive connection: Negotiate authenticates it
        for _ in range(4):
            assert token is not None
            response = session.post(
                http_host.endpoint,
                data=b"",
                headers={"Authorization": f"Negotiate {base64.b64encode(token).decode()}"},
            )
            challenge = response.headers.get("WWW-Authenticate", "")
            if response.status_code == 200:
                if challenge:
                    client.step(base64.b64decode(challenge.split(" ", 1)[1]))
                break
            assert response.status_code == 401
            token = client.step(base64.b64decode(challenge.split(" ", 1)[1]))
    assert client.complete
