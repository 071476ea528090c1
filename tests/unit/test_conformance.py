"""Kubernetes' own code (hack/conformance at the pinned version) on what winnode renders for a host.

The checker is built by `make test` (hack/build-conformance.sh); here `conformance.binary()` builds or
finds it, so these tests fail, never skip, when Go or the module cache is missing.
"""

from __future__ import annotations

import copy
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from winnode.api import WindowsNode
from winnode.api.windowsnetwork import WindowsNetworkSpec
from winnode.lifecycle import kubelet_config as kc
from winnode.lifecycle.context import ClusterInfo
from winnode.lifecycle.steps import DesiredHost, desired_host
from winnode.network.cni_plugins import CNI_PLUGINS
from winnode.testing import conformance as cf
from winnode.testing.hostmodel import split_command_line

ROOT = Path(__file__).resolve().parents[2]
SHA = "0" * 64


def _network(mode: str) -> WindowsNetworkSpec:
    spec: dict[str, Any] = yaml.safe_load((ROOT / "examples" / "windowsnetwork-overlay.yaml").read_text())[
        "spec"
    ]
    spec = copy.deepcopy(spec)
    if mode == "l2bridge":
        spec["mode"] = "l2bridge"
        spec.pop("vxlan", None)
    return WindowsNetworkSpec.model_validate(spec)


def _host(mode: str, node: dict[str, Any] | None = None) -> DesiredHost:
    raw = node or yaml.safe_load((ROOT / "examples" / "windowsnode.yaml").read_text())
    resource = WindowsNode.model_validate(raw)
    return desired_host(
        resource,
        _network(mode),
        "10.244.3.0/24",
        "v1.37.2",
        dict.fromkeys((*kc.BINARIES, *CNI_PLUGINS), SHA),
        ClusterInfo(server="https://10.0.0.1:6443", ca_pem="-----BEGIN CERTIFICATE-----\n"),
        bootstrap_token="abcdef.0123456789abcdef",
        host_address="192.168.10.21",
    )


def _cases(host: DesiredHost) -> dict[str, cf.Case]:
    files = {f.path: f.content for f in host.files if f.content is not None}
    out = {}
    for service in host.services:
        argv = split_command_line(service.binary_path)
        config = cf._flag_value(cf.program_argv(argv)[1:], "config")
        assert config in files, f"{service.name}: its --config {config} is not among the rendered files"
        out[service.name] = cf.Case.of(argv, {config: files[config]})
    return out


@pytest.mark.parametrize("mode", ["overlay", "l2bridge"])
def test_every_rendered_service_starts(mode: str) -> None:
    cases = _cases(_host(mode))
    assert set(cases) == {kc.KUBELET_SERVICE, kc.KUBE_PROXY_SERVICE}
    for name, verdict in zip(cases, cf.check_many(list(cases.values())), strict=True):
        assert verdict.ok, f"{mode}: {name}: {verdict.describe()}"


def test_services_run_under_kube_log_runner_with_rotated_logs() -> None:
    for name, case in _cases(_host("overlay")).items():
        flags, program = cf.log_runner_split(case.argv)
        assert cf.component_of(case.argv[0]) == "kube-log-runner", name
        assert flags["log-file"].startswith(kc.LOG_ROOT + "\\"), name
        assert flags["log-file-size"] == kc.LOG_FILE_SIZE
        assert cf.component_of(program[0]) == name
        assert not any(a.startswith(("--log-file", "--logtostderr")) for a in program), program


OLD_KUBELET = [
    kc.KUBELET_EXE,
    "--windows-service",
    f"--bootstrap-kubeconfig={kc.BOOTSTRAP_KUBECONFIG}",
    f"--kubeconfig={kc.KUBELET_KUBECONFIG}",
    f"--config={kc.KUBELET_CONFIG}",
    f"--root-dir={kc.KUBELET_ROOT}",
    f"--cert-dir={kc.KUBELET_CERT_DIR}",
    "--hostname-override=win-01",
    f"--log-file={kc.KUBELET_LOG}",
    "--logtostderr=false",
]
OLD_KUBE_PROXY = [
    kc.KUBE_PROXY_EXE,
    "--windows-service",
    f"--config={kc.KUBE_PROXY_CONFIG}",
    f"--log-file={kc.KUBE_PROXY_LOG}",
    "--logtostderr=false",
]


def test_the_pre_1_26_command_lines_are_refused_on_log_file() -> None:
    host = _host("overlay")
    files = {
        f.path: f.content or "" for f in host.files if f.path in (kc.KUBELET_CONFIG, kc.KUBE_PROXY_CONFIG)
    }
    kubelet, proxy = cf.check_many([cf.Case.of(OLD_KUBELET, files), cf.Case.of(OLD_KUBE_PROXY, files)])
    assert (kubelet.ok, kubelet.component, kubelet.flag) == (False, "kubelet", "--log-file")
    assert "unknown flag: --log-file" in kubelet.error
    assert (proxy.ok, proxy.component, proxy.flag) == (False, "kube-proxy", "--log-file")
    assert "unknown flag: --log-file" in proxy.error


@pytest.mark.parametrize(
    ("argv", "files", "component", "flag", "says"),
    [
        # Only Windows builds register these (osflags_windows.go); a wrong class fails initForOS.
        ([kc.KUBELET_EXE, "--windows-priorityclass=FAST"], {}, "kubelet", "--windows-priorityclass", "FAST"),
        ([kc.KUBELET_EXE, "--no-such-flag"], {}, "kubelet", "--no-such-flag", "unknown flag"),
        ([kc.KUBELET_EXE, "--max-pods=many"], {}, "kubelet", "--max-pods", "invalid argument"),
        ([kc.KUBELET_EXE, f"--config={kc.KUBELET_CONFIG}"], {}, "kubelet", "--config", "cannot find"),
        (
            [kc.KUBELET_EXE, f"--config={kc.KUBELET_CONFIG}"],
            {
                kc.KUBELET_CONFIG: "apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\n"
                "userNamespaces: {idsPerPod: 65536}\n"
            },
            "kubelet",
            "",
            "userNamespaces is not supported on Windows",
        ),
        (
            [kc.KUBE_PROXY_EXE, f"--config={kc.KUBE_PROXY_CONFIG}"],
            {
                kc.KUBE_PROXY_CONFIG: "apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\n"
                "mode: iptables\n"
            },
            "kube-proxy",
            "",
            "must be kernelspace",
        ),
        (
            [kc.KUBE_PROXY_EXE, "--proxy-mode=kernelspace", "extra"],
            {},
            "kube-proxy",
            "",
            "does not take any arguments",
        ),
        (
            [kc.KUBE_LOG_RUNNER_EXE, "-log-file=C:\\k\\logs\\x.log"],
            {},
            "kube-log-runner",
            "",
            "not enough arguments",
        ),
        (
            [kc.KUBE_LOG_RUNNER_EXE, "-log-file-size=-1", kc.KUBELET_EXE],
            {},
            "kube-log-runner",
            "-log-file-size",
            "non-negative",
        ),
        (
            [kc.KUBE_LOG_RUNNER_EXE, "-log-file=x", kc.KUBELET_EXE, "--log-file=y"],
            {},
            "kubelet",
            "--log-file",
            "unknown flag",
        ),
    ],
)
def test_refusals_name_the_component_and_flag(
    argv: list[str], files: dict[str, str], component: str, flag: str, says: str
) -> None:
    verdict = cf.check(argv, files)
    assert not verdict.ok, verdict
    assert verdict.component == component
    assert verdict.flag == flag
    assert says in verdict.error


def test_windows_only_flags_are_accepted() -> None:
    argv = [kc.KUBELET_EXE, "--windows-service", "--windows-priorityclass=ABOVE_NORMAL_PRIORITY_CLASS"]
    assert cf.check(argv).ok
    proxy = [
        kc.KUBE_PROXY_EXE,
        "--windows-service",
        "--network-name=winnode",
        "--source-vip=10.244.3.2",
        "--enable-dsr=false",
        "--root-hnsendpoint-name=cbr0",
        "--forward-healthcheck-vip=false",
    ]
    assert cf.check(proxy).ok


def test_warm_check_is_a_lookup() -> None:
    case = _cases(_host("overlay"))[kc.KUBELET_SERVICE]
    cf.check_many([case])
    n = 200
    start = time.perf_counter()
    for _ in range(n):
        assert cf.check_many([case])[0].ok
    per_check_ms = (time.perf_counter() - start) * 1000 / n
    print(f"warm conformance check: {per_check_ms:.3f} ms")
    assert per_check_ms < 5.0
