"""The pure parts of winnode.kube: the Event scrubber, Node readers, drain's pod and selector rules,
token parsing, secret-free reprs and the RBAC rule data."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from winnode.api.windowsnode import WINDOWS_NODE
from winnode.kube import rbac
from winnode.kube.credentials import Credentials, CredentialsError
from winnode.kube.drain import DrainResult, is_terminating, selector_matches, stays_on_node
from winnode.kube.events import REDACTED, remember_secret, scrub
from winnode.kube.nodes import node_addresses, node_is_ready, node_kubelet_version
from winnode.kube.tokens import SECRET_TYPE, BootstrapToken, _label_value, _token_of

TOKEN = "abcdef.0123456789abcdef"
PEM = (
    "-----BEGIN PRIVATE KEY-----\nMIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQg\n-----END PRIVATE KEY-----"
)


# --- scrubber ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "secret"),
    [
        (f"kubelet failed: bootstrap token {TOKEN} rejected", TOKEN),
        (f"--token={TOKEN}", TOKEN),
        (f'{{"token":"{TOKEN}"}}', TOKEN),
        (f"kubeconfig:\n{PEM}\nend", "MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQg"),
        ("connect failed password=Hunter2! for user admin", "Hunter2!"),
        ("Password: 'se cret'", "se cret"),
        ('{"password": "p@ss w0rd", "user": "x"}', "p@ss w0rd"),
        ("PASSWD=abc123;next", "abc123"),
        ("New-LocalUser -Name svc -Password s3cr3t -Force", "s3cr3t"),
        ("client_secret=zzz&x=1", "zzz"),
    ],
)
def test_scrub_removes_secrets(text: str, secret: str) -> None:
    out = scrub(text)
    assert secret not in out
    assert REDACTED in out


def test_scrub_truncated_pem_block_is_removed_to_the_end() -> None:
    out = scrub("ca: -----BEGIN CERTIFICATE-----\nMIIBszCCAVmgAwIBAgIU")
    assert out == f"ca: {REDACTED}"


def test_scrub_keeps_ordinary_text() -> None:
    text = (
        "Node win-01 not Ready after 300s: kubelet service stopped (exit code 1); "
        "check C:\\var\\log\\kubelet.log on 10.1.2.3"
    )
    assert scrub(text) == text


@pytest.mark.parametrize(
    "text",
    [
        "Node bad-secret is Ready",
        "credentials Secret default/bad-secret: no key password; add it",
        "token: the bootstrap token expired before the kubelet used it",
        "set annotation winnode.io/force-delete=true (`kubectl annotate wn win-01 winnode.io/force-delete=true`)",
        "keep the Secret where the operator's RBAC allows: `kubectl auth can-i get secret NAME -n NS`",
        "C:\\k\\token-rotation=off is a file name, secret-store=vault a flag of another tool",
        "the token abcdef-0123456789abcdef-x is not a bootstrap token shape",
    ],
)
def test_scrub_never_touches_ordinary_words(text: str) -> None:
    assert scrub(text) == text


def test_scrub_redacts_secrets_it_was_told_about_and_jwts() -> None:
    remember_secret("Winter-2026-plain")
    assert (
        scrub("login failed for Winter-2026-plain at 10.1.2.3") == f"login failed for {REDACTED} at 10.1.2.3"
    )
    jwt = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJl"
    assert scrub(f"Authorization: Bearer {jwt}") == f"Authorization: Bearer {REDACTED}"
    remember_secret("short")  # too short to be told apart from words: not remembered
    assert scrub("a short message") == "a short message"


def test_scrub_keeps_the_key_name_so_the_message_still_reads() -> None:
    assert scrub("password=x1 user=bob") == f"password={REDACTED} user=bob"


# --- node readers ------------------------------------------------------------------------------

NODE: dict[str, Any] = {
    "metadata": {"name": "win-01"},
    "status": {
        "conditions": [
            {"type": "MemoryPressure", "status": "False"},
            {"type": "Ready", "status": "True"},
        ],
        "nodeInfo": {"kubeletVersion": "v1.34.2"},
        "addresses": [
            {"type": "InternalIP", "address": "10.1.2.3"},
            {"type": "Hostname", "address": "win-01"},
            {"type": "ExternalIP", "address": "10.1.2.3"},
        ],
    },
}


def test_node_readers() -> None:
    assert node_is_ready(NODE)
    assert node_kubelet_version(NODE) == "v1.34.2"
    assert node_addresses(NODE) == ["10.1.2.3", "win-01"]


def test_node_readers_on_a_bare_node() -> None:
    bare: dict[str, Any] = {"metadata": {"name": "x"}}
    assert not node_is_ready(bare)
    assert node_kubelet_version(bare) is None
    assert node_addresses(bare) == []
    not_ready = {"status": {"conditions": [{"type": "Ready", "status": "Unknown"}]}}
    assert not node_is_ready(not_ready)


# --- drain rules -------------------------------------------------------------------------------


def pod(**meta: Any) -> dict[str, Any]:
    return {"metadata": {"name": "p", "namespace": "ns", **meta}}


def test_pods_a_drain_leaves() -> None:
    ds_owner = {"kind": "DaemonSet", "name": "d", "controller": True, "uid": "1", "apiVersion": "apps/v1"}
    rs_owner = {**ds_owner, "kind": "ReplicaSet"}
    assert stays_on_node(pod(ownerReferences=[ds_owner]))
    assert stays_on_node(pod(annotations={"kubernetes.io/config.mirror": "abc"}))
    assert not stays_on_node(pod(ownerReferences=[rs_owner]))
    # Owned by a DaemonSet without being controlled by it: drained like any other pod.
    assert not stays_on_node(pod(ownerReferences=[{**ds_owner, "controller": False}]))
    assert not stays_on_node(pod())
    assert is_terminating(pod(deletionTimestamp="2025-01-01T00:00:00Z"))
    assert not is_terminating(pod())


@pytest.mark.parametrize(
    ("selector", "labels", "matches"),
    [
        (None, {"app": "a"}, False),
        ({}, {"app": "a"}, True),
        ({"matchLabels": {"app": "a"}}, {"app": "a", "x": "y"}, True),
        ({"matchLabels": {"app": "a"}}, {"app": "b"}, False),
        (
            {"matchExpressions": [{"key": "tier", "operator": "In", "values": ["web", "db"]}]},
            {"tier": "db"},
            True,
        ),
        ({"matchExpressions": [{"key": "tier", "operator": "In", "values": ["web"]}]}, {}, False),
        ({"matchExpressions": [{"key": "tier", "operator": "NotIn", "values": ["web"]}]}, {}, True),
        (
            {"matchExpressions": [{"key": "tier", "operator": "NotIn", "values": ["web"]}]},
            {"tier": "web"},
            False,
        ),
        ({"matchExpressions": [{"key": "tier", "operator": "Exists"}]}, {"tier": ""}, True),
        ({"matchExpressions": [{"key": "tier", "operator": "DoesNotExist"}]}, {"tier": ""}, False),
        ({"matchExpressions": [{"key": "tier", "operator": "Bogus"}]}, {"tier": ""}, False),
    ],
)
def test_label_selector_semantics(
    selector: dict[str, Any] | None, labels: dict[str, str], matches: bool
) -> None:
    assert selector_matches(selector, labels) is matches


def test_drain_summary() -> None:
    assert DrainResult(done=True, remaining=[], blocked_by=[]).summary() == "no pods left to evict"
    text = DrainResult(done=False, remaining=["a/p1", "a/p2"], blocked_by=["a/pdb"]).summary()
    assert "2 pod(s)" in text
    assert "a/pdb" in text


# --- tokens ------------------------------------------------------------------------------------


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def token_secret(token_id: str, secret: str, expiration: str, name: str | None = None) -> dict[str, Any]:
    return {
        "metadata": {"name": name or f"bootstrap-token-{token_id}"},
        "type": SECRET_TYPE,
        "data": {"token-id": b64(token_id), "token-secret": b64(secret), "expiration": b64(expiration)},
    }


def test_token_parsing() -> None:
    token = _token_of(token_secret("abcdef", "0123456789abcdef", "2030-01-02T03:04:05Z"))
    assert token == BootstrapToken("abcdef", "0123456789abcdef", datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC))
    assert token.value == TOKEN
    assert token.username == "system:bootstrap:abcdef"
    # A Secret whose name does not match its token id is not a valid token (the apiserver ignores it).
    assert _token_of(token_secret("abcdef", "0123456789abcdef", "2030-01-02T03:04:05Z", name="x")) is None
    assert _token_of(token_secret("abcdef", "0123456789abcdef", "soon")) is None
    assert _token_of({**token_secret("abcdef", "x" * 16, "2030-01-02T03:04:05Z"), "type": "Opaque"}) is None


def test_token_repr_has_no_secret() -> None:
    token = BootstrapToken("abcdef", "0123456789abcdef", datetime.now(UTC) + timedelta(hours=1))
    assert "0123456789abcdef" not in repr(token)
    assert "0123456789abcdef" not in str(token)
    assert "abcdef" in repr(token)


def test_node_label_value_fits_a_label() -> None:
    assert _label_value("win-01.corp.example") == "win-01.corp.example"
    long = "a" * 62 + "-" + "b" * 10
    assert _label_value(long) == "a" * 62


# --- credentials -------------------------------------------------------------------------------


def test_credentials_repr_has_no_secrets() -> None:
    creds = Credentials(
        username="Administrator", password="Pa55w0rd!", cert_pem=None, key_pem=PEM, resource_version="7"
    )
    assert "Pa55w0rd!" not in repr(creds)
    assert "PRIVATE KEY" not in repr(creds)
    assert "Administrator" in repr(creds)


def test_credentials_error_carries_reason_and_key() -> None:
    err = CredentialsError("SecretKeyMissing", "ns/s", "Secret ns/s has no key 'password'", "password")
    assert (err.reason, err.secret, err.key, str(err)) == (
        "SecretKeyMissing",
        "ns/s",
        "password",
        "Secret ns/s has no key 'password'",
    )


# --- RBAC data ---------------------------------------------------------------------------------


def test_rbac_rules_are_well_formed_and_explained() -> None:
    for rule in (
        *rbac.CLUSTER_RULES,
        *rbac.KUBE_SYSTEM_RULES,
        *rbac.OPERATOR_NAMESPACE_RULES,
        *rbac.CREDENTIALS_READER_RULES,
    ):
        assert rule.why.strip()
        d = rule.to_dict()
        assert d["apiGroups"]
        assert d["resources"]
        assert d["verbs"]
        assert all(isinstance(v, str) and v for v in d["verbs"]), rule
        assert "*" not in d["verbs"]
        assert "*" not in d["resources"]
    role = rbac.cluster_role()
    assert role["kind"] == "ClusterRole"
    resources = {r for rule in role["rules"] for r in rule["resources"]}
    assert {WINDOWS_NODE.plural, "nodes", "pods/eviction", "signers", "events"} <= resources
    # No Secret cluster-wide: credentials in the operator's namespace, elsewhere only by opt-in.
    assert not [r for r in rbac.CLUSTER_RULES if "secrets" in r.resources]
    assert [r.verbs for r in rbac.OPERATOR_NAMESPACE_RULES if "secrets" in r.resources] == [
        ("get", "list", "watch")
    ]
    for binding in rbac.BINDINGS:
        assert binding.to_dict()["subjects"][0]["name"] == binding.group
