"""The emulated kubelet's certificate requests are the ones kubelet v1.37 sends, and pass our own policy."""

from __future__ import annotations

import base64
import datetime
import ipaddress
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from winnode.csr.parse import CLIENT_SIGNER, SERVING_SIGNER, parse_csr
from winnode.csr.policy import Decision, ExpectedNode, judge
from winnode.testing import pki
from winnode.testing.kubelet.certs import (
    certificate_problem,
    client_csr_name,
    client_usages,
    load_bundle,
    make_client_csr,
    make_serving_csr,
    new_key,
    serving_sans,
    serving_usages,
)

NODE = "win-kat-01"
# A fixed P-256 key and the name kubelet's digestedName (pkg/kubelet/certificate/bootstrap, v1.37.2)
# gives it for this node with ECDSA usages; computed with Go from that function's code.
KAT_SCALAR = 0x1F2E3D4C5B6A79881726354453627180ABCDEF0123456789FEDCBA9876543210
KAT_NAME = "node-csr-CA9ik3BC6H8KzlpEdmFATP81w5zbDRc39lsoGRprdLo"


def api_object(
    pem: bytes, *, signer: str, usages: list[str], username: str, groups: list[str]
) -> dict[str, object]:
    """The CSR as the apiserver returns it, with the requester's identity filled in."""
    return {
        "metadata": {"name": "csr-test"},
        "spec": {
            "request": base64.b64encode(pem).decode(),
            "signerName": signer,
            "usages": usages,
            "username": username,
            "groups": groups,
        },
        "status": {},
    }


def test_client_csr_name_is_kubelets_digest() -> None:
    key = ec.derive_private_key(KAT_SCALAR, ec.SECP256R1())
    assert client_csr_name(key.public_key(), NODE, ["digital signature", "client auth"]) == KAT_NAME


def test_client_csr_name_changes_with_key_node_and_usages() -> None:
    key = new_key()
    base = client_csr_name(key.public_key(), NODE, client_usages(key))
    assert base == client_csr_name(key.public_key(), NODE, client_usages(key))
    assert base != client_csr_name(new_key().public_key(), NODE, client_usages(key))
    assert base != client_csr_name(key.public_key(), "win-kat-02", client_usages(key))
    assert base != client_csr_name(
        key.public_key(), NODE, ["digital signature", "key encipherment", "client auth"]
    )
    assert base.startswith("node-csr-")
    assert len(base) == len("node-csr-") + 43  # 32 bytes, unpadded base64url


def test_client_csr_has_only_the_node_subject() -> None:
    key = new_key()
    req = x509.load_pem_x509_csr(make_client_csr(key, NODE))
    assert req.is_signature_valid
    # Go's pkix.Name order: O before CN.
    assert [a.oid for a in req.subject] == [NameOID.ORGANIZATION_NAME, NameOID.COMMON_NAME]
    assert req.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == f"system:node:{NODE}"
    assert req.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value == "system:nodes"
    assert len(req.extensions) == 0
    public = req.public_key()
    assert isinstance(public, ec.EllipticCurvePublicKey)
    assert public.curve.name == "secp256r1"


def test_key_encipherment_only_for_rsa_keys() -> None:
    ecdsa = new_key()
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    assert client_usages(ecdsa) == ["digital signature", "client auth"]
    assert serving_usages(ecdsa) == ["digital signature", "server auth"]
    assert client_usages(rsa_key) == ["digital signature", "key encipherment", "client auth"]
    assert serving_usages(rsa_key) == ["digital signature", "key encipherment", "server auth"]


def test_serving_sans_are_the_hostname_and_the_addresses_sorted() -> None:
    assert serving_sans(NODE, ["10.1.2.4", "10.1.2.3", "10.1.2.4"]) == ([NODE], ["10.1.2.3", "10.1.2.4"])
    assert serving_sans(NODE, ["fd00::0001"]) == ([NODE], ["fd00::1"])


def test_serving_csr_names_dns_and_ip_sans() -> None:
    key = new_key()
    req = x509.load_pem_x509_csr(make_serving_csr(key, NODE, [NODE], ["10.1.2.3", "fd00::1"]))
    san = req.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == [NODE]
    assert san.get_values_for_type(x509.IPAddress) == [
        ipaddress.ip_address("10.1.2.3"),
        ipaddress.ip_address("fd00::1"),
    ]
    assert req.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == f"system:node:{NODE}"


def test_client_csr_passes_the_operator_policy() -> None:
    key = new_key()
    obj = api_object(
        make_client_csr(key, NODE),
        signer=CLIENT_SIGNER,
        usages=client_usages(key),
        username="system:bootstrap:abc123",
        groups=["system:bootstrappers", "system:bootstrappers:winnode", "system:authenticated"],
    )
    expected = ExpectedNode(NODE, "abc123", frozenset({"10.1.2.3"}), frozenset({NODE}), node_exists=False)
    verdict = judge(parse_csr(obj), expected)
    assert verdict.decision is Decision.APPROVE, verdict.reason


@pytest.mark.parametrize("rsa_key", [False, True])
def test_serving_csr_passes_the_operator_policy(rsa_key: bool) -> None:
    key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey = (
        rsa.generate_private_key(public_exponent=65537, key_size=2048) if rsa_key else new_key()
    )
    dns, ips = serving_sans(NODE, ["10.1.2.3"])
    builder = x509.CertificateSigningRequestBuilder().subject_name(
        x509.Name(
            [
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, "system:nodes"),
                x509.NameAttribute(NameOID.COMMON_NAME, f"system:node:{NODE}"),
            ]
        )
    )
    if rsa_key:
        sans = [x509.DNSName(dns[0]), x509.IPAddress(ipaddress.ip_address(ips[0]))]
        pem = (
            builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .sign(key, hashes.SHA256())
            .public_bytes(serialization.Encoding.PEM)
        )
    else:
        assert isinstance(key, ec.EllipticCurvePrivateKey)
        pem = make_serving_csr(key, NODE, dns, ips)
    obj = api_object(
        pem,
        signer=SERVING_SIGNER,
        usages=serving_usages(key),
        username=f"system:node:{NODE}",
        groups=["system:nodes", "system:authenticated"],
    )
    expected = ExpectedNode(NODE, None, frozenset({"10.1.2.3"}), frozenset({NODE}), node_exists=True)
    verdict = judge(parse_csr(obj), expected)
    assert verdict.decision is Decision.APPROVE, verdict.reason


# --- stored certificates ---------------------------------------------------------------------------


def sign(ca: pki.KeyPair, csr_pem: bytes, *, server: bool, days: float = 365) -> x509.Certificate:
    """Issue a certificate for a CSR the way kcm's signer does: subject and SANs from the request."""
    req = x509.load_pem_x509_csr(csr_pem)
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(req.subject)
        .issuer_name(ca.cert.subject)
        .public_key(req.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
    )
    try:
        san = req.extensions.get_extension_for_class(x509.SubjectAlternativeName)
        builder = builder.add_extension(san.value, critical=False)
    except x509.ExtensionNotFound:
        pass
    return builder.sign(ca.key, hashes.SHA256())


@pytest.fixture(scope="module")
def ca() -> pki.KeyPair:
    return pki.make_ca("kubelet-test-ca")


def test_issued_client_certificate_is_reusable(ca: pki.KeyPair, tmp_path: Path) -> None:
    key = new_key()
    cert = sign(ca, make_client_csr(key, NODE), server=False)
    bundle = tmp_path / "kubelet-client-current.pem"
    bundle.write_bytes(
        cert.public_bytes(serialization.Encoding.PEM)
        + key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
    )
    loaded = load_bundle(bundle)
    assert loaded is not None
    assert certificate_problem(*loaded, NODE, ca_pem=ca.cert_pem) is None
    assert certificate_problem(*loaded, NODE, ca_pem=None) is None


def test_unusable_client_certificates(ca: pki.KeyPair) -> None:
    key = new_key()
    cert = sign(ca, make_client_csr(key, NODE), server=False, days=10)
    assert "win-other" in (certificate_problem(cert, key, "win-other", ca_pem=ca.cert_pem) or "")
    other_ca = pki.make_ca("another-cluster")
    assert "CA" in (certificate_problem(cert, key, NODE, ca_pem=other_ca.cert_pem) or "")
    assert "key" in (certificate_problem(cert, new_key(), NODE, ca_pem=ca.cert_pem) or "")
    start = cert.not_valid_before_utc
    lifetime = cert.not_valid_after_utc - start
    almost = start + lifetime * 0.9
    assert "close to expiry" in (certificate_problem(cert, key, NODE, ca_pem=ca.cert_pem, now=almost) or "")
    later = cert.not_valid_after_utc + datetime.timedelta(seconds=1)
    assert "expired" in (certificate_problem(cert, key, NODE, ca_pem=ca.cert_pem, now=later) or "")
    # Not a node certificate at all.
    stranger = pki.issue_client_cert(ca, f"system:node:{NODE}")  # no system:nodes organization
    assert certificate_problem(stranger.cert, stranger.key, NODE, ca_pem=ca.cert_pem) is not None


def test_serving_certificate_must_name_current_addresses(ca: pki.KeyPair) -> None:
    key = new_key()
    dns, ips = serving_sans(NODE, ["10.1.2.3"])
    cert = sign(ca, make_serving_csr(key, NODE, dns, ips), server=True)
    assert certificate_problem(cert, key, NODE, ca_pem=ca.cert_pem, dns_names=dns, ips=ips) is None
    moved = certificate_problem(cert, key, NODE, ca_pem=ca.cert_pem, dns_names=dns, ips=["10.1.2.9"])
    assert moved is not None
    assert "10.1.2.9" in moved


def test_load_bundle_of_garbage_is_none(tmp_path: Path) -> None:
    assert load_bundle(tmp_path / "missing.pem") is None
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate")
    assert load_bundle(junk) is None
