"""Reading a stored WindowsNode the model refuses: the problems by field, and what is safe to read on."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from pydantic import ValidationError

from winnode.api import WindowsNode
from winnode.lifecycle import unreadable

OBJ: dict[str, Any] = {
    "apiVersion": "winnode.io/v1alpha1",
    "kind": "WindowsNode",
    "metadata": {"name": "win-01", "uid": "u1", "generation": 2},
    "spec": {
        "address": "192.0.2.10",
        "network": "net",
        "winrm": {"credentialsSecretRef": {"namespace": "winnode-system", "name": "winrm"}},
        "artifacts": {"baseURL": "https://mirror\u00a0.example/k8s"},
        "labels": {"example.com/rack": "r1"},
    },
    "status": {"phase": "Ready", "nodeName": "win-01"},
}


def errors(obj: dict[str, Any]) -> ValidationError:
    with pytest.raises(ValidationError) as caught:
        WindowsNode.model_validate(obj)
    return caught.value


def test_problems_name_the_wire_field_without_the_value() -> None:
    found = unreadable.problems(errors(OBJ))
    assert len(found) == 1
    assert found[0].startswith("spec.artifacts.baseURL: ")
    assert "\u00a0" not in found[0]
    text = unreadable.message("WindowsNode", "win-01", found)
    assert "kubectl edit windowsnode win-01" in text


def test_salvage_drops_the_refused_field_and_keeps_the_rest() -> None:
    node = unreadable.salvage(WindowsNode, OBJ)
    assert node is not None
    assert node.spec.artifacts is None, "artifacts without its required baseURL goes as a whole"
    assert node.spec.address == "192.0.2.10"
    assert node.spec.labels == {"example.com/rack": "r1"}
    assert node.status.phase == "Ready"
    assert OBJ["spec"]["artifacts"]["baseURL"].startswith("https://mirror"), "the input is not changed"


@pytest.mark.parametrize(
    ("field", "value"),
    [("address", "not an address!"), ("nodeName", "Not_A_Name"), ("network", "UPPER")],
)
def test_salvage_never_guesses_which_host_node_or_network(field: str, value: str) -> None:
    obj = copy.deepcopy(OBJ)
    obj["spec"]["artifacts"] = {"baseURL": "https://mirror.example/k8s"}
    obj["spec"][field] = value
    errors(obj)
    assert unreadable.salvage(WindowsNode, obj) is None
