"""Which Node label keys spec.labels may set: none of Kubernetes' own, except those meant for it.

Keys under kubernetes.io/ and k8s.io/ (and their subdomains) belong to Kubernetes. Of those, a
WindowsNode may set what an admin or a kubelet may legitimately put on a Node:

- node-restriction.kubernetes.io/ (and subdomains): reserved for admins, the prefix kubelets may
  NOT set, so workloads can trust it (plugin/pkg/admission/noderestriction/admission.go);
- what IsKubeletLabel admits (staging/src/k8s.io/kubelet/pkg/apis/well_known_labels.go, kubernetes
  v1.37.2; the kubelet's --node-labels check in cmd/kubelet/app/options/options.go uses it): the
  namespaces kubelet.kubernetes.io and node.kubernetes.io (and subdomains), and the keys
  topology.kubernetes.io/zone and /region, failure-domain.beta.kubernetes.io/zone and /region,
  node.kubernetes.io/instance-type and beta.kubernetes.io/instance-type;
- minus what the kubelet derives from the host itself, which a label could only falsify:
  kubernetes.io/os, kubernetes.io/arch, kubernetes.io/hostname, their beta.kubernetes.io twins
  and node.kubernetes.io/windows-build. kubernetes.io/os=linux on a Windows node would draw Linux
  pods to it.

Every other key (example.com/rack, team) is fine.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from pydantic import GetCoreSchemaHandler, GetJsonSchemaHandler
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import core_schema

from winnode.api.common import VALIDATIONS, Rule

# Patterns without single quotes: they are embedded in CEL string literals.
RESERVED = r"^([^/]*\.)?(kubernetes\.io|k8s\.io)/"
ALLOWED_NAMESPACES = (
    r"^([^/]*\.)?(node-restriction\.kubernetes\.io|node\.kubernetes\.io|kubelet\.kubernetes\.io)/"
)
ALLOWED_KEYS: tuple[str, ...] = (
    "topology.kubernetes.io/zone",
    "topology.kubernetes.io/region",
    "failure-domain.beta.kubernetes.io/zone",
    "failure-domain.beta.kubernetes.io/region",
    "node.kubernetes.io/instance-type",
    "beta.kubernetes.io/instance-type",
)
FROM_THE_HOST: tuple[str, ...] = (
    "kubernetes.io/os",
    "kubernetes.io/arch",
    "kubernetes.io/hostname",
    "beta.kubernetes.io/os",
    "beta.kubernetes.io/arch",
    "node.kubernetes.io/windows-build",
)

MESSAGE = (
    "label keys under kubernetes.io/ and k8s.io/ belong to Kubernetes; allowed of those are "
    "node-restriction.kubernetes.io/*, node.kubernetes.io/*, kubelet.kubernetes.io/*, "
    "topology.kubernetes.io/zone and /region and the instance-type keys. kubernetes.io/os, arch, "
    "hostname and node.kubernetes.io/windows-build come from the host itself; use a key of your own "
    "domain (example.com/rack) for anything else"
)


def _cel(s: str) -> str:
    return "'" + s.replace("\\", "\\\\").replace("'", "\\'") + "'"


def key_allowed(key: str) -> bool:
    if key in FROM_THE_HOST:
        return False
    if not re.match(RESERVED, key):
        return True
    return key in ALLOWED_KEYS or re.match(ALLOWED_NAMESPACES, key) is not None


def cel_ok(k: str = "k") -> str:
    keys = ", ".join(_cel(x) for x in ALLOWED_KEYS)
    host = ", ".join(_cel(x) for x in FROM_THE_HOST)
    return (
        f"!({k} in [{host}]) && (!{k}.matches({_cel(RESERVED)}) || {k} in [{keys}] || "
        f"{k}.matches({_cel(ALLOWED_NAMESPACES)}))"
    )


def rule() -> Rule:
    ok = cel_ok()
    return Rule(
        f"self.all(k, {ok})",
        MESSAGE,
        reason="FieldValueForbidden",
        message_expression=f"{_cel(chr(39))} + self.filter(k, !({ok}))[0] + {_cel(chr(39) + ': ' + MESSAGE)}",
    )


class ReservedLabelKeys:
    """Annotated metadata for a label map: refuses the keys above, in pydantic and (as CEL) in the apiserver."""

    def check(self, value: Mapping[str, Any]) -> Mapping[str, Any]:
        for key in value:
            if not key_allowed(key):
                raise ValueError(f"{key!r}: {MESSAGE}")
        return value

    def __get_pydantic_core_schema__(
        self, source: Any, handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        return core_schema.no_info_after_validator_function(self.check, handler(source))

    def __get_pydantic_json_schema__(
        self, schema: core_schema.CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        json_schema = handler(schema)
        json_schema.setdefault(VALIDATIONS, []).append(rule().to_schema())
        return json_schema
