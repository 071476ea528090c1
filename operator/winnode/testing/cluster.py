"""A real local control plane: etcd + kube-apiserver + kube-controller-manager on loopback.

Used by the integration tests (the `control_plane` fixture), by `winnode dev-cluster` and by
`make demo`. The binaries come from hack/build-control-plane.sh (`make control-plane`). RBAC,
bootstrap tokens, NodeRestriction and CSR signing are on, as on a kubeadm cluster, so what passes
here passes on a real one.

Every start is a fresh cluster: new PKI, empty etcd. Nothing outlives its owner unless asked to
(detach()): stop(), atexit and a watchdog process for deaths atexit never sees (SIGKILL, SIGTERM).
"""

from __future__ import annotations

import atexit
import base64
import contextlib
import http.client
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import yaml

from winnode import timeouts
from winnode.testing import pki

if TYPE_CHECKING:
    import kubernetes.client

BIN_ENV = "WINNODE_CONTROL_PLANE_BIN"
SERVICE_CLUSTER_IP_RANGE = "10.0.0.0/24"
SERVICE_ACCOUNT_ISSUER = "https://kubernetes.default.svc.cluster.local"
LOOPBACK = "127.0.0.1"
BINARIES = ("etcd", "kube-apiserver", "kube-controller-manager", "kubectl")
LOG_TAIL_LINES = 40
PORT_RACE_ATTEMPTS = 3
# kcm's default client rate limit (20 qps, burst 30) throttles its own start-up: with
# --use-service-account-credentials every controller first creates its ServiceAccount and requests a
# token, and the quota and garbage collectors walk discovery. Unthrottled, kcm is working in under a
# second instead of five; the controllers themselves behave the same.
KCM_API_QPS = 1000
KCM_API_BURST = 2000

# Enough to read the tail of a log that a crashing process filled with a stack dump.
_LOG_TAIL_BYTES = 64 * 1024


class ControlPlaneError(RuntimeError):
    """The local control plane could not be found, started or reached."""


class BinariesMissingError(ControlPlaneError):
    pass


class KubectlError(subprocess.CalledProcessError):
    """A failed kubectl call; unlike CalledProcessError its message carries kubectl's stderr."""

    def __str__(self) -> str:
        stderr = (self.stderr or "").strip()
        return f"{super().__str__()}: {stderr}" if stderr else super().__str__()


# --- locating the binaries ---------------------------------------------------------------------


# Audit events (JSON lines in ControlPlane.audit_log_path) for writes to pods and their subresources,
# at Metadata level: enough to read admission audit annotations, small enough to keep on.
AUDIT_POLICY = """apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived]
rules:
- level: Metadata
  verbs: [create, update, patch]
  resources:
  - group: ""
    resources: [pods, pods/ephemeralcontainers, pods/binding]
- level: None
"""


def repo_root() -> Path | None:
    """The checkout this package runs from (operator/winnode/testing/ -> ../../..), if any."""
    root = Path(__file__).resolve().parents[3]
    return root if (root / "hack" / "versions.env").is_file() else None


def cache_root() -> Path:
    """Same rule as hack/build-control-plane.sh, so both agree on where things live."""
    if env := os.environ.get("WINNODE_CACHE"):
        return Path(env)
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg) / "winnode"


def read_versions(path: Path) -> dict[str, str]:
    versions: dict[str, str] = {}
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.partition("=")
        versions[key.strip()] = value.strip().strip("\"'")
    return versions


def expected_binaries_dir() -> Path:
    """Where the binaries should be, whether or not they have been built yet."""
    if env := os.environ.get(BIN_ENV):
        return Path(env)
    root = repo_root()
    if root is None:
        raise BinariesMissingError(
            f"cannot locate the control-plane binaries: this is not a winnode checkout; set {BIN_ENV} "
            f"to a directory holding {', '.join(BINARIES)}"
        )
    v = read_versions(root / "hack" / "versions.env")
    try:
        name = f"kube-{v['KUBE_VERSION']}-etcd-{v['ETCD_VERSION']}"
    except KeyError as exc:
        raise ControlPlaneError(f"{root / 'hack' / 'versions.env'} does not set {exc.args[0]}") from None
    return cache_root() / "control-plane" / name / "bin"


def missing_binaries(bin_dir: Path) -> list[str]:
    return [b for b in BINARIES if not os.access(bin_dir / b, os.X_OK)]


def binaries_dir() -> Path:
    """The directory holding etcd, kube-apiserver, kube-controller-manager and kubectl."""
    bin_dir = expected_binaries_dir()
    if missing := missing_binaries(bin_dir):
        raise BinariesMissingError(
            f"control-plane binaries missing in {bin_dir}: {', '.join(missing)}; "
            f"run `make control-plane` (or set {BIN_ENV})"
        )
    return bin_dir


# --- processes ---------------------------------------------------------------------------------


def pid_alive(pid: int) -> bool:
    """True while `pid` runs. A zombie counts as gone: it runs nothing, and when its parent is a
    PID 1 that never reaps (common in containers) it would otherwise look alive forever."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    # The state letter follows the command name, which is parenthesised and may contain spaces.
    return stat.rpartition(")")[2].split()[:1] != ["Z"]


def pid_cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def terminate_group(pid: int, sig: signal.Signals) -> None:
    """Signal the process group led by `pid` (each of our processes leads its own)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


def stop_pids(pids: Sequence[int], grace: float, wait: Callable[[int, float], None] | None = None) -> None:
    """Stop each process group in order: SIGTERM, then SIGKILL if it is still alive after `grace`.

    One at a time, because order matters: an apiserver whose etcd is already gone hangs in its
    graceful shutdown instead of exiting in a second.
    `wait(pid, timeout)` reaps a child of this process; without it (the processes belong to an
    earlier `winnode dev-cluster up`) liveness is polled instead.
    """

    def wait_gone(pid: int, timeout: float) -> None:
        if wait is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                wait(pid, timeout)
            return
        deadline = time.monotonic() + timeout
        while pid_alive(pid) and time.monotonic() < deadline:
            time.sleep(timeouts.CONTROL_PLANE_READY.interval)

    for pid in pids:
        terminate_group(pid, signal.SIGTERM)
        wait_gone(pid, grace)
        if pid_alive(pid):
            terminate_group(pid, signal.SIGKILL)
            wait_gone(pid, grace)


# The watchdog runs as `python -c` with the standard library only, so it starts whatever the caller's
# sys.path is. It reads pids (one a line) from its stdin, a pipe only the owner holds open. When the
# owner dies in any way (SIGKILL, a CI timeout's SIGTERM, os._exit), the kernel closes the pipe and
# the watchdog stops the recorded process groups in reverse order. "disarm" ends it without
# touching anything: sent by stop() (which does the stopping itself) and by detach().
_WATCHDOG_SOURCE = """
import os, signal, sys, time
signal.signal(signal.SIGINT, signal.SIG_IGN)
signal.signal(signal.SIGHUP, signal.SIG_IGN)
grace, interval = float(sys.argv[1]), float(sys.argv[2])
pids = []
for line in sys.stdin:
    word = line.strip()
    if word == "disarm":
        sys.exit(0)
    if word.isdigit():
        pids.append(int(word))

def alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rpartition(")")[2].split()[:1] != ["Z"]
    except OSError:
        return True

for pid in reversed(pids):
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(pid, sig)
        except (ProcessLookupError, PermissionError):
            break
        deadline = time.monotonic() + grace
        while alive(pid) and time.monotonic() < deadline:
            time.sleep(interval)
        if not alive(pid):
            break
"""


class Watchdog:
    """A helper process that stops the watched process groups if this process dies without stop().

    atexit covers a normal exit and an unhandled exception; this covers SIGKILL and SIGTERM too.
    """

    def __init__(self, grace: float = timeouts.CONTROL_PLANE_STOP_GRACE) -> None:
        read_end, self._write_end = os.pipe()
        try:
            self.popen = subprocess.Popen(
                [
                    sys.executable,
                    "-c",
                    _WATCHDOG_SOURCE,
                    str(grace),
                    str(timeouts.CONTROL_PLANE_READY.interval),
                ],
                stdin=read_end,
                stdout=subprocess.DEVNULL,
                # Its own session: a Ctrl-C or a SIGTERM sent to the test runner's process group must
                # not take the watchdog down with the runner it is there to outlive.
                start_new_session=True,
            )
        except BaseException:
            os.close(self._write_end)
            raise
        finally:
            os.close(read_end)
        self._closed = False

    @property
    def pid(self) -> int:
        return self.popen.pid

    def _send(self, line: str) -> None:
        if self._closed:
            return
        with contextlib.suppress(BrokenPipeError):
            os.write(self._write_end, f"{line}\n".encode())

    def watch(self, pid: int) -> None:
        """Stop `pid`'s process group should this process die; every watched pid must lead its group."""
        self._send(str(pid))

    def disarm(self, timeout: float = timeouts.CONTROL_PLANE_STOP_GRACE) -> None:
        """End the watchdog without it signalling anything. Idempotent."""
        if not self._closed:
            self._send("disarm")
            os.close(self._write_end)
            self._closed = True
        try:
            self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait(timeout)


@dataclass
class _Process:
    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        return log_tail(self.log_path, lines)


def log_tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    try:
        with path.open("rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - _LOG_TAIL_BYTES))
            data = f.read()
    except OSError as exc:
        return f"(no log: {exc})"
    return "\n".join(data.decode(errors="replace").splitlines()[-lines:])


def free_ports(count: int) -> list[int]:
    """Ports the kernel just handed out on loopback; all held open together so they differ."""
    socks: list[socket.socket] = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind((LOOPBACK, 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


# --- kubeconfig --------------------------------------------------------------------------------


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def write_kubeconfig(
    path: Path, server: str, ca_pem: bytes, user: str, client: pki.KeyPair | None = None, token: str = ""
) -> Path:
    """A self-contained kubeconfig (certificates embedded), readable by its owner only. The user
    authenticates with the client certificate `client`, or else with the bearer `token`."""
    if client is not None:
        credentials = {
            "client-certificate-data": _b64(client.cert_pem),
            "client-key-data": _b64(client.key_pem),
        }
    elif token:
        credentials = {"token": token}
    else:
        raise ValueError(f"kubeconfig {path}: give a client certificate or a token for {user!r}")
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {"name": "winnode-dev", "cluster": {"server": server, "certificate-authority-data": _b64(ca_pem)}}
        ],
        "users": [
            {"name": user, "user": credentials},
        ],
        "contexts": [{"name": f"{user}@winnode-dev", "context": {"cluster": "winnode-dev", "user": user}}],
        "current-context": f"{user}@winnode-dev",
        "preferences": {},
    }
    pki.write_private(path, yaml.safe_dump(config, sort_keys=False).encode())
    return path


# --- the control plane -------------------------------------------------------------------------


class ControlPlane:
    """A running etcd + kube-apiserver + kube-controller-manager. Build it with start_control_plane()."""

    workdir: Path
    bin_dir: Path
    server: str
    kubeconfig: Path
    ca_cert_path: Path
    ca_key_path: Path
    # Every process started, in start order: the watchdog, etcd, kube-apiserver,
    # kube-controller-manager. Each leads its own process group.
    pids: list[int]
    # Seconds from start_control_plane() to a healthy kcm.
    startup_seconds: float

    def __init__(self, workdir: Path, bin_dir: Path, *, owns_workdir: bool) -> None:
        self.workdir = workdir
        self.bin_dir = bin_dir
        self.server = ""
        self.kubeconfig = workdir / "kubeconfig"
        self.audit_policy_path = workdir / "audit-policy.yaml"
        self.audit_log_path = workdir / "audit.log"
        self.ca_cert_path = workdir / "pki" / "ca.crt"
        self.ca_key_path = workdir / "pki" / "ca.key"
        self.pids = []
        self.startup_seconds = 0.0
        self._owns_workdir = owns_workdir
        self._processes: list[_Process] = []
        self._watchdog: Watchdog | None = None
        self._ca: pki.KeyPair | None = None
        self._lock = threading.Lock()
        self._stopped = False
        self._atexit_registered = False

    def __repr__(self) -> str:
        return f"ControlPlane(server={self.server!r}, workdir={str(self.workdir)!r}, pids={self.pids})"

    @property
    def component_pids(self) -> dict[str, int]:
        """Pid of each control-plane binary by name ("etcd", "kube-apiserver", "kube-controller-manager")."""
        return {p.name: p.popen.pid for p in self._processes}

    @property
    def watchdog_pid(self) -> int | None:
        return self._watchdog.pid if self._watchdog else None

    # -- clients ---------------------------------------------------------------------------------

    def kubectl(
        self,
        *args: str,
        input: str | None = None,
        check: bool = True,
        kubeconfig: Path | None = None,
        timeout: float = timeouts.KUBECTL,
    ) -> subprocess.CompletedProcess[str]:
        """Run the pinned kubectl against this control plane (admin unless `kubeconfig` is given)."""
        cmd = [str(self.bin_dir / "kubectl"), f"--kubeconfig={kubeconfig or self.kubeconfig}", *args]
        env = {k: v for k, v in os.environ.items() if k != "KUBECONFIG"}
        result = subprocess.run(cmd, input=input, capture_output=True, text=True, timeout=timeout, env=env)
        if check and result.returncode != 0:
            raise KubectlError(result.returncode, cmd, result.stdout, result.stderr)
        return result

    def _ca_pair(self) -> pki.KeyPair:
        if self._ca is None:
            self._ca = pki.load_ca(self.ca_cert_path, self.ca_key_path)
        return self._ca

    def user_kubeconfig(self, user: str, groups: Sequence[str] = ()) -> Path:
        """A client-certificate kubeconfig authenticating as `user` in `groups` (no RBAC granted)."""
        ca = self._ca_pair()
        client = pki.issue_client_cert(ca, user, groups)
        users = self.workdir / "users"
        users.mkdir(exist_ok=True)
        safe = re.sub(r"[^A-Za-z0-9_.-]", "_", user)
        path = users / f"{safe}-{client.cert.serial_number:x}.kubeconfig"
        return write_kubeconfig(path, self.server, ca.cert_pem, user, client)

    def token_kubeconfig(self, token: str, name: str = "token") -> Path:
        """A kubeconfig presenting the bearer `token` (a bootstrap token "id.secret", a ServiceAccount
        token); `name` only names the file and the kubeconfig user."""
        users = self.workdir / "users"
        users.mkdir(exist_ok=True)
        safe = re.sub(r"[^A-Za-z0-9_.-]", "_", name)
        # The file name must not reveal the token; a random suffix keeps calls apart.
        path = users / f"{safe}-token-{os.urandom(4).hex()}.kubeconfig"
        return write_kubeconfig(path, self.server, self._ca_pair().cert_pem, name, token=token)

    def api_client(self, kubeconfig: Path | None = None) -> kubernetes.client.ApiClient:
        """A `kubernetes` ApiClient logged in as admin (system:masters), or as whoever `kubeconfig`
        (e.g. from user_kubeconfig()) names. Close it when done."""
        import kubernetes.config

        client: kubernetes.client.ApiClient = kubernetes.config.new_client_from_config(  # type: ignore[no-untyped-call]
            config_file=str(kubeconfig or self.kubeconfig)
        )
        return client

    # -- lifecycle -------------------------------------------------------------------------------

    def _spawn(self, name: str, args: Sequence[str], env: dict[str, str] | None = None) -> _Process:
        log_path = self.workdir / "logs" / f"{name}.log"
        # Truncated: each start is a fresh cluster, and a failure quotes the tail of this file.
        with log_path.open("wb") as log:
            popen = subprocess.Popen(
                [str(self.bin_dir / name), *args],
                cwd=self.workdir,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                # Own session and process group: signals to the test runner's group (Ctrl-C) do not
                # race our orderly stop, and a detached dev cluster outlives its terminal.
                start_new_session=True,
                env={**os.environ, **(env or {})},
            )
        if self._watchdog is not None:
            self._watchdog.watch(popen.pid)
        proc = _Process(name, popen, log_path)
        self._processes.append(proc)
        self.pids.append(popen.pid)
        return proc

    def _start_watchdog(self) -> None:
        self._watchdog = Watchdog()
        self.pids.append(self._watchdog.pid)

    def _wait(self, proc: _Process, what: str, probe: Callable[[], bool]) -> None:
        """Bounded poll of `probe` while every process started so far keeps running."""
        poll = timeouts.CONTROL_PLANE_READY
        deadline = time.monotonic() + poll.deadline
        last_error = ""
        while True:
            # Any of them: an etcd that dies while the apiserver starts would otherwise surface only
            # as an apiserver that never gets ready, with the wrong log quoted.
            for p in self._processes:
                code = p.popen.poll()
                if code is not None:
                    raise ControlPlaneError(
                        f"{p.name} exited with code {code} while waiting for {what}; "
                        f"last lines of {p.log_path}:\n{p.log_tail()}"
                    )
            try:
                if probe():
                    return
            except (OSError, http.client.HTTPException, ssl.SSLError) as exc:
                last_error = f" (last error: {exc})"
            if time.monotonic() >= deadline:
                raise ControlPlaneError(
                    f"{what} not reached within {poll.deadline:.0f}s{last_error}; "
                    f"last lines of {proc.log_path}:\n{proc.log_tail()}"
                )
            time.sleep(poll.interval)

    def _register_atexit(self) -> None:
        if not self._atexit_registered:
            atexit.register(self.stop)
            self._atexit_registered = True

    def detach(self) -> None:
        """Let the processes outlive this Python process (`winnode dev-cluster up`)."""
        if self._atexit_registered:
            atexit.unregister(self.stop)
            self._atexit_registered = False
        if self._watchdog is not None:
            self._watchdog.disarm()

    def stop(self) -> None:
        """Stop every process (SIGTERM, SIGKILL after a grace). Idempotent and thread-safe."""
        with self._lock:
            if self._stopped:
                return
            self._stopped = True
            # Disarm before stopping: once stop_pids() has reaped a process its pid may be reused,
            # and a watchdog that fired now (this process dying mid-stop) could signal a stranger.
            self.detach()
            by_pid = {p.popen.pid: p.popen for p in self._processes}

            def wait(pid: int, timeout: float) -> None:
                by_pid[pid].wait(timeout)

            # Reverse start order: etcd last, or the apiserver stalls in its graceful shutdown.
            stop_pids(
                [p.popen.pid for p in reversed(self._processes)], timeouts.CONTROL_PLANE_STOP_GRACE, wait
            )
            if self._owns_workdir:
                shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> ControlPlane:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


# --- health probes -----------------------------------------------------------------------------


def _https_get(port: int, path: str, context: ssl.SSLContext) -> tuple[int, str]:
    conn = http.client.HTTPSConnection(LOOPBACK, port, context=context, timeout=timeouts.CONTROL_PLANE_PROBE)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, resp.read().decode(errors="replace")
    finally:
        conn.close()


def _http_get(port: int, path: str) -> tuple[int, str]:
    conn = http.client.HTTPConnection(LOOPBACK, port, timeout=timeouts.CONTROL_PLANE_PROBE)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, resp.read().decode(errors="replace")
    finally:
        conn.close()


# --- start -------------------------------------------------------------------------------------


def _duration(seconds: float) -> str:
    return f"{seconds:g}s"


def start_control_plane(workdir: Path | None = None, bin_dir: Path | None = None) -> ControlPlane:
    """Start a fresh control plane and return once the apiserver is ready and kcm is working.

    `workdir` (created if needed) receives pki/, etcd/, logs/ and the admin `kubeconfig`; an etcd
    data directory left there by an earlier run is wiped. Without it a temporary directory is used
    and removed again by stop(). On failure everything started is stopped and the error quotes the
    log of the process that failed.
    """
    started = time.monotonic()
    bin_dir = bin_dir or binaries_dir()
    if missing := missing_binaries(bin_dir):
        raise BinariesMissingError(
            f"control-plane binaries missing in {bin_dir}: {', '.join(missing)}; run `make control-plane`"
        )
    owns = workdir is None
    if workdir is None:
        workdir = Path(tempfile.mkdtemp(prefix="winnode-cp-"))
    workdir = workdir.resolve()
    for attempt in range(1, PORT_RACE_ATTEMPTS + 1):
        cp = ControlPlane(workdir, bin_dir, owns_workdir=owns)
        try:
            _start(cp)
        except ControlPlaneError as exc:
            # Keep the logs the error points at.
            cp._owns_workdir = False
            cp.stop()
            # A port picked by free_ports() can be taken by someone else before our process binds it.
            if "address already in use" in str(exc) and attempt < PORT_RACE_ATTEMPTS:
                continue
            raise
        except BaseException:
            cp.stop()
            raise
        cp.startup_seconds = time.monotonic() - started
        return cp
    raise AssertionError("unreachable")


def _start(cp: ControlPlane) -> None:
    workdir = cp.workdir
    pki_dir = workdir / "pki"
    for d in (workdir, pki_dir, workdir / "logs"):
        d.mkdir(parents=True, exist_ok=True)
    pki_dir.chmod(0o700)
    etcd_dir = workdir / "etcd"
    shutil.rmtree(etcd_dir, ignore_errors=True)
    # Kubeconfigs of an earlier cluster name a CA and a port that are gone.
    shutil.rmtree(workdir / "users", ignore_errors=True)

    material = pki.make_control_plane_pki()
    material.ca.write(cp.ca_cert_path, cp.ca_key_path)
    material.apiserver.write(pki_dir / "apiserver.crt", pki_dir / "apiserver.key")
    material.admin.write(pki_dir / "admin.crt", pki_dir / "admin.key")
    kcm_serving = pki.issue_serving_cert(material.ca, "kube-controller-manager", ["localhost"], [LOOPBACK])
    kcm_serving.write(pki_dir / "kcm-serving.crt", pki_dir / "kcm-serving.key")
    material.front_proxy_ca.write(pki_dir / "front-proxy-ca.crt", pki_dir / "front-proxy-ca.key")
    material.front_proxy_client.write(pki_dir / "front-proxy-client.crt", pki_dir / "front-proxy-client.key")
    material.kubelet_client.write(
        pki_dir / "apiserver-kubelet-client.crt", pki_dir / "apiserver-kubelet-client.key"
    )
    pki.write_private(pki_dir / "sa.key", pki.private_key_pem(material.service_account_key))
    (pki_dir / "sa.pub").write_bytes(pki.public_key_pem(material.service_account_key))
    cp._ca = material.ca

    etcd_port, etcd_peer_port, api_port, kcm_port = free_ports(4)
    cp.server = f"https://{LOOPBACK}:{api_port}"
    write_kubeconfig(cp.kubeconfig, cp.server, material.ca.cert_pem, "admin", material.admin)
    kcm_kubeconfig = write_kubeconfig(
        workdir / "kcm.kubeconfig",
        cp.server,
        material.ca.cert_pem,
        "system:kube-controller-manager",
        material.controller_manager,
    )

    cp._register_atexit()
    cp._start_watchdog()

    etcd_url = f"http://{LOOPBACK}:{etcd_port}"
    etcd_peer = f"http://{LOOPBACK}:{etcd_peer_port}"
    etcd = cp._spawn(
        "etcd",
        [
            "--name=default",
            f"--data-dir={etcd_dir}",
            f"--listen-client-urls={etcd_url}",
            f"--advertise-client-urls={etcd_url}",
            f"--listen-peer-urls={etcd_peer}",
            f"--initial-advertise-peer-urls={etcd_peer}",
            f"--initial-cluster=default={etcd_peer}",
            # A throwaway cluster: durability buys nothing and fsync dominates apiserver latency.
            "--unsafe-no-fsync=true",
            "--log-level=warn",
        ],
    )
    cp._wait(etcd, "etcd /health", lambda: _http_get(etcd_port, "/health")[0] == 200)

    api_tls = ssl.create_default_context(cafile=str(cp.ca_cert_path))
    api_tls.load_cert_chain(pki_dir / "admin.crt", pki_dir / "admin.key")
    cp.audit_policy_path.write_text(AUDIT_POLICY)
    apiserver = cp._spawn(
        "kube-apiserver",
        [
            f"--etcd-servers={etcd_url}",
            f"--bind-address={LOOPBACK}",
            f"--advertise-address={LOOPBACK}",
            f"--secure-port={api_port}",
            f"--cert-dir={pki_dir}",
            f"--tls-cert-file={pki_dir / 'apiserver.crt'}",
            f"--tls-private-key-file={pki_dir / 'apiserver.key'}",
            f"--client-ca-file={cp.ca_cert_path}",
            "--authorization-mode=Node,RBAC",
            "--enable-bootstrap-token-auth=true",
            "--enable-admission-plugins=NodeRestriction",
            f"--service-cluster-ip-range={SERVICE_CLUSTER_IP_RANGE}",
            f"--service-account-issuer={SERVICE_ACCOUNT_ISSUER}",
            f"--service-account-key-file={pki_dir / 'sa.pub'}",
            f"--service-account-signing-key-file={pki_dir / 'sa.key'}",
            "--allow-privileged=true",
            f"--requestheader-client-ca-file={pki_dir / 'front-proxy-ca.crt'}",
            "--requestheader-allowed-names=front-proxy-client",
            "--requestheader-username-headers=X-Remote-User",
            "--requestheader-group-headers=X-Remote-Group",
            "--requestheader-extra-headers-prefix=X-Remote-Extra-",
            f"--proxy-client-cert-file={pki_dir / 'front-proxy-client.crt'}",
            f"--proxy-client-key-file={pki_dir / 'front-proxy-client.key'}",
            # Towards kubelets (nodes/<n>/proxy/logs/...): a client certificate of the cluster CA, and
            # the kubelet's serving certificate checked against the same CA (kcm's kubelet-serving
            # signer uses it). Emulated nodes are reached at the InternalIP they report; their
            # hostnames resolve nowhere.
            f"--kubelet-client-certificate={pki_dir / 'apiserver-kubelet-client.crt'}",
            f"--kubelet-client-key={pki_dir / 'apiserver-kubelet-client.key'}",
            f"--kubelet-certificate-authority={cp.ca_cert_path}",
            "--kubelet-preferred-address-types=InternalIP,Hostname",
            # Since 1.37 the endpoint reconciler refuses a loopback advertise address; the `kubernetes`
            # Service needs no endpoints here (nothing runs in-cluster on this machine).
            "--endpoint-reconciler-type=none",
            "--profiling=false",
            # Where admission audit annotations land (the admission Audit mode); writes to pods only.
            f"--audit-policy-file={cp.audit_policy_path}",
            f"--audit-log-path={cp.audit_log_path}",
            "--audit-log-maxsize=50",
            "--audit-log-maxbackup=1",
        ],
    )
    cp._wait(apiserver, "kube-apiserver /readyz", lambda: _https_get(api_port, "/readyz", api_tls)[0] == 200)

    kcm_tls = ssl.create_default_context(cafile=str(cp.ca_cert_path))
    http2 = timeouts.NODE_MONITOR_GRACE_PERIOD
    kcm = cp._spawn(
        "kube-controller-manager",
        [
            f"--kubeconfig={kcm_kubeconfig}",
            f"--authentication-kubeconfig={kcm_kubeconfig}",
            f"--authorization-kubeconfig={kcm_kubeconfig}",
            "--authorization-always-allow-paths=/healthz,/readyz,/livez,/metrics",
            f"--bind-address={LOOPBACK}",
            f"--secure-port={kcm_port}",
            f"--cert-dir={pki_dir}",
            f"--tls-cert-file={pki_dir / 'kcm-serving.crt'}",
            f"--tls-private-key-file={pki_dir / 'kcm-serving.key'}",
            f"--client-ca-file={cp.ca_cert_path}",
            "--leader-elect=false",
            "--use-service-account-credentials=true",
            f"--root-ca-file={cp.ca_cert_path}",
            f"--service-account-private-key-file={pki_dir / 'sa.key'}",
            f"--cluster-signing-cert-file={cp.ca_cert_path}",
            f"--cluster-signing-key-file={cp.ca_key_path}",
            f"--service-cluster-ip-range={SERVICE_CLUSTER_IP_RANGE}",
            # Defaults plus the two kubeadm turns on for bootstrap tokens. Node IPAM is off: pod
            # subnets of Windows nodes come from WindowsNetwork, not from kcm.
            "--controllers=*,bootstrap-signer-controller,token-cleaner-controller,-node-ipam-controller",
            f"--node-monitor-grace-period={_duration(timeouts.NODE_MONITOR_GRACE_PERIOD)}",
            f"--node-monitor-period={_duration(timeouts.NODE_MONITOR_PERIOD)}",
            f"--kube-api-qps={KCM_API_QPS}",
            f"--kube-api-burst={KCM_API_BURST}",
            "--profiling=false",
        ],
        # kcm requires the grace period to exceed these client HTTP/2 health-check timeouts
        # (45 s together by default); shrink them with the grace period.
        env={
            "HTTP2_READ_IDLE_TIMEOUT_SECONDS": str(int(http2 / 2)),
            "HTTP2_PING_TIMEOUT_SECONDS": str(int(http2 / 4)),
        },
    )
    cp._wait(
        kcm, "kube-controller-manager /healthz", lambda: _https_get(kcm_port, "/healthz", kcm_tls)[0] == 200
    )
    cp._wait(
        kcm,
        "the `default` ServiceAccount in namespace `default` (created by kcm)",
        lambda: _https_get(api_port, "/api/v1/namespaces/default/serviceaccounts/default", api_tls)[0] == 200,
    )
