"""WindowsNode admission: one host, one WindowsNode (admission/windowsnodes.py)."""

from __future__ import annotations

from typing import Any

import pytest

from winnode.admission import config
from winnode.admission.windowsnodes import WEBHOOK_NAME, host_key, judge


def wn(name: str, address: str, node_name: str | None = None, deleting: bool = False) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name}
    if deleting:
        meta["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    spec: dict[str, Any] = {"address": address}
    if node_name:
        spec["nodeName"] = node_name
    return {"metadata": meta, "spec": spec}


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("win-01.corp.example", "WIN-01.corp.example."),
        ("10.1.2.3", " 10.1.2.3 "),
        ("2001:db8::7", "2001:0db8:0:0::0007"),
        ("2001:db8::7", "[2001:db8::7]"),
    ],
)
def test_spellings_of_one_host_share_a_key(a: str, b: str) -> None:
    assert host_key(a) == host_key(b)


def test_distinct_hosts_have_distinct_keys() -> None:
    assert host_key("10.1.2.3") != host_key("10.1.2.30")
    assert host_key("win-01.corp.example") != host_key("win-01")


def test_second_windows_node_for_a_host_is_refused_naming_the_first() -> None:
    allowed, message = judge(wn("b", "10.1.2.3"), [wn("a", "10.1.2.3")])
    assert not allowed
    assert message == (
        "WindowsNode b: spec.address 10.1.2.3 is already the host of WindowsNode a; one host can be one "
        "node only. Use another address, or delete WindowsNode a first"
    )


def test_an_owner_being_deleted_is_named_as_such() -> None:
    allowed, message = judge(wn("b", "10.1.2.3"), [wn("a", "10.1.2.3", deleting=True)])
    assert not allowed
    assert "(it is being deleted: create this one once it is gone)" in message


def test_the_object_itself_and_other_hosts_pass() -> None:
    assert judge(wn("a", "10.1.2.3"), [wn("a", "10.1.2.3"), wn("c", "10.1.2.4")]) == (True, "")


def test_one_node_name_for_two_hosts_is_refused() -> None:
    allowed, message = judge(wn("b", "10.1.2.4", node_name="a"), [wn("a", "10.1.2.3")])
    assert not allowed
    assert "Node name a is already used by WindowsNode a; set spec.nodeName to a name of its own" in message


def test_the_webhook_entry_sees_creates_and_address_changes_only() -> None:
    entries = {w["name"]: w for w in config.webhook_configuration()["webhooks"]}
    entry = entries[WEBHOOK_NAME]
    assert entry["rules"][0]["resources"] == ["windowsnodes"]
    assert entry["rules"][0]["operations"] == ["CREATE", "UPDATE"]
    assert entry["failurePolicy"] == "Fail"
    (condition,) = entry["matchConditions"]
    assert (
        "object.?spec.?address.orValue('') != oldObject.?spec.?address.orValue('')" in condition["expression"]
    )
