"""The kubelet service hook: starting the emulated host's kubelet service starts an emulated kubelet.

The emulated kubelet itself is tested where it lives; here a stand-in module with the same
interface records the configuration the hook derives from the service's command line and files.
"""

from __future__ import annotations

import asyncio
import sys
import time
import types
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import pytest
from winrm.protocol import Protocol

from winnode.host.protocol import parse_result
from winnode.testing.artifacts import ArtifactServer, kubernetes_node_binaries, sha256_hex
from winnode.testing.emulator import (
    EmulatedHost,
    EmulatorServer,
    HostSpec,
    KubeletHook,
    parse_kubelet_flags,
    run_script_with_pywinrm,
)
from winnode.testing.hostmodel import stdin_for

VERSION = "v1.37.2"
BINARY_PATH = (
    '"C:\\k\\kubelet.exe" --windows-service --bootstrap-kubeconfig=C:\\k\\bootstrap-kubelet.conf '
    "--kubeconfig=C:\\k\\kubelet.conf --config C:\\k\\kubelet-config.yaml --hostname-override=Win-K1 "
    '"--node-labels=node.kubernetes.io/windows-build=10.0.20348,winnode.io/pool=blue" '
    "--register-with-taints=os=windows:NoSchedule"
)
KUBELET_CONFIG = """\
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
registerWithTaints:
  - key: winnode.io/preparing
    effect: NoExecute
"""


@dataclass
class StandInConfig:
    node_name: str
    bootstrap_kubeconfig: str
    kubelet_version: str
    os_build: int
    os_image: str
    addresses: list[str]
    labels: dict[str, str]
    taints: list[str]
    state_dir: Path
    # The emulator passes the CNI readiness check too; the stand-in has no network to report on.
    network_error: Any = None
    # Where the kubelet prints (kube-log-runner's file); the stand-in prints nothing.
    log_line: Any = None
    heartbeat_interval_s: float = 2.0


class StandInKubelet:
    instances: ClassVar[list[StandInKubelet]] = []
    start_delay_s: ClassVar[float] = 0.0

    def __init__(self, config: StandInConfig) -> None:
        self.config = config
        self.running = False
        StandInKubelet.instances.append(self)

    async def start(self) -> None:
        await asyncio.sleep(self.start_delay_s)
        if "server:" not in self.config.bootstrap_kubeconfig:
            raise RuntimeError("bootstrap kubeconfig names no cluster server")
        self.running = True

    async def stop(self) -> None:
        self.running = False


@pytest.fixture
def stand_in(monkeypatch: pytest.MonkeyPatch) -> type[StandInKubelet]:
    module = types.ModuleType("winnode.testing.kubelet")
    module.KubeletConfig = StandInConfig  # type: ignore[attr-defined]
    module.EmulatedKubelet = StandInKubelet  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "winnode.testing.kubelet", module)
    StandInKubelet.instances = []
    StandInKubelet.start_delay_s = 0.0
    return StandInKubelet


@pytest.fixture(scope="module")
def server() -> Iterator[EmulatorServer]:
    with EmulatorServer() as srv:
        yield srv


@pytest.fixture(scope="module")
def artifacts() -> Iterator[ArtifactServer]:
    with ArtifactServer(kubernetes_node_binaries(VERSION)) as srv:
        yield srv


def run(host: EmulatedHost, action: str, params: dict[str, object]) -> tuple[dict[str, object], int]:
    p = Protocol(
        host.endpoint, transport="ntlm", username=host.username, password=host.password, ca_trust_path=None
    )
    stdout, _, code = run_script_with_pywinrm(p, stdin_for(action, params))
    return parse_result(stdout), code


def prepare(host: EmulatedHost, artifacts: ArtifactServer, kubeconfig: str) -> None:
    path = f"/{VERSION}/bin/windows/amd64/kubelet.exe"
    content = artifacts.get(path)
    assert content is not None
    steps: list[tuple[str, dict[str, object]]] = [
        ("ensure_directories", {"paths": ["C:\\k"]}),
        (
            "fetch_file",
            {"url": artifacts.url_for(path), "path": "C:\\k\\kubelet.exe", "sha256": sha256_hex(content)},
        ),
        ("write_file", {"path": "C:\\k\\bootstrap-kubelet.conf", "content": kubeconfig, "secret": True}),
        ("write_file", {"path": "C:\\k\\kubelet-config.yaml", "content": KUBELET_CONFIG}),
        (
            "service_ensure",
            {
                "name": "kubelet",
                "binary_path": BINARY_PATH,
                "display_name": "kubelet",
                "description": "Kubernetes node agent (managed by winnode)",
                "dependencies": ["containerd"],
            },
        ),
    ]
    for action, params in steps:
        result, code = run(host, action, params)
        assert code == 0, result


def service_state(host: EmulatedHost) -> str | None:
    def state(model: Any) -> str | None:
        service = model.service("kubelet")
        return service.state.value if service else None

    return host.call(state)


KUBECONFIG = (
    "apiVersion: v1\nkind: Config\nclusters:\n- cluster:\n    server: https://127.0.0.1:6443\n  name: local\n"
)


def test_parse_kubelet_flags() -> None:
    flags = parse_kubelet_flags(["--a=1", "--b", "2", "--c", "--d=x=y"])
    assert flags == {"a": "1", "b": "2", "c": "true", "d": "x=y"}


def test_kubelet_service_runs_an_emulated_kubelet(
    server: EmulatorServer, artifacts: ArtifactServer, stand_in: type[StandInKubelet]
) -> None:
    host = server.add_host(HostSpec.server2022(hostname="k-hook", reboot_downtime_s=0.2))
    try:
        assert host.kubelet_hook is not None
        prepare(host, artifacts, KUBECONFIG)
        result, code = run(host, "service_start", {"name": "kubelet"})
        assert code == 0
        assert result["state"] == "Running"
        (kubelet,) = stand_in.instances
        assert kubelet.running
        assert host.kubelet is kubelet
        config = kubelet.config
        assert config.node_name == "win-k1"
        assert config.bootstrap_kubeconfig == KUBECONFIG
        assert config.kubelet_version == VERSION
        assert (config.os_build, config.os_image) == (20348, "Windows Server 2022 Datacenter")
        assert config.addresses == [host.address]
        assert config.labels == {"node.kubernetes.io/windows-build": "10.0.20348", "winnode.io/pool": "blue"}
        assert config.taints == ["os=windows:NoSchedule", "winnode.io/preparing:NoExecute"]
        assert config.state_dir.is_dir()

        # A reboot stops the kubelet and, the service being Automatic, starts a new one.
        host.reboot()
        assert not kubelet.running
        assert len(stand_in.instances) == 2
        assert stand_in.instances[1].running

        result, code = run(host, "service_stop", {"name": "kubelet"})
        assert code == 0
        assert result["state"] == "Stopped"
        assert not stand_in.instances[1].running
        assert host.kubelet is None
    finally:
        server.remove_host(host)


def test_kubelet_that_cannot_start_fails_the_service(
    server: EmulatorServer, artifacts: ArtifactServer, stand_in: type[StandInKubelet]
) -> None:
    host = server.add_host(hostname="k-bad")
    try:
        prepare(host, artifacts, "apiVersion: v1\nkind: Config\n")
        result, code = run(host, "service_start", {"name": "kubelet"})
        assert code == 1
        assert "names no cluster server" in str(result["error"])
        assert service_state(host) == "Stopped"
    finally:
        server.remove_host(host)


def test_kubelet_failing_after_the_start_grace_stops_the_service(
    server: EmulatorServer,
    artifacts: ArtifactServer,
    stand_in: type[StandInKubelet],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(KubeletHook, "START_GRACE_S", 0.05)
    stand_in.start_delay_s = 0.3
    host = server.add_host(hostname="k-slow")
    try:
        prepare(host, artifacts, "apiVersion: v1\nkind: Config\n")
        result, code = run(host, "service_start", {"name": "kubelet"})
        assert code == 0
        assert result["state"] == "Running"
        deadline = time.monotonic() + 5.0
        while time.monotonic() < deadline and service_state(host) != "Stopped":
            time.sleep(0.02)
        assert service_state(host) == "Stopped"  # the late failure is a crash of the service
    finally:
        server.remove_host(host)


def test_without_the_kubelet_module_the_service_is_plain(
    server: EmulatorServer, artifacts: ArtifactServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "winnode.testing.kubelet", None)
    host = server.add_host(hostname="k-plain")
    try:
        assert host.kubelet_hook is None
        prepare(host, artifacts, KUBECONFIG)
        result, code = run(host, "service_start", {"name": "kubelet"})
        assert code == 0
        assert result["state"] == "Running"
        assert host.kubelet is None
    finally:
        server.remove_host(host)


def test_benchmarks_set_the_kubelet_lease_renewal(
    server: EmulatorServer, artifacts: ArtifactServer, stand_in: type[StandInKubelet]
) -> None:
    """A server told kubelet's own renewal passes it on; the tests' default is left to the kubelet."""
    with EmulatorServer(kubelet_heartbeat_s=10.0) as slow:
        host = slow.add_host(hostname="k-renew")
        prepare(host, artifacts, KUBECONFIG)
        result, code = run(host, "service_start", {"name": "kubelet"})
        assert code == 0, result
        (kubelet,) = stand_in.instances
        assert kubelet.config.heartbeat_interval_s == 10.0
    assert server.kubelet_heartbeat_s is None
