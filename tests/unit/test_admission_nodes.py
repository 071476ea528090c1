"""The Windows-node set as watch events arrive, and kubeconfig/in-cluster credential loading."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import pytest
import yaml

from winnode.admission.nodes import WatchExpired, WindowsNodes, apply_event
from winnode.kube import api as kubeapi
from winnode.kube.api import ApiError, ConfigError


def node(name: str, os: str | None = "windows", rv: str = "1") -> dict[str, Any]:
    labels = {"kubernetes.io/os": os} if os else {}
    return {"metadata": {"name": name, "labels": labels, "resourceVersion": rv}}


def test_events_keep_the_set() -> None:
    names: set[str] = set()
    assert apply_event(names, "ADDED", node("w1", rv="5")) == "5"
    apply_event(names, "ADDED", node("w2"))
    apply_event(names, "ADDED", node("l1", os="linux"))
    assert names == {"w1", "w2"}
    apply_event(names, "MODIFIED", node("w2", os="linux"))  # relabelled away
    assert names == {"w1"}
    apply_event(names, "DELETED", node("w1"))
    assert names == set()
    assert apply_event(names, "BOOKMARK", {"metadata": {"resourceVersion": "9"}}) == "9"
    assert names == set()


def test_error_events() -> None:
    with pytest.raises(WatchExpired):
        apply_event(set(), "ERROR", {"kind": "Status", "code": 410, "message": "too old resource version"})
    with pytest.raises(ApiError):
        apply_event(set(), "ERROR", {"kind": "Status", "code": 500, "message": "boom"})


def test_static_set_is_synced() -> None:
    nodes = WindowsNodes.static(["a"])
    assert nodes.synced
    assert nodes.names == {"a"}
    assert not WindowsNodes().synced


def _write_kubeconfig(path: Path, user: dict[str, Any], cluster: dict[str, Any]) -> Path:
    doc = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "c", "cluster": {"server": "https://127.0.0.1:6443/", **cluster}}],
        "users": [{"name": "u", "user": user}],
        "contexts": [{"name": "ctx", "context": {"cluster": "c", "user": "u"}}],
        "current-context": "ctx",
    }
    path.write_text(yaml.safe_dump(doc))
    return path


def test_kubeconfig_with_inline_data(tmp_path: Path) -> None:
    path = _write_kubeconfig(
        tmp_path / "kc",
        {
            "client-certificate-data": base64.b64encode(b"CERT").decode(),
            "client-key-data": base64.b64encode(b"KEY").decode(),
        },
        {"certificate-authority-data": base64.b64encode(b"CA").decode()},
    )
    creds = kubeapi.from_kubeconfig(path)
    assert creds.server == "https://127.0.0.1:6443"
    assert (creds.ca_pem, creds.client_cert_pem, creds.client_key_pem) == (b"CA", b"CERT", b"KEY")
    assert creds.bearer() is None


def test_kubeconfig_with_relative_files_and_token_file(tmp_path: Path) -> None:
    (tmp_path / "ca.crt").write_bytes(b"CA")
    (tmp_path / "token").write_text("t1\n")
    path = _write_kubeconfig(tmp_path / "kc", {"tokenFile": "token"}, {"certificate-authority": "ca.crt"})
    creds = kubeapi.from_kubeconfig(path)
    assert creds.ca_pem == b"CA"
    assert creds.bearer() == "t1"
    (tmp_path / "token").write_text("t2")  # rotated on disk: picked up on the next request
    assert creds.bearer() == "t2"


def test_kubeconfig_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read kubeconfig"):
        kubeapi.from_kubeconfig(tmp_path / "missing")
    (tmp_path / "kc").write_text(yaml.safe_dump({"clusters": [], "contexts": []}))
    with pytest.raises(ConfigError, match="no current-context"):
        kubeapi.from_kubeconfig(tmp_path / "kc")
    with pytest.raises(ConfigError, match="no context named 'x'"):
        kubeapi.from_kubeconfig(tmp_path / "kc", context="x")


def test_in_cluster(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    with pytest.raises(ConfigError, match="not running in a cluster"):
        kubeapi.in_cluster(tmp_path)
    (tmp_path / "token").write_text("tok")
    (tmp_path / "ca.crt").write_bytes(b"CA")
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "fd00::1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", "443")
    creds = kubeapi.in_cluster(tmp_path)
    assert creds.server == "https://[fd00::1]:443"
    assert creds.bearer() == "tok"
