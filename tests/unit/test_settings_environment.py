"""A child `winnode run` rebuilds exactly the Settings its parent meant (testing/processes.py)."""

from __future__ import annotations

from winnode.settings import Settings
from winnode.testing.processes import settings_environment


def test_round_trip_of_every_field() -> None:
    settings = Settings(
        namespace="wn-bench",
        max_unavailable=20,
        drift_interval_s=0.5,
        credentials_namespaces="a,b",
        leader_election=True,
        metrics_port=0,
    )
    assert Settings.from_env(settings_environment(settings)) == settings


def test_defaults_are_passed_too() -> None:
    env = settings_environment(Settings())
    assert env["WINNODE_MAX_UNAVAILABLE"] == "1"
    assert env["WINNODE_LEADER_ELECTION"] == "false"
    assert env["WINNODE_APISERVER_URL"] == ""
    assert all(k.startswith("WINNODE_") for k in env)
