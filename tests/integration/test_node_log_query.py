"""`kubectl get --raw /api/v1/nodes/<node>/proxy/logs/?query=kubelet` on a node winnode configured.

The whole path is real except Windows: kube-apiserver picks the Node's InternalIP (the host's
default-route address, which winnode passes as --node-ip), refuses it unless it is global unicast,
connects with its kubelet client certificate and checks the serving certificate that winnode approved;
the emulated kubelet asks the apiserver's SubjectAccessReview and answers from the host's files by the
kubelet's Windows rules. The log is what kube-log-runner wrote to the -log-file winnode configured,
so this fails if winnode puts the log where the kubelet's query does not look.

The node addresses live in a network namespace of this test (testing.nodenet), which needs root; the
test fails, and says so, where that is missing.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from winnode.lifecycle import kubelet_config as kc
from winnode.settings import Settings
from winnode.testing.cluster import ControlPlane
from winnode.testing.demo import World
from winnode.testing.emulator import HostSpec
from winnode.testing.nodenet import NodeNetwork

TIMEOUT = 120.0
NETWORK = "node-logs"


@pytest.fixture(scope="module")
def world(control_plane: ControlPlane) -> Iterator[World]:
    why = NodeNetwork.available()
    if why is not None:
        pytest.fail(f"the node log query needs node addresses in a network namespace: {why}", pytrace=False)
    with World(
        control_plane, settings=Settings(metrics_port=0), namespace="wn-node-logs", node_network=True
    ) as w:
        w.apply(w.network(NETWORK, clusterCIDR="10.217.0.0/16", serviceCIDR="10.218.0.0/16"))
        yield w


def wait_for(what: str, probe: object, timeout: float = TIMEOUT) -> object:
    assert callable(probe)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = probe()
        if got:
            return got
        time.sleep(0.5)
    pytest.fail(f"{what}: not within {timeout:.0f}s")


def test_the_node_log_query_returns_the_kubelet_log_winnode_configured(world: World) -> None:
    host = world.add_host(HostSpec.server2022(hostname="win-logs"))
    name = "win-logs"
    world.apply(world.windows_node(host, name, network=NETWORK))
    wait_for(f"WindowsNode {name} Ready", lambda: world.phase(name) == "Ready")

    node = world.get("node", name) or {}
    addresses = {a["type"]: a["address"] for a in node["status"]["addresses"]}
    # WinRM on the management NIC, the node on the NIC with the default route.
    assert host.node_address is not None
    assert world.node_network is not None
    assert addresses["InternalIP"] == host.node_address != host.address
    assert world.node_network.holds(addresses["InternalIP"])

    path = f"/api/v1/nodes/{name}/proxy/logs/?query=kubelet"

    def served() -> str | None:
        got = world.cp.kubectl("get", "--raw", path, check=False)
        return got.stdout if got.returncode == 0 and got.stdout.strip() else None

    text = str(wait_for("the node log query", served))
    # The kubelet's own lines, in the file kube-log-runner writes.
    assert "Successfully registered node" in text, text
    assert f"Starting to listen on {host.node_address}:10250" in text, text
    on_host = host.call(lambda m: m.file(kc.KUBELET_LOG))
    assert on_host is not None
    # The kubelet may have printed more since.
    assert on_host.content.decode().startswith(text)

    # A file under C:\var\log by name, as the kubelet serves it.
    by_file = world.cp.kubectl("get", "--raw", f"/api/v1/nodes/{name}/proxy/logs/kubelet/kubelet.log")
    assert by_file.stdout.startswith(text)

    # A user without nodes/proxy is refused by the apiserver before the kubelet is asked.
    user = world.cp.user_kubeconfig("no-node-proxy", groups=["winnode:testers"])
    denied = world.cp.kubectl("get", "--raw", path, kubeconfig=user, check=False)
    assert denied.returncode != 0
    assert 'cannot get resource "nodes/proxy"' in denied.stderr
