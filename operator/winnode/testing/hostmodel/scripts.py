"""Scripts as the operator renders them, and what running one answers."""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from winnode.host import actions as A
from winnode.testing.hostmodel.errors import REDACTED, ActionFailed

if TYPE_CHECKING:
    pass


@dataclass(frozen=True)
class ScriptOutcome:
    """What a script printed and returned; `params` has secret fields redacted."""

    action: str | None
    params: dict[str, Any] | None
    mutating: bool
    result: dict[str, Any]
    exit_code: int
    stdout: str
    stderr: str = ""

    @property
    def ok(self) -> bool:
        return bool(self.result.get("ok"))


def redact(params: A.Params) -> dict[str, Any]:
    data = params.model_dump(mode="json")
    for name in params.secret_fields:
        if name in data:
            data[name] = REDACTED
    return data


def _load_renderer() -> Callable[..., Any] | None:
    try:
        module = importlib.import_module("winnode.host.scripts")
    except ModuleNotFoundError as exc:
        if exc.name == "winnode.host.scripts":
            return None
        raise
    render = getattr(module, "render", None)
    return render if callable(render) else None


def _render_expected(render: Callable[..., Any], action: str, params: A.Params, raw: dict[str, Any]) -> str:
    """Call `winnode.host.scripts.render` with whichever of its two natural shapes it has."""
    try:
        signature = inspect.signature(render)
        required = [
            p
            for p in signature.parameters.values()
            if p.default is inspect.Parameter.empty
            and p.kind in (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
        ]
    except (TypeError, ValueError):
        required = []
    rendered = render(action, raw) if len(required) >= 2 else render(params)
    for attr in ("script", "text"):
        if not isinstance(rendered, str) and isinstance(getattr(rendered, attr, None), str):
            rendered = getattr(rendered, attr)
    if not isinstance(rendered, str):
        raise ActionFailed(
            f"winnode.host.scripts.render returned {type(rendered).__name__}, not the script text"
        )
    return rendered


def script_for(action: str, params: dict[str, Any] | A.Params | None = None, *, body: str = "") -> str:
    """A script for `action` that an emulated host accepts in strict mode.

    With `winnode.host.scripts.render` available this is exactly what it renders; before that
    exists, the header and parameter lines of the protocol followed by `body`.
    """
    from winnode.host.protocol import encode_header, encode_params_line

    model = params if isinstance(params, A.Params) else A.params_for(action, dict(params or {}))
    raw = model.model_dump(mode="json", exclude_unset=True) if not isinstance(params, dict) else dict(params)
    render = _load_renderer()
    if render is not None:
        return _render_expected(render, action, model, raw)
    lines = [encode_header(action, raw), encode_params_line(raw)]
    if body:
        lines.append(body)
    return "\n".join(lines) + "\n"


def stdin_for(action: str, params: dict[str, Any] | A.Params | None = None) -> bytes:
    """What winnode sends on stdin for `action`: the script of `script_for`, then its secret section."""
    from winnode.host.protocol import encode_stdin

    model = params if isinstance(params, A.Params) else A.params_for(action, dict(params or {}))
    text = script_for(action, params)
    secrets = {
        name: value for name in model.secret_fields if isinstance(value := getattr(model, name, None), str)
    }
    return encode_stdin(text, secrets)


def _canonical_script(text: str) -> str:
    # A transport may send CRLF line endings or a byte-order mark; neither changes the script.
    return text.lstrip("\ufeff").replace("\r\n", "\n")


def _first_difference(expected: str, actual: str) -> str:
    exp_lines, act_lines = expected.split("\n"), actual.split("\n")
    for number, (e, a) in enumerate(zip(exp_lines, act_lines, strict=False), start=1):
        if e != a:
            return f"line {number}: expected {e[:120]!r}, got {a[:120]!r}"
    return f"expected {len(exp_lines)} lines, got {len(act_lines)}"


# --- the model ---------------------------------------------------------------------------------
