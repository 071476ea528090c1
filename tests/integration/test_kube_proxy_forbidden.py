"""The emulated kube-proxy, started by the host model's SCM with an identity the apiserver refuses
(the kubelet's old choice: anything without list/watch on EndpointSlices), exits: the service stays
stopped."""

from __future__ import annotations

import asyncio

import pytest
import yaml

from winnode.host import actions as A
from winnode.lifecycle import kubelet_config as kc
from winnode.testing.artifacts import fake_binary
from winnode.testing.cluster import ControlPlane
from winnode.testing.hostmodel import ActionFailed, new_host_model
from winnode.testing.kubeproxy import KubeProxyHook

NAMESPACE = "kp-forbidden"


def test_forbidden_kube_proxy_exits_and_the_service_stays_stopped(control_plane: ControlPlane) -> None:
    cp = control_plane
    ns = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}}
    sa = {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": {"name": "nobody", "namespace": NAMESPACE},
    }
    cp.kubectl("apply", "-f", "-", input=yaml.safe_dump_all([ns, sa]))
    token = cp.kubectl("create", "token", "nobody", "-n", NAMESPACE).stdout.strip()

    model = new_host_model("win-forbidden")
    model.write_bytes(kc.KUBE_PROXY_EXE, fake_binary("kube-proxy", "v1.37.2"))
    model.write_bytes(kc.KUBE_LOG_RUNNER_EXE, fake_binary("kube-log-runner", "v1.37.2"))
    model.write_bytes(
        kc.KUBE_PROXY_KUBECONFIG, kc.kube_proxy_kubeconfig(cp.server, cp.ca_cert_path.read_text()).encode()
    )
    model.write_bytes(kc.KUBE_PROXY_TOKEN, token.encode(), secret=True)
    config = {
        "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
        "kind": "KubeProxyConfiguration",
        "clientConnection": {"kubeconfig": kc.KUBE_PROXY_KUBECONFIG},
        "mode": "kernelspace",
        "clusterCIDR": "10.244.0.0/16",
        "winkernel": {"networkName": "winnode"},
    }
    model.write_bytes(kc.KUBE_PROXY_CONFIG, yaml.safe_dump(config).encode())
    model.service_hooks["kube-proxy"] = KubeProxyHook()

    async def go() -> None:
        await model.execute(
            A.params_for(
                "service_ensure",
                {
                    "name": "kube-proxy",
                    "binary_path": kc.kube_proxy_command_line(),
                    "display_name": "kube-proxy",
                    "description": "test",
                    "dependencies": [],
                },
            )
        )
        with pytest.raises(ActionFailed, match="Forbidden") as info:
            await model.start_service("kube-proxy")
        # Authenticated (the apiserver names the user) but not authorized.
        assert f"system:serviceaccount:{NAMESPACE}:nobody" in str(info.value)

    asyncio.run(go())
    service = model.service("kube-proxy")
    assert service is not None
    assert service.state == A.ServiceState.STOPPED
    assert model.hns_load_balancers == {}
