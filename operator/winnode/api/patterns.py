"""Readable refusals for pattern-checked spec fields.

An OpenAPI `pattern` makes the apiserver answer with the raw regular expression ("should match
'^v1\\.(0|[1-9][0-9]*)...'"), which tells an admin who wrote `latest` or `1.37.2` nothing. In spec
schemas each pattern is therefore turned into an x-kubernetes-validations rule with the same regular
expression and a sentence saying what is expected (the apiserver puts the value given before it).
Every pattern needs a sentence here: crdgen refuses one without (a new pattern gets its message).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from winnode.api import common
from winnode.api.common import VALIDATIONS


def _messages() -> dict[str, str]:
    from winnode.api import windowsnode

    out = {
        common.DNS1123_LABEL: "must be a DNS label: lower-case letters, digits and '-', starting and ending "
        "with a letter or digit (e.g. winnode-system)",
        common.DNS1123_SUBDOMAIN: "must be a DNS subdomain: lower-case letters, digits, '-' and '.', each part "
        "starting and ending with a letter or digit (e.g. win-01)",
        common.HOSTNAME: "must be a DNS name such as corp.example (letters, digits, '-' and '.')",
        common.QUALIFIED_NAME: "must be a key such as os or example.com/dedicated: an optional DNS subdomain "
        "and '/', then up to 63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit",
        common.LABEL_VALUE: "must be empty or up to 63 letters, digits, '-', '_' or '.', starting and ending "
        "with a letter or digit",
        common.QUANTITY: "must be a quantity such as 500m, 2Gi, 1.5 or 100: a non-negative number with an "
        "optional suffix m, k, M, G, T, P, E, Ki, Mi, Gi, Ti, Pi or Ei",
        common.SHA256_HEX: "must be a SHA-256 digest: 64 hexadecimal digits",
        windowsnode.KUBERNETES_VERSION: "must be a Kubernetes 1.x release written v1.MINOR.PATCH, such as "
        "v1.37.2 (with the leading v; names like latest are not versions)",
        windowsnode.BASE_URL: "must be an http(s) URL of a directory, without query or fragment "
        "(e.g. https://dl.k8s.io or http://mirror.corp.example/k8s)",
        windowsnode.ARTIFACT_FILE: "must be a plain file name such as kubelet.exe",
        windowsnode.KUBELET_FLAG: "must be a flag name without leading dashes, such as v or feature-gates",
        "-----BEGIN CERTIFICATE-----": "must hold PEM certificates (-----BEGIN CERTIFICATE----- ...)",
    }
    return out


class PatternWithoutMessage(ValueError):
    pass


def _cel_str(s: str) -> str:
    return "'" + s.replace("\\", "\\\\").replace("'", "\\'") + "'"


def rule_for(pattern: str, messages: Mapping[str, str], where: str) -> dict[str, str]:
    message = messages.get(pattern)
    if message is None:
        raise PatternWithoutMessage(
            f"{where}: pattern {pattern!r} has no readable message; add one to winnode/api/patterns.py"
        )
    # No messageExpression: for a rule on the field itself the apiserver already quotes the value
    # ('spec.kubernetesVersion: Invalid value: "latest": must be ...'); repeating it only adds noise.
    return {"rule": f"self.matches({_cel_str(pattern)})", "message": message}


def readable(schema: Any, messages: Mapping[str, str] | None = None, where: str = "spec") -> Any:
    """`schema` with every `pattern` replaced by a rule carrying a readable message."""
    messages = _messages() if messages is None else messages
    if isinstance(schema, list):
        return [readable(v, messages, where) for v in schema]
    if not isinstance(schema, dict):
        return schema
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key == "properties":
            out[key] = {n: readable(p, messages, f"{where}.{n}") for n, p in value.items()}
        elif key in ("items", "additionalProperties"):
            out[key] = readable(value, messages, f"{where}[]")
        elif key == "pattern":
            continue
        else:
            out[key] = value
    pattern = schema.get("pattern")
    if pattern is not None:
        rule = rule_for(pattern, messages, where)
        out[VALIDATIONS] = [rule, *out.get(VALIDATIONS, [])]
    return out
