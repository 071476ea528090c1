"""Certificates for the local control plane, made with `cryptography` (no openssl or cfssl needed).

ECDSA P-256 keys: generating them takes microseconds, so every control plane gets its own CA.
"""

from __future__ import annotations

import datetime
import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from winnode.certificates import KeyPair as KeyPair
from winnode.certificates import key_usage
from winnode.certificates import new_key as new_key
from winnode.certificates import private_key_pem as private_key_pem
from winnode.certificates import write_private as write_private

# The first address of the service range the apiserver is given (--service-cluster-ip-range);
# in-cluster clients reach the apiserver through it, so the serving cert must name it.
FIRST_SERVICE_IP = "10.0.0.1"
APISERVER_DNS_NAMES = (
    "localhost",
    "kubernetes",
    "kubernetes.default",
    "kubernetes.default.svc",
    "kubernetes.default.svc.cluster.local",
)
APISERVER_IPS = ("127.0.0.1", FIRST_SERVICE_IP)

# Long enough for any dev cluster, short enough that nobody mistakes these for real certificates.
VALIDITY = datetime.timedelta(days=365)
# Tolerate small clock differences between the writer and the verifier.
BACKDATE = datetime.timedelta(minutes=5)


def public_key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _name(common_name: str, organizations: Sequence[str] = ()) -> x509.Name:
    attrs = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, org) for org in organizations]
    attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, common_name))
    return x509.Name(attrs)


def make_ca(common_name: str = "winnode-dev-ca") -> KeyPair:
    key = new_key()
    name = _name(common_name)
    now = _now()
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(now + VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(key_usage(ca=True), critical=True)
        .add_extension(ski, critical=False)
        .sign(key, hashes.SHA256())
    )
    return KeyPair(cert, key)


def _issue(
    ca: KeyPair,
    subject: x509.Name,
    *,
    server: bool,
    client: bool,
    dns_names: Sequence[str] = (),
    ips: Sequence[str] = (),
) -> KeyPair:
    key = new_key()
    now = _now()
    usages = []
    if server:
        usages.append(ExtendedKeyUsageOID.SERVER_AUTH)
    if client:
        usages.append(ExtendedKeyUsageOID.CLIENT_AUTH)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(now + VALIDITY)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(key_usage(ca=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()), critical=False
        )
    )
    if dns_names or ips:
        sans: list[x509.GeneralName] = [x509.DNSName(d) for d in dns_names]
        sans += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ips]
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return KeyPair(builder.sign(ca.key, hashes.SHA256()), key)


def issue_serving_cert(
    ca: KeyPair, common_name: str, dns_names: Sequence[str] = (), ips: Sequence[str] = ()
) -> KeyPair:
    return _issue(ca, _name(common_name), server=True, client=False, dns_names=dns_names, ips=ips)


def issue_client_cert(ca: KeyPair, user: str, groups: Sequence[str] = ()) -> KeyPair:
    """A client certificate the apiserver maps to `user` (CN) in `groups` (O)."""
    return _issue(ca, _name(user, groups), server=False, client=True)


@dataclass(frozen=True)
class ControlPlanePKI:
    ca: KeyPair
    apiserver: KeyPair
    admin: KeyPair
    controller_manager: KeyPair
    service_account_key: ec.EllipticCurvePrivateKey
    # The aggregation layer's own CA: the apiserver proxies to extension apiservers with this client
    # cert, and delegating servers (kcm's /healthz, /metrics) need its CA published to trust headers.
    front_proxy_ca: KeyPair
    front_proxy_client: KeyPair
    # The apiserver's client identity towards kubelets (logs, exec, proxy). kubeadm names it
    # kube-apiserver-kubelet-client (cmd/kubeadm/app/constants APIServerKubeletClientCertCommonName);
    # system:masters here, which the kubelet's SubjectAccessReview allows nodes/log and nodes/proxy.
    kubelet_client: KeyPair


def make_control_plane_pki() -> ControlPlanePKI:
    ca = make_ca()
    front_proxy_ca = make_ca("winnode-dev-front-proxy-ca")
    return ControlPlanePKI(
        ca=ca,
        apiserver=issue_serving_cert(ca, "kube-apiserver", APISERVER_DNS_NAMES, APISERVER_IPS),
        admin=issue_client_cert(ca, "admin", ["system:masters"]),
        controller_manager=issue_client_cert(ca, "system:kube-controller-manager"),
        service_account_key=new_key(),
        front_proxy_ca=front_proxy_ca,
        front_proxy_client=issue_client_cert(front_proxy_ca, "front-proxy-client"),
        kubelet_client=issue_client_cert(ca, "kube-apiserver-kubelet-client", ["system:masters"]),
    )


def load_ca(cert_path: Path, key_path: Path) -> KeyPair:
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise TypeError(f"{key_path}: expected an ECDSA private key, got {type(key).__name__}")
    return KeyPair(cert, key)
