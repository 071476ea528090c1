"""Reading a CertificateSigningRequest object into plain facts the approval policy can judge."""

from __future__ import annotations

import base64
import ipaddress
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import NameOID

from winnode.kube.signers import CLIENT_SIGNER as CLIENT_SIGNER
from winnode.kube.signers import SERVING_SIGNER as SERVING_SIGNER


class CsrParseError(ValueError):
    """spec.request is not a PEM certificate request we can read."""


@dataclass(frozen=True)
class CsrFacts:
    name: str
    signer_name: str
    username: str
    groups: frozenset[str]
    usages: frozenset[str]
    common_name: str | None
    organizations: tuple[str, ...]
    dns_names: frozenset[str]
    ip_addresses: frozenset[str]
    other_sans: int  # email, URI and other SAN kinds: kubelets never ask for them
    key_type: str  # "rsa" | "ecdsa" | "ed25519" | "other"
    approved: bool
    denied_or_failed: bool


def _names(subject: x509.Name, oid: x509.ObjectIdentifier) -> list[str]:
    return [str(a.value) for a in subject.get_attributes_for_oid(oid)]


def parse_csr(obj: dict[str, Any]) -> CsrFacts:
    """Facts of a CSR given as the JSON dict the API returns."""
    meta = obj.get("metadata") or {}
    spec = obj.get("spec") or {}
    status = obj.get("status") or {}
    name = str(meta.get("name", ""))
    try:
        pem = base64.b64decode(spec.get("request", ""), validate=True)
        req = x509.load_pem_x509_csr(pem)
    except (ValueError, TypeError) as exc:
        raise CsrParseError(f"CSR {name}: spec.request is not a PEM certificate request") from exc
    cns = _names(req.subject, NameOID.COMMON_NAME)
    dns: set[str] = set()
    ips: set[str] = set()
    other = 0
    try:
        san = req.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        san = None
    if san is not None:
        for general_name in san:
            if isinstance(general_name, x509.DNSName):
                dns.add(general_name.value)
            elif isinstance(general_name, x509.IPAddress):
                ips.add(str(general_name.value))
            else:
                other += 1
    key = req.public_key()
    key_type = (
        "rsa"
        if isinstance(key, rsa.RSAPublicKey)
        else "ecdsa"
        if isinstance(key, ec.EllipticCurvePublicKey)
        else "ed25519"
        if isinstance(key, ed25519.Ed25519PublicKey)
        else "other"
    )
    conditions = status.get("conditions") or []
    types = {c.get("type") for c in conditions if c.get("status", "True") == "True"}
    return CsrFacts(
        name=name,
        signer_name=str(spec.get("signerName", "")),
        username=str(spec.get("username", "")),
        groups=frozenset(spec.get("groups") or ()),
        usages=frozenset(spec.get("usages") or ()),
        common_name=cns[0] if len(cns) == 1 else None,
        organizations=tuple(_names(req.subject, NameOID.ORGANIZATION_NAME)),
        dns_names=frozenset(dns),
        ip_addresses=frozenset(ips),
        other_sans=other,
        key_type=key_type,
        approved="Approved" in types,
        denied_or_failed=bool(types & {"Denied", "Failed"}),
    )


def normalize_ip(value: str) -> str | None:
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        return None
