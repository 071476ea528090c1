"""The wire contract between a rendered script and whoever runs it (a real host or the emulator).

A script is plain PowerShell whose first line is an inert comment naming its action and
parameters, and whose body receives the same parameters as one base64 JSON string literal:

    # winnode-action: {"action":"fetch_file","params":{...}}
    $WinnodeParamsB64 = 'eyJ1cmwiOi...'
    ...template body...

Its last line of output is `##RESULT## {json}`: `{"ok": true, ...}` or `{"ok": false, "error": ...}`.
Parameters never reach PowerShell as code: base64's alphabet cannot close a single-quoted string,
and the header is ASCII-only JSON in a line comment (no raw newline can end it early).

Secrets never appear in the script text. PowerShell compiles the text into a script block, and a
host with script-block logging (event 4104, forced for blocks that contain "suspicious" words such
as FromBase64String) writes every compiled block to its event log. A secret field therefore holds
a placeholder `<secret:NAME>` in the header and the parameters line, and the secret values travel
after the script on the same stdin stream, as one data section:

    <script text>\n#winnode-secrets:<base64 of a JSON object NAME -> value>\n

The bootstrap (BOOTSTRAP below, the only text on the command line) reads stdin as bytes, cuts the
section off at the last marker, compiles only the script part, and leaves the section in the
variable $WinnodeSecretsB64, which the prelude decodes as data into $P.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from typing import Any

HEADER_PREFIX = "# winnode-action: "
RESULT_PREFIX = "##RESULT## "
PARAMS_VARIABLE = "WinnodeParamsB64"
SECRETS_VARIABLE = "WinnodeSecretsB64"
SECRETS_MARKER = "#winnode-secrets:"
_SECRET_PLACEHOLDER = "<secret:{}>"
# Reads stdin as UTF-8 bytes whatever the console's input encoding, splits the secret section off,
# runs the rest as a script block, and hands its exit code on (a script ends with `exit`, which may
# end only the block). Only this text and the script part are ever compiled (and so logged).
BOOTSTRAP = (
    "$ErrorActionPreference = 'Stop'; "
    "$b = New-Object -TypeName System.IO.MemoryStream; [Console]::OpenStandardInput().CopyTo($b); "
    "$t = (New-Object -TypeName System.Text.UTF8Encoding -ArgumentList $false).GetString($b.ToArray()); "
    f"$i = $t.LastIndexOf(([char]10 + '{SECRETS_MARKER}'), [StringComparison]::Ordinal); "
    f"if ($i -ge 0) {{ ${SECRETS_VARIABLE} = $t.Substring($i + {len(SECRETS_MARKER) + 1}).Trim(); "
    "$t = $t.Substring(0, $i + 1) }; "
    "& ([scriptblock]::Create($t)); exit $LASTEXITCODE"
)
_PARAMS_LINE = re.compile(r"^\$" + PARAMS_VARIABLE + r" = '([A-Za-z0-9+/=]*)'\r?$", re.MULTILINE)


class ProtocolError(ValueError):
    """A script or its output does not follow the contract above."""


def _canonical_json(value: Any, *, ascii_only: bool) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=ascii_only)


def encode_header(action: str, params: dict[str, Any]) -> str:
    return HEADER_PREFIX + _canonical_json({"action": action, "params": params}, ascii_only=True)


def encode_params_line(params: dict[str, Any]) -> str:
    raw = _canonical_json(params, ascii_only=False).encode("utf-8")
    return f"${PARAMS_VARIABLE} = '{base64.b64encode(raw).decode('ascii')}'"


def secret_placeholder(name: str) -> str:
    """What a secret field holds in the script text: its name, never its value."""
    return _SECRET_PLACEHOLDER.format(name)


def encode_stdin(script: str, secrets: dict[str, str] | None) -> bytes:
    """The bytes sent on stdin: the script, then (if `secrets` is not None) the secret section."""
    text = script if script.endswith("\n") else script + "\n"
    if secrets is None:
        return text.encode("utf-8")
    if "\n" + SECRETS_MARKER in text:
        raise ProtocolError(f"a script must not contain a line starting with {SECRETS_MARKER!r}")
    section = base64.b64encode(_canonical_json(secrets, ascii_only=False).encode("utf-8")).decode("ascii")
    return (text + SECRETS_MARKER + section + "\n").encode("utf-8")


def split_stdin(text: str) -> tuple[str, dict[str, str] | None]:
    """What BOOTSTRAP does with stdin: (the script it compiles, the secret section it keeps as data)."""
    at = text.rfind("\n" + SECRETS_MARKER)
    if at < 0:
        return text, None
    raw = text[at + 1 + len(SECRETS_MARKER) :].strip()
    try:
        value = json.loads(base64.b64decode(raw, validate=True).decode("utf-8"))
    except (binascii.Error, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ProtocolError(f"the secret section does not decode: {exc}") from None
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise ProtocolError("the secret section is not an object of strings")
    return text[: at + 1], value


def fill_secrets(params: dict[str, Any], secrets: dict[str, str] | None) -> dict[str, Any]:
    """What the prelude does: every field holding its own placeholder takes the value sent apart.

    A placeholder with no value sent is an error, as in the prelude (the script would otherwise write
    the placeholder where the secret belongs)."""
    filled = dict(params)
    for name, value in params.items():
        if value == secret_placeholder(name):
            if secrets is None or name not in secrets:
                raise ProtocolError(f"secret field {name} did not arrive in the secret section on stdin")
            filled[name] = secrets[name]
    return filled


def parse_header(script: str) -> tuple[str, dict[str, Any]]:
    first, _, _ = script.lstrip("\ufeff").partition("\n")
    first = first.rstrip("\r")
    if not first.startswith(HEADER_PREFIX):
        raise ProtocolError(f"script does not start with {HEADER_PREFIX.strip()!r}")
    try:
        header = json.loads(first[len(HEADER_PREFIX) :])
    except json.JSONDecodeError as exc:
        raise ProtocolError(f"script header is not JSON: {exc}") from None
    if not isinstance(header, dict) or not isinstance(header.get("action"), str):
        raise ProtocolError("script header has no action")
    params = header.get("params", {})
    if not isinstance(params, dict):
        raise ProtocolError("script header params are not an object")
    return header["action"], params


def extract_params(script: str) -> dict[str, Any]:
    """Decode the parameters the script body will see (what PowerShell decodes at run time)."""
    matches = _PARAMS_LINE.findall(script)
    if len(matches) != 1:
        raise ProtocolError(f"script must assign ${PARAMS_VARIABLE} exactly once, found {len(matches)}")
    try:
        value = json.loads(base64.b64decode(matches[0], validate=True).decode("utf-8"))
    except (binascii.Error, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ProtocolError(f"script parameters do not decode: {exc}") from None
    if not isinstance(value, dict):
        raise ProtocolError("script parameters are not an object")
    return value


def format_result(result: dict[str, Any]) -> str:
    return RESULT_PREFIX + _canonical_json(result, ascii_only=True)


def parse_result(stdout: str) -> dict[str, Any]:
    """The object on the last `##RESULT##` line of a script's output."""
    for line in reversed(stdout.splitlines()):
        line = line.strip()
        if line.startswith(RESULT_PREFIX.strip()):
            try:
                value = json.loads(line[len(RESULT_PREFIX.strip()) :].strip())
            except json.JSONDecodeError as exc:
                raise ProtocolError(f"result line is not JSON: {exc}") from None
            if not isinstance(value, dict) or not isinstance(value.get("ok"), bool):
                raise ProtocolError("result line has no boolean 'ok'")
            return value
    raise ProtocolError("script printed no result line")
