"""Strict CSR approval: only exactly what our node's kubelet asks for is approved."""

from __future__ import annotations

import base64
import ipaddress
from dataclasses import replace
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from winnode.csr.parse import CLIENT_SIGNER, SERVING_SIGNER, CsrParseError, parse_csr
from winnode.csr.policy import Decision, ExpectedNode, judge

NODE = "win-01"
TOKEN_ID = "abcdef"
EXPECTED = ExpectedNode(
    node_name=NODE,
    bootstrap_token_id=TOKEN_ID,
    addresses=frozenset({"127.0.0.2"}),
    hostnames=frozenset({"win-01"}),
    node_exists=False,
)
_EC_KEY = ec.generate_private_key(ec.SECP256R1())
_RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)


def make_csr(
    *,
    cn: str = f"system:node:{NODE}",
    orgs: tuple[str, ...] = ("system:nodes",),
    signer: str = CLIENT_SIGNER,
    username: str = f"system:bootstrap:{TOKEN_ID}",
    groups: tuple[str, ...] = ("system:bootstrappers",),
    usages: tuple[str, ...] = ("digital signature", "client auth"),
    dns: tuple[str, ...] = (),
    ips: tuple[str, ...] = (),
    emails: tuple[str, ...] = (),
    rsa_key: bool = False,
    conditions: list[dict[str, str]] | None = None,
) -> dict[str, Any]:
    attrs = [x509.NameAttribute(NameOID.COMMON_NAME, cn)]
    attrs += [x509.NameAttribute(NameOID.ORGANIZATION_NAME, o) for o in orgs]
    builder = x509.CertificateSigningRequestBuilder().subject_name(x509.Name(attrs))
    sans: list[x509.GeneralName] = [x509.DNSName(d) for d in dns]
    sans += [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]
    sans += [x509.RFC822Name(e) for e in emails]
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    key = _RSA_KEY if rsa_key else _EC_KEY
    pem = builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)
    return {
        "metadata": {"name": "csr-test"},
        "spec": {
            "request": base64.b64encode(pem).decode(),
            "signerName": signer,
            "username": username,
            "groups": list(groups),
            "usages": list(usages),
        },
        "status": {"conditions": conditions or []},
    }


def serving(**overrides: Any) -> dict[str, Any]:
    values: dict[str, Any] = {
        "signer": SERVING_SIGNER,
        "username": f"system:node:{NODE}",
        "groups": ("system:nodes", "system:authenticated"),
        "usages": ("digital signature", "server auth"),
        "dns": ("win-01",),
        "ips": ("127.0.0.2",),
    }
    values.update(overrides)
    return make_csr(**values)


REGISTERED = replace(EXPECTED, node_exists=True)


def test_client_csr_of_joining_node_is_approved() -> None:
    verdict = judge(parse_csr(make_csr()), EXPECTED)
    assert verdict.decision is Decision.APPROVE, verdict.reason


def test_rsa_client_csr_may_ask_for_key_encipherment() -> None:
    csr = make_csr(rsa_key=True, usages=("digital signature", "key encipherment", "client auth"))
    assert judge(parse_csr(csr), EXPECTED).approve


def test_serving_csr_of_registered_node_is_approved() -> None:
    verdict = judge(parse_csr(serving()), REGISTERED)
    assert verdict.decision is Decision.APPROVE, verdict.reason


@pytest.mark.parametrize(
    ("label", "csr", "expected", "decision"),
    [
        ("wrong CN", make_csr(cn="admin"), EXPECTED, Decision.NOT_OURS),
        ("another node's name", make_csr(cn="system:node:win-02"), EXPECTED, Decision.NOT_OURS),
        ("a node we do not manage", make_csr(), None, Decision.NOT_OURS),
        ("wrong organization", make_csr(orgs=("system:masters",)), EXPECTED, Decision.REJECT),
        ("extra organization", make_csr(orgs=("system:nodes", "system:masters")), EXPECTED, Decision.REJECT),
        ("client CSR with SANs", make_csr(dns=("win-01",)), EXPECTED, Decision.REJECT),
        (
            "client CSR with server auth",
            make_csr(usages=("server auth", "client auth")),
            EXPECTED,
            Decision.REJECT,
        ),
        (
            "client CSR without client auth",
            make_csr(usages=("digital signature",)),
            EXPECTED,
            Decision.REJECT,
        ),
        (
            "key encipherment with an EC key",
            make_csr(usages=("digital signature", "key encipherment", "client auth")),
            EXPECTED,
            Decision.REJECT,
        ),
        ("client CSR when the Node exists", make_csr(), REGISTERED, Decision.REJECT),
        ("another bootstrap token", make_csr(username="system:bootstrap:zzzzzz"), EXPECTED, Decision.REJECT),
        ("token already revoked", make_csr(), replace(EXPECTED, bootstrap_token_id=None), Decision.REJECT),
        ("client CSR by an ordinary user", make_csr(username="mallory"), EXPECTED, Decision.REJECT),
        ("serving CSR before the Node exists", serving(), EXPECTED, Decision.REJECT),
        (
            "serving CSR with a foreign IP",
            serving(ips=("127.0.0.2", "127.0.0.99")),
            REGISTERED,
            Decision.REJECT,
        ),
        (
            "serving CSR with a foreign DNS name",
            serving(dns=("win-01", "api.example.com")),
            REGISTERED,
            Decision.REJECT,
        ),
        ("serving CSR with an email SAN", serving(emails=("a@example.com",)), REGISTERED, Decision.REJECT),
        ("serving CSR without SANs", serving(dns=(), ips=()), REGISTERED, Decision.REJECT),
        (
            "serving CSR with client auth",
            serving(usages=("server auth", "client auth")),
            REGISTERED,
            Decision.REJECT,
        ),
        (
            "serving CSR requested by the bootstrap token",
            serving(username="system:bootstrap:abcdef"),
            REGISTERED,
            Decision.REJECT,
        ),
        (
            "serving CSR requested by another node",
            serving(username="system:node:win-02"),
            REGISTERED,
            Decision.REJECT,
        ),
        (
            "another signer",
            make_csr(signer="kubernetes.io/kube-apiserver-client"),
            EXPECTED,
            Decision.NOT_OURS,
        ),
        (
            "already approved",
            make_csr(conditions=[{"type": "Approved", "status": "True"}]),
            EXPECTED,
            Decision.ALREADY_DONE,
        ),
        (
            "already denied",
            make_csr(conditions=[{"type": "Denied", "status": "True"}]),
            EXPECTED,
            Decision.ALREADY_DONE,
        ),
    ],
)
def test_negative_table_is_never_approved(
    label: str, csr: dict[str, Any], expected: ExpectedNode | None, decision: Decision
) -> None:
    verdict = judge(parse_csr(csr), expected)
    assert not verdict.approve, label
    assert verdict.decision is decision, f"{label}: {verdict.reason}"
    if decision is Decision.REJECT:
        assert NODE in verdict.reason
        assert "csr-test" in verdict.reason


def test_garbage_request_is_a_clear_error() -> None:
    csr = make_csr()
    csr["spec"]["request"] = base64.b64encode(b"not a pem").decode()
    with pytest.raises(CsrParseError, match="csr-test"):
        parse_csr(csr)
