"""What the benches measure of the processes they run, in one place.

- `OperatorProcess`: `winnode run` as its own process, as deployed, given exactly the Settings an
  in-process operator would have had (the child inherits no WINNODE_* variable), ready once it serves
  /metrics;
- `Cpu` snapshots: CPU seconds of the operator process, of this process (the world around it:
  artifact mirror, emulated hosts and kubelets) and of the control plane's processes, taken together
  so a phase's cost is `after - before` for each of them apart;
- `cpu_of_pid_s`, `cpu_self_s`, `rss_mib`: the /proc and getrusage readings behind them;
- `log_dir`: where operator logs go (WINNODE_BENCH_LOG_DIR keeps them after the run);
- `WINNODE_BENCH_MEMRAY=<dir>`: the operator runs under memray (not a dependency: pip install memray)
  and leaves <dir>/<log name>.bin, aggregated to what was live at its peak; read it with
  `python -m memray summary` or `memray flamegraph`. `WINNODE_BENCH_MEMRAY_OBJECTS=1` also traces
  Python objects one by one (--trace-python-allocators).

Not a benchmark itself (`python -m tests.bench` runs only *_bench.py).
"""

from __future__ import annotations

import contextlib
import os
import resource
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from winnode.settings import Settings
from winnode.testing.cluster import ControlPlane, free_ports
from winnode.testing.processes import settings_environment, start_winnode_run, stop_process

CLK_TCK = os.sysconf("SC_CLK_TCK")
METRICS_DEADLINE_S = 60.0
METRICS_POLL_S = 0.2


def cpu_self_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def cpu_of_pid_s(pid: int) -> float:
    """utime + stime of a live process, from /proc/<pid>/stat; 0.0 if it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = stat.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def rss_mib(pid: int | str = "self") -> tuple[float, float]:
    """(current VmRSS, peak VmHWM) of a process (this one by default) in MiB; zeros if it is gone."""
    values = {"VmRSS": 0.0, "VmHWM": 0.0}
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0.0, 0.0
    for line in text.splitlines():
        key, _, rest = line.partition(":")
        if key in values:
            values[key] = int(rest.split()[0]) / 1024
    return round(values["VmRSS"], 1), round(values["VmHWM"], 1)


@dataclass(frozen=True)
class Cpu:
    """CPU seconds used so far (or over a phase, as a difference) by each party apart."""

    operator_s: float
    world_s: float
    control_plane_s: float

    def __sub__(self, other: Cpu) -> Cpu:
        return Cpu(
            self.operator_s - other.operator_s,
            self.world_s - other.world_s,
            self.control_plane_s - other.control_plane_s,
        )

    def as_dict(self, digits: int = 2) -> dict[str, float]:
        return {
            "operator_cpu_s": round(self.operator_s, digits),
            "world_cpu_s": round(self.world_s, digits),
            "control_plane_cpu_s": round(self.control_plane_s, digits),
        }


def wait_metrics(port: int, proc: subprocess.Popen[bytes], deadline_s: float = METRICS_DEADLINE_S) -> None:
    """Until `winnode run` answers /metrics on `port`; fails at once if it exits."""
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"winnode run exited with {proc.returncode}")
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2).read()
            return
        except OSError:
            time.sleep(METRICS_POLL_S)
    raise TimeoutError("winnode run did not serve /metrics")


class OperatorProcess:
    """`winnode run` against `cp` with `settings` (World.settings: what World would have run in-thread)."""

    def __init__(self, cp: ControlPlane, settings: Settings, log: Path) -> None:
        self.cp = cp
        self.settings = settings
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0
        # The control plane's processes are fixed once it runs; read once so snapshots stay cheap.
        self._cp_pids = list(cp.component_pids.values())

    @property
    def pid(self) -> int:
        assert self.proc is not None, "not started"
        return self.proc.pid

    def start(self) -> OperatorProcess:
        (self.port,) = free_ports(1)
        self.proc = start_winnode_run(
            self.cp.kubeconfig,
            self.log,
            metrics_port=self.port,
            env=settings_environment(self.settings),
            entry=self._memray_entry(),
        )
        try:
            wait_metrics(self.port, self.proc)
        except BaseException:
            self.stop()
            raise
        return self

    def _memray_entry(self) -> list[str] | None:
        where = os.environ.get("WINNODE_BENCH_MEMRAY", "").strip()
        if not where:
            return None
        Path(where).mkdir(parents=True, exist_ok=True)
        out = Path(where) / f"{self.log.stem}.bin"
        # --aggregate keeps what was live at the high-water mark, small enough for an hour-long run.
        memray = [sys.executable, "-m", "memray", "run", "--aggregate", "--force", "-q", "-o", str(out)]
        if os.environ.get("WINNODE_BENCH_MEMRAY_OBJECTS", "").strip():
            # Each Python object on its own, not the 1 MiB arenas pymalloc takes them from: slower,
            # but it says who holds the memory rather than whose allocation opened an arena.
            memray.append("--trace-python-allocators")
        # `winnode run` leaves with os._exit, which would skip memray writing its file: here it exits
        # through SystemExit instead, so memray's own exit hook runs.
        main = "import os, runpy, sys; os._exit = sys.exit; runpy.run_module('winnode', run_name='__main__')"
        return [*memray, "-c", main]

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc, signal.SIGTERM)
            self.proc = None

    def cpu(self) -> Cpu:
        return Cpu(
            operator_s=cpu_of_pid_s(self.pid),
            world_s=cpu_self_s(),
            control_plane_s=sum(cpu_of_pid_s(p) for p in self._cp_pids),
        )

    def rss_mib(self) -> tuple[float, float]:
        """(current, peak) resident memory of the operator process in MiB."""
        return rss_mib(self.pid)

    def __enter__(self) -> OperatorProcess:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


@contextlib.contextmanager
def log_dir(prefix: str) -> Iterator[Path]:
    """WINNODE_BENCH_LOG_DIR when set (kept after the run), else a temporary directory."""
    keep = os.environ.get("WINNODE_BENCH_LOG_DIR")
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        yield Path(keep)
        return
    with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
        yield Path(tmp)
