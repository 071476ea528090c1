"""spec.labels may not set Kubernetes' own label keys (api/labels.py), and pattern refusals read well
(api/patterns.py)."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from winnode.api import WindowsNodeSpec
from winnode.api.labels import key_allowed
from winnode.api.patterns import PatternWithoutMessage, readable
from winnode.api.windowsnode import WINDOWS_NODE
from winnode.deploy.crdgen import openapi_schema

SPEC: dict[str, Any] = {
    "address": "10.1.2.3",
    "network": "overlay",
    "winrm": {"credentialsSecretRef": {"namespace": "default", "name": "win"}},
}


@pytest.mark.parametrize(
    "key",
    [
        "kubernetes.io/os",
        "kubernetes.io/arch",
        "kubernetes.io/hostname",
        "beta.kubernetes.io/os",
        "node.kubernetes.io/windows-build",
        "kubernetes.io/role",
        "node-role.kubernetes.io/worker",
        "k8s.io/anything",
        "sub.k8s.io/anything",
    ],
)
def test_kubernetes_keys_are_refused(key: str) -> None:
    assert not key_allowed(key)
    with pytest.raises(ValidationError, match="belong to Kubernetes"):
        WindowsNodeSpec.model_validate({**SPEC, "labels": {key: "x"}})


@pytest.mark.parametrize(
    "key",
    [
        "node-restriction.kubernetes.io/pool",
        "team.node-restriction.kubernetes.io/pool",
        "node.kubernetes.io/exclude-from-external-load-balancers",
        "kubelet.kubernetes.io/x",
        "topology.kubernetes.io/zone",
        "topology.kubernetes.io/region",
        "failure-domain.beta.kubernetes.io/zone",
        "node.kubernetes.io/instance-type",
        "beta.kubernetes.io/instance-type",
        "example.com/rack",
        "team",
        "kubernetes.io.example.com/x",
    ],
)
def test_keys_for_admins_and_kubelets_and_others_pass(key: str) -> None:
    assert key_allowed(key)
    WindowsNodeSpec.model_validate({**SPEC, "labels": {key: "x"}})


def test_spec_schema_has_no_raw_pattern_left() -> None:
    text = repr(openapi_schema(WINDOWS_NODE)["properties"]["spec"])
    assert "'pattern'" not in text
    assert "must be a Kubernetes 1.x release written v1.MINOR.PATCH" in text


def test_a_pattern_without_a_message_is_refused() -> None:
    with pytest.raises(PatternWithoutMessage, match=r"add one to winnode/api/patterns\.py"):
        readable({"type": "string", "pattern": "^x$"}, {})
