"""Preflight: is this host fit to become a node? A pure function of the facts the host reported.

Each problem says what is wrong and exactly what the admin runs on the host to fix it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from winnode.host.actions import FactsResult
from winnode.network.containerd import ContainerdConfigError, layout_from_config_dump

SUPPORTED_BUILDS: dict[int, str] = {
    20348: "Windows Server 2022",
    26100: "Windows Server 2025",
}
# Past its mainstream support and no longer tested by upstream Kubernetes for the minors winnode
# installs (sig-windows moved its test matrix to 2022 and 2025): configured, with condition
# OSSupported=False (OSDeprecated) and a Warning Event.
DEPRECATED_BUILDS: dict[int, str] = {17763: "Windows Server 2019"}
GIB = 1024**3


@dataclass(frozen=True)
class PreflightLimits:
    min_free_disk_bytes: int = 10 * GIB
    # TLS bootstrap and token expiry need clocks that roughly agree.
    max_clock_skew_s: float = 120.0


@dataclass(frozen=True)
class Problem:
    reason: str  # CamelCase
    message: str


def _parse_utc(value: str) -> datetime | None:
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def preflight(facts: FactsResult, *, now: datetime, limits: PreflightLimits | None = None) -> list[Problem]:
    """Every reason the host cannot be configured now, in the order an admin would fix them."""
    limits = limits or PreflightLimits()
    host = facts.hostname
    problems: list[Problem] = []
    if facts.os_build not in SUPPORTED_BUILDS and facts.os_build not in DEPRECATED_BUILDS:
        supported = ", ".join(f"{b} ({n})" for b, n in SUPPORTED_BUILDS.items())
        problems.append(
            Problem(
                "UnsupportedOSBuild",
                f"host {host} runs Windows build {facts.os_build} ({facts.os_caption}); Kubernetes nodes "
                f"need one of {supported}. Reinstall the host with a supported Windows Server release.",
            )
        )
    if not facts.features.get("Containers", False):
        problems.append(
            Problem(
                "ContainersFeatureMissing",
                f"the Containers feature is not installed on {host}; run "
                "`Install-WindowsFeature -Name Containers` in an elevated PowerShell, then "
                "`Restart-Computer`.",
            )
        )
    if not facts.containerd.installed:
        problems.append(
            Problem(
                "ContainerdMissing",
                f"containerd is not installed on {host}; install it as a service (e.g. "
                "`containerd.exe --register-service` from the containerd release for Windows), "
                "then `Start-Service containerd`.",
            )
        )
    elif not facts.containerd.running:
        problems.append(
            Problem(
                "ContainerdNotRunning",
                f"the containerd service on {host} is not running; run `Start-Service containerd` "
                "and `Set-Service containerd -StartupType Automatic`, and check its event log if it "
                "stops again.",
            )
        )
    elif facts.containerd.config_dump is None:
        problems.append(
            Problem(
                "ContainerdConfigUnreadable",
                f"`containerd config dump` failed on {host}, so winnode cannot tell where containerd "
                "looks for CNI configuration and plugins; run it on the host to see the error, fix "
                "config.toml and restart containerd.",
            )
        )
    else:
        try:
            layout_from_config_dump(facts.containerd.config_dump, host)
        except ContainerdConfigError as exc:
            problems.append(Problem(exc.reason, str(exc) + "."))
    if facts.system_drive_free_bytes < limits.min_free_disk_bytes:
        problems.append(
            Problem(
                "InsufficientDisk",
                f"the system drive of {host} has {facts.system_drive_free_bytes / GIB:.1f} GiB free; "
                f"at least {limits.min_free_disk_bytes / GIB:.0f} GiB are needed for binaries and "
                "container images. Free space (e.g. `dism /online /cleanup-image /startcomponentcleanup`) "
                "or grow the volume.",
            )
        )
    host_now = _parse_utc(facts.utc_now)
    if host_now is None:
        problems.append(
            Problem("ClockUnreadable", f"host {host} reported an unreadable time {facts.utc_now!r}")
        )
    else:
        skew = (host_now - now).total_seconds()
        if abs(skew) > limits.max_clock_skew_s:
            direction = "ahead of" if skew > 0 else "behind"
            problems.append(
                Problem(
                    "ClockSkew",
                    f"the clock of {host} is {abs(skew):.0f}s {direction} the operator's (limit "
                    f"{limits.max_clock_skew_s:.0f}s); certificates and tokens would be refused. "
                    "Sync it: `w32tm /config /syncfromflags:domhier /update` (or "
                    "`/manualpeerlist:<ntp server>`), then `w32tm /resync /force`.",
                )
            )
    if facts.reboot_pending:
        problems.append(
            Problem(
                "RebootPending",
                f"host {host} waits for a reboot to finish installing updates or features; "
                "run `Restart-Computer` (the node is configured once it is back).",
            )
        )
    return problems


def os_deprecation(facts: FactsResult) -> Problem | None:
    """A warning for a Windows release winnode still configures but that is past support."""
    name = DEPRECATED_BUILDS.get(facts.os_build)
    if name is None:
        return None
    supported = " or ".join(SUPPORTED_BUILDS.values())
    return Problem(
        "OSDeprecated",
        f"host {facts.hostname} runs {name} (build {facts.os_build}), which is past support for the "
        f"Kubernetes versions winnode installs; it is configured, but plan to move it to {supported}",
    )


def summarize(problems: list[Problem]) -> tuple[str, str]:
    """Condition reason and message for a list of problems (the first reason; all messages)."""
    if not problems:
        return "Passed", "the host meets every prerequisite"
    reason = problems[0].reason if len(problems) == 1 else "MultipleProblems"
    return reason, "; ".join(p.message for p in problems)
