"""Rendering host actions into PowerShell scripts: one template per action, parameters only as data.

A rendered script is, line by line:

    # winnode-action: {"action":...,"params":{...}}      inert header (protocol.encode_header)
    $WinnodeParamsB64 = '<base64 of the params JSON>'    the only line that carries values
    <templates/_prelude.ps1>                              strict mode, $P, result helpers
    <templates/<action>.ps1>                              the action itself

Secret fields hold the placeholder `<secret:NAME>` in both lines; their values are sent apart, after
the script on stdin (`RenderedScript.stdin`, see host/protocol.py), so no secret is ever part of a
text PowerShell compiles and a host may log.

Templates are static files shipped as package data; nothing is spliced into them. A template may
pull in a shared fragment with a line `#winnode:include _name.ps1` (a comment to PowerShell, so the
template on its own still parses). The emulator re-renders every script it receives and compares,
so rendering must stay a pure function of the validated parameters.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

from winnode.host.actions import ACTIONS, Params
from winnode.host.protocol import encode_header, encode_params_line, encode_stdin, secret_placeholder

REDACTED = "<redacted>"
PRELUDE = "_prelude.ps1"
INCLUDE_DIRECTIVE = "#winnode:include "
_TEMPLATE_PACKAGE = "winnode.host"
_TEMPLATE_DIRECTORY = "templates"


class TemplateError(LookupError):
    """A template is missing or malformed (a packaging bug, not a user error)."""


@dataclass(frozen=True)
class RenderedScript:
    """One script ready to run. `text` holds no secret; `params` may: it is kept out of repr."""

    action: str
    params: Params = field(repr=False)
    text: str = field(repr=False)
    mutating: bool

    @property
    def secret_values(self) -> tuple[str, ...]:
        """The non-empty string values of the action's secret fields, for scrubbing messages."""
        return secret_values(self.params)

    @property
    def secrets(self) -> dict[str, str]:
        """The values of the secret fields, sent on stdin after the script (never in `text`)."""
        return secret_map(self.params)

    @property
    def stdin(self) -> bytes:
        """Everything the host reads on stdin: the script, then the secret section."""
        return encode_stdin(self.text, self.secrets)

    def redacted(self) -> str:
        """The script as it is sent: secret fields already hold only a placeholder naming them."""
        return self.text


def params_json(params: Params) -> dict[str, Any]:
    """The parameters exactly as a script receives them (every field, JSON types)."""
    return params.model_dump(mode="json")


def redacted_params(params: Params) -> dict[str, Any]:
    data = params_json(params)
    for name in params.secret_fields:
        if name in data and data[name] is not None:
            data[name] = REDACTED
    return data


def secret_map(params: Params) -> dict[str, str]:
    """Secret field name -> value, for the fields that are set."""
    data = params_json(params)
    return {name: data[name] for name in sorted(params.secret_fields) if isinstance(data.get(name), str)}


def placeholder_params(params: Params) -> dict[str, Any]:
    """The parameters as the script text carries them: secret fields name themselves, nothing more."""
    data = params_json(params)
    for name in params.secret_fields:
        if isinstance(data.get(name), str):
            data[name] = secret_placeholder(name)
    return data


def secret_values(params: Params) -> tuple[str, ...]:
    values: list[str] = []
    for name in sorted(params.secret_fields):
        value = getattr(params, name, None)
        if isinstance(value, str) and value:
            values.append(value)
    return tuple(values)


def render(params: Params) -> RenderedScript:
    """The script that runs `params.action` with these parameters on a host."""
    if params.action not in ACTIONS or not isinstance(params, ACTIONS[params.action][0]):
        raise TemplateError(f"{type(params).__name__} is not a registered host action")
    return RenderedScript(
        action=params.action,
        params=params,
        text=_assemble(params.action, placeholder_params(params)),
        mutating=params.mutating,
    )


def _assemble(action: str, values: dict[str, Any]) -> str:
    return "\n".join(
        (
            encode_header(action, values),
            encode_params_line(values),
            template_text(PRELUDE),
            action_body(action),
        )
    )


@functools.cache
def template_text(name: str) -> str:
    """A template file's text with LF line endings and exactly one trailing newline."""
    try:
        raw = (
            resources.files(_TEMPLATE_PACKAGE).joinpath(_TEMPLATE_DIRECTORY, name).read_text(encoding="utf-8")
        )
    except (FileNotFoundError, IsADirectoryError):
        raise TemplateError(
            f"template {name} is missing from {_TEMPLATE_PACKAGE}/{_TEMPLATE_DIRECTORY}"
        ) from None
    return raw.lstrip("\ufeff").replace("\r\n", "\n").rstrip("\n") + "\n"


@functools.cache
def action_body(action: str) -> str:
    """The action's template with its `#winnode:include` lines replaced by the fragments they name."""
    lines: list[str] = []
    for line in template_text(f"{action}.ps1").split("\n"):
        if line.startswith(INCLUDE_DIRECTIVE):
            fragment = line[len(INCLUDE_DIRECTIVE) :].strip()
            if not fragment.startswith("_") or not fragment.endswith(".ps1") or "/" in fragment:
                raise TemplateError(f"{action}.ps1 includes {fragment!r}: only _<name>.ps1 fragments")
            lines.append(template_text(fragment).rstrip("\n"))
        else:
            lines.append(line)
    return "\n".join(lines)


def template_names() -> list[str]:
    """Every .ps1 file in the template directory (actions and shared fragments)."""
    directory = resources.files(_TEMPLATE_PACKAGE).joinpath(_TEMPLATE_DIRECTORY)
    return sorted(entry.name for entry in directory.iterdir() if entry.name.endswith(".ps1"))
