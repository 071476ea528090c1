"""Reading a bootstrap kubeconfig the way kubelet does, without ever quoting its credentials."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import pytest
import yaml

from winnode.testing.kubelet.config import ClusterAccess, KubeletConfigError, parse_kubeconfig

TOKEN = "abcdef.0123456789abcdef"
CA_PEM = b"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def kubeconfig(
    *,
    server: str = "https://10.0.0.1:6443",
    cluster: dict[str, Any] | None = None,
    user: dict[str, Any] | None = None,
    current: str | None = "tls-bootstrap",
    extra_clusters: int = 0,
) -> str:
    clusters = [
        {
            "name": "winnode",
            "cluster": cluster
            if cluster is not None
            else {"server": server, "certificate-authority-data": b64(CA_PEM)},
        }
    ]
    clusters += [
        {"name": f"other-{i}", "cluster": {"server": f"https://10.9.9.{i}:6443"}}
        for i in range(extra_clusters)
    ]
    doc: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": clusters,
        "users": [{"name": "bootstrap", "user": user if user is not None else {"token": TOKEN}}],
        "contexts": [{"name": "tls-bootstrap", "context": {"cluster": "winnode", "user": "bootstrap"}}],
    }
    if current is not None:
        doc["current-context"] = current
    return yaml.safe_dump(doc)


def test_token_kubeconfig() -> None:
    access = parse_kubeconfig(kubeconfig())
    assert access == ClusterAccess(server="https://10.0.0.1:6443", ca_pem=CA_PEM, token=TOKEN)
    assert TOKEN not in repr(access)


def test_current_context_picks_the_cluster() -> None:
    access = parse_kubeconfig(kubeconfig(extra_clusters=2))
    assert access.server == "https://10.0.0.1:6443"


def test_without_current_context_a_lone_context_is_used() -> None:
    assert parse_kubeconfig(kubeconfig(current=None)).token == TOKEN


def test_client_certificate_user(tmp_path: Path) -> None:
    access = parse_kubeconfig(
        kubeconfig(user={"client-certificate-data": b64(b"CERT"), "client-key-data": b64(b"KEY")})
    )
    assert (access.client_cert_pem, access.client_key_pem, access.token) == (b"CERT", b"KEY", None)
    assert "KEY" not in repr(access)


def test_files_are_read(tmp_path: Path) -> None:
    ca = tmp_path / "ca.crt"
    ca.write_bytes(CA_PEM)
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    access = parse_kubeconfig(
        kubeconfig(
            cluster={"server": "https://api.example:6443/", "certificate-authority": str(ca)},
            user={"tokenFile": str(token_file)},
        )
    )
    assert access.server == "https://api.example:6443"
    assert access.ca_pem == CA_PEM
    assert access.token == TOKEN


def test_insecure_and_tls_server_name() -> None:
    access = parse_kubeconfig(
        kubeconfig(
            cluster={
                "server": "https://10.0.0.1:6443",
                "insecure-skip-tls-verify": True,
                "tls-server-name": "kubernetes",
            }
        )
    )
    assert access.insecure
    assert access.tls_server_name == "kubernetes"
    assert access.ca_pem is None


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (kubeconfig(cluster={"server": ""}), "names no cluster server"),
        (kubeconfig(server="http://10.0.0.1:8080"), "https://"),
        (kubeconfig(user={}), "neither a token nor a client certificate"),
        (kubeconfig(current="elsewhere"), "no context named 'elsewhere'"),
        (kubeconfig(user={"client-certificate-data": b64(b"CERT")}), "without its key"),
        (kubeconfig(cluster={"server": "https://a:1", "certificate-authority-data": "%%%"}), "not base64"),
        (
            kubeconfig(cluster={"server": "https://a:1", "certificate-authority": "C:\\k\\ca.crt"}),
            "cannot be read",
        ),
        ("- just\n- a list\n", "not a YAML mapping"),
        ("apiVersion: v1\nkind: Config\n", "no clusters"),
    ],
)
def test_unusable_kubeconfigs(text: str, message: str) -> None:
    with pytest.raises(KubeletConfigError, match=message):
        parse_kubeconfig(text)


def test_yaml_errors_do_not_quote_the_token() -> None:
    broken = f"users:\n- name: bootstrap\n  user:\n    token: {TOKEN}\n   bad: [indent\n"
    with pytest.raises(KubeletConfigError) as exc:
        parse_kubeconfig(broken)
    assert "line" in str(exc.value)
    assert TOKEN not in str(exc.value)
    assert exc.value.__cause__ is None
    assert exc.value.__suppress_context__
