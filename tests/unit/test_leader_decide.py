"""The pure part of leader election: who may write what into the Lease (client-go's rules)."""

from __future__ import annotations

import datetime

import pytest

from winnode.kube.leases import LeaseRecord, format_microtime, parse_microtime
from winnode.process.leader import Durations, decide, default_identity, released
from winnode.settings import Settings

T0 = datetime.datetime(2026, 1, 2, 3, 4, 5, 123456, tzinfo=datetime.UTC)
T1 = T0 + datetime.timedelta(seconds=20)


def held_by(holder: str, transitions: int = 3) -> LeaseRecord:
    return LeaseRecord(holder, 15, T0, T0, transitions, resource_version="42")


def test_no_lease_creates_one() -> None:
    record = decide(None, identity="a", now=T0, expired=False, lease_duration_s=15)
    assert record == LeaseRecord("a", 15, T0, T0, 0)


def test_holder_renews_keeping_acquire_time_and_transitions() -> None:
    record = decide(held_by("a"), identity="a", now=T1, expired=True, lease_duration_s=15)
    assert record is not None
    assert (record.holder, record.acquire_time, record.renew_time, record.transitions) == ("a", T0, T1, 3)
    assert record.resource_version == "42"  # the update is guarded by what we read


def test_someone_else_holding_a_live_lease_wins() -> None:
    assert decide(held_by("b"), identity="a", now=T1, expired=False, lease_duration_s=15) is None


@pytest.mark.parametrize("current", [held_by("b"), held_by("")], ids=["expired", "released"])
def test_expired_or_released_lease_is_taken_with_a_transition(current: LeaseRecord) -> None:
    expired = current.holder != ""
    record = decide(current, identity="a", now=T1, expired=expired, lease_duration_s=15)
    assert record is not None
    assert (record.holder, record.acquire_time, record.renew_time, record.transitions) == ("a", T1, T1, 4)


def test_release_clears_the_holder() -> None:
    record = released(held_by("a"), T1)
    assert record.holder == ""
    assert record.spec()["holderIdentity"] is None
    assert record.renew_time == T1


def test_microtime_round_trip() -> None:
    text = format_microtime(T0)
    assert text == "2026-01-02T03:04:05.123456Z"
    assert parse_microtime(text) == T0


def test_durations_must_nest() -> None:
    assert Durations.from_settings(Settings()) == Durations(15.0, 10.0, 2.0)
    with pytest.raises(ValueError, match="WINNODE_LEADER_RENEW_DEADLINE_S=20"):
        Durations.from_settings(Settings(leader_renew_deadline_s=20.0))


def test_identity_prefers_pod_name() -> None:
    assert default_identity({"POD_NAME": "winnode-7d9-abc"}) == "winnode-7d9-abc"
    assert "_" in default_identity({})


def test_leader_election_setting_parses_booleans() -> None:
    assert Settings.from_env({"WINNODE_LEADER_ELECTION": "true"}).leader_election is True
    assert Settings.from_env({"WINNODE_LEADER_ELECTION": "0"}).leader_election is False
    with pytest.raises(ValueError, match="WINNODE_LEADER_ELECTION"):
        Settings.from_env({"WINNODE_LEADER_ELECTION": "maybe"})


def test_run_refuses_durations_that_do_not_nest(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from winnode import cli

    monkeypatch.setenv("WINNODE_LEADER_RETRY_PERIOD_S", "30")
    assert cli.main(["run", "--leader-elect", "--metrics-port=0"]) == 2
    assert "retry period < renew deadline" in capsys.readouterr().err
