"""The local control plane is a real one: readiness, RBAC, CSR signing and the kcm controllers."""

from __future__ import annotations

import base64
import datetime
import json
import os
import secrets
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import kubernetes.client
import kubernetes.config
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from kubernetes.client.exceptions import ApiException

from winnode import timeouts
from winnode.testing.cluster import ControlPlane, binaries_dir, pid_alive, pid_cmdline

T = TypeVar("T")


def wait_for(
    what: str, probe: Callable[[], T | None], poll: timeouts.Poll = timeouts.CONTROL_PLANE_CHECK
) -> T:
    deadline = time.monotonic() + poll.deadline
    while True:
        result = probe()
        if result:
            return result
        if time.monotonic() >= deadline:
            pytest.fail(f"{what}: not within {poll.deadline:.0f}s")
        time.sleep(poll.interval)


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def test_readyz(control_plane: ControlPlane) -> None:
    assert control_plane.server.startswith("https://127.0.0.1:")
    assert control_plane.kubectl("get", "--raw", "/readyz").stdout == "ok"
    version = json.loads(control_plane.kubectl("version", "-o", "json").stdout)
    assert version["serverVersion"]["gitVersion"] == version["clientVersion"]["gitVersion"]


def test_rbac_refuses_a_user_without_bindings(
    control_plane: ControlPlane, kube_api: kubernetes.client.ApiClient
) -> None:
    # Admin (system:masters) may list secrets ...
    kubernetes.client.CoreV1Api(kube_api).list_namespaced_secret("default")

    # ... a freshly issued user with no bindings is authenticated, but refused.
    user_kubeconfig = control_plane.user_kubeconfig("rbac-probe", groups=["winnode:testers"])
    with (
        control_plane.api_client(user_kubeconfig) as client,
        pytest.raises(ApiException) as refused,
    ):
        kubernetes.client.CoreV1Api(client).list_namespaced_secret("default")
    assert refused.value.status == 403
    assert (
        'User "rbac-probe" cannot list resource "secrets"'
        in json.loads(refused.value.body or "{}")["message"]
    )

    denied = control_plane.kubectl("get", "secrets", "-n", "default", kubeconfig=user_kubeconfig, check=False)
    assert denied.returncode != 0
    assert "forbidden" in denied.stderr.lower()
    whoami = json.loads(
        control_plane.kubectl("auth", "whoami", "-o", "json", kubeconfig=user_kubeconfig).stdout
    )
    assert whoami["status"]["userInfo"]["username"] == "rbac-probe"
    assert "winnode:testers" in whoami["status"]["userInfo"]["groups"]


def test_kcm_signs_an_approved_csr(
    control_plane: ControlPlane, kube_api: kubernetes.client.ApiClient
) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    request = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(
            x509.Name(
                [
                    x509.NameAttribute(NameOID.ORGANIZATION_NAME, "winnode:testers"),
                    x509.NameAttribute(NameOID.COMMON_NAME, "csr-probe"),
                ]
            )
        )
        .sign(key, hashes.SHA256())
    )
    name = unique("csr-probe")
    certs = kubernetes.client.CertificatesV1Api(kube_api)
    certs.create_certificate_signing_request(
        kubernetes.client.V1CertificateSigningRequest(
            metadata=kubernetes.client.V1ObjectMeta(name=name),
            spec=kubernetes.client.V1CertificateSigningRequestSpec(
                request=base64.b64encode(request.public_bytes(serialization.Encoding.PEM)).decode(),
                signer_name="kubernetes.io/kube-apiserver-client",
                usages=["digital signature", "client auth"],
                expiration_seconds=3600,
            ),
        )
    )
    try:
        csr = certs.read_certificate_signing_request(name)
        csr.status = kubernetes.client.V1CertificateSigningRequestStatus(
            conditions=[
                kubernetes.client.V1CertificateSigningRequestCondition(
                    type="Approved", status="True", reason="WinnodeTest", message="approved by the test suite"
                )
            ]
        )
        certs.replace_certificate_signing_request_approval(name, csr)

        def issued() -> str | None:
            status = certs.read_certificate_signing_request(name).status
            return str(status.certificate) if status and status.certificate else None

        pem = base64.b64decode(wait_for(f"CSR {name} signed by kcm", issued))
    finally:
        certs.delete_certificate_signing_request(name)

    cert = x509.load_pem_x509_certificate(pem)
    ca = x509.load_pem_x509_certificate(control_plane.ca_cert_path.read_bytes())
    cert.verify_directly_issued_by(ca)
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "csr-probe"
    assert cert.public_key() == key.public_key()
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.CLIENT_AUTH]


def test_namespace_with_content_is_deleted(kube_api: kubernetes.client.ApiClient) -> None:
    core = kubernetes.client.CoreV1Api(kube_api)
    ns = unique("doomed")
    core.create_namespace(kubernetes.client.V1Namespace(metadata=kubernetes.client.V1ObjectMeta(name=ns)))
    core.create_namespaced_config_map(
        ns,
        kubernetes.client.V1ConfigMap(
            metadata=kubernetes.client.V1ObjectMeta(name="payload"), data={"k": "v"}
        ),
    )
    core.delete_namespace(ns)

    def gone() -> bool:
        try:
            core.read_namespace(ns)
        except ApiException as exc:
            if exc.status == 404:
                return True
            raise
        return False

    # The namespace controller (kcm) empties it and removes the `kubernetes` finalizer.
    wait_for(f"namespace {ns} deleted", gone)


def test_default_service_account_appears_in_a_new_namespace(kube_api: kubernetes.client.ApiClient) -> None:
    core = kubernetes.client.CoreV1Api(kube_api)
    ns = unique("fresh")
    core.create_namespace(kubernetes.client.V1Namespace(metadata=kubernetes.client.V1ObjectMeta(name=ns)))
    try:

        def default_sa() -> bool:
            return any(
                sa.metadata is not None and sa.metadata.name == "default"
                for sa in core.list_namespaced_service_account(ns).items
            )

        wait_for(f"ServiceAccount default in {ns}", default_sa)
    finally:
        core.delete_namespace(ns)


def bootstrap_token_secret(
    token_id: str, token_secret: str, expires: datetime.datetime
) -> kubernetes.client.V1Secret:
    """A bootstrap token as kubeadm writes it (kube-system/bootstrap-token-<id>)."""
    return kubernetes.client.V1Secret(
        metadata=kubernetes.client.V1ObjectMeta(name=f"bootstrap-token-{token_id}", namespace="kube-system"),
        type="bootstrap.kubernetes.io/token",
        string_data={
            "token-id": token_id,
            "token-secret": token_secret,
            "expiration": expires.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "usage-bootstrap-authentication": "true",
            "auth-extra-groups": "system:bootstrappers:winnode",
        },
    )


def new_token_id() -> str:
    # Bootstrap token ids are [a-z0-9]{6}; secrets [a-z0-9]{16}.
    return secrets.token_hex(3)


def test_bootstrap_token_authenticates(
    control_plane: ControlPlane, kube_api: kubernetes.client.ApiClient
) -> None:
    core = kubernetes.client.CoreV1Api(kube_api)
    token_id, token_secret = new_token_id(), secrets.token_hex(8)
    expires = datetime.datetime.now(datetime.UTC) + datetime.timedelta(hours=1)
    core.create_namespaced_secret("kube-system", bootstrap_token_secret(token_id, token_secret, expires))
    try:
        kubeconfig = control_plane.token_kubeconfig(f"{token_id}.{token_secret}", name="bootstrap")
        assert token_secret not in kubeconfig.name
        whoami = json.loads(
            control_plane.kubectl("auth", "whoami", "-o", "json", kubeconfig=kubeconfig).stdout
        )
        user = whoami["status"]["userInfo"]
        assert user["username"] == f"system:bootstrap:{token_id}"
        assert {"system:bootstrappers", "system:bootstrappers:winnode"} <= set(user["groups"])

        wrong = control_plane.token_kubeconfig(f"{token_id}.{secrets.token_hex(8)}", name="wrong")
        refused = control_plane.kubectl("auth", "whoami", kubeconfig=wrong, check=False)
        assert refused.returncode != 0
        assert "unauthorized" in refused.stderr.lower()
    finally:
        core.delete_namespaced_secret(f"bootstrap-token-{token_id}", "kube-system")


def test_token_cleaner_deletes_an_expired_bootstrap_token(kube_api: kubernetes.client.ApiClient) -> None:
    core = kubernetes.client.CoreV1Api(kube_api)
    token_id = new_token_id()
    expired = datetime.datetime.now(datetime.UTC) - datetime.timedelta(minutes=1)
    core.create_namespaced_secret(
        "kube-system", bootstrap_token_secret(token_id, secrets.token_hex(8), expired)
    )

    def gone() -> bool:
        try:
            core.read_namespaced_secret(f"bootstrap-token-{token_id}", "kube-system")
        except ApiException as exc:
            if exc.status == 404:
                return True
            raise
        return False

    wait_for(f"expired bootstrap token {token_id} removed by the tokencleaner controller", gone)


def test_node_lifecycle_marks_a_silent_node_unknown(kube_api: kubernetes.client.ApiClient) -> None:
    """A Node whose kubelet stops posting status turns Ready=Unknown after --node-monitor-grace-period
    (shortened for tests), not after upstream's 50 s."""
    core = kubernetes.client.CoreV1Api(kube_api)
    name = unique("silent")
    now = datetime.datetime.now(datetime.UTC)
    core.create_node(
        kubernetes.client.V1Node(
            metadata=kubernetes.client.V1ObjectMeta(name=name, labels={"kubernetes.io/os": "windows"}),
            status=kubernetes.client.V1NodeStatus(
                conditions=[
                    kubernetes.client.V1NodeCondition(
                        type="Ready",
                        status="True",
                        reason="KubeletReady",
                        message="kubelet is posting ready status",
                        last_heartbeat_time=now,
                        last_transition_time=now,
                    )
                ]
            ),
        )
    )
    try:

        def ready_unknown() -> str | None:
            node = core.read_node(name)
            for cond in node.status.conditions or []:
                if cond.type == "Ready" and cond.status == "Unknown":
                    return str(cond.reason)
            return None

        poll = timeouts.Poll(
            interval=timeouts.NODE_MONITOR_PERIOD / 2,
            deadline=timeouts.NODE_MONITOR_GRACE_PERIOD + timeouts.CONTROL_PLANE_CHECK.deadline,
        )
        reason = wait_for(f"Node {name} Ready=Unknown (node lifecycle controller)", ready_unknown, poll)
        assert reason == "NodeStatusUnknown"
        elapsed = (datetime.datetime.now(datetime.UTC) - now).total_seconds()
        assert elapsed >= timeouts.NODE_MONITOR_GRACE_PERIOD - 1, "marked before the grace period ran out"
    finally:
        core.delete_node(name)


OWNER_THEN_KILLED = """
import json, os, signal, sys
from pathlib import Path
from winnode.testing.cluster import start_control_plane
cp = start_control_plane(Path(sys.argv[1]))
print(json.dumps(cp.pids), flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""


@pytest.mark.integration
def test_nothing_outlives_a_killed_owner(tmp_path: Path) -> None:
    """SIGKILL skips atexit; the watchdog still stops etcd, kube-apiserver and kcm."""
    workdir = tmp_path / "cp"
    owner = subprocess.run(
        [sys.executable, "-c", OWNER_THEN_KILLED, str(workdir)],
        capture_output=True,
        text=True,
        timeout=timeouts.CONTROL_PLANE_READY.deadline * 2,
    )
    assert owner.returncode == -signal.SIGKILL, owner.stderr
    pids: list[int] = json.loads(owner.stdout)
    assert len(pids) == 4  # watchdog, etcd, kube-apiserver, kube-controller-manager
    poll = timeouts.Poll(
        interval=timeouts.CONTROL_PLANE_READY.interval, deadline=4 * timeouts.CONTROL_PLANE_STOP_GRACE
    )

    def all_gone() -> bool:
        return not [pid for pid in pids if pid_alive(pid)]

    try:
        wait_for("control plane of a SIGKILLed owner stopped by its watchdog", all_gone, poll)
    finally:
        # Should the watchdog have failed, clean up here, but only processes that are still ours.
        for pid in pids:
            if pid_alive(pid) and str(workdir) in pid_cmdline(pid):
                os.killpg(pid, signal.SIGKILL)


def winnode(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "winnode", *args],
        capture_output=True,
        text=True,
        timeout=timeouts.CONTROL_PLANE_READY.deadline * 2,
        env={k: v for k, v in os.environ.items() if k != "KUBECONFIG"},
    )


@pytest.mark.integration
def test_dev_cluster_round_trip(tmp_path: Path) -> None:
    state_dir = tmp_path / "dev"
    up = winnode("dev-cluster", "up", "--dir", str(state_dir))
    pids: list[int] = []
    try:
        assert up.returncode == 0, up.stderr
        kubeconfig = state_dir / "kubeconfig"
        assert up.stdout.strip() == f"export KUBECONFIG={kubeconfig}"
        pids = json.loads((state_dir / "state.json").read_text())["pids"]
        assert len(pids) == 3
        assert all(pid_alive(pid) for pid in pids), "processes must outlive `up`"

        env = winnode("dev-cluster", "env", "--dir", str(state_dir))
        assert env.returncode == 0, env.stderr
        assert env.stdout.strip() == f"export KUBECONFIG={kubeconfig}"

        # What a user does next: kubectl with the exported KUBECONFIG.
        got = subprocess.run(
            [str(binaries_dir() / "kubectl"), "get", "namespace", "kube-system", "-o", "name"],
            capture_output=True,
            text=True,
            timeout=timeouts.KUBECTL,
            env={**os.environ, "KUBECONFIG": str(kubeconfig)},
        )
        assert got.returncode == 0, got.stderr
        assert got.stdout.strip() == "namespace/kube-system"
    finally:
        down = winnode("dev-cluster", "down", "--dir", str(state_dir))
    assert down.returncode == 0, down.stderr
    assert pids
    assert not [pid for pid in pids if pid_alive(pid)]
    after = winnode("dev-cluster", "env", "--dir", str(state_dir))
    assert after.returncode == 1
    assert "not running" in after.stderr


def test_apiserver_reaches_kubelets_as_an_identity_allowed_node_logs(control_plane: ControlPlane) -> None:
    """kube-apiserver's client identity towards kubelets may read node logs (the kubelet authorizes
    /logs/ as nodes/log through a SubjectAccessReview, pkg/kubelet/server/auth.go); a user without
    nodes/proxy is refused the log query by the apiserver itself."""
    pki_dir = control_plane.workdir / "pki"
    as_apiserver = [
        f"--client-certificate={pki_dir / 'apiserver-kubelet-client.crt'}",
        f"--client-key={pki_dir / 'apiserver-kubelet-client.key'}",
    ]
    for subresource in ("log", "proxy"):
        allowed = control_plane.kubectl(
            *as_apiserver, "auth", "can-i", "get", "nodes", f"--subresource={subresource}", check=False
        )
        assert allowed.stdout.strip() == "yes", (subresource, allowed.stderr)

    user = control_plane.user_kubeconfig("log-reader-probe", groups=["winnode:testers"])
    denied = control_plane.kubectl(
        "get", "--raw", "/api/v1/nodes/any-node/proxy/logs/?query=kubelet", kubeconfig=user, check=False
    )
    assert denied.returncode != 0
    assert 'cannot get resource "nodes/proxy"' in denied.stderr, denied.stderr
