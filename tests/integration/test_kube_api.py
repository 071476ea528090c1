"""winnode.kube against the real apiserver, run as a user holding exactly the RBAC rules of
winnode.kube.rbac (so these tests also prove the rules suffice). Objects are set up as admin.

There is no kubelet here: pods are bound by setting spec.nodeName (or through the binding
subresource, as a scheduler does), marked Running/Ready by patching their status, and pods that are
evicted stay Terminating until the `fake_kubelet` below force-deletes them (grace 0), which is what
a kubelet does once the containers are gone.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime as dt
import json
import re
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from winnode import timeouts
from winnode.api.common import SecretReference, Taint, TaintEffect
from winnode.csr.approver import APPROVAL_REASON, approve_pending
from winnode.csr.parse import CLIENT_SIGNER
from winnode.csr.policy import Decision, ExpectedNode
from winnode.kube import rbac
from winnode.kube.client import JSON_MERGE_PATCH, ApiError, Kube, KubeConfigError
from winnode.kube.credentials import CredentialsError, read_credentials
from winnode.kube.drain import drain, drain_once
from winnode.kube.events import REDACTED, post_event
from winnode.kube.nodes import (
    NodeNotFoundError,
    apply_labels_and_taints,
    delete_node,
    get_node,
    node_is_ready,
    node_kubelet_version,
    set_pod_cidr,
    set_unschedulable,
)
from winnode.kube.tokens import (
    EXTRA_GROUP,
    NODE_LABEL,
    SECRET_TYPE,
    ensure_bootstrap_token,
    find_bootstrap_token_id,
    revoke_bootstrap_tokens,
)
from winnode.testing.cluster import ControlPlane

T = TypeVar("T")

OPERATOR_USER = "kubetest-winnode-operator"
MANAGED = "winnode.io/managed"


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


async def wait_until(
    what: str, probe: Callable[[], Awaitable[T | None]], poll: timeouts.Poll = timeouts.CONTROL_PLANE_CHECK
) -> T:
    deadline = time.monotonic() + poll.deadline
    while True:
        result = await probe()
        if result:
            return result
        if time.monotonic() >= deadline:
            pytest.fail(f"{what}: not within {poll.deadline:.0f}s")
        await asyncio.sleep(poll.interval)


# --- fixtures ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def admin(control_plane: ControlPlane) -> Iterator[Kube]:
    kube = Kube.from_kubeconfig(control_plane.kubeconfig)
    yield kube
    kube.close()


def _rbac_documents() -> list[dict[str, Any]]:
    role_ref = {"apiGroup": "rbac.authorization.k8s.io"}
    user = [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": OPERATOR_USER}]
    cluster_role = rbac.cluster_role()
    cluster_role["metadata"]["name"] = OPERATOR_USER
    return [
        cluster_role,
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": OPERATOR_USER},
            "roleRef": {**role_ref, "kind": "ClusterRole", "name": OPERATOR_USER},
            "subjects": user,
        },
        rbac.role(OPERATOR_USER, "kube-system", rbac.KUBE_SYSTEM_RULES),
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": {"name": OPERATOR_USER, "namespace": "kube-system"},
            "roleRef": {**role_ref, "kind": "Role", "name": OPERATOR_USER},
            "subjects": user,
        },
        *(b.to_dict() for b in rbac.BINDINGS),
    ]


@pytest.fixture(scope="module")
def operator_kube(control_plane: ControlPlane) -> Iterator[Kube]:
    """The operator's view of the cluster: only what winnode.kube.rbac grants."""
    control_plane.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(_rbac_documents()))
    deadline = time.monotonic() + timeouts.CONTROL_PLANE_CHECK.deadline
    # The RBAC authorizer learns of new bindings through an informer.
    while (
        control_plane.kubectl(
            "auth", "can-i", "create", "secrets", "-n", "kube-system", f"--as={OPERATOR_USER}", check=False
        ).stdout.strip()
        != "yes"
    ):
        assert time.monotonic() < deadline, "RBAC for the operator user never took effect"
        time.sleep(timeouts.CONTROL_PLANE_CHECK.interval)
    kube = Kube.from_kubeconfig(control_plane.user_kubeconfig(OPERATOR_USER))
    yield kube
    kube.close()


@pytest.fixture(scope="module")
def nobody_kube(control_plane: ControlPlane) -> Iterator[Kube]:
    """Authenticated, but granted nothing."""
    kube = Kube.from_kubeconfig(control_plane.user_kubeconfig("kubetest-nobody"))
    yield kube
    kube.close()


async def create_node(
    admin: Kube, name: str, labels: dict[str, str] | None = None, **spec: Any
) -> dict[str, Any]:
    body = {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name, "labels": {"kubernetes.io/os": "windows", **(labels or {})}},
        "spec": spec,
    }
    return await admin.request("POST", "/api/v1/nodes", body=body)


async def create_namespace(admin: Kube, name: str) -> None:
    await admin.request("POST", "/api/v1/namespaces", body={"metadata": {"name": name}})

    async def service_account() -> dict[str, Any] | None:
        return await admin.request(
            "GET", f"/api/v1/namespaces/{name}/serviceaccounts/default", missing_ok=True
        )

    # Pods are refused until kcm has created the namespace's default ServiceAccount.
    await wait_until(f"ServiceAccount {name}/default", service_account)


# --- client ------------------------------------------------------------------------------------


async def test_client_from_kubeconfig_and_missing_ok(
    control_plane: ControlPlane, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("KUBECONFIG", str(control_plane.kubeconfig))
    kube = Kube.from_kubeconfig()
    try:
        assert control_plane.server in repr(kube)
        absent = unique("absent")
        assert await kube.request("GET", f"/api/v1/nodes/{absent}", missing_ok=True) is None
        with pytest.raises(ApiError) as missing:
            await kube.request("GET", f"/api/v1/nodes/{absent}")
        assert missing.value.status == 404
        # The apiserver's Status message, never the body or headers.
        assert str(missing.value) == f'HTTP 404 Not Found: nodes "{absent}" not found'
        namespaces = await kube.request("GET", "/api/v1/namespaces")
        assert "default" in {ns["metadata"]["name"] for ns in namespaces["items"]}
    finally:
        await kube.aclose()
    with pytest.raises(KubeConfigError, match="cannot load Kubernetes credentials"):
        Kube.from_kubeconfig(tmp_path / "nope")


async def test_list_pages_reads_the_whole_list_a_page_at_a_time(admin: Kube) -> None:
    """Five ConfigMaps in pages of two: three requests with limit and continue, every item once."""
    namespace = "default"
    prefix = unique("paged")
    names = {f"{prefix}-{i}" for i in range(5)}
    for name in names:
        await admin.request(
            "POST",
            f"/api/v1/namespaces/{namespace}/configmaps",
            body={"metadata": {"name": name, "labels": {"paged": prefix}}},
        )
    try:
        pages = [
            page
            async for page in admin.list_pages(
                f"/api/v1/namespaces/{namespace}/configmaps",
                {"labelSelector": f"paged={prefix}"},
                page_size=2,
            )
        ]
        assert [len(p) for p in pages] == [2, 2, 1]
        read = [item["metadata"]["name"] for page in pages for item in page]
        assert sorted(read) == sorted(names)
    finally:
        for name in names:
            await admin.request(
                "DELETE", f"/api/v1/namespaces/{namespace}/configmaps/{name}", missing_ok=True
            )


# --- bootstrap tokens and CSR approval ---------------------------------------------------------


def token_kubeconfig(control_plane: ControlPlane, token: str, path: Path) -> Path:
    ca = base64.b64encode(control_plane.ca_cert_path.read_bytes()).decode()
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {"name": "c", "cluster": {"server": control_plane.server, "certificate-authority-data": ca}}
        ],
        "users": [{"name": "bootstrap", "user": {"token": token}}],
        "contexts": [{"name": "bootstrap", "context": {"cluster": "c", "user": "bootstrap"}}],
        "current-context": "bootstrap",
    }
    path.write_text(yaml.safe_dump(config))
    path.chmod(0o600)
    return path


def kubelet_csr(cn: str) -> dict[str, Any]:
    """A client CSR as a kubelet sends it at first join."""
    key = ec.generate_private_key(ec.SECP256R1())
    request = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(
            x509.Name(
                [
                    x509.NameAttribute(NameOID.ORGANIZATION_NAME, "system:nodes"),
                    x509.NameAttribute(NameOID.COMMON_NAME, cn),
                ]
            )
        )
        .sign(key, hashes.SHA256())
    )
    return {
        "apiVersion": "certificates.k8s.io/v1",
        "kind": "CertificateSigningRequest",
        "metadata": {"generateName": "node-csr-"},
        "spec": {
            "request": base64.b64encode(request.public_bytes(serialization.Encoding.PEM)).decode(),
            "signerName": CLIENT_SIGNER,
            "usages": ["digital signature", "client auth"],
        },
    }


async def token_secrets(admin: Kube, node: str) -> list[dict[str, Any]]:
    listing = await admin.request(
        "GET", "/api/v1/namespaces/kube-system/secrets", query={"labelSelector": f"{NODE_LABEL}={node}"}
    )
    return list(listing["items"])


async def test_bootstrap_token_authenticates_and_its_csr_is_approved(
    control_plane: ControlPlane, admin: Kube, operator_kube: Kube, tmp_path: Path
) -> None:
    node, other = unique("win-csr"), unique("win-other")
    token = await ensure_bootstrap_token(operator_kube, node, dt.timedelta(minutes=30))
    assert re.fullmatch(r"[a-z0-9]{6}\.[a-z0-9]{16}", token.value)

    [secret] = await token_secrets(admin, node)
    assert secret["metadata"]["name"] == f"bootstrap-token-{token.token_id}"
    assert secret["type"] == SECRET_TYPE
    data = {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}
    assert data["token-id"] == token.token_id
    assert data["token-secret"] == token.secret
    assert data["usage-bootstrap-authentication"] == "true"
    assert data["auth-extra-groups"] == EXTRA_GROUP
    assert dt.datetime.fromisoformat(data["expiration"].replace("Z", "+00:00")) == token.expires
    assert node in data["description"]

    # Asked again (a reconcile after an operator restart): the same token.
    assert await ensure_bootstrap_token(operator_kube, node, dt.timedelta(minutes=30)) == token
    assert await find_bootstrap_token_id(operator_kube, node) == token.token_id

    kubeconfig = token_kubeconfig(control_plane, token.value, tmp_path / "bootstrap.kubeconfig")
    whoami = json.loads(control_plane.kubectl("auth", "whoami", "-o", "json", kubeconfig=kubeconfig).stdout)
    user = whoami["status"]["userInfo"]
    assert user["username"] == f"system:bootstrap:{token.token_id}"
    assert {"system:bootstrappers", EXTRA_GROUP} <= set(user["groups"])

    # With system:node-bootstrapper bound to our group (rbac.BINDINGS), the token may ask for a
    # certificate, for its own node (good) and, as an attacker would, for another of ours (bad).
    kubelet = Kube.from_kubeconfig(kubeconfig)
    try:
        good = (
            await kubelet.request(
                "POST",
                "/apis/certificates.k8s.io/v1/certificatesigningrequests",
                body=kubelet_csr(f"system:node:{node}"),
            )
        )["metadata"]["name"]
        bad = (
            await kubelet.request(
                "POST",
                "/apis/certificates.k8s.io/v1/certificatesigningrequests",
                body=kubelet_csr(f"system:node:{other}"),
            )
        )["metadata"]["name"]
    finally:
        kubelet.close()

    expected = {
        node: ExpectedNode(node, token.token_id, frozenset(), frozenset({node}), node_exists=False),
        other: ExpectedNode(other, "zzzzzz", frozenset(), frozenset({other}), node_exists=False),
    }
    results = dict(await approve_pending(operator_kube, expected.get, windows_node_for=lambda n: f"wn-{n}"))
    assert results[good].decision is Decision.APPROVE
    assert results[bad].decision is Decision.REJECT
    assert "bootstrap token issued for this node" in results[bad].reason

    csr_path = "/apis/certificates.k8s.io/v1/certificatesigningrequests/"
    approved = await admin.request("GET", csr_path + good)
    [condition] = approved["status"]["conditions"]
    assert (condition["type"], condition["status"], condition["reason"]) == (
        "Approved",
        "True",
        APPROVAL_REASON,
    )
    assert f"WindowsNode wn-{node}" in condition["message"]

    async def issued() -> str | None:
        status = (await admin.request("GET", csr_path + good)).get("status") or {}
        return status.get("certificate")

    cert = x509.load_pem_x509_certificate(base64.b64decode(await wait_until(f"CSR {good} signed", issued)))
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == f"system:node:{node}"
    # The bad one is left alone: neither approved nor denied.
    assert not ((await admin.request("GET", csr_path + bad)).get("status") or {}).get("conditions")

    again = dict(await approve_pending(operator_kube, expected.get))
    assert again[good].decision is Decision.ALREADY_DONE
    assert again[bad].decision is Decision.REJECT
    # CSRs of nodes we do not manage are not reported.
    assert dict(await approve_pending(operator_kube, lambda _: None)) == {}

    assert await revoke_bootstrap_tokens(operator_kube, node) == 1
    assert await token_secrets(admin, node) == []
    assert await find_bootstrap_token_id(operator_kube, node) is None
    assert await revoke_bootstrap_tokens(operator_kube, node) == 0

    async def refused() -> bool:
        result = control_plane.kubectl("auth", "whoami", kubeconfig=kubeconfig, check=False)
        return result.returncode != 0 and "Unauthorized" in result.stderr

    # The apiserver caches successful token authentications for a few seconds.
    await wait_until("revoked token refused", refused)
    for name in (good, bad):
        await admin.request("DELETE", csr_path + name)


async def test_bootstrap_token_is_replaced_when_half_its_ttl_is_gone(
    admin: Kube, operator_kube: Kube
) -> None:
    node = unique("win-rotate")
    short = await ensure_bootstrap_token(operator_kube, node, dt.timedelta(minutes=10))
    # Ten minutes left is not more than half of thirty: a new token, the old one deleted.
    fresh = await ensure_bootstrap_token(operator_kube, node, dt.timedelta(minutes=30))
    assert fresh.token_id != short.token_id
    assert fresh.remaining() > dt.timedelta(minutes=29)
    assert [s["metadata"]["name"] for s in await token_secrets(admin, node)] == [
        f"bootstrap-token-{fresh.token_id}"
    ]
    assert await find_bootstrap_token_id(operator_kube, node) == fresh.token_id
    # Tokens are per node.
    assert await find_bootstrap_token_id(operator_kube, unique("win-none")) is None
    assert await revoke_bootstrap_tokens(operator_kube, node) == 1


# --- nodes -------------------------------------------------------------------------------------


def taints_of(node: dict[str, Any]) -> set[tuple[str, str | None, str]]:
    return {(t["key"], t.get("value"), t["effect"]) for t in node["spec"].get("taints") or []}


async def test_labels_and_taints_merge(admin: Kube, operator_kube: Kube) -> None:
    name = unique("win-labels")
    await create_node(
        admin,
        name,
        labels={"team": "theirs"},
        taints=[{"key": "example.com/foreign", "value": "x", "effect": "NoSchedule"}],
    )
    first_labels = {"winnode.io/pool": "a", "tier": "web"}
    first_taints = [
        Taint(key="os", value="windows", effect=TaintEffect.NO_SCHEDULE),
        Taint(key="dedicated", value="win", effect=TaintEffect.NO_EXECUTE),
    ]
    await apply_labels_and_taints(operator_kube, name, first_labels, first_taints, MANAGED)
    node = await get_node(operator_kube, name)
    assert node is not None
    labels = node["metadata"]["labels"]
    assert labels["winnode.io/pool"] == "a"
    assert labels["tier"] == "web"
    assert labels["team"] == "theirs"
    assert labels["kubernetes.io/os"] == "windows"
    assert {
        ("os", "windows", "NoSchedule"),
        ("dedicated", "win", "NoExecute"),
        ("example.com/foreign", "x", "NoSchedule"),
    } <= taints_of(node)

    # Unchanged wish: no write at all.
    version = node["metadata"]["resourceVersion"]
    await apply_labels_and_taints(operator_kube, name, first_labels, first_taints, MANAGED)
    again = await get_node(operator_kube, name)
    assert again is not None
    # kcm may have touched the Node (not-ready taints), never our labels.
    if again["metadata"]["resourceVersion"] != version:
        assert again["metadata"]["labels"] == labels

    # Drop `tier` and the `dedicated` taint, change pool and the os taint's value.
    await apply_labels_and_taints(
        operator_kube,
        name,
        {"winnode.io/pool": "b"},
        [Taint(key="os", value="win2022", effect=TaintEffect.NO_SCHEDULE)],
        MANAGED,
    )
    node = await get_node(operator_kube, name)
    assert node is not None
    labels = node["metadata"]["labels"]
    assert labels["winnode.io/pool"] == "b"
    assert "tier" not in labels
    assert labels["team"] == "theirs"
    taints = taints_of(node)
    assert ("os", "win2022", "NoSchedule") in taints
    assert ("os", "windows", "NoSchedule") not in taints
    assert not any(t[0] == "dedicated" for t in taints)
    assert ("example.com/foreign", "x", "NoSchedule") in taints
    record = json.loads(node["metadata"]["annotations"][MANAGED])
    assert record == {"labels": ["winnode.io/pool"], "taints": [["os", "NoSchedule"]]}

    # Nothing wanted any more: all of ours gone, theirs stay.
    await apply_labels_and_taints(operator_kube, name, {}, [], MANAGED)
    node = await get_node(operator_kube, name)
    assert node is not None
    assert "winnode.io/pool" not in node["metadata"]["labels"]
    assert not any(t[0] == "os" for t in taints_of(node))
    assert ("example.com/foreign", "x", "NoSchedule") in taints_of(node)

    assert await delete_node(operator_kube, name) is True
    assert await delete_node(operator_kube, name) is False
    with pytest.raises(NodeNotFoundError, match=name):
        await apply_labels_and_taints(operator_kube, name, {"a": "b"}, [], MANAGED)


async def test_pod_cidr_cordon_and_readers(admin: Kube, operator_kube: Kube) -> None:
    name = unique("win-cidr")
    await create_node(admin, name)
    assert await set_pod_cidr(operator_kube, name, "10.244.7.0/24") is True
    assert await set_pod_cidr(operator_kube, name, "10.244.7.0/24") is False
    assert await set_pod_cidr(operator_kube, name, "10.244.8.0/24") is False
    node = await get_node(operator_kube, name)
    assert node is not None
    assert node["spec"]["podCIDR"] == "10.244.7.0/24"
    assert node["spec"]["podCIDRs"] == ["10.244.7.0/24"]

    await set_unschedulable(operator_kube, name, True)
    node = await get_node(operator_kube, name)
    assert node is not None
    assert node["spec"]["unschedulable"] is True
    await set_unschedulable(operator_kube, name, True)  # already cordoned: no-op
    assert (await get_node(operator_kube, name) or {})["spec"]["unschedulable"] is True
    await set_unschedulable(operator_kube, name, False)
    node = await get_node(operator_kube, name)
    assert node is not None
    assert not node["spec"].get("unschedulable")

    assert not node_is_ready(node)
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    await admin.request(
        "PATCH",
        f"/api/v1/nodes/{name}/status",
        content_type=JSON_MERGE_PATCH,
        body={
            "status": {
                "conditions": [
                    {
                        "type": "Ready",
                        "status": "True",
                        "reason": "KubeletReady",
                        "lastHeartbeatTime": now,
                        "lastTransitionTime": now,
                    }
                ],
                "nodeInfo": {"kubeletVersion": "v1.34.1"},
            }
        },
    )
    node = await get_node(operator_kube, name)
    assert node is not None
    assert node_is_ready(node)
    assert node_kubelet_version(node) == "v1.34.1"

    absent = unique("win-absent")
    assert await get_node(operator_kube, absent) is None
    await set_unschedulable(operator_kube, absent, True)  # nothing to cordon: no error
    with pytest.raises(NodeNotFoundError, match=absent):
        await set_pod_cidr(operator_kube, absent, "10.244.9.0/24")
    await delete_node(operator_kube, name)


# --- drain -------------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def fake_kubelet(admin: Kube, node: str) -> AsyncIterator[None]:
    """Finish pods that are being deleted on `node`, as a kubelet does once their containers stop."""

    async def loop() -> None:
        while True:
            listing = await admin.request(
                "GET", "/api/v1/pods", query={"fieldSelector": f"spec.nodeName={node}"}
            )
            for pod in listing["items"]:
                meta = pod["metadata"]
                if meta.get("deletionTimestamp"):
                    await admin.request(
                        "DELETE",
                        f"/api/v1/namespaces/{meta['namespace']}/pods/{meta['name']}",
                        query={"gracePeriodSeconds": 0},
                        missing_ok=True,
                    )
            await asyncio.sleep(0.2)

    task = asyncio.create_task(loop())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def pod_body(name: str, node: str, labels: dict[str, str]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "nodeName": node,
            "automountServiceAccountToken": False,
            "tolerations": [{"operator": "Exists"}],
            "containers": [{"name": "app", "image": "mcr.microsoft.com/oss/kubernetes/pause:3.9"}],
        },
    }


async def mark_running(admin: Kube, namespace: str, name: str) -> None:
    """What the kubelet reports once the containers run: the PDB counts the pod as healthy."""
    await admin.request(
        "PATCH",
        f"/api/v1/namespaces/{namespace}/pods/{name}/status",
        content_type=JSON_MERGE_PATCH,
        body={"status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}},
    )


async def test_drain_respects_pdbs_and_leaves_daemonset_pods(admin: Kube, operator_kube: Kube) -> None:
    ns, node = unique("drain"), unique("win-drain")
    await create_namespace(admin, ns)
    await create_node(admin, node, labels={"kubetest/drain": node})
    pods = f"/api/v1/namespaces/{ns}/pods"
    for name, app in (("free", "free"), ("guarded-0", "guarded"), ("guarded-1", "guarded")):
        await admin.request("POST", pods, body=pod_body(name, node, {"app": app}))
        await mark_running(admin, ns, name)
    pdb_path = f"/apis/policy/v1/namespaces/{ns}/poddisruptionbudgets"
    await admin.request(
        "POST",
        pdb_path,
        body={
            "metadata": {"name": "guard"},
            "spec": {"minAvailable": 2, "selector": {"matchLabels": {"app": "guarded"}}},
        },
    )

    async def pdb_counted() -> bool:
        pdb = await admin.request("GET", f"{pdb_path}/guard")
        status = pdb.get("status") or {}
        return (
            status.get("observedGeneration") == pdb["metadata"]["generation"]
            and status.get("expectedPods") == 2
        )

    await wait_until("PDB guard covers both pods", pdb_counted)

    # A DaemonSet's pod on the node; there is no scheduler here, so bind it as one would.
    await admin.request(
        "POST",
        f"/apis/apps/v1/namespaces/{ns}/daemonsets",
        body={
            "metadata": {"name": "agent"},
            "spec": {
                "selector": {"matchLabels": {"app": "agent"}},
                "template": {
                    "metadata": {"labels": {"app": "agent"}},
                    "spec": {
                        "nodeSelector": {"kubetest/drain": node},
                        "automountServiceAccountToken": False,
                        "tolerations": [{"operator": "Exists"}],
                        "containers": [
                            {"name": "agent", "image": "mcr.microsoft.com/oss/kubernetes/pause:3.9"}
                        ],
                    },
                },
            },
        },
    )

    async def daemon_pod() -> str | None:
        listing = await admin.request("GET", pods, query={"labelSelector": "app=agent"})
        return listing["items"][0]["metadata"]["name"] if listing["items"] else None

    agent = await wait_until("DaemonSet pod created", daemon_pod)
    await admin.request(
        "POST",
        f"{pods}/{agent}/binding",
        body={
            "apiVersion": "v1",
            "kind": "Binding",
            "metadata": {"name": agent},
            "target": {"kind": "Node", "name": node},
        },
    )

    await set_unschedulable(operator_kube, node, True)
    async with fake_kubelet(admin, node):
        result = await drain(operator_kube, node, timeout_s=3 * timeouts.DRAIN_PASS_INTERVAL)
        assert not result.done
        assert result.remaining == [f"{ns}/guarded-0", f"{ns}/guarded-1"]
        assert result.blocked_by == [f"{ns}/guard"]
        assert result.failed == []
        assert f"{ns}/guard" in result.summary()
        assert await admin.request("GET", f"{pods}/free", missing_ok=True) is None
        # Blocked pods were never deleted around the PDB.
        for name in ("guarded-0", "guarded-1"):
            assert not (await admin.request("GET", f"{pods}/{name}"))["metadata"].get("deletionTimestamp")

        await admin.request("DELETE", f"{pdb_path}/guard")
        result = await drain(operator_kube, node, timeout_s=timeouts.CONTROL_PLANE_CHECK.deadline)
        assert result.done, result.summary()
        assert result.remaining == []
        assert result.blocked_by == []

    still = await admin.request("GET", f"{pods}/{agent}")
    assert still["spec"]["nodeName"] == node
    assert not still["metadata"].get("deletionTimestamp")
    assert (await drain_once(operator_kube, node)).done
    await admin.request("DELETE", f"/api/v1/namespaces/{ns}")
    await delete_node(admin, node)


# --- events ------------------------------------------------------------------------------------


async def events_about(admin: Kube, name: str) -> list[dict[str, Any]]:
    listing = await admin.request(
        "GET", "/api/v1/namespaces/default/events", query={"fieldSelector": f"involvedObject.name={name}"}
    )
    return sorted(listing["items"], key=lambda e: e["reason"])


async def test_events_are_posted_aggregated_and_scrubbed(
    control_plane: ControlPlane, admin: Kube, operator_kube: Kube, nobody_kube: Kube
) -> None:
    name = unique("win-events")
    node = await create_node(admin, name)
    involved = {"apiVersion": "v1", "kind": "Node", "name": name, "uid": node["metadata"]["uid"]}
    leaky = "kubelet did not start: token abcdef.0123456789abcdef refused; password=Hunter2"
    for _ in range(3):
        await post_event(operator_kube, involved, "Warning", "KubeletFailed", leaky)
    await post_event(operator_kube, involved, "Normal", "Joined", "node joined the cluster")

    joined, failed = await events_about(admin, name)
    assert (failed["reason"], failed["type"], failed["count"]) == ("KubeletFailed", "Warning", 3)
    assert "abcdef.0123456789abcdef" not in failed["message"]
    assert "Hunter2" not in failed["message"]
    assert REDACTED in failed["message"]
    assert failed["involvedObject"] == {**involved}
    assert failed["source"]["component"] == "winnode"
    assert failed["lastTimestamp"] >= failed["firstTimestamp"]
    assert (joined["reason"], joined["count"]) == ("Joined", 1)

    described = control_plane.kubectl("describe", "node", name).stdout
    assert "KubeletFailed" in described
    assert "x3 over" in described

    # Best effort: no rights, no exception.
    await post_event(nobody_kube, involved, "Normal", "Joined", "not recorded")
    await delete_node(admin, name)


# --- credentials -------------------------------------------------------------------------------


def self_signed() -> tuple[str, str]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "winrm-client")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + dt.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return cert.public_bytes(serialization.Encoding.PEM).decode(), key_pem.decode()


async def test_credentials(admin: Kube, operator_kube: Kube, nobody_kube: Kube) -> None:
    ns = unique("creds")
    await admin.request("POST", "/api/v1/namespaces", body={"metadata": {"name": ns}})
    password = "Tr0ub4dor&3-not-for-logs"
    # `ns` plays the operator's namespace: its Role there is what lets it read credentials at all.
    elsewhere = SecretReference(namespace="default", name="winrm")
    with pytest.raises(CredentialsError) as forbidden:
        await read_credentials(operator_kube, elsewhere, "ntlm")
    assert forbidden.value.reason == "SecretForbidden", "no Secret outside the granted namespaces"
    with pytest.raises(CredentialsError) as not_allowed:
        await read_credentials(operator_kube, elsewhere, "ntlm", frozenset({ns}))
    assert not_allowed.value.reason == "SecretNamespaceNotAllowed"
    assert "winnode:credentials-reader" in str(not_allowed.value)
    role = rbac.role(OPERATOR_USER, ns, rbac.OPERATOR_NAMESPACE_RULES)
    await admin.request("POST", f"/apis/rbac.authorization.k8s.io/v1/namespaces/{ns}/roles", body=role)
    binding = {
        "metadata": {"name": OPERATOR_USER},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": OPERATOR_USER},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": OPERATOR_USER}],
    }
    await admin.request(
        "POST", f"/apis/rbac.authorization.k8s.io/v1/namespaces/{ns}/rolebindings", body=binding
    )
    # The RBAC authorizer learns of new bindings through an informer.
    deadline = time.monotonic() + timeouts.CONTROL_PLANE_CHECK.deadline
    while True:
        try:
            await operator_kube.request("GET", f"/api/v1/namespaces/{ns}/secrets")
            break
        except ApiError as exc:
            if exc.status != 403 or time.monotonic() >= deadline:
                raise
            await asyncio.sleep(timeouts.CONTROL_PLANE_CHECK.interval)

    async def secret(name: str, data: dict[str, str], type_: str = "Opaque") -> SecretReference:
        await admin.request(
            "POST",
            f"/api/v1/namespaces/{ns}/secrets",
            body={"metadata": {"name": name}, "type": type_, "stringData": data},
        )
        return SecretReference(namespace=ns, name=name)

    with pytest.raises(CredentialsError) as missing:
        await read_credentials(operator_kube, SecretReference(namespace=ns, name="winrm"), "ntlm")
    assert missing.value.reason == "SecretNotFound"
    assert f"{ns}/winrm" in str(missing.value)
    assert "kubectl create secret generic winrm" in str(missing.value)

    no_user = await secret("no-user", {"password": password})
    with pytest.raises(CredentialsError) as keyless:
        await read_credentials(operator_kube, no_user, "ntlm")
    assert (keyless.value.reason, keyless.value.key) == ("SecretKeyMissing", "username")
    assert f"{ns}/no-user" in str(keyless.value)
    assert "'username'" in str(keyless.value)
    assert password not in str(keyless.value)
    assert password not in repr(keyless.value)

    blank = await secret("blank", {"username": "Administrator", "password": "  "})
    with pytest.raises(CredentialsError, match="'password'") as blank_err:
        await read_credentials(operator_kube, blank, "basic")
    assert blank_err.value.key == "password"

    good = await secret("good", {"username": "Administrator", "password": password})
    creds = await read_credentials(operator_kube, good, "ntlm")
    assert (creds.username, creds.password, creds.cert_pem) == ("Administrator", password, None)
    assert creds.resource_version
    assert password not in repr(creds)

    cert_pem, key_pem = self_signed()
    tls = await secret("tls", {"tls.crt": cert_pem, "tls.key": key_pem}, type_="kubernetes.io/tls")
    creds = await read_credentials(operator_kube, tls, "certificate")
    assert (creds.username, creds.cert_pem, creds.key_pem) == (None, cert_pem, key_pem)
    assert "PRIVATE KEY" not in repr(creds)
    with pytest.raises(CredentialsError, match=r"'tls\.crt'"):
        await read_credentials(operator_kube, good, "certificate")

    broken = await secret("broken-tls", {"tls.crt": cert_pem, "tls.key": "garbage-key-material"})
    with pytest.raises(CredentialsError) as bad_key:
        await read_credentials(operator_kube, broken, "certificate")
    assert (bad_key.value.reason, bad_key.value.key) == ("SecretValueInvalid", "tls.key")
    assert "garbage-key-material" not in str(bad_key.value)

    with pytest.raises(CredentialsError) as forbidden:
        await read_credentials(nobody_kube, good, "ntlm")
    assert forbidden.value.reason == "SecretForbidden"
    assert f"{ns}/good" in str(forbidden.value)

    await admin.request("DELETE", f"/api/v1/namespaces/{ns}")
