"""Golden files: the CNI configuration and KubeProxyConfiguration a node gets, byte for byte.

The files in tests/unit/golden/ are what winnode writes to a host for each network mode. A change to
the rendering shows up here as a diff to review. To accept an intended change, regenerate them:

    WINNODE_UPDATE_GOLDEN=1 .venv/bin/pytest tests/unit/test_network_golden.py

and commit the changed files with the change that caused them.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from winnode.api import WindowsNetworkSpec
from winnode.lifecycle.kubelet_config import kube_proxy_configuration
from winnode.network.cni import render_cni_config

GOLDEN = Path(__file__).parent / "golden"
UPDATE = os.environ.get("WINNODE_UPDATE_GOLDEN") == "1"
SUBNET = "10.244.7.0/24"
HOST = "192.168.10.21"

NETWORKS = {
    "overlay": {
        "mode": "overlay",
        "clusterCIDR": "10.244.0.0/16",
        "serviceCIDR": "10.96.0.0/12",
        "vxlan": {"vni": 4097, "port": 4789},
        "dns": {"servers": ["10.96.0.10"], "search": ["svc.cluster.local", "cluster.local"]},
        "outboundNATExceptions": ["192.168.10.0/24"],
    },
    "l2bridge": {
        "mode": "l2bridge",
        "clusterCIDR": "10.244.0.0/16",
        "serviceCIDR": "10.96.0.0/12",
        "adapterName": "Ethernet 2",
        "dns": {"servers": ["10.96.0.10"], "search": ["svc.cluster.local"]},
        "outboundNATExceptions": ["192.168.10.0/24", "172.16.0.0/12"],
    },
}


def check_golden(name: str, text: str) -> None:
    path = GOLDEN / name
    if UPDATE:
        path.write_bytes(text.encode())
    assert path.exists(), f"{path} is missing; regenerate with WINNODE_UPDATE_GOLDEN=1"
    assert path.read_bytes() == text.encode(), (
        f"{name} differs from what is rendered now; if the change is intended, regenerate with "
        "WINNODE_UPDATE_GOLDEN=1 .venv/bin/pytest tests/unit/test_network_golden.py"
    )


@pytest.mark.parametrize("mode", sorted(NETWORKS))
def test_cni_config_golden(mode: str) -> None:
    spec = WindowsNetworkSpec.model_validate(NETWORKS[mode])
    check_golden(f"cni-{mode}.json", render_cni_config(spec, SUBNET, HOST))


@pytest.mark.parametrize("mode", sorted(NETWORKS))
def test_kube_proxy_config_golden(mode: str) -> None:
    spec = WindowsNetworkSpec.model_validate(NETWORKS[mode])
    check_golden(f"kube-proxy-{mode}.yaml", kube_proxy_configuration("win-07", spec, SUBNET))
