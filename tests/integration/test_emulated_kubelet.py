"""The emulated kubelet against the real control plane: TLS bootstrap through a CSR approved here (as
the operator would), Node registration under NodeRestriction, Lease heartbeats, the serving CSR,
pods finished on delete and eviction, NotReady after stop and a restart on the stored certificate.

The kubelets run on an event loop in a background thread, as in the emulator; the test thread plays
the cluster admin with blocking calls.
"""

from __future__ import annotations

import asyncio
import base64
import datetime
import http.client
import json
import secrets
import ssl
import threading
import time
import uuid
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import kubernetes.client
import pytest
import yaml
from kubernetes.client.exceptions import ApiException

from winnode import timeouts
from winnode.csr.parse import CLIENT_SIGNER, SERVING_SIGNER, parse_csr
from winnode.csr.policy import Decision, ExpectedNode, judge
from winnode.testing import pki
from winnode.testing.cluster import ControlPlane
from winnode.testing.kubelet import EmulatedKubelet, KubeletConfig

T = TypeVar("T")

VERSION = "v1.37.2"
OLD_VERSION = "v1.36.4"
# A group of its own, so bindings other tests make for the product's group do not matter here.
BOOTSTRAP_GROUP = "system:bootstrappers:winnode:kubelet-test"
IMAGE = "mcr.microsoft.com/windows/nanoserver:ltsc2022"
ADDRESS = "127.0.0.11"
CHECK = timeouts.CONTROL_PLANE_CHECK
# kcm notices a silent Lease after its grace period, checked every monitor period.
NOT_READY_WITHIN = timeouts.NODE_MONITOR_GRACE_PERIOD + 3 * timeouts.NODE_MONITOR_PERIOD + 10


def plain(api: kubernetes.client.ApiClient, obj: object) -> dict[str, Any]:
    """A client model as the JSON dict the API sent."""
    result: dict[str, Any] = api.sanitize_for_serialization(obj)  # type: ignore[no-untyped-call]
    return result


def create(cp: ControlPlane, obj: dict[str, Any]) -> None:
    cp.kubectl("create", "-f", "-", input=json.dumps(obj))


def wait_for(what: str, probe: Callable[[], T | None], deadline: float = CHECK.deadline) -> T:
    end = time.monotonic() + deadline
    while True:
        result = probe()
        if result:
            return result
        if time.monotonic() >= end:
            pytest.fail(f"{what}: not within {deadline:.0f}s")
        time.sleep(CHECK.interval)


class LoopThread:
    """An asyncio loop in a daemon thread; run() hands it a coroutine and waits for the result."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="kubelets", daemon=True)
        self._thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 60.0) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()


@dataclass
class Cluster:
    cp: ControlPlane
    api: kubernetes.client.ApiClient
    token_id: str
    kubeconfig: str  # the bootstrap kubeconfig text a host would be given
    namespace: str
    loop: LoopThread
    kubelets: list[EmulatedKubelet] = field(default_factory=list)
    nodes: list[str] = field(default_factory=list)

    @property
    def core(self) -> kubernetes.client.CoreV1Api:
        return kubernetes.client.CoreV1Api(self.api)

    @property
    def certs(self) -> kubernetes.client.CertificatesV1Api:
        return kubernetes.client.CertificatesV1Api(self.api)

    def get(self, *args: str) -> Any:
        return json.loads(self.cp.kubectl("get", *args, "-o", "json").stdout)

    def kubelet(self, state_dir: Path, node: str | None = None, **overrides: Any) -> EmulatedKubelet:
        node = node or f"win-kt-{uuid.uuid4().hex[:6]}"
        config = KubeletConfig(
            node_name=node,
            bootstrap_kubeconfig=overrides.pop("bootstrap_kubeconfig", self.kubeconfig),
            kubelet_version=overrides.pop("kubelet_version", VERSION),
            os_build=20348,
            os_image="Windows Server 2022 Datacenter",
            addresses=[ADDRESS],
            labels={
                "winnode.io/pool": "blue",
                "node.kubernetes.io/exclude-from-external-load-balancers": "true",
            },
            taints=["os=windows:NoSchedule"],
            state_dir=state_dir,
            heartbeat_interval_s=1.0,
            **overrides,
        )
        kubelet = EmulatedKubelet(config)
        self.kubelets.append(kubelet)
        if node not in self.nodes:
            self.nodes.append(node)
        return kubelet

    # -- CSRs ------------------------------------------------------------------------------------

    def csrs(self, node: str, signer: str) -> list[dict[str, Any]]:
        out = []
        for item in self.get("csr")["items"]:
            facts = parse_csr(item)
            if facts.signer_name == signer and facts.common_name == f"system:node:{node}":
                out.append(item)
        return out

    def decide(self, name: str, approve: bool) -> None:
        csr = self.certs.read_certificate_signing_request(name)
        condition = kubernetes.client.V1CertificateSigningRequestCondition(
            type="Approved" if approve else "Denied",
            status="True",
            reason="WinnodeTest",
            message="decided by the emulated-kubelet test",
        )
        assert csr.status is not None
        csr.status.conditions = [*(csr.status.conditions or []), condition]
        self.certs.replace_certificate_signing_request_approval(name, csr)

    def expected(self, node: str, *, node_exists: bool) -> ExpectedNode:
        return ExpectedNode(
            node_name=node,
            bootstrap_token_id=self.token_id,
            addresses=frozenset({ADDRESS}),
            hostnames=frozenset({node}),
            node_exists=node_exists,
        )

    # -- nodes -------------------------------------------------------------------------------------

    def node(self, name: str) -> dict[str, Any] | None:
        try:
            return plain(self.api, self.core.read_node(name))
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def condition(self, name: str, ctype: str = "Ready") -> str | None:
        node = self.node(name) or {}
        for cond in (node.get("status") or {}).get("conditions") or []:
            if cond["type"] == ctype:
                return str(cond["status"])
        return None

    def lease_renew_time(self, name: str) -> str | None:
        coord = kubernetes.client.CoordinationV1Api(self.api)
        try:
            lease = plain(self.api, coord.read_namespaced_lease(name, "kube-node-lease"))
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        return str(lease["spec"]["renewTime"])

    def join(self, kubelet: EmulatedKubelet) -> None:
        """Start the kubelet, approve its client CSR after checking it as the operator would, wait Ready."""
        node = kubelet.config.node_name
        self.loop.run(kubelet.start())
        (csr,) = wait_for(f"client CSR of {node}", lambda: self.csrs(node, CLIENT_SIGNER))
        verdict = judge(parse_csr(csr), self.expected(node, node_exists=False))
        assert verdict.decision is Decision.APPROVE, verdict.reason
        assert kubelet.state == "waiting-for-certificate"
        self.decide(csr["metadata"]["name"], approve=True)
        wait_for(f"{node} ready", lambda: kubelet.state == "ready")
        wait_for(f"Node {node} Ready", lambda: self.condition(node) == "True")


def bootstrap_kubeconfig(cp: ControlPlane, token: str) -> str:
    """What the operator writes to C:\\k\\bootstrap-kubelet.conf."""
    ca = base64.b64encode(cp.ca_cert_path.read_bytes()).decode()
    return yaml.safe_dump(
        {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {"name": "winnode", "cluster": {"server": cp.server, "certificate-authority-data": ca}}
            ],
            "users": [{"name": "tls-bootstrap-token-user", "user": {"token": token}}],
            "contexts": [
                {
                    "name": "tls-bootstrap",
                    "context": {"cluster": "winnode", "user": "tls-bootstrap-token-user"},
                }
            ],
            "current-context": "tls-bootstrap",
        }
    )


@pytest.fixture(scope="module")
def cluster(control_plane: ControlPlane, kube_api: kubernetes.client.ApiClient) -> Iterator[Cluster]:
    core = kubernetes.client.CoreV1Api(kube_api)
    rbac = kubernetes.client.RbacAuthorizationV1Api(kube_api)
    token_id, token_secret = secrets.token_hex(3), secrets.token_hex(8)
    expires = datetime.datetime.now(datetime.UTC) + datetime.timedelta(hours=1)
    secret_name = f"bootstrap-token-{token_id}"
    create(
        control_plane,
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": secret_name, "namespace": "kube-system"},
            "type": "bootstrap.kubernetes.io/token",
            "stringData": {
                "token-id": token_id,
                "token-secret": token_secret,
                "expiration": expires.strftime("%Y-%m-%dT%H:%M:%SZ"),
                "usage-bootstrap-authentication": "true",
                "auth-extra-groups": BOOTSTRAP_GROUP,
            },
        },
    )
    # Only the right to ask for a certificate; approving stays with us (no nodeclient auto-approval).
    binding = f"winnode-test:kubelet-bootstrapper-{token_id}"
    create(
        control_plane,
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": binding},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": "system:node-bootstrapper",
            },
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": BOOTSTRAP_GROUP}],
        },
    )
    namespace = f"kubelet-test-{token_id}"
    create(control_plane, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}})

    def default_sa() -> bool:
        try:
            core.read_namespaced_service_account("default", namespace)
        except ApiException as exc:
            if exc.status == 404:
                return False
            raise
        return True

    wait_for(f"ServiceAccount default in {namespace}", default_sa)
    loop = LoopThread()
    world = Cluster(
        cp=control_plane,
        api=kube_api,
        token_id=token_id,
        kubeconfig=bootstrap_kubeconfig(control_plane, f"{token_id}.{token_secret}"),
        namespace=namespace,
        loop=loop,
    )
    try:
        yield world
    finally:
        for kubelet in world.kubelets:
            loop.run(kubelet.stop())
        loop.close()
        for node in world.nodes:
            try:
                core.delete_node(node)
            except ApiException as exc:
                if exc.status != 404:
                    raise
        core.delete_namespace(namespace)
        rbac.delete_cluster_role_binding(binding)
        core.delete_namespaced_secret(secret_name, "kube-system")


@pytest.fixture(scope="module")
def joined(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> EmulatedKubelet:
    """One kubelet that went through the TLS bootstrap and is Ready; the tests below share it."""
    kubelet = cluster.kubelet(tmp_path_factory.mktemp("kubelet"))
    cluster.join(kubelet)
    return kubelet


def pod_manifest(cluster: Cluster, name: str, node: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": cluster.namespace, "labels": {"app": "kubelet-test"}},
        "spec": {
            "nodeName": node,
            "os": {"name": "windows"},
            "automountServiceAccountToken": False,
            "tolerations": [{"key": "os", "operator": "Equal", "value": "windows", "effect": "NoSchedule"}],
            "containers": [{"name": "app", "image": IMAGE}],
            **spec,
        },
    }


def pod_status(cluster: Cluster, name: str) -> dict[str, Any] | None:
    try:
        pod = cluster.core.read_namespaced_pod(name, cluster.namespace)
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise
    return plain(cluster.api, pod.status)


def running(cluster: Cluster, name: str) -> dict[str, Any] | None:
    status = pod_status(cluster, name)
    if not status or status.get("phase") != "Running":
        return None
    ready = {c["type"]: c["status"] for c in status.get("conditions") or []}
    return status if ready.get("Ready") == "True" else None


# --- the joined node -----------------------------------------------------------------------------


def test_node_registers_as_a_windows_node(cluster: Cluster, joined: EmulatedKubelet) -> None:
    name = joined.config.node_name
    node = cluster.node(name)
    assert node is not None
    labels = node["metadata"]["labels"]
    assert labels["kubernetes.io/os"] == "windows"
    assert labels["kubernetes.io/arch"] == "amd64"
    assert labels["kubernetes.io/hostname"] == name
    assert labels["node.kubernetes.io/windows-build"] == "10.0.20348"
    assert labels["winnode.io/pool"] == "blue"
    assert labels["node.kubernetes.io/exclude-from-external-load-balancers"] == "true"
    assert {"key": "os", "value": "windows", "effect": "NoSchedule"} in node["spec"]["taints"]

    status = node["status"]
    info = status["nodeInfo"]
    assert info["kubeletVersion"] == VERSION
    assert info["kubeProxyVersion"] == ""
    assert info["operatingSystem"] == "windows"
    assert info["architecture"] == "amd64"
    assert info["osImage"] == "Windows Server 2022 Datacenter"
    assert info["kernelVersion"].startswith("10.0.20348.")
    assert info["containerRuntimeVersion"].startswith("containerd://1.7.")
    assert {"type": "InternalIP", "address": ADDRESS} in status["addresses"]
    assert {"type": "Hostname", "address": name} in status["addresses"]
    for resource in ("cpu", "memory", "pods", "ephemeral-storage"):
        assert resource in status["capacity"]
        assert resource in status["allocatable"]
    conditions = {c["type"]: c for c in status["conditions"]}
    assert conditions["Ready"]["status"] == "True"
    assert conditions["Ready"]["reason"] == "KubeletReady"
    for pressure in ("MemoryPressure", "DiskPressure", "PIDPressure"):
        assert conditions[pressure]["status"] == "False"
    assert status["daemonEndpoints"]["kubeletEndpoint"]["Port"] == 10250

    # The client certificate is the node's own identity, kept for restarts.
    assert joined.client_cert_path.is_file()
    assert joined.client_cert_path.stat().st_mode & 0o077 == 0
    whoami = json.loads(
        cluster.cp.kubectl("auth", "whoami", "-o", "json", kubeconfig=joined.kubeconfig_path).stdout
    )
    user = whoami["status"]["userInfo"]
    assert user["username"] == f"system:node:{name}"
    assert "system:nodes" in user["groups"]


def test_lease_is_renewed_every_heartbeat(cluster: Cluster, joined: EmulatedKubelet) -> None:
    name = joined.config.node_name
    coord = kubernetes.client.CoordinationV1Api(cluster.api)
    lease = plain(cluster.api, coord.read_namespaced_lease(name, "kube-node-lease"))
    assert lease["spec"]["holderIdentity"] == name
    assert lease["spec"]["leaseDurationSeconds"] == 40
    node = cluster.node(name)
    assert node is not None
    (owner,) = lease["metadata"]["ownerReferences"]
    assert (owner["kind"], owner["name"], owner["uid"]) == ("Node", name, node["metadata"]["uid"])
    first = lease["spec"]["renewTime"]
    wait_for("lease renewed", lambda: cluster.lease_renew_time(name) != first, deadline=10)


def test_node_restriction_holds_for_the_node_identity(cluster: Cluster, joined: EmulatedKubelet) -> None:
    as_node = joined.kubeconfig_path
    name = joined.config.node_name
    own = cluster.cp.kubectl(
        "label", "node", name, "kubelet.kubernetes.io/probe=1", kubeconfig=as_node, check=False
    )
    assert own.returncode == 0, own.stderr
    restricted = cluster.cp.kubectl(
        "label", "node", name, "node-restriction.kubernetes.io/pool=x", kubeconfig=as_node, check=False
    )
    assert restricted.returncode != 0
    assert "not allowed to modify labels" in restricted.stderr
    taint = cluster.cp.kubectl("taint", "node", name, "x=y:NoSchedule", kubeconfig=as_node, check=False)
    assert taint.returncode != 0
    assert "not allowed to modify taints" in taint.stderr


def test_serving_csr_names_the_node_addresses(cluster: Cluster, joined: EmulatedKubelet) -> None:
    name = joined.config.node_name
    (csr,) = wait_for("serving CSR", lambda: cluster.csrs(name, SERVING_SIGNER))
    facts = parse_csr(csr)
    assert facts.username == f"system:node:{name}"
    assert "system:nodes" in facts.groups
    assert facts.usages == {"digital signature", "server auth"}
    assert facts.key_type == "ecdsa"
    assert facts.organizations == ("system:nodes",)
    assert facts.ip_addresses == {ADDRESS}
    assert facts.dns_names == {name}
    verdict = judge(facts, cluster.expected(name, node_exists=True))
    assert verdict.decision is Decision.APPROVE, verdict.reason
    # Nothing approves it but us; the kubelet runs meanwhile.
    assert joined.state == "ready"
    assert not joined.serving_certificate_ready
    cluster.decide(csr["metadata"]["name"], approve=True)
    wait_for("serving certificate stored", lambda: joined.serving_certificate_ready)
    assert joined.serving_cert_path.is_file()


def test_bound_pod_runs_and_a_deleted_one_goes_away(cluster: Cluster, joined: EmulatedKubelet) -> None:
    node = joined.config.node_name
    ns = cluster.namespace
    create(cluster.cp, pod_manifest(cluster, "web", node, initContainers=[{"name": "init", "image": IMAGE}]))
    status = wait_for("pod web Running and Ready", lambda: running(cluster, "web"))
    assert status["hostIP"] == ADDRESS
    assert status["podIP"]
    assert status["podIP"] != ADDRESS
    (container,) = status["containerStatuses"]
    assert container["name"] == "app"
    assert container["ready"] is True
    assert "running" in container["state"]
    assert container["containerID"].startswith("containerd://")
    (init,) = status["initContainerStatuses"]
    assert init["state"]["terminated"]["exitCode"] == 0
    assert {c["type"] for c in status["conditions"]} >= {
        "Initialized",
        "Ready",
        "ContainersReady",
        "PodScheduled",
    }

    started = time.monotonic()
    cluster.core.delete_namespaced_pod("web", ns)  # default grace period: 30 s
    wait_for("pod web gone", lambda: pod_status(cluster, "web") is None)
    assert time.monotonic() - started < 20, "the kubelet finishes the pod, nobody waits out its grace period"


def test_evicted_pod_is_finished(cluster: Cluster, joined: EmulatedKubelet) -> None:
    ns = cluster.namespace
    create(cluster.cp, pod_manifest(cluster, "batch", joined.config.node_name))
    wait_for("pod batch Running", lambda: running(cluster, "batch"))
    eviction = kubernetes.client.V1Eviction(
        metadata=kubernetes.client.V1ObjectMeta(name="batch", namespace=ns)
    )
    cluster.core.create_namespaced_pod_eviction("batch", ns, eviction)
    wait_for("evicted pod batch gone", lambda: pod_status(cluster, "batch") is None)


def test_linux_pod_is_rejected_by_the_node(cluster: Cluster, joined: EmulatedKubelet) -> None:
    ns = cluster.namespace
    manifest = pod_manifest(cluster, "linux", joined.config.node_name)
    manifest["spec"]["os"] = {"name": "linux"}
    create(cluster.cp, manifest)
    status = wait_for(
        "pod linux Failed", lambda: (s := pod_status(cluster, "linux")) and s.get("phase") == "Failed" and s
    )
    assert status["reason"] == "PodOSNotSupported"
    cluster.core.delete_namespaced_pod("linux", ns)
    wait_for("pod linux gone", lambda: pod_status(cluster, "linux") is None)


def test_stop_goes_not_ready_and_start_resumes_on_the_stored_certificate(
    cluster: Cluster, joined: EmulatedKubelet
) -> None:
    name = joined.config.node_name
    cluster.loop.run(joined.stop())
    assert joined.state == "stopped"
    stopped_at = cluster.lease_renew_time(name)
    wait_for(
        f"Node {name} NotReady/Unknown",
        lambda: cluster.condition(name) in ("False", "Unknown"),
        NOT_READY_WITHIN,
    )
    assert cluster.lease_renew_time(name) == stopped_at, "a stopped kubelet renews nothing"

    cluster.loop.run(joined.start())
    wait_for(f"{name} ready again", lambda: joined.state == "ready")
    wait_for(f"Node {name} Ready again", lambda: cluster.condition(name) == "True")
    assert joined.client_csr_name is None
    assert len(cluster.csrs(name, CLIENT_SIGNER)) == 1
    assert joined.serving_certificate_ready  # stored, still valid: no new serving CSR either
    assert len(cluster.csrs(name, SERVING_SIGNER)) == 1


def test_restart_with_a_new_kubelet_reports_its_version(cluster: Cluster, joined: EmulatedKubelet) -> None:
    name = joined.config.node_name
    cluster.loop.run(joined.stop())
    # The upgraded binary: a new process on the same state directory.
    upgraded = cluster.kubelet(joined.config.state_dir, node=name, kubelet_version="v1.37.3")
    cluster.loop.run(upgraded.start())
    wait_for(f"{name} ready", lambda: upgraded.state == "ready")

    def version() -> str | None:
        node = cluster.node(name) or {}
        return str(((node.get("status") or {}).get("nodeInfo") or {}).get("kubeletVersion"))

    wait_for("new kubeletVersion", lambda: version() == "v1.37.3")
    assert upgraded.client_csr_name is None
    assert len(cluster.csrs(name, CLIENT_SIGNER)) == 1


# --- kubelets that do not get in -----------------------------------------------------------------


def test_unknown_bootstrap_token_fails_the_kubelet(cluster: Cluster, tmp_path: Path) -> None:
    secret = secrets.token_hex(8)
    kubeconfig = bootstrap_kubeconfig(cluster.cp, f"{secrets.token_hex(3)}.{secret}")
    kubelet = cluster.kubelet(tmp_path, bootstrap_kubeconfig=kubeconfig)
    cluster.loop.run(kubelet.start())
    wait_for("kubelet failed", lambda: kubelet.state == "failed")
    assert kubelet.last_error is not None
    assert "401" in kubelet.last_error
    assert secret not in kubelet.last_error
    assert cluster.node(kubelet.config.node_name) is None


def test_denied_client_csr_fails_the_kubelet(cluster: Cluster, tmp_path: Path) -> None:
    kubelet = cluster.kubelet(tmp_path, kubelet_version=OLD_VERSION)
    node = kubelet.config.node_name
    cluster.loop.run(kubelet.start())
    (csr,) = wait_for("client CSR", lambda: cluster.csrs(node, CLIENT_SIGNER))
    cluster.decide(csr["metadata"]["name"], approve=False)
    wait_for("kubelet failed", lambda: kubelet.state == "failed")
    assert "denied" in (kubelet.last_error or "")
    assert cluster.node(node) is None
    with pytest.raises(Exception, match="denied"):
        cluster.loop.run(kubelet.wait())


# --- through the emulated host's kubelet service ---------------------------------------------------


def test_kubelet_service_of_an_emulated_host_joins(cluster: Cluster) -> None:
    """The emulator starts this kubelet when the host's `kubelet` service starts, configured from the
    service's command line and files, on the emulator's own event loop."""
    from winrm.protocol import Protocol

    from winnode.host.protocol import parse_result
    from winnode.testing.artifacts import ArtifactServer, kubernetes_node_binaries, sha256_hex
    from winnode.testing.emulator import EmulatorServer, HostSpec, run_script_with_pywinrm
    from winnode.testing.hostmodel import stdin_for

    node = f"win-svc-{uuid.uuid4().hex[:6]}"
    cluster.nodes.append(node)
    binary = f"/{VERSION}/bin/windows/amd64/kubelet.exe"
    command_line = (
        '"C:\\k\\kubelet.exe" --windows-service --bootstrap-kubeconfig=C:\\k\\bootstrap-kubelet.conf '
        f"--kubeconfig=C:\\k\\kubelet.conf --hostname-override={node} "
        '"--node-labels=node.kubernetes.io/windows-build=10.0.17763,winnode.io/pool=green" '
        "--register-with-taints=os=windows:NoSchedule"
    )
    with ArtifactServer(kubernetes_node_binaries(VERSION)) as artifacts, EmulatorServer() as server:
        host = server.add_host(HostSpec.server2019(hostname=node.upper()))
        content = artifacts.get(binary)
        assert content is not None

        def run(action: str, params: dict[str, object]) -> dict[str, object]:
            protocol = Protocol(
                host.endpoint,
                transport="ntlm",
                username=host.username,
                password=host.password,
                ca_trust_path=None,  # type: ignore[arg-type]
            )
            stdout, _, code = run_script_with_pywinrm(protocol, stdin_for(action, params))
            result = parse_result(stdout)
            assert code == 0, result
            return result

        run("ensure_directories", {"paths": ["C:\\k"]})
        run(
            "fetch_file",
            {"url": artifacts.url_for(binary), "path": "C:\\k\\kubelet.exe", "sha256": sha256_hex(content)},
        )
        run(
            "write_file",
            {"path": "C:\\k\\bootstrap-kubelet.conf", "content": cluster.kubeconfig, "secret": True},
        )
        run(
            "service_ensure",
            {
                "name": "kubelet",
                "binary_path": command_line,
                "display_name": "kubelet",
                "description": "Kubernetes node agent (managed by winnode)",
                "dependencies": ["containerd"],
            },
        )
        assert run("service_start", {"name": "kubelet"})["state"] == "Running"
        kubelet = host.kubelet
        assert isinstance(kubelet, EmulatedKubelet)

        (csr,) = wait_for(f"client CSR of {node}", lambda: cluster.csrs(node, CLIENT_SIGNER))
        cluster.decide(csr["metadata"]["name"], approve=True)

        # Joined but without a pod network: containerd's CNI is not initialized, so the Node
        # registers NotReady with the runtime's message, as a real one does.
        def ready_message() -> str | None:
            for cond in ((cluster.node(node) or {}).get("status") or {}).get("conditions") or []:
                if cond["type"] == "Ready" and cond["status"] == "False":
                    return str(cond.get("message") or "")
            return None

        assert "cni plugin not initialized" in wait_for(f"Node {node} NotReady", ready_message)
        # The Microsoft layout's directories, with a config whose plugins are present.
        conf_dir, bin_dir = (
            "C:\\Program Files\\containerd\\cni\\conf",
            "C:\\Program Files\\containerd\\cni\\bin",
        )
        run("ensure_directories", {"paths": [conf_dir, bin_dir]})
        for plugin in ("win-bridge.exe", "host-local.exe"):
            run("write_file", {"path": f"{bin_dir}\\{plugin}", "content": "MZ"})
        cni_config = {
            "cniVersion": "1.0.0",
            "name": "pods",
            "type": "win-bridge",
            "ipam": {"type": "host-local", "subnet": "10.244.7.0/24"},
        }
        run("write_file", {"path": f"{conf_dir}\\10-pods.conf", "content": json.dumps(cni_config)})
        wait_for(f"Node {node} Ready", lambda: cluster.condition(node) == "True")
        registered = cluster.node(node)
        assert registered is not None
        assert registered["metadata"]["labels"]["node.kubernetes.io/windows-build"] == "10.0.17763"
        assert registered["metadata"]["labels"]["winnode.io/pool"] == "green"
        assert registered["status"]["nodeInfo"]["osImage"] == "Windows Server 2019 Datacenter"
        assert {"type": "InternalIP", "address": host.address} in registered["status"]["addresses"]

        # Stopping the service stops the kubelet: its Lease is no longer renewed.
        assert run("service_stop", {"name": "kubelet"})["state"] == "Stopped"
        assert kubelet.state == "stopped"
        last = cluster.lease_renew_time(node)
        time.sleep(1.5 * kubelet.config.heartbeat_interval_s)
        assert cluster.lease_renew_time(node) == last


def test_restart_while_waiting_finds_its_pending_csr(cluster: Cluster, tmp_path: Path) -> None:
    kubelet = cluster.kubelet(tmp_path)
    node = kubelet.config.node_name
    cluster.loop.run(kubelet.start())
    (csr,) = wait_for("client CSR", lambda: cluster.csrs(node, CLIENT_SIGNER))
    cluster.loop.run(kubelet.stop())
    # Same key kept on disk, so the same digest-named request: no second CSR for the operator to judge.
    cluster.loop.run(kubelet.start())
    wait_for("waiting again", lambda: kubelet.state == "waiting-for-certificate")
    assert kubelet.client_csr_name == csr["metadata"]["name"]
    assert len(cluster.csrs(node, CLIENT_SIGNER)) == 1
    cluster.decide(csr["metadata"]["name"], approve=True)
    wait_for(f"Node {node} Ready", lambda: cluster.condition(node) == "True")
    assert not (tmp_path / "pki" / "kubelet-client.key.tmp").exists()


def _kubelet_get(
    address: str, port: int, path: str, ca: Path, cert: Path | None, key: Path | None
) -> tuple[int, str]:
    ctx = ssl.create_default_context(cafile=str(ca))
    if cert is not None:
        ctx.load_cert_chain(cert, key)
    conn = http.client.HTTPSConnection(address, port, context=ctx, timeout=10)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.read().decode()
    finally:
        conn.close()


def test_node_log_query_served_by_the_kubelet(
    cluster: Cluster, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """The kubelet's /logs/ as kube-apiserver calls it: on the Node's InternalIP and daemon port, with the
    serving certificate kcm signed (checked against the cluster CA, as --kubelet-certificate-authority
    does), the apiserver's kubelet client certificate checked against the client CA, and a
    SubjectAccessReview on nodes/log asked of the real apiserver (pkg/kubelet/server/auth.go). The log
    comes from the host's C:\\var\\log (pkg/kubelet/kubelet_server_journal.go nodeLogDir)."""
    from winnode.testing.cluster import free_ports

    log_text = b"I1204 10:00:00.000000    4242 server.go:1] emulated kubelet started\n"
    files = {"C:\\var\\log\\kubelet.log": log_text}
    (port,) = free_ports(1)
    kubelet = cluster.kubelet(tmp_path_factory.mktemp("kubelet-logs"), read_file=files.get, port=port)
    node = kubelet.config.node_name
    cluster.join(kubelet)
    (csr,) = wait_for("serving CSR", lambda: cluster.csrs(node, SERVING_SIGNER))
    cluster.decide(csr["metadata"]["name"], approve=True)
    wait_for("serving certificate", lambda: kubelet.serving_certificate_ready)
    assert (cluster.node(node) or {})["status"]["daemonEndpoints"]["kubeletEndpoint"]["Port"] == port

    pki_dir = cluster.cp.workdir / "pki"
    ca = cluster.cp.ca_cert_path
    as_apiserver = (pki_dir / "apiserver-kubelet-client.crt", pki_dir / "apiserver-kubelet-client.key")

    def get(path: str, cert: Path | None = None, key: Path | None = None) -> tuple[int, str] | None:
        try:
            return _kubelet_get(ADDRESS, port, path, ca, cert, key)
        except OSError:
            return None  # still binding

    served = wait_for("kubelet serving", lambda: get("/logs/?query=kubelet", *as_apiserver))
    assert served == (200, log_text.decode())
    assert get("/logs/kubelet.log", *as_apiserver) == (200, log_text.decode())
    status, body = get("/logs/?query=kube$let", *as_apiserver) or (0, "")
    assert status == 406
    assert 'query: Invalid value: "kube$let": input contains unsupported characters' in body
    assert get("/logs/?query=kubelet") == (401, "Unauthorized\n")

    # A client of the cluster CA whom RBAC grants nothing: the apiserver's SubjectAccessReview says no.
    users = cluster.cp.workdir / "users"
    users.mkdir(exist_ok=True)
    nobody = pki.issue_client_cert(pki.load_ca(ca, cluster.cp.ca_key_path), "no-node-log")
    nobody.write(users / "no-node-log.crt", users / "no-node-log.key")
    assert get("/logs/?query=kubelet", users / "no-node-log.crt", users / "no-node-log.key") == (
        403,
        "Forbidden (user=no-node-log, verb=get, resource=nodes, subresource(s)=[log])\n",
    )

    # Through the apiserver: a user without nodes/proxy is refused there. An authorized request is
    # refused too in this test world, because kube-apiserver proxies only to global unicast node
    # addresses (pkg/registry/core/node/strategy.go isProxyableHostname) and emulated nodes live on
    # loopback.
    path = f"/api/v1/nodes/{node}/proxy/logs/?query=kubelet"
    user = cluster.cp.user_kubeconfig("no-node-proxy", groups=["winnode:testers"])
    denied = cluster.cp.kubectl("get", "--raw", path, kubeconfig=user, check=False)
    assert denied.returncode != 0
    assert 'cannot get resource "nodes/proxy"' in denied.stderr
    loopback = cluster.cp.kubectl("get", "--raw", path, check=False)
    assert "address not allowed" in loopback.stderr
