"""The wire contract between a rendered script and whoever runs it (a real host or the emulator).

A script is plain PowerShell whose first line is an inert comment naming its action and
parameters, and whose body receives the same parameters as one base64 JSON string literal:

    # winnode-action: {"action":"fetch_file","params":{...}}
    $WinnodeParamsB64 = 'eyJ1cmwiOi...'
    ...template body...

Its last line of output is `##RESULT## {json}`: `{"ok": true, ...}` or `{"ok": false, "error": ...}`.
Parameters never reach PowerShell as code: base64's alphabet cannot close a single-quoted string,
and the header is ASCII-only JSON in a line comment (no raw newline can end it early).
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
