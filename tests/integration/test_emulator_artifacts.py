"""Fake binaries and the local artifact server the emulated hosts download from."""

from __future__ import annotations

import urllib.error
import urllib.request

import pytest

from winnode.testing.artifacts import (
    ArtifactServer,
    FakeBinaryInfo,
    fake_binary,
    kubernetes_node_binaries,
    parse_fake_binary,
    sha256_hex,
)


def test_fake_binary_is_deterministic_and_self_describing() -> None:
    a = fake_binary("kubelet", "v1.37.2")
    assert a == fake_binary("kubelet", "v1.37.2")
    assert len(a) == 4096
    assert a.startswith(b"WINNODE-FAKE-BINARY name=kubelet version=v1.37.2\n")
    assert sha256_hex(a) != sha256_hex(fake_binary("kubelet", "v1.37.3"))
    assert parse_fake_binary(a) == FakeBinaryInfo(name="kubelet", version="v1.37.2")
    assert parse_fake_binary(b"MZ\x90\x00") is None
    assert len(fake_binary("kube-proxy", "v1.36.0", size=10)) == len(
        b"WINNODE-FAKE-BINARY name=kube-proxy version=v1.36.0\n"
    )
    with pytest.raises(ValueError, match="without spaces"):
        fake_binary("kube let", "v1")


def test_kubernetes_node_binaries_follow_the_release_layout() -> None:
    files = kubernetes_node_binaries("v1.37.2")
    assert set(files) == {
        f"/v1.37.2/bin/windows/amd64/{exe}"
        for exe in ("kubelet.exe", "kube-proxy.exe", "kube-log-runner.exe", "kubeadm.exe", "kubectl.exe")
    }
    assert parse_fake_binary(files["/v1.37.2/bin/windows/amd64/kube-proxy.exe"]) == FakeBinaryInfo(
        "kube-proxy", "v1.37.2"
    )


def test_artifact_server_serves_and_records() -> None:
    with ArtifactServer({"bin/kubelet.exe": b"kubelet"}) as server:
        assert server.url.startswith("http://127.0.0.1:")
        with urllib.request.urlopen(server.url_for("/bin/kubelet.exe"), timeout=5) as response:
            assert response.read() == b"kubelet"
        url = server.add("/bin/kube-proxy.exe", b"proxy")
        with urllib.request.urlopen(url, timeout=5) as response:
            assert response.read() == b"proxy"
        head = urllib.request.Request(server.url_for("/bin/kubelet.exe"), method="HEAD")
        with urllib.request.urlopen(head, timeout=5) as response:
            assert response.headers["Content-Length"] == "7"
        server.remove("/bin/kube-proxy.exe")
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(server.url_for("/bin/kube-proxy.exe"), timeout=5)
        assert info.value.code == 404
        assert server.downloads("/bin/kubelet.exe") == 1
        assert [(r.method, r.path, r.status) for r in server.requests] == [
            ("GET", "/bin/kubelet.exe", 200),
            ("GET", "/bin/kube-proxy.exe", 200),
            ("HEAD", "/bin/kubelet.exe", 200),
            ("GET", "/bin/kube-proxy.exe", 404),
        ]
    with pytest.raises(RuntimeError, match="not started"):
        _ = server.url
