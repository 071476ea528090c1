"""HostClient: render, run, parse the result line, validate it; and the Host interface fakes implement."""

from __future__ import annotations

import json
from typing import Any

import pytest

from winnode.host import actions as A
from winnode.host.client import Host, HostClient, interpret_output, result_model, scrub, shared_transport
from winnode.host.errors import HostProtocolError, ScriptFailedError
from winnode.host.protocol import extract_params, format_result, parse_header
from winnode.host.scripts import render
from winnode.host.transport import ExecResult, HostConnection, TransportLimits, WinRMTransport
from winnode.settings import Settings

HOST = "win-01 (10.1.2.3:5986)"
TOKEN = "abcdef.0123456789abcdef"


def output(stdout: str, code: int = 0, stderr: str = "") -> ExecResult:
    return ExecResult(stdout=stdout, stderr=stderr, exit_code=code, elapsed_s=0.1)


def test_result_models_follow_the_catalogue() -> None:
    assert result_model(A.FetchFileParams(url="http://x/y", path="C:\\y")) is A.FileWriteResult
    assert result_model(A.ServiceStopParams(name="kubelet")) is A.ServiceStateResult


def test_ok_result_is_validated_into_the_model() -> None:
    script = render(A.FetchFileParams(url="http://x/kubelet.exe", path="C:\\k\\kubelet.exe"))
    stdout = (
        "noise\r\n" + format_result({"ok": True, "changed": True, "sha256": "ab" * 32, "size": 12}) + "\r\n"
    )
    result = interpret_output(script, output(stdout), host=HOST)
    assert isinstance(result, A.FileWriteResult)
    assert result == A.FileWriteResult(changed=True, sha256="ab" * 32, size=12)


def test_failure_result_becomes_script_failed_with_the_hosts_message() -> None:
    script = render(A.ServiceStartParams(name="kubelet"))
    stdout = format_result({"ok": False, "error": "Service 'kubelet' cannot be started: file not found"})
    with pytest.raises(ScriptFailedError) as info:
        interpret_output(script, output(stdout, 1), host=HOST)
    error = info.value
    assert error.reason == "ScriptFailed"
    assert error.exit_code == 1
    assert error.action == "service_start"
    assert error.error == "Service 'kubelet' cannot be started: file not found"
    assert str(error) == (
        f"service_start failed on {HOST} (exit code 1): Service 'kubelet' cannot be started: file not found"
    )


def test_secret_values_never_reach_the_error() -> None:
    content = f"users:\n- user:\n    token: {TOKEN}\n"
    script = render(A.WriteFileParams(path="C:\\k\\bootstrap.conf", content=content, secret=True))
    stdout = format_result({"ok": False, "error": f"could not write {TOKEN} to disk"})
    with pytest.raises(ScriptFailedError) as info:
        interpret_output(script, output(stdout, 1), host=HOST)
    assert TOKEN not in str(info.value)
    assert "<redacted>" in info.value.error


def test_no_result_line_and_a_failing_exit_code() -> None:
    script = render(A.WriteFileParams(path="C:\\k\\x", content=f"token: {TOKEN}", secret=True))
    header, params_line, _ = script.text.split("\n", 2)
    # What powershell.exe prints for a parse error: the message, then the offending source lines.
    stderr = (
        "Missing closing '}' in statement block.\r\n"
        f"At line:2 char:1\r\n+ {params_line}\r\n+ {header}\r\n"
        "    + CategoryInfo          : ParserError: (:) [], ParseException\r\n"
        "    + FullyQualifiedErrorId : MissingEndCurlyBrace\r\n"
    )
    with pytest.raises(ScriptFailedError) as info:
        interpret_output(script, output("", 1, stderr), host=HOST)
    message = str(info.value)
    assert "Missing closing '}' in statement block." in message
    assert TOKEN not in message
    assert params_line[30:60] not in message
    assert "winnode-action" not in message
    assert info.value.exit_code == 1


def test_clixml_stderr_is_read() -> None:
    script = render(A.FactsParams())
    stderr = (
        '#< CLIXML\r\n<Objs Version="1.1.0.1" xmlns="http://schemas.microsoft.com/powershell/2004/04">'
        '<S S="Error">Access is denied._x000D__x000A_</S><S S="Error">At line:1 char:1_x000D__x000A_</S></Objs>'
    )
    with pytest.raises(ScriptFailedError) as info:
        interpret_output(script, output("", 5, stderr), host=HOST)
    assert info.value.error == "exited without a result line: Access is denied."
    assert info.value.exit_code == 5


def test_no_result_line_with_exit_code_zero_is_a_protocol_error() -> None:
    with pytest.raises(HostProtocolError) as info:
        interpret_output(render(A.FactsParams()), output("hello\r\n"), host=HOST)
    assert info.value.reason == "ProtocolError"
    assert not info.value.retryable


def test_result_not_matching_the_contract_is_a_protocol_error() -> None:
    stdout = format_result({"ok": True, "changed": "maybe"})
    with pytest.raises(HostProtocolError) as info:
        interpret_output(render(A.FirewallRuleRemoveParams(name="r")), output(stdout), host=HOST)
    assert "removed" in str(info.value)


def test_success_with_a_failing_exit_code_is_a_failure() -> None:
    stdout = format_result({"ok": True, "removed": True})
    with pytest.raises(ScriptFailedError) as info:
        interpret_output(render(A.FirewallRuleRemoveParams(name="r")), output(stdout, 3), host=HOST)
    assert info.value.exit_code == 3


def test_scrub() -> None:
    assert scrub("a " * 1000, ()).endswith("...")
    assert len(scrub("a " * 1000, ())) == 1000
    assert "<data>" in scrub("x " + "QUJD" * 20 + " y", ())
    assert scrub("pw hunter22 here", ("hunter22",)) == "pw <redacted> here"


# --- HostClient over a transport whose protocol answers like a host ---------------------------------


class AnsweringProtocol:
    """Decodes each script like a host would and answers from a table; records what it saw."""

    def __init__(
        self, answers: dict[str, dict[str, Any]], seen: list[tuple[str, dict[str, Any], str]]
    ) -> None:
        self.answers = answers
        self.seen = seen
        self.operation_timeout_sec: Any = 20
        self.transport = type("T", (), {"read_timeout_sec": 30, "close_session": lambda self: None})()
        self.stdin = bytearray()

    def open_shell(self, *, noprofile: bool, codepage: int) -> str:
        return "S"

    def run_command(self, shell_id: str, command: str, *, console_mode_stdin: bool) -> str:
        self.stdin = bytearray()  # a kept connection runs the next command with its own stdin
        return "C"

    def send_command_input(self, shell_id: str, command_id: str, stdin_input: bytes, end: bool) -> None:
        self.stdin += stdin_input

    def get_command_output_raw(self, shell_id: str, command_id: str) -> tuple[bytes, bytes, int, bool]:
        script = self.stdin.decode("utf-8")
        action, params = parse_header(script)
        assert extract_params(script) == params
        self.seen.append((action, params, script))
        answer = self.answers[action]
        code = 0 if answer["ok"] else 1
        return (format_result(answer) + "\r\n").encode(), b"", code, True

    def cleanup_command(self, shell_id: str, command_id: str) -> None:
        pass

    def close_shell(self, shell_id: str, close_session: bool) -> None:
        pass


@pytest.fixture
def seen() -> list[tuple[str, dict[str, Any], str]]:
    return []


def client_for(answers: dict[str, dict[str, Any]], seen: list[Any], **settings: Any) -> HostClient:
    transport = WinRMTransport(
        Settings(**settings),
        limits=TransportLimits(receive_wait_s=1),
        protocol_factory=lambda conn, files, limits: AnsweringProtocol(answers, seen),
    )
    connection = HostConnection(address="10.1.2.3", username="u", password="p", name="win-01")
    return HostClient(connection, transport)


async def test_host_client_runs_typed_actions(seen: list[Any]) -> None:
    answers = {
        "fetch_file": {"ok": True, "changed": False, "sha256": "cd" * 32, "size": 7},
        "service_query": {
            "ok": True,
            "services": {"kubelet": {"exists": True, "state": "Running", "dependencies": ["containerd"]}},
        },
    }
    client = client_for(answers, seen)
    fetched = await client.run(A.FetchFileParams(url="http://m/kubelet.exe", path="C:\\k\\kubelet.exe"))
    assert isinstance(fetched, A.FileWriteResult)
    assert fetched.sha256 == "cd" * 32
    queried = await client.run(A.ServiceQueryParams(names=["kubelet"]))
    assert queried.services["kubelet"].state is A.ServiceState.RUNNING
    assert [s[0] for s in seen] == ["fetch_file", "service_query"]
    # The script the host received is exactly the rendered one.
    assert (
        seen[0][2]
        == render(A.FetchFileParams(url="http://m/kubelet.exe", path="C:\\k\\kubelet.exe")).stdin.decode()
    )
    assert client.name == "win-01 (10.1.2.3:5986)"
    assert "p'" not in repr(client)
    await client.transport.aclose()


async def test_host_client_raises_script_failures(seen: list[Any]) -> None:
    client = client_for({"service_stop": {"ok": False, "error": "Cannot find any service"}}, seen)
    with pytest.raises(ScriptFailedError) as info:
        await client.run(A.ServiceStopParams(name="kubelet"))
    assert info.value.host == "win-01 (10.1.2.3:5986)"
    assert info.value.error == "Cannot find any service"
    await client.transport.aclose()


def test_timeouts_stretch_for_actions_that_wait(seen: list[Any]) -> None:
    client = client_for({}, seen, winrm_operation_timeout_s=60.0)
    assert client.timeout_for(A.FactsParams()) == 60.0
    assert client.timeout_for(A.ServiceStartParams(name="kubelet", timeout_s=600)) > 600
    assert client.timeout_for(A.ServiceStartParams(name="kubelet", timeout_s=5)) == 60.0
    assert client.timeout_for(A.ServiceRemoveParams(name="kubelet")) > 120


def test_clients_share_one_transport_by_default() -> None:
    connection = HostConnection(address="10.1.2.3", username="u", password="p")
    first = HostClient(connection)
    second = HostClient(HostConnection(address="10.1.2.4", username="u", password="p"))
    assert first.transport is second.transport is shared_transport()


# --- the Host interface, as lifecycle tests fake it --------------------------------------------------


class TableHost(Host):
    def __init__(self, results: dict[str, A.Result]) -> None:
        self.results = results
        self.ran: list[A.Params] = []

    @property
    def name(self) -> str:
        return "fake"

    async def execute(self, params: A.Params) -> A.Result:
        self.ran.append(params)
        return self.results[params.action]


async def test_a_fake_host_implements_the_interface() -> None:
    host = TableHost({"firewall_rule_ensure": A.ChangedResult(changed=True)})
    result = await host.run(
        A.FirewallRuleEnsureParams(name="winnode-kubelet", display_name="k", protocol="TCP", local_port=10250)
    )
    assert result.changed
    assert [p.action for p in host.ran] == ["firewall_rule_ensure"]


async def test_a_fake_answering_the_wrong_model_is_caught() -> None:
    host = TableHost({"facts": A.ChangedResult(changed=True)})
    with pytest.raises(TypeError, match="not FactsResult"):
        await host.run(A.FactsParams())


def test_the_abstract_interface_cannot_be_instantiated() -> None:
    with pytest.raises(TypeError):
        Host()  # type: ignore[abstract]


def test_result_line_json_is_ascii() -> None:
    line = format_result({"ok": True, "text": "é😀"})
    assert line.isascii()
    assert json.loads(line.split(" ", 1)[1])["text"] == "é😀"
