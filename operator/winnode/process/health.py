"""/healthz, /readyz and /metrics of `winnode run`, on the metrics port.

The HTTP server runs in a thread of its own, so it can tell a stuck event loop from a busy one: the
loop records a tick every HEALTH_TICK and /healthz fails when the last tick is older than
HEALTH_LOOP_STALL.

- /healthz (liveness): the event loop ticks, and while the reconciler runs, each of kopf's watch
  streams is alive. kopf reconnects a silent stream by itself (settings.watching.inactivity_timeout,
  bookmarks included), so what stays broken is a watch stream whose task ended: that one fails
  /healthz after HEALTH_WATCH_GRACE and the kubelet restarts the pod. A standby (no reconciler) is
  healthy when its loop ticks: it must stay up, warm, to take over.
- /readyz: this process is the active reconciler (holds the Lease, or runs without leader election),
  kopf reports itself started, and its watches are up. A standby answers 503 "standby", so a
  Deployment shows 1/2 ready: exactly one replica does the work.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from winnode import timeouts

log = logging.getLogger(__name__)

# kopf names the task of each watch stream "watcher for <resource>@<namespace>".
WATCHER_TASK_PREFIX = "watcher for "


class OperatorHealth:
    """What /healthz and /readyz answer. Written by the event loop, read by the HTTP thread."""

    def __init__(self, *, leader_election: bool) -> None:
        self.leader_election = leader_election
        self._lock = threading.Lock()
        self._last_tick: float | None = None
        self._leading = not leader_election
        self._running = False  # kopf started (its ready flag) and not stopped yet
        self._watches: dict[str, float | None] = {}  # watcher task name -> when it went missing

    # --- written from the event loop ----------------------------------------------------------

    def set_leading(self, leading: bool) -> None:
        with self._lock:
            self._leading = leading

    def set_running(self, running: bool) -> None:
        with self._lock:
            self._running = running
            if not running:
                self._watches.clear()

    def observe(self, now: float, watcher_names: set[str]) -> None:
        """One tick: the loop is alive, and these watch streams have a running task."""
        with self._lock:
            self._last_tick = now
            if not self._running:
                return
            for name in watcher_names:
                self._watches[name] = None
            for name, missing_since in self._watches.items():
                if name not in watcher_names and missing_since is None:
                    self._watches[name] = now
                    log.warning("kopf's %s has ended", name)

    async def monitor(self) -> None:
        """Tick for ever (until cancelled)."""
        while True:
            names = {
                t.get_name()
                for t in asyncio.all_tasks()
                if t.get_name().startswith(WATCHER_TASK_PREFIX) and not t.done()
            }
            self.observe(time.monotonic(), names)
            await asyncio.sleep(timeouts.HEALTH_TICK)

    # --- read from the HTTP thread --------------------------------------------------------------

    def healthz(self, now: float | None = None) -> tuple[bool, str]:
        now = time.monotonic() if now is None else now
        with self._lock:
            if self._last_tick is None:
                return True, "starting"
            stalled = now - self._last_tick
            if stalled > timeouts.HEALTH_LOOP_STALL:
                return False, f"event loop stalled for {stalled:.0f}s"
            dead = sorted(
                name
                for name, since in self._watches.items()
                if since is not None and now - since > timeouts.HEALTH_WATCH_GRACE
            )
            if dead:
                return False, "watch stream ended: " + ", ".join(dead)
            role = "leader" if self._leading and self.leader_election else "standby"
            return True, role if self.leader_election else "ok"

    def readyz(self, now: float | None = None) -> tuple[bool, str]:
        alive, why = self.healthz(now)
        if not alive:
            return False, why
        with self._lock:
            if not self._leading:
                return False, "standby: another replica holds the leader Lease"
            if not self._running:
                return False, "the reconciler is starting"
            missing = sorted(name for name, since in self._watches.items() if since is not None)
            if not self._watches:
                return False, "no watch stream started yet"
            if missing:
                return False, "watch stream ended: " + ", ".join(missing)
            return True, "ok"


class HealthServer:
    """/metrics, /healthz and /readyz over plain HTTP in a daemon thread."""

    def __init__(
        self, registry: CollectorRegistry, health: OperatorHealth, port: int, address: str = "0.0.0.0"
    ):
        self.registry = registry
        self.health = health
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                route = self.path.split("?", 1)[0]
                if route == "/metrics":
                    self._answer(200, generate_latest(outer.registry), CONTENT_TYPE_LATEST)
                elif route in ("/healthz", "/livez"):
                    self._probe(*outer.health.healthz())
                elif route == "/readyz":
                    self._probe(*outer.health.readyz())
                else:
                    self._answer(404, b"not found: try /metrics, /healthz or /readyz\n", "text/plain")

            def _probe(self, ok: bool, why: str) -> None:
                self._answer(200 if ok else 503, (why + "\n").encode(), "text/plain; charset=utf-8")

            def _answer(self, status: int, body: bytes, content_type: str) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                return  # probes every few seconds would drown the log

        self._server = ThreadingHTTPServer((address, port), Handler)
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def start(self) -> HealthServer:
        self._thread = threading.Thread(target=self._server.serve_forever, name="winnode-health", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeouts.HEALTH_LOOP_STALL)
