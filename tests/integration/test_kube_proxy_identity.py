"""kube-proxy's own identity against the real apiserver: what it may and may not do, renewal, and
revocation when its node goes away."""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
import yaml

from winnode import timeouts
from winnode.kube import proxy_identity as pi
from winnode.kube.client import Kube
from winnode.kube.rbac import BINDINGS
from winnode.lifecycle import kubelet_config as kc
from winnode.testing.cluster import ControlPlane

NODE = "win-proxy-01"
TTL = timedelta(hours=1)
RENEW = timedelta(minutes=10)


@pytest.fixture(scope="module")
def kube(control_plane: ControlPlane) -> Iterator[Kube]:
    ns = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": pi.NAMESPACE}}
    docs = [ns, *(b.to_dict() for b in BINDINGS)]
    control_plane.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(docs))
    client = Kube.from_kubeconfig(control_plane.kubeconfig)
    try:
        yield client
    finally:
        client.close()


def _kubeconfig(cp: ControlPlane, tmp: Path, token: str) -> Path:
    """The kubeconfig the operator writes on the host, pointed at files on this machine."""
    doc = yaml.safe_load(kc.kube_proxy_kubeconfig(cp.server, cp.ca_cert_path.read_text()))
    token_file = tmp / "kube-proxy.token"
    token_file.write_text(token)
    assert doc["users"][0]["user"] == {"tokenFile": kc.KUBE_PROXY_TOKEN}
    doc["users"][0]["user"]["tokenFile"] = str(token_file)
    path = tmp / "kube-proxy.conf"
    path.write_text(yaml.safe_dump(doc))
    return path


def _can_i(cp: ControlPlane, kubeconfig: Path, *args: str) -> str:
    done = cp.kubectl("auth", "can-i", *args, kubeconfig=kubeconfig, check=False)
    return done.stdout.strip()


# (verb, resource, extra args) -> expected answer, for kube-proxy with its own token.
CAN_I = [
    ("list", "services", "--all-namespaces", "yes"),
    ("watch", "services", "--all-namespaces", "yes"),
    ("list", "endpointslices.discovery.k8s.io", "--all-namespaces", "yes"),
    ("watch", "endpointslices.discovery.k8s.io", "--all-namespaces", "yes"),
    ("get", "nodes", "", "yes"),
    ("watch", "nodes", "", "yes"),
    ("create", "events", "-n=default", "yes"),
    ("create", "events.events.k8s.io", "-n=default", "yes"),
    # Denied: nothing beyond what kube-proxy needs.
    ("get", "secrets", "-n=kube-system", "no"),
    ("list", "secrets", "--all-namespaces", "no"),
    ("list", "pods", "--all-namespaces", "no"),
    ("create", "services", "-n=default", "no"),
    ("update", "endpointslices.discovery.k8s.io", "-n=default", "no"),
    ("patch", "nodes", "", "no"),
    ("delete", "nodes", "", "no"),
    ("create", "serviceaccounts/token", f"-n={pi.NAMESPACE}", "no"),
    ("create", "certificatesigningrequests.certificates.k8s.io", "", "no"),
    ("get", "windowsnodes.winnode.io", "", "no"),
]


def test_kube_proxy_may_do_what_it_needs_and_nothing_more(
    control_plane: ControlPlane, kube: Kube, tmp_path: Path
) -> None:
    token = kube.run_blocking(pi.ensure_kube_proxy_token(kube, NODE, ttl=TTL, renew_before=RENEW))
    kubeconfig = _kubeconfig(control_plane, tmp_path, token.token)
    whoami = control_plane.kubectl("auth", "whoami", "-o", "yaml", kubeconfig=kubeconfig)
    assert yaml.safe_load(whoami.stdout)["status"]["userInfo"]["username"] == token.username
    # The RBAC authorizer learns of new bindings through an informer: wait for the first "yes".
    deadline = time.monotonic() + timeouts.CONTROL_PLANE_CHECK.deadline
    while _can_i(control_plane, kubeconfig, "list", "services", "--all-namespaces") != "yes":
        assert time.monotonic() < deadline, "kube-proxy's binding never took effect"
        time.sleep(timeouts.CONTROL_PLANE_CHECK.interval)
    table = []
    for verb, resource, extra, want in CAN_I:
        got = _can_i(control_plane, kubeconfig, verb, resource, *([extra] if extra else []))
        table.append((verb, resource, extra, want, got))
    print("\n".join(f"{v:7} {r:50} {e:18} want={w:3} got={g}" for v, r, e, w, g in table))
    wrong = [row for row in table if row[3] != row[4]]
    assert not wrong, f"can-i rows that differ: {wrong}"


async def test_token_is_reused_then_renewed_before_expiry(kube: Kube) -> None:
    first = await pi.ensure_kube_proxy_token(kube, NODE + "-r", ttl=TTL, renew_before=RENEW)
    again = await pi.ensure_kube_proxy_token(kube, NODE + "-r", ttl=TTL, renew_before=RENEW)
    assert again.token == first.token, "a reconcile hands the host the same token"
    # Less than renew_before left: a fresh token (issued a second later: tokens carry whole seconds).
    await asyncio.sleep(1.1)
    renewed = await pi.ensure_kube_proxy_token(
        kube, NODE + "-r", ttl=TTL, renew_before=TTL - timedelta(seconds=1)
    )
    assert renewed.token != first.token
    assert renewed.expires >= first.expires
    stored = await kube.request(
        "GET", f"/api/v1/namespaces/{pi.NAMESPACE}/secrets/{pi.account_name(NODE + '-r')}"
    )
    assert base64.b64decode(stored["data"]["token"]).decode() == renewed.token
    await pi.revoke_kube_proxy_identity(kube, NODE + "-r")


def test_revoked_on_delete_old_token_gets_401(
    control_plane: ControlPlane, kube: Kube, tmp_path: Path
) -> None:
    token = kube.run_blocking(pi.ensure_kube_proxy_token(kube, NODE + "-d", ttl=TTL, renew_before=RENEW))
    kubeconfig = _kubeconfig(control_plane, tmp_path, token.token)
    deadline = time.monotonic() + timeouts.CONTROL_PLANE_CHECK.deadline
    while True:  # the group's binding reaches the RBAC authorizer through an informer
        before = control_plane.kubectl(
            "get", "--raw", "/api/v1/services?limit=1", kubeconfig=kubeconfig, check=False
        )
        if before.returncode == 0:
            break
        assert time.monotonic() < deadline, f"the fresh token does not work: {before.stderr[:300]}"
        time.sleep(timeouts.CONTROL_PLANE_CHECK.interval)
    assert kube.run_blocking(pi.revoke_kube_proxy_identity(kube, NODE + "-d"))
    deadline = time.monotonic() + timeouts.CONTROL_PLANE_CHECK.deadline
    while True:
        done = control_plane.kubectl(
            "get", "--raw", "/api/v1/services?limit=1", kubeconfig=kubeconfig, check=False
        )
        if "Unauthorized" in done.stderr:
            break
        assert time.monotonic() < deadline, (
            f"the old token still works: {done.stdout[:200]} {done.stderr[:200]}"
        )
        time.sleep(timeouts.CONTROL_PLANE_CHECK.interval)
    assert done.returncode != 0
