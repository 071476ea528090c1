"""Pure parts of upgrades: slot bookkeeping, settings, the copy_file host action, a kubelet that never
turns Ready."""

from __future__ import annotations

import datetime
import hashlib
import json
from pathlib import Path

import pytest

from winnode.host import actions as A
from winnode.kube.slots import HOLDERS_ANNOTATION, Holder, may_hold, parse_holders
from winnode.settings import Settings
from winnode.testing.hostmodel import ActionFailed, new_host_model
from winnode.testing.kubelet.config import KubeletConfig
from winnode.testing.kubelet.objects import node_identity, node_status


def test_may_hold_counts_holders_and_lets_a_holder_keep_its_slot() -> None:
    holders = {"a": Holder("u1", "upgrade", ""), "b": Holder("u2", "reboot", "")}
    assert may_hold(holders, "a", 2)
    assert not may_hold(holders, "c", 2)
    assert may_hold(holders, "c", 3)
    assert may_hold({}, "c", 1)


def test_parse_holders_reads_the_annotation_and_tolerates_garbage() -> None:
    raw = json.dumps({"n1": {"uid": "u", "reason": "upgrade to v1.37.2", "since": "t"}, "bad": 3})
    lease = {"metadata": {"annotations": {HOLDERS_ANNOTATION: raw}}}
    assert parse_holders(lease) == {"n1": Holder("u", "upgrade to v1.37.2", "t")}
    assert parse_holders({"metadata": {"annotations": {HOLDERS_ANNOTATION: "{not json"}}}) == {}
    assert parse_holders(None) == {}


def test_settings_reject_a_zero_budget_and_an_unknown_policy() -> None:
    assert Settings.from_env({"WINNODE_MAX_UNAVAILABLE": "3"}).max_unavailable == 3
    with pytest.raises(ValueError, match="WINNODE_MAX_UNAVAILABLE=0"):
        Settings.from_env({"WINNODE_MAX_UNAVAILABLE": "0"})
    with pytest.raises(ValueError, match="abort, wait"):
        Settings(upgrade_drain_blocked_policy="later")


async def test_copy_file_verifies_the_source_and_keeps_it() -> None:
    model = new_host_model("w1")
    model.write_bytes("C:\\k\\staging\\kubelet.exe", b"new")
    digest = hashlib.sha256(b"new").hexdigest()
    params = A.CopyFileParams(source="C:\\k\\staging\\kubelet.exe", path="C:\\k\\kubelet.exe", sha256=digest)
    first = await model.execute(params)
    assert isinstance(first, A.FileWriteResult)
    assert first.changed
    assert first.sha256 == digest
    again = await model.execute(params)
    assert isinstance(again, A.FileWriteResult)
    assert not again.changed
    entry = model.file("C:\\k\\staging\\kubelet.exe")
    assert entry is not None
    assert entry.content == b"new"
    with pytest.raises(ActionFailed, match="Checksum mismatch"):
        await model.execute(
            A.CopyFileParams(source="C:\\k\\staging\\kubelet.exe", path="C:\\x", sha256="0" * 64)
        )
    with pytest.raises(ActionFailed, match="does not exist"):
        await model.execute(A.CopyFileParams(source="C:\\nope.exe", path="C:\\x"))


def test_a_never_ready_kubelet_reports_ready_false_with_its_version(tmp_path: Path) -> None:
    config = KubeletConfig(
        node_name="w1",
        bootstrap_kubeconfig="",
        kubelet_version="v1.37.2",
        os_build=20348,
        os_image="Windows Server 2022 Datacenter",
        addresses=["127.0.0.2"],
        state_dir=tmp_path,
        never_ready=True,
    )
    status = node_status(config, node_identity("w1"), now=datetime.datetime.now(datetime.UTC))
    ready = next(c for c in status["conditions"] if c["type"] == "Ready")
    assert ready["status"] == "False"
    assert ready["reason"] == "KubeletNotReady"
    assert status["nodeInfo"]["kubeletVersion"] == "v1.37.2"
