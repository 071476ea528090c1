"""`winnode dev-cluster up|down|env`: a local control plane that outlives the command.

    eval "$(winnode dev-cluster up)"     # start (fresh cluster) and point kubectl at it
    winnode dev-cluster env              # print the export line again
    winnode dev-cluster down             # stop what `up` started

State (PKI, etcd data, logs, admin kubeconfig, the pids in state.json) lives in --dir.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

STATE_FILE = "state.json"
ACTIONS = ("up", "down", "env")


def default_dir() -> Path:
    from winnode.testing.cluster import cache_root

    return cache_root() / "dev-cluster"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "action", choices=ACTIONS, help="up: start detached; down: stop; env: print KUBECONFIG"
    )
    parser.add_argument(
        "--dir",
        type=Path,
        default=None,
        help="state directory (default: $WINNODE_CACHE or ~/.cache/winnode, then dev-cluster/)",
    )


def export_line(kubeconfig: Path) -> str:
    return f"export KUBECONFIG={shlex.quote(str(kubeconfig))}"


def _read_state(state_dir: Path) -> dict[str, Any] | None:
    try:
        state: dict[str, Any] = json.loads((state_dir / STATE_FILE).read_text())
    except (OSError, ValueError):
        return None
    return state


def _our_live_pids(state: dict[str, Any]) -> list[int]:
    """Recorded pids still running one of our binaries with our workdir on its command line; a pid
    the kernel has since handed to an unrelated process is never signalled."""
    from winnode.testing.cluster import pid_alive, pid_cmdline

    workdir = str(state["workdir"])
    pids: list[int] = []
    for pid in state.get("pids", []):
        if isinstance(pid, int) and pid_alive(pid) and workdir in pid_cmdline(pid):
            pids.append(pid)
    return pids


def _ensure_binaries() -> Path:
    from winnode.testing.cluster import binaries_dir, expected_binaries_dir, missing_binaries, repo_root

    wanted = expected_binaries_dir()
    root = repo_root()
    if missing_binaries(wanted) and root is not None and "WINNODE_CONTROL_PLANE_BIN" not in os.environ:
        print(
            f"dev-cluster: building the control plane into {wanted} (cold: several minutes)", file=sys.stderr
        )
        # The script logs to stderr and prints only the bin directory on stdout.
        subprocess.run(
            ["bash", str(root / "hack" / "build-control-plane.sh")], check=True, stdout=subprocess.DEVNULL
        )
    return binaries_dir()


def _up(state_dir: Path) -> int:
    from winnode.testing.cluster import start_control_plane

    state = _read_state(state_dir)
    if state is not None and (live := _our_live_pids(state)):
        if len(live) == len(state.get("pids", [])):
            print(f"dev-cluster: already running at {state['server']} (pids {live})", file=sys.stderr)
            print(export_line(Path(state["kubeconfig"])))
            return 0
        print(f"dev-cluster: stopping the remains of an earlier cluster (pids {live})", file=sys.stderr)
        _down(state_dir)

    bin_dir = _ensure_binaries()
    state_dir.mkdir(parents=True, exist_ok=True)
    (state_dir / STATE_FILE).unlink(missing_ok=True)
    cp = start_control_plane(state_dir, bin_dir)
    cp.detach()
    state = {
        "server": cp.server,
        "kubeconfig": str(cp.kubeconfig),
        "workdir": str(cp.workdir),
        "bin_dir": str(cp.bin_dir),
        # The watchdog is gone once detached; what is left to stop are the three binaries, in start
        # order (down stops them in reverse).
        "pids": list(cp.component_pids.values()),
        "components": cp.component_pids,
    }
    (state_dir / STATE_FILE).write_text(json.dumps(state, indent=2) + "\n")
    print(
        f"dev-cluster: up at {cp.server} in {cp.startup_seconds:.1f}s; logs in {cp.workdir / 'logs'}; "
        f"kubectl: {cp.bin_dir / 'kubectl'}",
        file=sys.stderr,
    )
    print(export_line(cp.kubeconfig))
    return 0


def _down(state_dir: Path) -> int:
    from winnode import timeouts
    from winnode.testing.cluster import pid_alive, stop_pids

    state = _read_state(state_dir)
    if state is None:
        print(f"dev-cluster: nothing recorded in {state_dir}; nothing to stop", file=sys.stderr)
        return 0
    live = _our_live_pids(state)
    # Started kcm, apiserver, etcd in that order reversed: stop the clients of etcd first.
    ordered = [pid for pid in reversed(state.get("pids", [])) if pid in live]
    stop_pids(ordered, timeouts.CONTROL_PLANE_STOP_GRACE)
    left = [pid for pid in ordered if pid_alive(pid)]
    if left:
        print(f"dev-cluster: processes {left} did not stop; kill them by hand", file=sys.stderr)
        return 1
    (state_dir / STATE_FILE).unlink(missing_ok=True)
    print(f"dev-cluster: stopped {len(ordered)} process(es)", file=sys.stderr)
    return 0


def _env(state_dir: Path) -> int:
    state = _read_state(state_dir)
    if state is None or not _our_live_pids(state):
        print(
            f"dev-cluster: not running (state dir {state_dir}); run `winnode dev-cluster up`", file=sys.stderr
        )
        return 1
    print(export_line(Path(state["kubeconfig"])))
    return 0


def run(args: argparse.Namespace) -> int:
    from winnode.testing.cluster import ControlPlaneError

    state_dir: Path = (args.dir or default_dir()).expanduser().resolve()
    try:
        if args.action == "up":
            return _up(state_dir)
        if args.action == "down":
            return _down(state_dir)
        return _env(state_dir)
    except (ControlPlaneError, subprocess.CalledProcessError) as exc:
        print(f"dev-cluster {args.action}: {exc}", file=sys.stderr)
        return 1
