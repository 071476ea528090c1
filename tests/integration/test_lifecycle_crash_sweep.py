"""SIGKILL the operator at every step boundary of configure and of deconfigure; each new process picks
up where the dead one stopped, and the end state is the one an uninterrupted run leaves.

`winnode run` is a real process here. A boundary is the first time the flow makes one particular change,
and the operator is killed right after the change is made and before it reads the answer (the worst
moment): a mutating host action (the emulator reports it before it answers), or a change through the
Kubernetes API (subnet allocated, bootstrap token created, CSRs approved, podCIDR, labels and taints,
token revoked; on deletion: cordon, eviction, Node deleted, subnet released). For the latter the
operator process starts through this file's __main__, which makes its Kubernetes client report each
change to the test and wait for the answer; the test's answer may be a SIGKILL. No hook in the
operator's own code. A process is killed at the first new boundary it reaches (with a stride, at the
next one that is due), so the sweep crosses every boundary once and never kills again at a step a
previous process already did.

After configure: WindowsNode and Node Ready, the Node schedulable, exactly one kubelet and one
kube-proxy service, one HNS network and our two firewall rules, no bootstrap token left. After
deletion: the host back at its snapshot, no Node, token, finalizer or subnet allocation.

The default run kills at every third boundary of both flows (a representative third of them); the
whole sweep is marked slow.
"""

from __future__ import annotations

import contextlib
import http.server
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, cast

import kubernetes.client
import pytest
from kubernetes.client.exceptions import ApiException

from winnode.kube.tokens import NODE_LABEL as TOKEN_LABEL
from winnode.lifecycle import kubelet_config as kc
from winnode.network.hns import EXTERNAL_NETWORK_NAME, HNS_NETWORK_NAME
from winnode.settings import Settings
from winnode.testing.cluster import ControlPlane, free_ports
from winnode.testing.demo import World
from winnode.testing.emulator import EmulatedHost, HostSpec
from winnode.testing.hostmodel import ScriptOutcome
from winnode.testing.processes import start_winnode_run, stop_process

NETWORK = "crash"
# Bound for one operator process to reach its next boundary (start-up included) or to finish.
PROCESS_TIMEOUT_S = 90.0
# Bound for one flow's whole sweep, restarts included.
SWEEP_TIMEOUT_S = 600.0
# How long the operator process waits for the test to take note of a change it made.
REPORT_TIMEOUT_S = 30.0
CNI_DIRS = {kc.CNI_CONF_DIR.lower(), kc.CNI_BIN_DIR.lower(), "c:\\program files\\containerd\\cni"}


@pytest.fixture(scope="module")
def world(control_plane: ControlPlane) -> Iterator[World]:
    with World(
        control_plane, settings=Settings(metrics_port=0), namespace="wn-crash", run_operator=False
    ) as w:
        w.apply(w.network(name=NETWORK, clusterCIDR="10.243.0.0/16"))
        yield w


@pytest.fixture(scope="module")
def api(control_plane: ControlPlane) -> Iterator[kubernetes.client.ApiClient]:
    client = control_plane.api_client()
    try:
        yield client
    finally:
        client.close()  # type: ignore[no-untyped-call]


# --- the operator process ------------------------------------------------------------------------


def start_operator(world: World, log: Path, report_to: str) -> subprocess.Popen[bytes]:
    """`winnode run`, by way of this file's __main__: it reports each apiserver change to `report_to`.
    One replica, no leader election: a SIGKILLed leader would hold its Lease after every kill."""
    (port,) = free_ports(1)
    return start_winnode_run(
        world.cp.kubeconfig,
        log,
        metrics_port=port,
        env={"WINNODE_DRIFT_INTERVAL_S": "2", "WINNODE_CREDENTIALS_NAMESPACES": world.namespace},
        entry=(sys.executable, __file__, report_to),
    )


# --- boundaries ------------------------------------------------------------------------------------


def action_key(outcome: ScriptOutcome) -> str | None:
    """The boundary a mutating host action stands for: its action and what it acts on."""
    if not outcome.mutating or not outcome.ok:
        return None
    params = outcome.params or {}
    target = params.get("name") or params.get("path") or ""
    return f"host {outcome.action} {target}".rstrip()


@dataclass
class Crasher:
    """Kills the operator process at the first new boundary it reaches (every `stride`-th one)."""

    stride: int
    flow: str = ""  # "configure" or "deconfigure"; nothing is killed while empty
    seen: dict[str, list[str]] = field(default_factory=dict)  # flow -> boundaries, first crossing order
    killed_at: dict[str, list[str]] = field(default_factory=dict)  # flow -> boundaries killed at
    # flow -> boundaries crossed while a kill was due but no process was armed (a change finishing
    # on the host while the process that sent it was already being killed).
    passed: dict[str, list[str]] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None
    armed: bool = False
    # A kill is due (every stride-th boundary); a boundary crossed while no process is armed passes
    # it on to the next one.
    due: bool = False
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def arm(self, proc: subprocess.Popen[bytes]) -> None:
        with self._lock:
            self.proc, self.armed = proc, True

    def start(self, flow: str) -> None:
        with self._lock:
            self.flow, self.due = flow, False
            self.seen.setdefault(flow, [])
            self.killed_at.setdefault(flow, [])
            self.passed.setdefault(flow, [])

    def halt(self) -> None:
        with self._lock:
            self.flow = ""

    def crossed(self, key: str) -> None:
        """Called from the emulator's loop (host actions) and the report listener (Kubernetes changes)."""
        with self._lock:
            if not self.flow or key in self.seen[self.flow]:
                return
            index = len(self.seen[self.flow])
            self.seen[self.flow].append(key)
            self.due = self.due or index % self.stride == 0
            if not self.due:
                return
            if not self.armed or self.proc is None:
                self.passed[self.flow].append(key)
                return
            self.armed = self.due = False
            # Right now, before the emulator answers the action: the host made the change, the
            # operator never learns that it did.
            os.kill(self.proc.pid, signal.SIGKILL)
            self.killed_at[self.flow].append(key)


def watch_host_actions(host: EmulatedHost, crasher: Crasher) -> None:
    """Report each mutating action the host executes to `crasher`, synchronously on the emulator's loop."""
    record = host._record_action

    def recording(outcome: ScriptOutcome, user: str) -> None:
        record(outcome, user)
        key = action_key(outcome)
        if key is not None:
            crasher.crossed(key)

    host._record_action = recording  # type: ignore[method-assign]


class Reader:
    """Reads through one API client: the sweep asks five times a second, too often for kubectl."""

    def __init__(self, api: kubernetes.client.ApiClient) -> None:
        self.core = kubernetes.client.CoreV1Api(api)
        self.custom = kubernetes.client.CustomObjectsApi(api)

    def cluster_object(self, plural: str, name: str) -> dict[str, Any] | None:
        try:
            found = self.custom.get_cluster_custom_object(
                "winnode.io", "v1alpha1", plural, name, _request_timeout=5
            )
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        return cast(dict[str, Any], found)

    def node(self, name: str) -> Any:
        found = self.core.list_node(field_selector=f"metadata.name={name}", _request_timeout=5).items
        return found[0] if found else None

    def tokens(self, node: str) -> list[str]:
        secrets = self.core.list_namespaced_secret(
            "kube-system", label_selector=f"{TOKEN_LABEL}={node}", _request_timeout=5
        )
        return [str(s.metadata.name) for s in secrets.items if s.metadata]

    def configured(self, name: str) -> bool:
        """WindowsNode Ready, Node Ready, no bootstrap token left."""
        obj = self.cluster_object("windowsnodes", name) or {}
        node = self.node(name)
        node_ready = node is not None and any(
            c.type == "Ready" and c.status == "True" for c in (node.status.conditions or [])
        )
        return (obj.get("status") or {}).get("phase") == "Ready" and node_ready and not self.tokens(name)

    def gone(self, name: str) -> bool:
        return self.cluster_object("windowsnodes", name) is None


def changed_fields(body: Any) -> str:
    """The fields a merge patch sets, e.g. "spec.podCIDR,spec.podCIDRs" (resourceVersion left out)."""
    fields = sorted(
        f"{top}.{key}"
        for top, value in (body or {}).items()
        if isinstance(value, dict)
        for key in value
        if (top, key) != ("metadata", "resourceVersion")
    )
    return ",".join(fields)


def kube_change(method: str, resource_path: str, body: Any) -> str | None:
    """The boundary an apiserver request of the operator stands for, or None when it changes nothing
    outside the WindowsNode itself (reads, its status, Events)."""
    if method == "GET":
        return None
    parts = resource_path.strip("/").split("/")
    if "events" in parts or "windowsnodes" in parts:
        # Events, and the WindowsNode's own status: reports of progress, not changes a crash leaves
        # half done.
        return None
    if "secrets" in parts and "kube-system" in parts:
        return f"kube {method} bootstrap token"
    if parts[-1] == "approval":
        signer = ((body or {}).get("spec") or {}).get("signerName", "")
        return f"kube approve CSR {signer}"
    if parts[-1] == "eviction":
        return "kube evict pod"
    if "nodes" in parts:
        if method != "PATCH":
            return f"kube {method} Node"
        return f"kube PATCH Node {changed_fields(body)}"
    if "windowsnetworks" in parts:
        return f"kube {method} WindowsNetwork {changed_fields(body)}"
    return f"kube {method} {parts[-1]}"


def report_kube_changes(report_to: str) -> None:
    """In the operator process: tell the test about each change made through winnode.kube.api and
    wait for its answer (which may be a SIGKILL), before the operator sees the apiserver's reply."""
    import asyncio
    import urllib.request

    from winnode.kube.api import ApiClient

    send = ApiClient._send

    def report(key: str) -> None:
        request = urllib.request.Request(report_to, data=key.encode(), method="POST")
        urllib.request.urlopen(request, timeout=REPORT_TIMEOUT_S).read()

    async def reporting(
        self: ApiClient, method: str, resource_path: str, body: Any, *args: Any
    ) -> dict[str, Any]:
        result = await send(self, method, resource_path, body, *args)
        key = kube_change(method, resource_path, body)
        if key is not None:
            await asyncio.to_thread(report, key)
        return result

    ApiClient._send = reporting  # type: ignore[method-assign]


@contextlib.contextmanager
def listening_for_kube_changes(crasher: Crasher) -> Iterator[str]:
    """An HTTP endpoint on loopback the operator process reports its changes to; its URL."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            key = self.rfile.read(int(self.headers.get("Content-Length") or 0)).decode()
            crasher.crossed(key)  # may kill the reporting process before it gets the answer
            self.send_response(204)
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            return

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, name="crash-sweep-reports", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/crossed"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


def run_until(
    world: World,
    crasher: Crasher,
    log: Path,
    report_to: str,
    what: str,
    done: Callable[[], bool],
    first: subprocess.Popen[bytes],
) -> subprocess.Popen[bytes]:
    """Watch `first` (armed), then start operators one after another as each is killed, until
    `done()`; the live process."""
    deadline = time.monotonic() + SWEEP_TIMEOUT_S
    proc: subprocess.Popen[bytes] | None = first
    while True:
        if proc is None:
            proc = start_operator(world, log, report_to)
            crasher.arm(proc)
        process_deadline = time.monotonic() + PROCESS_TIMEOUT_S
        while proc.poll() is None and not done():
            if time.monotonic() >= min(process_deadline, deadline):
                stop_process(proc)
                raise AssertionError(
                    f"{what}: no progress within {PROCESS_TIMEOUT_S:.0f}s (or {SWEEP_TIMEOUT_S:.0f}s in all); "
                    f"boundaries so far {crasher.seen}; operator log:\n" + log.read_text()[-4000:]
                )
            time.sleep(0.2)
        if proc.poll() is None:
            return proc
        proc.wait()
        assert proc.returncode == -signal.SIGKILL, (
            f"the operator exited by itself ({proc.returncode}) during {what}:\n" + log.read_text()[-4000:]
        )
        proc = None


# --- checks ----------------------------------------------------------------------------------------


def host_state(host: EmulatedHost) -> dict[str, Any]:
    def take(m: Any) -> dict[str, Any]:
        return {
            "services": {k: (s.binary_path, s.state.value) for k, s in m.services.items()},
            "files": set(m.files),
            "dirs": set(m.directories),
            "hns": set(m.hns_networks),
            "firewall": set(m.firewall_rules),
        }

    return host.call(take)


def token_secrets(world: World, node: str) -> list[str]:
    out = world.cp.kubectl("get", "secrets", "-n", "kube-system", "-l", f"{TOKEN_LABEL}={node}", "-o", "name")
    return out.stdout.split()


def workload_pod(node: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": f"{node}-workload", "namespace": "default"},
        "spec": {
            "nodeName": node,
            "os": {"name": "windows"},
            "tolerations": [{"key": "os", "operator": "Equal", "value": "windows", "effect": "NoSchedule"}],
            "containers": [{"name": "app", "image": "mcr.microsoft.com/windows/nanoserver:ltsc2022"}],
        },
    }


def pod_running(world: World, name: str) -> bool:
    pod = world.get("pod", name, "default")
    return ((pod or {}).get("status") or {}).get("phase") == "Running"


# --- the sweep ---------------------------------------------------------------------------------------


# Boundaries each flow must have crossed for the sweep to count as a sweep of that flow.
CONFIGURE_MUST_CROSS = {
    "kube PATCH WindowsNetwork status.allocations",  # the pod subnet allocated
    "kube POST bootstrap token",
    "host ensure_directories",
    f"host fetch_file {kc.KUBELET_EXE}",
    f"host write_file {kc.BOOTSTRAP_KUBECONFIG}",
    f"host hns_network_ensure {HNS_NETWORK_NAME}",
    f"host firewall_rule_ensure {kc.FIREWALL_KUBELET}",
    f"host service_ensure {kc.KUBELET_SERVICE}",
    f"host service_start {kc.KUBELET_SERVICE}",
    "kube approve CSR kubernetes.io/kube-apiserver-client-kubelet",
    f"host service_start {kc.KUBE_PROXY_SERVICE}",
    "kube PATCH Node spec.podCIDR",
    "kube PATCH Node metadata.annotations,metadata.labels",
    "kube DELETE bootstrap token",
}
DECONFIGURE_MUST_CROSS = {
    "kube PATCH Node spec.unschedulable",
    "kube evict pod",
    f"host service_remove {kc.KUBE_PROXY_SERVICE}",
    f"host service_remove {kc.KUBELET_SERVICE}",
    f"host hns_network_remove {HNS_NETWORK_NAME}",
    f"host firewall_rule_remove {kc.FIREWALL_KUBELET}",
    "kube DELETE Node",
    "kube PATCH WindowsNetwork status.allocations",  # the pod subnet released
}


def sweep(world: World, api: kubernetes.client.ApiClient, tmp_path: Path, name: str, stride: int) -> None:
    log = tmp_path / "operator.log"
    # The default per-user quota (30 shells): every SIGKILL during a WinRM command leaves its shell
    # open on the host, and each new operator process deletes those on first contact.
    host = world.add_host(HostSpec.server2022(hostname=name))
    assert host.spec.max_shells_per_user == 30
    before = host_state(host)
    crasher = Crasher(stride)
    watch_host_actions(host, crasher)
    started = time.monotonic()
    proc: subprocess.Popen[bytes] | None = None
    read = Reader(api)
    with listening_for_kube_changes(crasher) as report_to:
        try:
            # Configure, from the apply of the WindowsNode to Ready.
            crasher.start("configure")
            proc = start_operator(world, log, report_to)
            crasher.arm(proc)
            world.apply(world.windows_node(host, name, network=NETWORK))
            configured = partial(read.configured, name)
            proc = run_until(world, crasher, log, report_to, "configure", configured, proc)
            crasher.halt()
            configure_s = time.monotonic() - started
            check_configured(world, host, name, before)

            # A workload for the drain to evict, then deletion.
            pod = workload_pod(name)
            world.apply(pod)
            world.wait_for("the workload to run", lambda: pod_running(world, pod["metadata"]["name"]), 60.0)
            crasher.start("deconfigure")
            crasher.arm(proc)
            world.cp.kubectl("delete", "windowsnode", name, "--wait=false")
            gone = partial(read.gone, name)
            proc = run_until(world, crasher, log, report_to, "deconfigure", gone, proc)
            crasher.halt()
        finally:
            crasher.halt()
            if proc is not None:
                stop_process(proc)
    total_s = time.monotonic() - started
    check_removed(world, host, name, before)
    assert host.open_shells == 0, "shells left by killed processes were deleted by the next ones"

    kills = sum(len(k) for k in crasher.killed_at.values())
    print(
        f"\ncrash sweep (every {stride}. boundary): {kills} SIGKILLs; configure "
        f"{len(crasher.seen['configure'])} boundaries, {len(crasher.killed_at['configure'])} kills, "
        f"{configure_s:.1f}s; deconfigure {len(crasher.seen['deconfigure'])} boundaries, "
        f"{len(crasher.killed_at['deconfigure'])} kills; total {total_s:.1f}s"
    )
    for flow in ("configure", "deconfigure"):
        print(f"  {flow} crossed: " + json.dumps(crasher.seen[flow]))
        print(f"  {flow} killed at: " + json.dumps(crasher.killed_at[flow]))
        print(f"  {flow} passed unarmed: " + json.dumps(crasher.passed[flow]))
    text = log.read_text()
    assert "Traceback" not in text, "the operator logged an unexpected error:\n" + text[-6000:]
    for flow, must in (("configure", CONFIGURE_MUST_CROSS), ("deconfigure", DECONFIGURE_MUST_CROSS)):
        seen, killed, passed = crasher.seen[flow], crasher.killed_at[flow], crasher.passed[flow]
        missing = sorted(m for m in must if not any(k.startswith(m) for k in seen))
        assert not missing, f"{flow} never crossed {sorted(missing)}; crossed {seen}"
        assert [k for k in seen if k in killed] == killed, "kills happen at new boundaries, in order"
        # One kill per stride of boundaries, less those no process was there to be killed at; the last
        # one may find no boundary left after it.
        assert len(killed) >= len(seen[::stride]) - len(passed) - 1, f"{flow}: killed at {killed} of {seen}"
        if stride == 1:
            assert set(killed) | set(passed) == set(seen)


def check_configured(world: World, host: EmulatedHost, name: str, before: dict[str, Any]) -> None:
    obj = world.must_get("windowsnode", name)
    status = obj["status"]
    assert status["phase"] == "Ready", status
    assert "lastError" not in status, status
    node = world.must_get("node", name)
    assert not node["spec"].get("unschedulable"), "the Node was left cordoned"
    assert node["spec"]["podCIDR"] == status["subnet"]
    assert token_secrets(world, name) == [], "a bootstrap token leaked"
    state = host_state(host)
    ours = {k: v for k, v in state["services"].items() if k not in before["services"]}
    assert sorted(k.casefold() for k in ours) == [kc.KUBE_PROXY_SERVICE, kc.KUBELET_SERVICE], ours
    assert all(state == "Running" for _, state in ours.values()), ours
    for exe in (kc.KUBELET_EXE, kc.KUBE_PROXY_EXE):
        running = [k for k, (binary, _) in state["services"].items() if exe.casefold() in binary.casefold()]
        assert len(running) == 1, f"services running {exe}: {running}"
    assert state["hns"] == {EXTERNAL_NETWORK_NAME, HNS_NETWORK_NAME}
    assert state["firewall"] == {kc.FIREWALL_KUBELET, kc.FIREWALL_VXLAN}


def check_removed(world: World, host: EmulatedHost, name: str, before: dict[str, Any]) -> None:
    assert world.get("windowsnode", name) is None
    assert world.get("node", name) is None
    assert token_secrets(world, name) == []
    network = world.must_get("windowsnetwork", NETWORK)
    assert all(a["node"] != name for a in (network.get("status") or {}).get("allocations") or [])
    after = host_state(host)
    assert after["services"] == before["services"]
    assert after["files"] == before["files"]
    assert after["hns"] == before["hns"]
    assert after["firewall"] == before["firewall"]
    assert after["dirs"] - before["dirs"] <= CNI_DIRS, "only containerd's CNI directories may stay"


def test_sigkill_at_every_third_boundary_converges(
    world: World, api: kubernetes.client.ApiClient, tmp_path: Path
) -> None:
    sweep(world, api, tmp_path, "crash-third", stride=3)


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_sigkill_at_every_boundary_converges(
    world: World, api: kubernetes.client.ApiClient, tmp_path: Path
) -> None:
    sweep(world, api, tmp_path, "crash-all", stride=1)


if __name__ == "__main__":
    # The operator process of the sweep: `python <this file> <report URL> run --kubeconfig=...`.
    report_kube_changes(sys.argv[1])
    from winnode.cli import main

    sys.exit(main(sys.argv[2:]))
