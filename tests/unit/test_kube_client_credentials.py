"""Kube.from_kubeconfig: what kubernetes.config loads becomes the shared client's Credentials, with the
Authorization header asked of the loader's refresh hook on every request (rotated tokens)."""

from __future__ import annotations

import base64
from pathlib import Path

import kubernetes.client
import kubernetes.config
import pytest
import yaml

from winnode.kube.client import Kube, KubeConfigError, credentials_from_configuration


def test_kubeconfig_with_inline_certificates_and_token(tmp_path: Path) -> None:
    doc = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "c",
                "cluster": {
                    "server": "https://127.0.0.1:6443/",
                    "certificate-authority-data": base64.b64encode(b"CA PEM").decode(),
                    "tls-server-name": "apiserver.internal",
                },
            }
        ],
        "users": [
            {
                "name": "u",
                "user": {
                    "client-certificate-data": base64.b64encode(b"CERT PEM").decode(),
                    "client-key-data": base64.b64encode(b"KEY PEM").decode(),
                    "token": "s3cr3t",
                },
            }
        ],
        "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
        "current-context": "x",
    }
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(yaml.safe_dump(doc))
    # The PEM files are placeholders: build Credentials the way from_kubeconfig does, without the
    # SSL context that would try to parse them.
    configuration = kubernetes.client.Configuration()
    kubernetes.config.load_kube_config(config_file=str(kubeconfig), client_configuration=configuration)
    creds = credentials_from_configuration(configuration)
    assert creds.server == "https://127.0.0.1:6443"
    assert (creds.ca_pem, creds.client_cert_pem, creds.client_key_pem) == (b"CA PEM", b"CERT PEM", b"KEY PEM")
    assert creds.tls_server_name == "apiserver.internal"
    assert creds.authorization() == "Bearer s3cr3t"
    assert "s3cr3t" not in repr(creds)
    assert "KEY PEM" not in repr(creds)


def test_the_refresh_hook_runs_before_every_request() -> None:
    configuration = kubernetes.client.Configuration(host="https://127.0.0.1:6443")
    tokens = iter(["one", "two"])

    def refresh(c: kubernetes.client.Configuration) -> None:
        # What the in-cluster loader does once the projected token's refresh period has passed.
        c.api_key["BearerToken"] = f"Bearer {next(tokens)}"

    configuration.refresh_api_key_hook = refresh
    creds = credentials_from_configuration(configuration)
    assert [creds.authorization(), creds.authorization()] == ["Bearer one", "Bearer two"]


def test_a_missing_kubeconfig_says_how_to_fix_it(tmp_path: Path) -> None:
    with pytest.raises(KubeConfigError, match="pass --kubeconfig, set KUBECONFIG"):
        Kube.from_kubeconfig(tmp_path / "nope")
