"""The approver's reads: a watch event judges only its own CSR, and a decided CSR's request is parsed
once however often the approval passes list it again."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from tests.unit.test_csr_policy import NODE, TOKEN_ID, make_csr, serving

from winnode.csr import approver as approver_module
from winnode.csr.approver import Approver
from winnode.csr.parse import parse_csr
from winnode.csr.policy import Decision, ExpectedHost
from winnode.lifecycle.context import Deps
from winnode.metrics import OperatorMetrics
from winnode.settings import Settings

HOST = ExpectedHost(
    windows_node="wn-01",
    uid="uid-wn-01",
    addresses=frozenset({"127.0.0.2"}),
    hostnames=frozenset({"win-01"}),
)
APPROVED = [{"type": "Approved", "status": "True", "reason": "Test"}]


def named(csr: dict[str, Any], name: str) -> dict[str, Any]:
    csr["metadata"] = {"name": name, "uid": f"uid-{name}", "resourceVersion": "1"}
    return csr


class FakeApi:
    """The CSR list, the Node read and the writes the approver makes, recorded."""

    def __init__(self, csrs: list[dict[str, Any]]) -> None:
        self.csrs = csrs
        self.calls: list[tuple[str, str]] = []

    async def list_pages(self, path: str, query: Any = None) -> AsyncIterator[list[dict[str, Any]]]:
        self.calls.append(("LIST", path))
        yield self.csrs

    async def request(self, method: str, path: str, **kw: Any) -> Any:
        self.calls.append((method, path))
        if "/nodes/" in path:
            return None  # not registered yet: a client CSR is what it asks for
        return {}

    def writes(self) -> list[tuple[str, str]]:
        return [c for c in self.calls if c[0] in ("PUT", "POST")]


@pytest.fixture
def expected_token(monkeypatch: pytest.MonkeyPatch) -> None:
    async def token_id(kube: Any, node_name: str) -> str | None:
        return TOKEN_ID if node_name == NODE else None

    monkeypatch.setattr(approver_module, "find_bootstrap_token_id", token_id)
    monkeypatch.setattr(approver_module, "_decided_claims", approver_module._DecidedClaims(keep=16))


async def test_an_event_judges_its_own_csr_without_listing_them_all(expected_token: None) -> None:
    others = [named(make_csr(cn=f"system:node:win-{i:02d}"), f"csr-other-{i}") for i in range(2, 6)]
    mine = named(make_csr(), "csr-mine")
    api = FakeApi([*others, mine])
    approver = Approver(api, {NODE: HOST}, OperatorMetrics())  # type: ignore[arg-type]

    verdict = await approver.approve_csr(mine)

    assert verdict is not None
    assert verdict.decision is Decision.APPROVE
    assert not [c for c in api.calls if c[0] == "LIST"]
    approval, event = api.writes()
    assert approval == ("PUT", "/apis/certificates.k8s.io/v1/certificatesigningrequests/csr-mine/approval")
    assert event[1].endswith("/events")
    # Not ours: a CSR for a node winnode does not configure, and one already decided.
    assert await approver.approve_csr(others[0]) is None
    decided = named(make_csr(conditions=APPROVED), "csr-done")
    assert await approver.approve_csr(decided) is None
    assert len(api.writes()) == 2


async def test_a_decided_csr_is_parsed_once_across_passes(
    expected_token: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    decided = [named(serving(conditions=APPROVED), f"csr-done-{i}") for i in range(3)]
    pending = named(make_csr(), "csr-pending")
    api = FakeApi([*decided, pending])
    approver = Approver(api, {NODE: HOST}, OperatorMetrics(), sweep_spacing_s=0.0)  # type: ignore[arg-type]
    parsed: list[str] = []
    real = parse_csr

    def counting(obj: dict[str, Any]) -> Any:
        parsed.append(obj["metadata"]["name"])
        return real(obj)

    monkeypatch.setattr(approver_module, "parse_csr", counting)

    first = dict(await approver.approve_for([NODE]))
    pending["status"] = {"conditions": APPROVED}  # as the API would now list it
    second = dict(await approver.approve_for([NODE]))
    third = dict(await approver.approve_for([NODE]))

    assert first["csr-pending"].decision is Decision.APPROVE
    assert {first[f"csr-done-{i}"].decision for i in range(3)} == {Decision.ALREADY_DONE}
    assert {v.decision for v in second.values()} == {Decision.ALREADY_DONE}
    assert set(second) == set(first)
    assert third == second
    # Each request once: the three decided ones at the first pass, the approved one at the second,
    # none at the third.
    assert sorted(parsed) == sorted([*(f"csr-done-{i}" for i in range(3)), "csr-pending", "csr-pending"])


async def test_waiting_nodes_share_one_listing_per_sweep_spacing(expected_token: None) -> None:
    """Every node waiting to join polls each second; the listing behind the poll is a fallback for
    the CSR watch, so the whole operator lists CSRs at most once per spacing."""
    api = FakeApi([named(make_csr(), "csr-a")])
    approver = Approver(api, {NODE: HOST, "win-02": HOST}, OperatorMetrics(), sweep_spacing_s=60.0)  # type: ignore[arg-type]

    first = await approver.approve_for([NODE])
    assert await approver.approve_for(["win-02"]) == []
    assert await approver.approve_for([NODE]) == []

    assert [name for name, _ in first] == ["csr-a"]
    assert len([c for c in api.calls if c[0] == "LIST"]) == 1


def test_the_operator_has_one_approver() -> None:
    """The sweep spacing holds for the whole process only if every wait asks the same approver."""
    deps = Deps(
        kube=FakeApi([]),  # type: ignore[arg-type]
        settings=Settings(),
        host_factory=None,  # type: ignore[arg-type]
        cluster=None,  # type: ignore[arg-type]
        metrics=OperatorMetrics(),
    )
    assert deps.approver is deps.approver
