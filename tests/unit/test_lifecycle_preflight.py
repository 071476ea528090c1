"""Preflight: every host problem is found, named, and says what to run on the host."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from winnode.host.actions import ContainerdFacts, FactsResult
from winnode.lifecycle.preflight import GIB, PreflightLimits, preflight, summarize
from winnode.testing.containerd import MICROSOFT

NOW = datetime(2026, 5, 1, 12, 0, 0, tzinfo=UTC)


def facts(**overrides: Any) -> FactsResult:
    base: dict[str, Any] = {
        "hostname": "WIN-01",
        "os_build": 20348,
        "os_ubr": 2700,
        "os_caption": "Microsoft Windows Server 2022 Datacenter",
        "edition": "ServerDatacenter",
        "features": {"Containers": True},
        "containerd": ContainerdFacts(
            installed=True, running=True, version="2.1.4", config_dump=MICROSOFT.dump()
        ),
        "system_drive_free_bytes": 50 * GIB,
        "addresses": ["10.1.2.3"],
        "reboot_pending": False,
        "boot_id": "2026-05-01T00:00:00Z",
        "utc_now": NOW.isoformat().replace("+00:00", "Z"),
        "powershell_version": "5.1.20348.2700",
    }
    base.update(overrides)
    return FactsResult(**base)


@pytest.mark.parametrize("build", [17763, 20348, 26100])
def test_supported_hosts_pass(build: int) -> None:
    assert preflight(facts(os_build=build), now=NOW) == []
    assert summarize([]) == ("Passed", "the host meets every prerequisite")


@pytest.mark.parametrize(
    ("overrides", "reason", "advice"),
    [
        (
            {"os_build": 14393},
            "UnsupportedOSBuild",
            "20348 (Windows Server 2022), 26100 (Windows Server 2025)",
        ),
        ({"features": {}}, "ContainersFeatureMissing", "Install-WindowsFeature -Name Containers"),
        ({"features": {"Containers": False}}, "ContainersFeatureMissing", "Restart-Computer"),
        (
            {"containerd": ContainerdFacts(installed=False, running=False)},
            "ContainerdMissing",
            "--register-service",
        ),
        (
            {"containerd": ContainerdFacts(installed=True, running=False, version="2.1.4")},
            "ContainerdNotRunning",
            "Start-Service containerd",
        ),
        ({"system_drive_free_bytes": 3 * GIB}, "InsufficientDisk", "3.0 GiB free"),
        ({"reboot_pending": True}, "RebootPending", "Restart-Computer"),
        ({"utc_now": "yesterday-ish"}, "ClockUnreadable", "unreadable time"),
    ],
)
def test_each_problem(overrides: dict[str, Any], reason: str, advice: str) -> None:
    problems = preflight(facts(**overrides), now=NOW)
    assert [p.reason for p in problems] == [reason]
    assert advice in problems[0].message
    assert "WIN-01" in problems[0].message
    assert summarize(problems) == (reason, problems[0].message)


@pytest.mark.parametrize(("skew", "word"), [(300, "ahead of"), (-300, "behind")])
def test_clock_skew(skew: int, word: str) -> None:
    host_time = (NOW + timedelta(seconds=skew)).isoformat()
    problems = preflight(facts(utc_now=host_time), now=NOW)
    assert [p.reason for p in problems] == ["ClockSkew"]
    assert f"300s {word}" in problems[0].message
    assert "w32tm /resync" in problems[0].message
    # Within the limit it passes; the limit is a parameter.
    assert preflight(facts(utc_now=host_time), now=NOW, limits=PreflightLimits(max_clock_skew_s=600)) == []


def test_many_problems_are_all_reported_in_order() -> None:
    problems = preflight(
        facts(os_build=9600, features={}, reboot_pending=True, system_drive_free_bytes=0), now=NOW
    )
    assert [p.reason for p in problems] == [
        "UnsupportedOSBuild",
        "ContainersFeatureMissing",
        "InsufficientDisk",
        "RebootPending",
    ]
    reason, message = summarize(problems)
    assert reason == "MultipleProblems"
    assert all(p.message in message for p in problems)


def test_windows_server_2019_is_configured_with_a_deprecation_warning() -> None:
    from winnode.lifecycle.preflight import os_deprecation

    old = facts(os_build=17763)
    assert preflight(old, now=NOW) == []
    warning = os_deprecation(old)
    assert warning is not None
    assert warning.reason == "OSDeprecated"
    assert "Windows Server 2019" in warning.message
    assert "Windows Server 2022 or Windows Server 2025" in warning.message
    assert os_deprecation(facts(os_build=20348)) is None
    assert os_deprecation(facts(os_build=26100)) is None


def test_the_newest_known_version_is_the_pinned_one() -> None:
    from pathlib import Path

    from winnode.lifecycle.versions import NEWEST_KNOWN

    pinned = Path(__file__).resolve().parents[2] / "hack" / "versions.env"
    values = dict(
        line.split("=", 1)
        for line in pinned.read_text().splitlines()
        if "=" in line and not line.startswith("#")
    )
    assert values["KUBE_VERSION"].strip() == NEWEST_KNOWN
