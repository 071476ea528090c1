"""Local control plane without the real binaries: where they are looked for, how start-up failures
are reported, and that nothing started is left behind, also when the owner is killed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from winnode import timeouts
from winnode.testing import cluster
from winnode.testing.cluster import (
    BIN_ENV,
    BinariesMissingError,
    ControlPlaneError,
    Watchdog,
    binaries_dir,
    expected_binaries_dir,
    pid_alive,
    start_control_plane,
    stop_pids,
)

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "hack" / "build-control-plane.sh"


def wait_gone(pids: list[int], deadline: float = timeouts.CONTROL_PLANE_STOP_GRACE * 2) -> list[int]:
    end = time.monotonic() + deadline
    while (left := [p for p in pids if pid_alive(p)]) and time.monotonic() < end:
        time.sleep(timeouts.CONTROL_PLANE_READY.interval)
    return left


def sleeper() -> subprocess.Popen[bytes]:
    return subprocess.Popen(["sleep", "300"], start_new_session=True)


# --- where the binaries are ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "env",
    [
        {},
        {"WINNODE_CACHE": "/srv/winnode-cache"},
        {"XDG_CACHE_HOME": "/srv/xdg"},
        {"HOME": "/home/someone"},
    ],
    ids=["default", "WINNODE_CACHE", "XDG_CACHE_HOME", "HOME"],
)
def test_same_bin_dir_as_the_build_script(monkeypatch: pytest.MonkeyPatch, env: dict[str, str]) -> None:
    for name in ("WINNODE_CACHE", "XDG_CACHE_HOME", BIN_ENV):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    printed = subprocess.run(
        ["bash", str(SCRIPT), "--print"], capture_output=True, text=True, check=True, env=dict(os.environ)
    ).stdout.strip()
    assert expected_binaries_dir() == Path(printed)


def test_env_var_wins_and_missing_binaries_say_what_to_run(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv(BIN_ENV, str(tmp_path))
    assert expected_binaries_dir() == tmp_path
    (tmp_path / "etcd").write_text("#!/bin/sh\n")
    (tmp_path / "etcd").chmod(0o755)
    with pytest.raises(BinariesMissingError) as missing:
        binaries_dir()
    message = str(missing.value)
    assert "kube-apiserver, kube-controller-manager, kubectl" in message
    assert "etcd," not in message
    assert "make control-plane" in message
    with pytest.raises(BinariesMissingError):
        start_control_plane(tmp_path / "work", tmp_path)


# --- stopping --------------------------------------------------------------------------------------


def test_stop_pids_escalates_to_sigkill() -> None:
    stubborn = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(300)",
        ],
        start_new_session=True,
    )
    polite = sleeper()
    # Let the interpreter install its handler before it is asked to stop.
    time.sleep(0.5)
    children = {stubborn.pid: stubborn, polite.pid: polite}

    def wait(pid: int, timeout: float) -> None:
        children[pid].wait(timeout)

    started = time.monotonic()
    stop_pids([stubborn.pid, polite.pid], grace=0.5, wait=wait)
    assert time.monotonic() - started < 5
    assert stubborn.returncode == -signal.SIGKILL
    assert polite.returncode == -signal.SIGTERM
    # Stopping again is harmless.
    stop_pids([stubborn.pid, polite.pid], grace=0.5)


def test_watchdog_stops_the_groups_when_its_owner_is_killed(tmp_path: Path) -> None:
    owner = textwrap.dedent(
        """
        import os, signal, subprocess, sys
        from winnode.testing.cluster import Watchdog
        dog = Watchdog(grace=1.0)
        child = subprocess.Popen(["sleep", "300"], start_new_session=True)
        dog.watch(child.pid)
        print(dog.pid, child.pid, flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    run = subprocess.run([sys.executable, "-c", owner], capture_output=True, text=True, timeout=30)
    assert run.returncode == -signal.SIGKILL, run.stderr
    dog_pid, child_pid = (int(w) for w in run.stdout.split())
    assert not wait_gone([child_pid, dog_pid]), "the watched process outlived its killed owner"


def test_disarmed_watchdog_leaves_the_processes_alone() -> None:
    child = sleeper()
    try:
        dog = Watchdog(grace=1.0)
        dog.watch(child.pid)
        dog.disarm()
        dog.disarm()
        assert dog.popen.returncode == 0
        time.sleep(0.3)
        assert child.poll() is None
    finally:
        child.kill()
        child.wait()


# --- start-up failures -----------------------------------------------------------------------------

# Stand-ins for the binaries, written in Python: enough behaviour to drive start_control_plane().
FAKE_ETCD_SERVING = """
import http.server, sys, threading, time
url = next(a for a in sys.argv if a.startswith("--listen-client-urls=")).split("=", 1)[1]
port = int(url.rsplit(":", 1)[1])
class Health(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b'{"health":"true"}')
    def log_message(self, *args):
        pass
server = http.server.HTTPServer(("127.0.0.1", port), Health)
threading.Thread(target=server.serve_forever, daemon=True).start()
print("fake etcd serving", flush=True)
time.sleep(LIFETIME)
print("fake etcd: panic: out of disk", flush=True)
sys.exit(2)
"""


@pytest.fixture
def watchdogs(monkeypatch: pytest.MonkeyPatch) -> list[Watchdog]:
    """Every Watchdog start_control_plane() creates during the test."""
    created: list[Watchdog] = []

    class Recorded(Watchdog):
        def __init__(self, grace: float = timeouts.CONTROL_PLANE_STOP_GRACE) -> None:
            super().__init__(grace)
            created.append(self)

    monkeypatch.setattr(cluster, "Watchdog", Recorded)
    return created


def fake_bin(tmp_path: Path, scripts: dict[str, str]) -> Path:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name in cluster.BINARIES:
        body = scripts.get(name, "import time\ntime.sleep(300)\n")
        path = bin_dir / name
        path.write_text(f"#!{sys.executable}\n{body}")
        path.chmod(0o755)
    return bin_dir


def test_a_crashing_binary_is_reported_with_the_tail_of_its_log(
    tmp_path: Path, watchdogs: list[Watchdog]
) -> None:
    crash = "\n".join(["import sys", "for i in range(1, 61):", "    print(f'etcd line {i}')", "sys.exit(3)"])
    bin_dir = fake_bin(tmp_path, {"etcd": crash})
    with pytest.raises(ControlPlaneError) as failed:
        start_control_plane(tmp_path / "work", bin_dir)
    message = str(failed.value)
    assert "etcd exited with code 3 while waiting for etcd /health" in message
    assert "etcd line 60" in message
    assert "etcd line 21\n" in message
    assert "etcd line 20\n" not in message, "only the last 40 lines are quoted"
    # The logs the error points at are kept.
    assert (tmp_path / "work" / "logs" / "etcd.log").read_text().count("\n") == 60
    assert [w.popen.returncode for w in watchdogs] == [0], "the watchdog is disarmed and gone"


def test_an_earlier_process_dying_later_is_the_one_reported(
    tmp_path: Path, watchdogs: list[Watchdog]
) -> None:
    # etcd comes up, then dies while kube-apiserver (which never gets ready here) is awaited.
    bin_dir = fake_bin(tmp_path, {"etcd": FAKE_ETCD_SERVING.replace("LIFETIME", "1.5")})
    started = time.monotonic()
    with pytest.raises(ControlPlaneError) as failed:
        start_control_plane(tmp_path / "work", bin_dir)
    message = str(failed.value)
    assert "etcd exited with code 2 while waiting for kube-apiserver /readyz" in message
    assert "panic: out of disk" in message
    assert time.monotonic() - started < timeouts.CONTROL_PLANE_READY.deadline / 2
    # Everything started was stopped: the fake apiserver, the watchdog.
    assert not pids_naming(tmp_path / "work")
    assert [w.popen.returncode for w in watchdogs] == [0]


def pids_naming(workdir: Path) -> list[int]:
    """Live processes whose command line names `workdir` (every fake binary is given paths in it)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if str(workdir).encode() in cmdline and pid_alive(int(entry.name)):
                found.append(int(entry.name))
    return found
