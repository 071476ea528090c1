"""The local control plane's PKI: chains, names and key usages a real apiserver and kubelet accept."""

from __future__ import annotations

import datetime
import ipaddress
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from winnode.testing import pki


@pytest.fixture(scope="module")
def material() -> pki.ControlPlanePKI:
    return pki.make_control_plane_pki()


def subject(cert: x509.Certificate, oid: x509.ObjectIdentifier) -> list[str]:
    return [str(a.value) for a in cert.subject.get_attributes_for_oid(oid)]


def test_ca_is_a_self_signed_ca(material: pki.ControlPlanePKI) -> None:
    ca = material.ca.cert
    ca.verify_directly_issued_by(ca)
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    usage = ca.extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage.key_cert_sign
    assert usage.crl_sign
    assert isinstance(ca.public_key(), ec.EllipticCurvePublicKey)


@pytest.mark.parametrize("which", ["apiserver", "admin", "controller_manager"])
def test_leaf_chains_to_the_ca(material: pki.ControlPlanePKI, which: str) -> None:
    leaf: pki.KeyPair = getattr(material, which)
    leaf.cert.verify_directly_issued_by(material.ca.cert)
    assert not leaf.cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    usage = leaf.cert.extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage.digital_signature
    assert not usage.key_cert_sign
    # The key belongs to the certificate.
    assert leaf.key.public_key() == leaf.cert.public_key()
    now = datetime.datetime.now(datetime.UTC)
    assert leaf.cert.not_valid_before_utc <= now < leaf.cert.not_valid_after_utc


def test_a_foreign_ca_does_not_verify(material: pki.ControlPlanePKI) -> None:
    other = pki.make_ca("someone-else")
    with pytest.raises(ValueError):
        material.admin.cert.verify_directly_issued_by(other.cert)


def test_apiserver_serving_cert_names(material: pki.ControlPlanePKI) -> None:
    cert = material.apiserver.cert
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    dns = set(san.get_values_for_type(x509.DNSName))
    ips = {str(ip) for ip in san.get_values_for_type(x509.IPAddress)}
    assert {"localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc"} <= dns
    assert {"127.0.0.1", "10.0.0.1"} <= ips
    assert ipaddress.ip_address(pki.FIRST_SERVICE_IP) in ipaddress.ip_network("10.0.0.0/24")
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.SERVER_AUTH]


def test_admin_is_in_system_masters(material: pki.ControlPlanePKI) -> None:
    cert = material.admin.cert
    assert subject(cert, NameOID.COMMON_NAME) == ["admin"]
    assert subject(cert, NameOID.ORGANIZATION_NAME) == ["system:masters"]
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    with pytest.raises(x509.ExtensionNotFound):
        cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)


def test_controller_manager_identity(material: pki.ControlPlanePKI) -> None:
    cert = material.controller_manager.cert
    assert subject(cert, NameOID.COMMON_NAME) == ["system:kube-controller-manager"]
    assert subject(cert, NameOID.ORGANIZATION_NAME) == []


def test_client_cert_for_any_user_and_groups(material: pki.ControlPlanePKI) -> None:
    issued = pki.issue_client_cert(material.ca, "system:node:win-01", ["system:nodes", "winnode:testers"])
    issued.cert.verify_directly_issued_by(material.ca.cert)
    assert subject(issued.cert, NameOID.COMMON_NAME) == ["system:node:win-01"]
    assert subject(issued.cert, NameOID.ORGANIZATION_NAME) == ["system:nodes", "winnode:testers"]
    eku = issued.cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    # Each issue is a new key and serial.
    again = pki.issue_client_cert(material.ca, "system:node:win-01")
    assert again.cert.serial_number != issued.cert.serial_number
    assert again.key.public_key() != issued.key.public_key()


def test_front_proxy_has_its_own_ca(material: pki.ControlPlanePKI) -> None:
    material.front_proxy_client.cert.verify_directly_issued_by(material.front_proxy_ca.cert)
    assert material.front_proxy_ca.cert.subject != material.ca.cert.subject
    assert subject(material.front_proxy_client.cert, NameOID.COMMON_NAME) == ["front-proxy-client"]


def test_service_account_key_is_p256(material: pki.ControlPlanePKI) -> None:
    assert isinstance(material.service_account_key.curve, ec.SECP256R1)
    assert pki.public_key_pem(material.service_account_key).startswith(b"-----BEGIN PUBLIC KEY-----")


def test_written_keys_are_private_and_reload(material: pki.ControlPlanePKI, tmp_path: Path) -> None:
    cert_path, key_path = tmp_path / "ca.crt", tmp_path / "ca.key"
    key_path.write_bytes(b"stale")
    key_path.chmod(0o644)
    material.ca.write(cert_path, key_path)
    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600
    loaded = pki.load_ca(cert_path, key_path)
    assert loaded.cert == material.ca.cert
    assert loaded.key.private_numbers() == material.ca.key.private_numbers()
