"""`winnode run` as a real process, for the tests that need to kill it (SIGKILL in the middle of a
step, a leader hand-over, running as a ServiceAccount) and for benches.

The child gets the parent's environment without KUBECONFIG and without any WINNODE_* variable: what a
test wants set, it passes in `env`, so a developer's shell cannot change what a test exercises.
`settings_environment(settings)` is that `env` for a whole Settings, so a process can run with exactly
what an in-process operator would have been given.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import fields
from pathlib import Path

from winnode.settings import Settings

STOP_TIMEOUT_S = 30.0
KILL_TIMEOUT_S = 10.0


def child_environment(env: Mapping[str, str] | None = None) -> dict[str, str]:
    out = {k: v for k, v in os.environ.items() if k != "KUBECONFIG" and not k.startswith("WINNODE_")}
    out.update(env or {})
    return out


def settings_environment(settings: Settings) -> dict[str, str]:
    """WINNODE_* variables from which `Settings.from_env()` rebuilds `settings`, every field included:
    a default that changes later must not make the child differ from what the caller built."""
    return {"WINNODE_" + f.name.upper(): _env_value(getattr(settings, f.name)) for f in fields(Settings)}


def _env_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def start_winnode_run(
    kubeconfig: Path | str,
    log: Path,
    *,
    metrics_port: int,
    args: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
    entry: Sequence[str] | None = None,
) -> subprocess.Popen[bytes]:
    """`winnode run --kubeconfig=... --metrics-port=... *args` in a session of its own, output appended
    to `log`. `entry` replaces `python -m winnode` (a test's own wrapper around the same CLI)."""
    command = [
        *(entry or (sys.executable, "-m", "winnode")),
        "run",
        f"--kubeconfig={kubeconfig}",
        f"--metrics-port={metrics_port}",
        *args,
    ]
    with log.open("ab") as out:
        return subprocess.Popen(
            command,
            env=child_environment(env),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def stop_process(
    proc: subprocess.Popen[bytes], sig: signal.Signals = signal.SIGTERM, timeout: float = STOP_TIMEOUT_S
) -> int:
    """Send `sig` (if still running) and wait up to `timeout`; killed after that. Its exit code."""
    if proc.poll() is None:
        proc.send_signal(sig)
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait(KILL_TIMEOUT_S)
