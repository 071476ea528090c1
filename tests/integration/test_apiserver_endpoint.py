"""The apiserver URL kubelets get: from kube-public/cluster-info when it exists (as kubeadm join reads
it), and one clear condition instead of a failed join when no URL is known."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml

from winnode.kube.client import Kube
from winnode.lifecycle import kubelet_config as kc
from winnode.lifecycle.context import ClusterInfo
from winnode.process.operator import OperatorThread, make_deps
from winnode.settings import Settings
from winnode.testing.cluster import ControlPlane
from winnode.testing.demo import World
from winnode.testing.emulator import HostSpec

TIMEOUT = 120.0


def own_server(cp: ControlPlane) -> str:
    doc = yaml.safe_load(cp.kubeconfig.read_text())
    return str(doc["clusters"][0]["cluster"]["server"])


@pytest.fixture
def world(control_plane: ControlPlane) -> Iterator[World]:
    with World(
        control_plane, settings=Settings(metrics_port=0), namespace="wn-apiurl", run_operator=False
    ) as w:
        w.apply(w.network("apiurl-net", clusterCIDR="10.227.0.0/16"))
        yield w
        w.cp.kubectl("delete", "windowsnode", "--all", "--wait=false", check=False)
        w.cp.kubectl("delete", "configmap", "-n", "kube-public", "cluster-info", "--ignore-not-found")


def cluster_info(server: str, ca_pem: bytes) -> dict[str, object]:
    kubeconfig = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "",
                "cluster": {
                    "server": server,
                    "certificate-authority-data": base64.b64encode(ca_pem).decode(),
                },
            }
        ],
    }
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "cluster-info", "namespace": "kube-public"},
        "data": {"kubeconfig": yaml.safe_dump(kubeconfig)},
    }


def test_kubelets_get_the_url_of_cluster_info(world: World) -> None:
    own = urlsplit(own_server(world.cp))
    # Another spelling of the same apiserver (its certificate names localhost), so the node still joins.
    advertised = f"https://localhost:{own.port}"
    ca = yaml.safe_load(world.cp.kubeconfig.read_text())["clusters"][0]["cluster"]
    ca_pem = (
        base64.b64decode(ca["certificate-authority-data"])
        if "certificate-authority-data" in ca
        else Path(ca["certificate-authority"]).read_bytes()
    )
    world.apply(cluster_info(advertised, ca_pem))
    world.start_operator()
    assert world.deps is not None
    assert world.deps.cluster.server == advertised
    host = world.add_host(HostSpec.server2022(hostname="apiurl-a"))
    world.apply(world.windows_node(host, "apiurl-a", network="apiurl-net"))
    world.wait_phase("apiurl-a", "Ready", TIMEOUT)
    # The bootstrap kubeconfig leaves the host once the node joined; kube-proxy's, written from the
    # same cluster information, stays.
    assert host.call(lambda m: m.file(kc.BOOTSTRAP_KUBECONFIG)) is None
    kube_proxy = host.call(lambda m: m.file(kc.KUBE_PROXY_KUBECONFIG).text)
    assert f"server: {advertised}" in kube_proxy
    world.cp.kubectl("delete", "windowsnode", "apiurl-a", "--wait=false")
    world.wait_for("apiurl-a gone", lambda: world.get("windowsnode", "apiurl-a") is None, TIMEOUT)


def test_an_unknown_url_is_one_condition_and_the_host_is_untouched(world: World) -> None:
    kube = Kube.from_kubeconfig(world.cp.kubeconfig)
    deps = make_deps(kube, world.settings)
    # What an in-cluster operator without cluster-info or WINNODE_APISERVER_URL ends up with.
    deps.cluster = ClusterInfo(server="", ca_pem=deps.cluster.ca_pem)
    host = world.add_host(HostSpec.server2022(hostname="apiurl-b"))
    before = host.call(lambda m: (set(m.files), set(m.services), m.owner_uid))
    with OperatorThread(deps):
        world.apply(world.windows_node(host, "apiurl-b", network="apiurl-net"))
        condition = world.wait_for(
            "ApiserverURLUnknown",
            lambda: (c := world.condition("apiurl-b", "NodeRegistered")) and c["status"] == "False" and c,
            TIMEOUT,
        )
        assert condition["reason"] == "ApiserverURLUnknown"
        assert "WINNODE_APISERVER_URL" in condition["message"]
        assert world.phase("apiurl-b") == "Failed"
        assert host.call(lambda m: (set(m.files), set(m.services), m.owner_uid)) == before
        events = world.events("apiurl-b", "ApiserverURLUnknown")
        assert len(events) >= 1, json.dumps(events)
        world.cp.kubectl("delete", "windowsnode", "apiurl-b", "--wait=false")
        world.wait_for("apiurl-b gone", lambda: world.get("windowsnode", "apiurl-b") is None, TIMEOUT)
    kube.close()
