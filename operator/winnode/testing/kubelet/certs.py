"""The kubelet's certificates: keys, CSRs (client and serving), their names, and whether a stored bundle still serves."""

from __future__ import annotations

import base64
import datetime
import ipaddress
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from .config import CERT_RENEW_FRACTION, NODE_USER_PREFIX, NODES_GROUP


def node_subject(node_name: str) -> x509.Name:
    # Go's pkix.Name puts O before CN; keep its order so the request reads the same.
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, NODES_GROUP),
            x509.NameAttribute(NameOID.COMMON_NAME, NODE_USER_PREFIX + node_name),
        ]
    )


def new_key() -> ec.EllipticCurvePrivateKey:
    """kubelet's key type for both of its certificates."""
    return ec.generate_private_key(ec.SECP256R1())


def client_usages(key: object) -> list[str]:
    # client-go DefaultKubeletClientGetUsages: key encipherment only means something for RSA keys.
    if isinstance(key, rsa.RSAPrivateKey):
        return ["digital signature", "key encipherment", "client auth"]
    return ["digital signature", "client auth"]


def serving_usages(key: object) -> list[str]:
    if isinstance(key, rsa.RSAPrivateKey):
        return ["digital signature", "key encipherment", "server auth"]
    return ["digital signature", "server auth"]


def make_client_csr(key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey, node_name: str) -> bytes:
    """PEM certificate request for the node's client certificate: subject only, no SANs."""
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(node_subject(node_name))
        .sign(key, hashes.SHA256())
    )
    return csr.public_bytes(serialization.Encoding.PEM)


def serving_sans(node_name: str, addresses: Iterable[str]) -> tuple[list[str], list[str]]:
    """(DNS names, IPs) of a serving certificate: the node's Hostname address and its InternalIPs,
    sorted as kubelet sorts them."""
    ips = sorted({str(ipaddress.ip_address(a)) for a in addresses})
    return [node_name], ips


def make_serving_csr(
    key: ec.EllipticCurvePrivateKey, node_name: str, dns_names: Iterable[str], ips: Iterable[str]
) -> bytes:
    sans: list[x509.GeneralName] = [x509.DNSName(d) for d in dns_names]
    sans += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ips]
    builder = x509.CertificateSigningRequestBuilder().subject_name(node_subject(node_name))
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)


def client_csr_name(
    public_key: ec.EllipticCurvePublicKey | rsa.RSAPublicKey, node_name: str, usages: Iterable[str]
) -> str:
    """kubelet's digestedName: the same key, subject and usages always give the same CSR name, so a
    restarted kubelet finds the request it already made instead of making another."""

    def enc(data: bytes) -> bytes:
        return base64.urlsafe_b64encode(data).rstrip(b"=")

    digest = hashes.Hash(hashes.SHA512_256())
    for part in (
        spki(public_key),
        (NODE_USER_PREFIX + node_name).encode(),
        NODES_GROUP.encode(),
        *(u.encode() for u in usages),
    ):
        digest.update(enc(part) + b"|")
    return "node-csr-" + enc(digest.finalize()).decode()


def utc_now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def load_bundle(path: Path) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey] | None:
    """Certificate and key from one PEM file (kubelet's *-current.pem); None when absent or unreadable."""
    try:
        data = path.read_bytes()
        cert = x509.load_pem_x509_certificate(data)
        key = serialization.load_pem_private_key(data, password=None)
    except (OSError, ValueError, TypeError):
        return None
    if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
        return None
    return cert, key


def certificate_problem(
    cert: x509.Certificate,
    key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey,
    node_name: str,
    *,
    ca_pem: bytes | None,
    now: datetime.datetime | None = None,
    dns_names: Iterable[str] = (),
    ips: Iterable[str] = (),
) -> str | None:
    """Why a stored certificate cannot be used (again) by this node; None when it can."""
    now = now or utc_now()
    if spki(cert.public_key()) != spki(key.public_key()):
        return "the key does not belong to the certificate"
    cns = [str(a.value) for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
    orgs = [str(a.value) for a in cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)]
    if cns != [NODE_USER_PREFIX + node_name] or NODES_GROUP not in orgs:
        return f"it is for {cns[0] if cns else 'nobody'}, not {NODE_USER_PREFIX + node_name}"
    start, end = cert.not_valid_before_utc, cert.not_valid_after_utc
    if now < start or now >= end:
        return "it is expired or not yet valid"
    if now >= start + (end - start) * CERT_RENEW_FRACTION:
        return "it is close to expiry"
    if ca_pem:
        # A cluster rebuilt with a new CA rejects the old certificate; kubelet would only find out from
        # 401s, this finds out first and bootstraps again.
        try:
            cas = x509.load_pem_x509_certificates(ca_pem)
        except ValueError:
            cas = []
        if cas and not any(_issued_by(cert, ca) for ca in cas):
            return "it was not issued by the cluster's CA"
    if dns_names or ips:
        try:
            san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        except x509.ExtensionNotFound:
            return "it names no addresses"
        have_dns = set(san.get_values_for_type(x509.DNSName))
        have_ips = {str(ip) for ip in san.get_values_for_type(x509.IPAddress)}
        missing = sorted((set(dns_names) - have_dns) | (set(ips) - have_ips))
        if missing:
            return f"it does not name {', '.join(missing)}"
    return None


def spki(public_key: Any) -> bytes:
    der: bytes = public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return der


def _issued_by(cert: x509.Certificate, ca: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def write_private(path: Path, data: bytes) -> None:
    """Replace `path` atomically with a file only its owner can read: a crash never leaves half a key."""
    tmp = path.with_name(path.name + ".writing")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def key_pem(key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> bytes:
    # SEC1 "EC PRIVATE KEY", as Go's keyutil writes it.
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
