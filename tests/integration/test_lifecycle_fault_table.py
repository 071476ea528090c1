"""Host faults not covered by test_lifecycle_faults, end to end: a stalled host, a reboot in the middle
of a step, scripts exiting non-zero, a full disk and a host refusing connections. Each must show a
named condition reason and a Warning Event, must not hammer the host while it lasts (the retry backs
off), and must converge to Ready once it is gone. Plus: nothing secret leaks into logs, Events or the
WindowsNode.

All faulted nodes start together (one World, one apply), so their observation windows overlap and
the module stays well under two minutes.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import urllib3.util.connection

from winnode import timeouts
from winnode.host import client as host_client
from winnode.lifecycle import kubelet_config as kc
from winnode.settings import Settings
from winnode.testing.cluster import ControlPlane
from winnode.testing.demo import World
from winnode.testing.emulator import EmulatedHost, HostSpec

TIMEOUT = 90.0
# A stalled command is given up after this long (Settings.winrm_operation_timeout_s); short, so the
# timeout shows within seconds instead of the production ten minutes.
OPERATION_TIMEOUT_S = 4.0
WINDOW_S = 20.0
PEM_PRIVATE_KEY = re.compile(r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----")


def max_attempts(window_s: float, backoff: timeouts.Poll, attempt_s: float = 0.0) -> int:
    """Most configure attempts that can start within `window_s` when the first one starts at its
    beginning: each failed attempt takes at least `attempt_s` and is followed by the backoff
    (interval, doubling, capped at deadline)."""
    attempts, t, retry = 0, 0.0, 0
    while t <= window_s:
        attempts += 1
        t += attempt_s + min(backoff.deadline, backoff.interval * 2**retry)
        retry += 1
    return attempts


@dataclass
class Case:
    name: str
    condition: str
    reason: str
    backoff: timeouts.Poll
    # How long one failing attempt takes at the least (a stalled one runs into the timeout).
    attempt_s: float
    # WinRM requests one failing attempt may make at most: facts plus the commands of the steps up to
    # the failing one, and the kubelet query after the failure; each command is a handful of requests
    # (Create, Command, Send, Receive, Signal, Delete). Measured: about 6 per attempt for a stalled or
    # non-zero facts, 11 for a reboot in ensure_directories, 30 for a full disk at fetch_file; the caps
    # leave some room. Without a backoff a new attempt would start as soon as the previous one ended:
    # a stalled one every OPERATION_TIMEOUT_S (6 in the window, over the bound of 3 x 8), the others
    # within a second, dozens per window.
    requests_per_attempt: int
    # A refused connection never becomes a request the host sees: such a case counts the connection
    # attempts refused instead (one per attempt: facts fails at its first connect).
    counts_refused_connections: bool = False
    # What the condition message must say for an admin to know what to fix.
    message_says: str = ""


CASES = {
    # RECONCILE_BACKOFF (2 s doubling): a transient fault, retried without an admin.
    "stall": Case("ft-stall", "Reachable", "HostTimeout", timeouts.RECONCILE_BACKOFF, OPERATION_TIMEOUT_S, 8),
    "reboot": Case("ft-reboot", "Reachable", "ConnectionLost", timeouts.RECONCILE_BACKOFF, 0.0, 20),
    "exit-code": Case("ft-exit", "PrerequisitesMet", "FactsFailed", timeouts.RECONCILE_BACKOFF, 0.0, 10),
    # ADMIN_ACTION_BACKOFF (5 s doubling): someone has to free space on the host.
    "disk-full": Case("ft-disk", "BinariesInstalled", "DiskFull", timeouts.ADMIN_ACTION_BACKOFF, 0.0, 40),
    "refused": Case(
        "ft-refused",
        "Reachable",
        "ConnectionRefused",
        timeouts.RECONCILE_BACKOFF,
        0.0,
        2,
        counts_refused_connections=True,
        message_says="nothing listens on port",
    ),
}


class RefusedConnections:
    """When the operator's connection attempts to some addresses were refused.

    A refusing host has no listener, so it cannot count what it refuses; the refusal surfaces in the
    client's connect(), which is where this counts it (urllib3 opens every WinRM connection through
    urllib3.util.connection.create_connection).
    """

    def __init__(self) -> None:
        self.at: dict[str, list[float]] = {}
        self._lock = threading.Lock()
        self._connect = urllib3.util.connection.create_connection

    def create_connection(self, address: tuple[str, int], *args: Any, **kwargs: Any) -> Any:
        try:
            return self._connect(address, *args, **kwargs)
        except ConnectionRefusedError:
            with self._lock:
                self.at.setdefault(address[0], []).append(time.time())
            raise

    def between(self, address: str, start: float, end: float) -> int:
        with self._lock:
            return sum(1 for t in self.at.get(address, []) if start <= t < end)


@dataclass
class Faulted:
    world: World
    hosts: dict[str, EmulatedHost]
    failed_at: dict[str, float]  # wall-clock time the failure was first seen in lastError
    conditions: dict[str, dict[str, Any] | None]  # the case's condition while the fault was active
    window: dict[str, int]  # WinRM requests within WINDOW_S from the first failure
    reached: dict[str, int]  # requests that reached a host refusing connections, in the same window


@pytest.fixture(scope="module")
def world(control_plane: ControlPlane) -> Iterator[World]:
    # The process-wide WinRM transport keeps the settings it was created with: start a fresh one
    # with the short operation timeout, and put back whatever was there afterwards.
    saved = host_client._shared
    host_client._shared = None
    settings = Settings(metrics_port=0, drift_interval_s=2.0, winrm_operation_timeout_s=OPERATION_TIMEOUT_S)
    try:
        with World(control_plane, settings=settings, namespace="wn-fault-table") as w:
            w.apply(w.network(name="fault-table", clusterCIDR="10.236.0.0/16"))
            yield w
    finally:
        host_client._shared = saved


def last_error(world: World, name: str) -> str:
    obj = world.get("windowsnode", name) or {}
    return str((obj.get("status") or {}).get("lastError") or "")


@pytest.fixture(scope="module")
def faulted(world: World) -> Iterator[Faulted]:
    """All faults at once: wait until each node failed, watch the hosts for WINDOW_S, then clear
    every fault (short, so the backoff has not grown long by the time the nodes may converge)."""
    refused = RefusedConnections()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(urllib3.util.connection, "create_connection", refused.create_connection)
        yield observe_faults(world, refused)


def observe_faults(world: World, refused: RefusedConnections) -> Faulted:
    hosts = {key: world.add_host(HostSpec.server2022(hostname=c.name)) for key, c in CASES.items()}
    hosts["stall"].faults.stall = True
    hosts["exit-code"].faults.exit_code = 7  # every command exits 7 until cleared
    hosts["disk-full"].faults.disk_full = True
    hosts["refused"].faults.refuse_connections = True
    rebooting = threading.Event()
    rebooting.set()
    reboot = hosts["reboot"]

    def keep_rebooting(name: str) -> None:
        # reboot_mid_step fires once; re-arm it so every attempt reboots the host until cleared.
        if name == "reboot_mid_step" and rebooting.is_set() and not reboot.faults.reboot_mid_step:
            reboot.faults.reboot_mid_step = True

    reboot.faults.subscribe(keep_rebooting)
    reboot.faults.reboot_mid_step = True
    world.apply(*(world.windows_node(hosts[k], c.name, network="fault-table") for k, c in CASES.items()))

    failed_at: dict[str, float] = {}
    conditions: dict[str, dict[str, Any] | None] = {}

    def all_failed() -> bool:
        for key, c in CASES.items():
            if key not in failed_at and last_error(world, c.name).startswith(f"{c.reason}:"):
                failed_at[key] = time.time()
                conditions[key] = world.condition(c.name, c.condition)
        return len(failed_at) == len(CASES)

    with contextlib.suppress(TimeoutError):  # a case that never failed says so, with its status
        world.wait_for("every faulted node fails with its reason", all_failed, 60.0, interval=0.2)
    end = max(failed_at.values(), default=time.time()) + WINDOW_S
    time.sleep(max(0.0, end - time.time()))
    window = {
        key: refused.between(hosts[key].address, start, start + WINDOW_S)
        if CASES[key].counts_refused_connections
        else sum(1 for r in list(hosts[key].requests) if start <= r.at < start + WINDOW_S)
        for key, start in failed_at.items()
    }
    # What a refusing host saw anyway (nothing, or the refusal is not what the case tests).
    reached = {
        key: sum(1 for r in list(hosts[key].requests) if start <= r.at < start + WINDOW_S)
        for key, start in failed_at.items()
        if CASES[key].counts_refused_connections
    }
    rebooting.clear()
    for h in hosts.values():
        h.faults.clear()
    return Faulted(world, hosts, failed_at, conditions, window, reached)


def check_case(faulted: Faulted, key: str) -> None:
    case = CASES[key]
    world = faulted.world
    assert key in faulted.failed_at, f"{case.name}: lastError never {case.reason}; status: " + json.dumps(
        world.must_get("windowsnode", case.name).get("status")
    )
    events = world.events(case.name, case.reason)
    assert events, f"no {case.reason} Event for {case.name}"
    assert all(e["type"] == "Warning" for e in events)

    attempts = max_attempts(WINDOW_S, case.backoff, case.attempt_s)
    bound = attempts * case.requests_per_attempt
    seen = faulted.window[key]
    what = "refused WinRM connections" if case.counts_refused_connections else "WinRM requests"
    assert seen <= bound, f"{seen} {what} in {WINDOW_S:.0f}s (at most {bound} with backoff)"
    if case.counts_refused_connections:
        # Counted where the refusal surfaces: the operator did try (the bound is not met by silence).
        assert seen >= 1, f"no refused connection to {case.name} counted in {WINDOW_S:.0f}s"
        assert faulted.reached[key] == 0, (
            f"{faulted.reached[key]} requests reached {case.name} while refusing"
        )

    world.wait_phase(case.name, "Ready", TIMEOUT)
    condition = faulted.conditions[key]
    assert condition is not None, f"{case.name}: no {case.condition} condition while failing"
    assert (condition["status"], condition["reason"]) == ("False", case.reason), condition
    assert case.message_says in condition["message"], condition


@pytest.mark.parametrize(
    "key",
    [
        "stall",
        "reboot",
        "exit-code",
        "disk-full",
        "refused",
    ],
)
def test_fault_is_named_backs_off_and_converges(faulted: Faulted, key: str) -> None:
    check_case(faulted, key)


# --- secrets -------------------------------------------------------------------------------------


class Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []
        self.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record) + repr(record.__dict__))


@pytest.fixture
def log_lines() -> Iterator[list[str]]:
    handler = Collect()
    loggers = [logging.getLogger(n) for n in ("", "winnode", "kopf")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.DEBUG)
    logging.getLogger().addHandler(handler)
    try:
        yield handler.lines
    finally:
        logging.getLogger().removeHandler(handler)
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


def test_no_secret_in_logs_events_or_status(world: World, log_lines: list[str]) -> None:
    host = world.add_host(HostSpec.server2022(hostname="ft-secret"))
    world.apply(world.windows_node(host, "ft-secret", network="fault-table"))
    world.wait_phase("ft-secret", "Ready", TIMEOUT)

    # The bootstrap kubeconfig left the host once the kubelet held its certificate; the kubelet
    # started with it.
    assert host.call(lambda m: m.file(kc.BOOTSTRAP_KUBECONFIG)) is None
    token = str(host.kubelet.config.bootstrap_kubeconfig).split("token: ")[1].split()[0]
    token_secret = token.split(".")[1]
    assert len(token_secret) == 16
    obj = world.must_get("windowsnode", "ft-secret")
    places = {
        "operator log": "\n".join(line for line in log_lines if not line.startswith("winnode.testing")),
        "events": world.cp.kubectl("get", "events", "-A", "-o", "json").stdout,
        "WindowsNode": json.dumps({"status": obj.get("status"), "metadata": obj["metadata"]}),
    }
    assert log_lines, "the handler saw the operator's log"
    for where, text in places.items():
        assert host.password not in text, f"the WinRM password in the {where}"
        assert token_secret not in text, f"the bootstrap token secret in the {where}"
        assert not PEM_PRIVATE_KEY.search(text), f"a PEM private key in the {where}"
