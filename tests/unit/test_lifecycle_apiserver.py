"""Which apiserver URL kubelets on Windows hosts get (lifecycle/apiserver.py)."""

from __future__ import annotations

import base64

import pytest
import yaml

from winnode.lifecycle.apiserver import (
    SETTING,
    ClusterInfoError,
    choose,
    in_cluster_address,
    parse_cluster_info,
    unknown_message,
)
from winnode.lifecycle.context import ClusterInfo
from winnode.settings import Settings

CA = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
OWN = ClusterInfo(server="https://10.96.0.1:443", ca_pem="own-ca")


def cluster_info(server: str = "https://api.example.com:6443", ca: str = CA) -> dict[str, str]:
    # The shape kubeadm writes: one cluster named "" with server and certificate-authority-data.
    doc = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "",
                "cluster": {
                    "server": server,
                    "certificate-authority-data": base64.b64encode(ca.encode()).decode(),
                },
            }
        ],
        "contexts": None,
        "current-context": "",
        "preferences": {},
        "users": None,
    }
    return {"kubeconfig": yaml.safe_dump(doc)}


def test_cluster_info_gives_url_and_ca() -> None:
    info = parse_cluster_info(cluster_info())
    assert info == ClusterInfo(server="https://api.example.com:6443", ca_pem=CA)


@pytest.mark.parametrize(
    ("data", "why"),
    [
        ({}, "no 'kubeconfig' key"),
        ({"kubeconfig": "clusters: ["}, "is not YAML"),
        ({"kubeconfig": "clusters: []"}, "names no cluster"),
        (cluster_info(server="http://api:6443"), "is not an https URL"),
        (cluster_info(ca="not a certificate"), "is not a PEM certificate"),
    ],
)
def test_unusable_cluster_info_says_why(data: dict[str, str], why: str) -> None:
    with pytest.raises(ClusterInfoError, match=why):
        parse_cluster_info(data)


def test_the_setting_wins_and_keeps_cluster_info_ca() -> None:
    found = parse_cluster_info(cluster_info())
    endpoint = choose(setting="https://lb.example.com:6443/", cluster_info=found, own=OWN, in_cluster=True)
    assert endpoint.cluster == ClusterInfo(server="https://lb.example.com:6443", ca_pem=CA)
    assert endpoint.source == SETTING
    endpoint = choose(setting="https://lb.example.com:6443", cluster_info=None, own=OWN, in_cluster=True)
    assert endpoint.cluster.ca_pem == "own-ca"


def test_cluster_info_before_the_operators_own_address() -> None:
    found = parse_cluster_info(cluster_info())
    endpoint = choose(setting="", cluster_info=found, own=OWN, in_cluster=True)
    assert endpoint.cluster == found
    assert endpoint.source == "ConfigMap kube-public/cluster-info"


def test_outside_the_cluster_the_operators_own_address_serves() -> None:
    endpoint = choose(setting="", cluster_info=None, own=OWN, in_cluster=False)
    assert endpoint.cluster == OWN
    assert endpoint.known


def test_in_the_cluster_without_either_the_url_is_unknown() -> None:
    endpoint = choose(setting="", cluster_info=None, own=OWN, in_cluster=True)
    assert not endpoint.known
    message = unknown_message()
    assert "kube-public/cluster-info" in message
    assert SETTING in message
    assert "manifests/reconciler-deployment.yaml" in message


def test_in_cluster_address_is_the_kubernetes_service() -> None:
    env = {"KUBERNETES_SERVICE_HOST": "10.96.0.1"}
    assert in_cluster_address("https://10.96.0.1:443", env)
    assert in_cluster_address("https://kubernetes.default.svc", {})
    assert not in_cluster_address("https://api.example.com:6443", env)
    assert not in_cluster_address("https://10.96.0.1:443", {})


def test_the_setting_must_be_an_https_url() -> None:
    with pytest.raises(ValueError, match="WINNODE_APISERVER_URL='api:6443' must be an https:// URL"):
        Settings(apiserver_url="api:6443")
    assert Settings(apiserver_url="https://api:6443").apiserver_url == "https://api:6443"
