"""The rules hack/conformance restates (upstream compiles them only into Windows builds, or into a
package main) are tied here to the upstream source text at the pinned version, read from the Go module
cache: a re-pin that changes any of them fails this test until the restatement follows."""

from __future__ import annotations

import json
import os
import re
import subprocess
from functools import cache
from pathlib import Path

from winnode.testing import conformance as cf
from winnode.testing.cluster import read_versions

ROOT = Path(__file__).resolve().parents[2]
CHECKER = (ROOT / "hack" / "conformance" / "main.go").read_text()


@cache
def module_dir(module: str) -> Path:
    """The pinned module's source in the Go module cache (downloaded if missing; never a fallback)."""
    kube = read_versions(ROOT / "hack" / "versions.env")["KUBE_VERSION"]
    version = kube if module == "k8s.io/kubernetes" else "v0." + kube.removeprefix("v1.")
    done = subprocess.run(
        ["go", "mod", "download", "-json", f"{module}@{version}"],
        capture_output=True,
        text=True,
        timeout=600,
        check=True,
        cwd=ROOT / "hack" / "conformance",
        env={**os.environ, "GOFLAGS": "-mod=mod", "GO111MODULE": "on"},
    )
    return Path(json.loads(done.stdout)["Dir"])


def upstream(module: str, path: str) -> str:
    return (module_dir(module) / path).read_text()


def go_func(src: str, name: str) -> str:
    """The body of Go function or method `name`."""
    match = re.search(rf"^func (?:\([^)]*\) )?{re.escape(name)}\(.*?^}}$", src, re.S | re.M)
    assert match, f"func {name} not found"
    return match.group(0)


def flag_names(body: str) -> set[str]:
    return set(re.findall(r'\b(?:fs|flag)\.\w+\((?:&[\w.]+, |[\w.]+, )?"([a-z][a-z0-9-]*)"', body))


def test_kubelet_windows_flags() -> None:
    theirs = flag_names(
        go_func(upstream("k8s.io/kubernetes", "cmd/kubelet/app/options/osflags_windows.go"), "addOSFlags")
    )
    ours = flag_names(go_func(CHECKER, "addWindowsKubeletFlags"))
    assert theirs == ours == {"windows-service", "windows-priorityclass"}


def test_kubelet_windows_priority_classes() -> None:
    src = go_func(upstream("k8s.io/kubernetes", "cmd/kubelet/app/init_windows.go"), "getPriorityValue")
    theirs = re.findall(r'"([A-Z_]+_PRIORITY_CLASS)"', src)
    ours = re.findall(
        r'"([A-Z_]+_PRIORITY_CLASS)"', CHECKER.split("var windowsPriorityClasses", 1)[1].split("}", 1)[0]
    )
    assert theirs
    assert theirs == ours


def test_kubelet_windows_validation_refusals() -> None:
    src = go_func(
        upstream("k8s.io/kubernetes", "pkg/kubelet/apis/config/validation/validation_windows.go"),
        "validateKubeletOSConfiguration",
    )
    theirs = re.findall(r'return fmt\.Errorf\("([^"]+)"\)', src)
    ours = re.findall(r'return fmt\.Errorf\("([^"]+)"\)', go_func(CHECKER, "validateKubeletWindows"))
    assert theirs
    assert theirs == ours
    # What they check, in order: the fields our restatement tests.
    assert re.findall(r"if (kc\.\w+ != nil|len\(kc\.\w+\) > 0) \{\n\s+return", src) == re.findall(
        r"if (kc\.\w+ != nil|len\(kc\.\w+\) > 0) \{\n\s+return", go_func(CHECKER, "validateKubeletWindows")
    )


def test_kube_proxy_windows_flags() -> None:
    theirs = flag_names(
        go_func(upstream("k8s.io/kubernetes", "cmd/kube-proxy/app/init_windows.go"), "addOSFlags")
    )
    ours = flag_names(go_func(CHECKER, "add"))
    assert theirs == ours
    assert "windows-service" in ours


def test_kube_proxy_windows_modes() -> None:
    src = go_func(
        upstream("k8s.io/kubernetes", "pkg/proxy/apis/config/validation/validation.go"),
        "validateProxyModeWindows",
    )
    assert re.findall(r"kubeproxyconfig\.(ProxyMode\w+)", src) == ["ProxyModeKernelspace"]
    defaults = go_func(
        upstream("k8s.io/kubernetes", "cmd/kube-proxy/app/server_windows.go"), "platformApplyDefaults"
    )
    assert "config.Mode = kubeproxyconfig.ProxyModeKernelspace" in defaults


def test_kube_log_runner_flags() -> None:
    src = upstream("k8s.io/component-base", "logs/kube-log-runner/kube-log-runner.go")
    theirs = flag_names(go_func(src, "initFlags"))
    ours = flag_names(go_func(CHECKER, "checkLogRunner"))
    assert (
        theirs
        == ours
        == {
            "flush-interval",
            "log-file",
            "log-file-size",
            "log-file-age",
            "also-stdout",
            "redirect-stderr",
        }
    )
    # The Python side (which splits a service's command line) knows the ones that take a value.
    assert {"flush-interval", "log-file", "log-file-size", "log-file-age"} == cf._LOG_RUNNER_VALUE_FLAGS
    for check in (
        "not enough arguments to run",
        "log-file-size must be non-negative quantity",
        "log-file-age must be non-negative",
    ):
        assert check in src
        assert check in CHECKER


def test_kube_log_runner_is_a_windows_node_binary() -> None:
    src = upstream("k8s.io/kubernetes", "hack/lib/golang.sh")
    node = src.split("kube::golang::node_targets()", 1)[1].split("}", 1)[0]
    assert "staging/src/k8s.io/component-base/logs/kube-log-runner" in node
