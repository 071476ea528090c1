"""How the emulated host runs scripts: header checks, strict mode, the result line, redaction."""

from __future__ import annotations

import sys
import types
from typing import Any

import pytest

from winnode.host import actions as A
from winnode.host.protocol import encode_header, encode_params_line, parse_result
from winnode.testing.hostmodel import REDACTED, new_host_model, script_for


def script(action: str, params: dict[str, Any], *, body_params: dict[str, Any] | None = None) -> str:
    return "\n".join(
        [
            encode_header(action, params),
            encode_params_line(params if body_params is None else body_params),
            "exit 0",
        ]
    )


@pytest.fixture
def no_renderer(monkeypatch: pytest.MonkeyPatch) -> None:
    """Pin the 'no winnode.host.scripts yet' case, whatever the tree holds."""
    monkeypatch.setitem(sys.modules, "winnode.host.scripts", types.ModuleType("winnode.host.scripts"))


async def test_result_line_and_exit_code(no_renderer: None) -> None:
    model = new_host_model("win-01")
    outcome = await model.run_script(script("ensure_directories", {"paths": ["C:\\k"]}))
    assert outcome.exit_code == 0
    assert outcome.ok
    assert outcome.mutating
    assert outcome.stdout.endswith("\r\n")
    assert parse_result(outcome.stdout) == {"ok": True, "created": ["C:\\k"]}
    assert outcome.action == "ensure_directories"
    assert outcome.params == {"paths": ["C:\\k"]}


async def test_failed_action_exits_one_with_the_host_message(no_renderer: None) -> None:
    model = new_host_model("win-01")
    outcome = await model.run_script(script("service_start", {"name": "kubelet"}))
    assert outcome.exit_code == 1
    assert not outcome.ok
    assert parse_result(outcome.stdout)["error"] == "Cannot find any service with service name 'kubelet'."


async def test_header_must_match_the_body(no_renderer: None) -> None:
    model = new_host_model("win-01")
    tampered = script("remove_path", {"path": "C:\\k\\x"}, body_params={"path": "C:\\", "recurse": True})
    outcome = await model.run_script(tampered)
    assert outcome.exit_code == 1
    assert "header and the parameters its body decodes differ" in outcome.result["error"]
    assert model.is_dir("C:\\Windows")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("Write-Output 'hi'", "does not start with"),
        ('# winnode-action: {"action":"facts"}\nWrite-Output 1', "exactly once"),
        (
            '# winnode-action: {"action":"facts","params":{}}\n$WinnodeParamsB64 = \'e30=\'\n$WinnodeParamsB64 = \'e30=\'',
            "exactly once",
        ),
    ],
)
async def test_malformed_scripts_are_refused(no_renderer: None, text: str, message: str) -> None:
    outcome = await new_host_model("win-01").run_script(text)
    assert outcome.exit_code == 1
    assert message in outcome.result["error"]
    assert outcome.stderr


async def test_invalid_parameters_are_refused(no_renderer: None) -> None:
    outcome = await new_host_model("win-01").run_script(
        script("fetch_file", {"url": "http://x", "path": "C:\\x", "sha256": "abc"})
    )
    assert outcome.exit_code == 1
    assert "sha256" in outcome.result["error"]


async def test_unknown_action_strict_and_permissive(no_renderer: None) -> None:
    strict = await new_host_model("win-01").run_script(script("format_disk", {}))
    assert strict.exit_code == 1
    assert "unknown action 'format_disk'" in strict.result["error"]
    assert "facts" in strict.result["error"]
    permissive = await new_host_model("win-01", strict=False).run_script(script("format_disk", {}))
    assert permissive.exit_code == 0
    assert permissive.ok


async def test_forced_exit_code_does_nothing(no_renderer: None) -> None:
    model = new_host_model("win-01")
    outcome = await model.run_script(script("ensure_directories", {"paths": ["C:\\k"]}), forced_exit_code=3)
    assert outcome.exit_code == 3
    assert not outcome.ok
    assert "injected" in outcome.result["error"]
    assert not model.is_dir("C:\\k")


async def test_secret_parameters_are_redacted(no_renderer: None) -> None:
    model = new_host_model("win-01")
    outcome = await model.run_script(
        script("write_file", {"path": "C:\\k\\token", "content": "s3cr3t-token"})
    )
    assert outcome.ok
    assert outcome.params == {"path": "C:\\k\\token", "content": REDACTED, "secret": False}
    assert "s3cr3t-token" not in repr(outcome)


async def test_crlf_and_bom_are_accepted(no_renderer: None) -> None:
    text = "\ufeff" + script("facts", {}).replace("\n", "\r\n")
    outcome = await new_host_model("win-01").run_script(text)
    assert outcome.ok
    assert outcome.result["hostname"] == "win-01"


def fake_scripts_module(render: Any) -> types.ModuleType:
    module = types.ModuleType("winnode.host.scripts")
    module.render = render  # type: ignore[attr-defined]
    return module


async def test_strict_mode_compares_with_the_renderer(monkeypatch: pytest.MonkeyPatch) -> None:
    def render(params: A.Params) -> str:
        raw = params.model_dump(mode="json")
        return "\n".join([encode_header(params.action, raw), encode_params_line(raw), "# body v2"]) + "\n"

    monkeypatch.setitem(sys.modules, "winnode.host.scripts", fake_scripts_module(render))
    model = new_host_model("win-01")
    good = script_for("stat_files", {"paths": ["C:\\k\\kubelet.exe"]})
    assert good.endswith("# body v2\n")
    assert (await model.run_script(good)).ok
    stale = good.replace("# body v2", "# body v1")
    outcome = await model.run_script(stale)
    assert outcome.exit_code == 1
    assert "line 3" in outcome.result["error"]
    assert "not what winnode.host.scripts.render produces" in outcome.result["error"]
    # Permissive hosts run scripts from other template versions.
    assert (await new_host_model("win-01", strict=False).run_script(stale)).ok


async def test_renderer_taking_action_and_raw_params(monkeypatch: pytest.MonkeyPatch) -> None:
    def render(action: str, params: dict[str, Any]) -> str:
        return "\n".join([encode_header(action, params), encode_params_line(params), "exit 0"])

    monkeypatch.setitem(sys.modules, "winnode.host.scripts", fake_scripts_module(render))
    model = new_host_model("win-01")
    assert (await model.run_script(script("facts", {}))).ok
