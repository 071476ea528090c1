"""An emulated kubelet: what a Windows node's kubelet does through the Kubernetes API, without Windows.

    kubelet = EmulatedKubelet(KubeletConfig(node_name="win-01", bootstrap_kubeconfig=text, ...))
    await kubelet.start()     # returns at once; the kubelet runs as tasks of the caller's event loop
    ...                       # someone approves its client CSR; the Node registers and turns Ready
    await kubelet.stop()      # heartbeats stop; kcm marks the Node NotReady after its grace period

The operator's join, upgrade and drain logic meets a real apiserver through it, so it does what
kubelet v1.37 does on the wire, with the same identities and the same limits:

- TLS bootstrap: with the bootstrap token of its kubeconfig it asks for a client certificate
  (signer kube-apiserver-client-kubelet, ECDSA P-256, CN system:node:<name>, O system:nodes, the CSR
  named from a digest of key, subject and usages so that a restart finds its own request again) and
  waits until someone approves it and kcm signs it. Key and certificate are kept in `state_dir`; a
  later start reuses them while they are valid.
- As the node (client certificate, so the Node authorizer and NodeRestriction apply) it registers the
  Node, or updates the default labels and status of one that exists, renews its Lease in
  kube-node-lease every heartbeat and keeps the node status current.
- It asks for a serving certificate (signer kubelet-serving, SANs = the node's addresses) that nobody
  approves automatically, and keeps running while it is pending.
- Pods bound to the node (watched with a spec.nodeName field selector) are reported Running and Ready;
  pods being deleted or evicted get a terminal status and are deleted with grace period 0 and a UID
  precondition, as kubelet's status manager does.

One kubelet holds a few tasks and one aiohttp session, no thread: hundreds run in one process. Its
state directory mirrors kubelet's: pki/kubelet-client-current.pem, pki/kubelet-client.key.tmp (the key
of a client CSR still pending), pki/kubelet-server-current.pem and a kubelet.conf pointing at them.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime
import hashlib
import ipaddress
import json
import logging
import os
import random
import re
import ssl
import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any, Literal

import aiohttp
import yaml
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from winnode import timeouts
from winnode.csr.parse import CLIENT_SIGNER, SERVING_SIGNER

__all__ = [
    "ApiError",
    "ClusterAccess",
    "EmulatedKubelet",
    "KubeletConfig",
    "KubeletConfigError",
    "KubeletFailedError",
    "KubeletState",
    "TransportError",
    "client_csr_name",
    "make_client_csr",
    "make_serving_csr",
    "parse_kubeconfig",
    "parse_taint",
    "validate_node_labels",
]

log = logging.getLogger(__name__)

KubeletState = Literal["stopped", "bootstrapping", "waiting-for-certificate", "registered", "ready", "failed"]
Json = dict[str, Any]

NODE_USER_PREFIX = "system:node:"
NODES_GROUP = "system:nodes"
NODE_LEASE_NAMESPACE = "kube-node-lease"
KUBELET_PORT = 10250
OS = "windows"
ARCH = "amd64"
DEFAULT_CONTAINERD_VERSION = "1.7.27"
GIB = 1024**3

# Kubelet's own labels (updateDefaultLabels): set at registration and put back on an existing Node.
LABEL_HOSTNAME = "kubernetes.io/hostname"
LABEL_OS = "kubernetes.io/os"
LABEL_ARCH = "kubernetes.io/arch"
LABEL_WINDOWS_BUILD = "node.kubernetes.io/windows-build"
DEFAULT_LABEL_KEYS = (
    LABEL_HOSTNAME,
    "topology.kubernetes.io/zone",
    "topology.kubernetes.io/region",
    "failure-domain.beta.kubernetes.io/zone",
    "failure-domain.beta.kubernetes.io/region",
    "node.kubernetes.io/instance-type",
    "beta.kubernetes.io/instance-type",
    LABEL_OS,
    LABEL_ARCH,
    LABEL_WINDOWS_BUILD,
    "beta.kubernetes.io/os",
    "beta.kubernetes.io/arch",
)
# Labels in the kubernetes.io / k8s.io namespaces a kubelet may set (k8s.io/kubelet/pkg/apis).
KUBELET_LABELS = frozenset(
    {
        LABEL_HOSTNAME,
        "topology.kubernetes.io/zone",
        "topology.kubernetes.io/region",
        "failure-domain.beta.kubernetes.io/zone",
        "failure-domain.beta.kubernetes.io/region",
        "beta.kubernetes.io/instance-type",
        "node.kubernetes.io/instance-type",
        LABEL_OS,
        LABEL_ARCH,
        "beta.kubernetes.io/os",
        "beta.kubernetes.io/arch",
    }
)
KUBELET_LABEL_NAMESPACES = ("kubelet.kubernetes.io", "node.kubernetes.io")
CONTROLLER_MANAGED_ATTACH_ANNOTATION = "volumes.kubernetes.io/controller-managed-attach-detach"
TAINT_EFFECTS = ("NoSchedule", "PreferNoSchedule", "NoExecute")

# Update build revision (UBR) reported in kernelVersion; any plausible value per release does.
_UBR = {17763: 7009, 20348: 3207, 26100: 3476}
# Kubelet's default hard eviction thresholds on Windows reduce allocatable by these.
_EVICTION_MEMORY = 100 * 1024**2
_EVICTION_NODEFS_FRACTION = Fraction(1, 10)
# A stored certificate is renewed once this much of its lifetime has passed (client-go: 70-90 %).
CERT_RENEW_FRACTION = 0.8
# Pods that do not use the host network get addresses from the Node's spec.podCIDR, or else from a
# /24 of this range picked by node name (node IPAM may be off; the addresses only need to look real).
FAKE_POD_RANGE = ipaddress.ip_network("100.64.0.0/10")
_DNS_LABEL = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"
_DNS_SUBDOMAIN = re.compile(rf"{_DNS_LABEL}(\.{_DNS_LABEL})*")
_QUALIFIED_NAME = re.compile(r"[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?")


# --- configuration -------------------------------------------------------------------------------


@dataclass(kw_only=True)
class KubeletConfig:
    """What a kubelet learns from its command line, its files and the host it runs on."""

    node_name: str
    bootstrap_kubeconfig: str  # YAML text: server URL, CA data, bootstrap token user
    kubelet_version: str  # e.g. "v1.37.2"
    os_build: int  # 17763 / 20348 / 26100
    os_image: str  # e.g. "Windows Server 2022 Datacenter"
    addresses: list[str]  # InternalIP addresses
    labels: dict[str, str] = field(default_factory=dict)  # --node-labels
    taints: list[str] = field(default_factory=list)  # --register-with-taints, "key=value:Effect"
    state_dir: Path  # issued certificates survive restarts here
    heartbeat_interval_s: float = 2.0
    cpu: int = 4
    memory_bytes: int = 16 * GIB
    ephemeral_storage_bytes: int = 127 * GIB
    max_pods: int = 110
    containerd_version: str = DEFAULT_CONTAINERD_VERSION
    # Fault: the kubelet registers and heartbeats but never reports Ready (as a kubelet whose
    # container runtime network never comes up); a test of upgrades that must roll back.
    never_ready: bool = False
    # The container runtime's network status: an error while it is not ready (the emulated host's
    # containerd judges its CNI files), None when ready. Asked at every status update.
    network_error: Callable[[], str | None] | None = None


class KubeletConfigError(ValueError):
    """The kubelet refuses to start with this configuration (kubelet exits the same way)."""


class KubeletFailedError(RuntimeError):
    """The kubelet stopped on its own, as a real one exits (CSR denied, bootstrap credentials refused...)."""


# --- kubeconfig ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ClusterAccess:
    """Where the apiserver is and how to authenticate, from the current context of a kubeconfig."""

    server: str
    ca_pem: bytes | None = None
    insecure: bool = False
    tls_server_name: str | None = None
    token: str | None = field(default=None, repr=False)
    client_cert_pem: bytes | None = field(default=None, repr=False)
    client_key_pem: bytes | None = field(default=None, repr=False)


class KubeconfigError(KubeletConfigError):
    """The bootstrap kubeconfig cannot be used. Messages never quote credentials."""


def _named(items: Any, name: str | None, kind: str) -> Json:
    if not isinstance(items, list) or not items:
        raise KubeconfigError(f"kubeconfig has no {kind}s")
    entries = [i for i in items if isinstance(i, dict)]
    if name is None:
        if len(entries) == 1:
            entry = entries[0].get(kind)
            if isinstance(entry, dict):
                return entry
        raise KubeconfigError(f"kubeconfig has no current-context and more than one {kind}")
    for item in entries:
        if item.get("name") == name and isinstance(item.get(kind), dict):
            value: Json = item[kind]
            return value
    raise KubeconfigError(f"kubeconfig has no {kind} named {name!r}")


def _data_or_file(section: Json, key: str, what: str) -> bytes | None:
    if data := section.get(f"{key}-data"):
        try:
            return base64.b64decode(str(data), validate=True)
        except ValueError:
            raise KubeconfigError(f"{what} ({key}-data) is not base64") from None
    if path := section.get(key):
        try:
            return Path(str(path)).read_bytes()
        except OSError as exc:
            raise KubeconfigError(f"{what} file {path} cannot be read: {exc.strerror}") from None
    return None


def parse_kubeconfig(text: str) -> ClusterAccess:
    """The cluster and credentials a kubelet would use from this kubeconfig text."""
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        # The parser's message quotes the offending line, which may hold the token: give the position only.
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        raise KubeconfigError(f"kubeconfig is not valid YAML{where}") from None
    if not isinstance(doc, dict):
        raise KubeconfigError("kubeconfig is not a YAML mapping")
    current = doc.get("current-context") or None
    if current is None:
        contexts = doc.get("contexts")
        context: Json = _named(contexts, None, "context") if contexts else {}
    else:
        context = _named(doc.get("contexts"), str(current), "context")
    cluster = _named(doc.get("clusters"), context.get("cluster"), "cluster")
    users = doc.get("users")
    user: Json = _named(users, context.get("user"), "user") if users or context.get("user") else {}

    server = str(cluster.get("server") or "")
    if not server.startswith("https://"):
        raise KubeconfigError(
            f"kubeconfig cluster server must be an https:// URL, got {server!r}"
            if server
            else "kubeconfig names no cluster server"
        )
    token = user.get("token")
    if not token and (token_file := user.get("tokenFile")):
        try:
            token = Path(str(token_file)).read_text().strip()
        except OSError as exc:
            raise KubeconfigError(f"token file {token_file} cannot be read: {exc.strerror}") from None
    cert = _data_or_file(user, "client-certificate", "client certificate")
    key = _data_or_file(user, "client-key", "client key")
    if (cert is None) != (key is None):
        raise KubeconfigError("kubeconfig user has a client certificate without its key, or a key alone")
    if not token and cert is None:
        raise KubeconfigError("kubeconfig user has neither a token nor a client certificate")
    return ClusterAccess(
        server=server.rstrip("/"),
        ca_pem=_data_or_file(cluster, "certificate-authority", "certificate authority"),
        insecure=bool(cluster.get("insecure-skip-tls-verify", False)),
        tls_server_name=str(cluster["tls-server-name"]) if cluster.get("tls-server-name") else None,
        token=str(token) if token else None,
        client_cert_pem=cert,
        client_key_pem=key,
    )


# --- command-line checks -------------------------------------------------------------------------


def _is_qualified_name(key: str) -> bool:
    prefix, slash, name = key.rpartition("/")
    if slash and (not prefix or len(prefix) > 253 or not _DNS_SUBDOMAIN.fullmatch(prefix)):
        return False
    return 0 < len(name) <= 63 and bool(_QUALIFIED_NAME.fullmatch(name))


def _is_label_value(value: str) -> bool:
    return value == "" or (len(value) <= 63 and bool(_QUALIFIED_NAME.fullmatch(value)))


def _label_namespace(key: str) -> str:
    prefix, slash, _ = key.partition("/")
    return prefix if slash else ""


def is_kubelet_label(key: str) -> bool:
    """May a kubelet set this label on its Node (NodeRestriction lets it)?"""
    if key in KUBELET_LABELS:
        return True
    ns = _label_namespace(key)
    return any(ns == allowed or ns.endswith("." + allowed) for allowed in KUBELET_LABEL_NAMESPACES)


def _is_kubernetes_label(key: str) -> bool:
    ns = _label_namespace(key)
    return any(ns == d or ns.endswith("." + d) for d in ("kubernetes.io", "k8s.io"))


def validate_node_labels(labels: Mapping[str, str]) -> None:
    """kubelet's check of --node-labels: it refuses to start with labels NodeRestriction would reject."""
    invalid = [
        f"{k}={v}" for k, v in sorted(labels.items()) if not _is_qualified_name(k) or not _is_label_value(v)
    ]
    if invalid:
        raise KubeletConfigError(f"invalid node labels: {', '.join(invalid)}")
    unknown = sorted(k for k in labels if _is_kubernetes_label(k) and not is_kubelet_label(k))
    if unknown:
        raise KubeletConfigError(
            f"unknown 'kubernetes.io' or 'k8s.io' labels specified with --node-labels: {unknown}\n"
            "--node-labels in the 'kubernetes.io' namespace must begin with an allowed prefix "
            f"({', '.join(KUBELET_LABEL_NAMESPACES)}) or be in the specifically allowed set "
            f"({', '.join(sorted(KUBELET_LABELS))})"
        )


def parse_taint(spec: str) -> Json:
    """One --register-with-taints entry, "key=value:Effect" or "key:Effect", as a Node taint."""
    rest, colon, effect = spec.strip().rpartition(":")
    if not colon or effect not in TAINT_EFFECTS:
        raise KubeletConfigError(
            f"invalid taint spec {spec!r}: expected key[=value]:Effect with Effect one of {', '.join(TAINT_EFFECTS)}"
        )
    key, eq, value = rest.partition("=")
    if not _is_qualified_name(key) or not _is_label_value(value):
        raise KubeletConfigError(f"invalid taint spec {spec!r}: bad key or value")
    taint: Json = {"key": key, "effect": effect}
    if eq and value:
        taint["value"] = value
    return taint


def _validate(config: KubeletConfig) -> list[Json]:
    """Everything kubelet checks before it does anything; the taints it will register with."""
    if len(config.node_name) > 253 or not _DNS_SUBDOMAIN.fullmatch(config.node_name):
        raise KubeletConfigError(f"node name {config.node_name!r} is not a lower-case DNS subdomain")
    if not config.kubelet_version.startswith("v"):
        raise KubeletConfigError(f"kubelet version {config.kubelet_version!r} does not look like v1.X.Y")
    for address in config.addresses:
        try:
            ipaddress.ip_address(address)
        except ValueError:
            raise KubeletConfigError(f"node address {address!r} is not an IP address") from None
    if config.heartbeat_interval_s <= 0:
        raise KubeletConfigError("heartbeat_interval_s must be positive")
    validate_node_labels(config.labels)
    taints = [parse_taint(t) for t in config.taints if t.strip()]
    seen: set[tuple[str, str]] = set()
    for taint in taints:
        ident = (taint["key"], taint["effect"])
        if ident in seen:
            raise KubeletConfigError(
                f"duplicate taint {taint['key']}:{taint['effect']} in --register-with-taints"
            )
        seen.add(ident)
    return taints


# --- certificates --------------------------------------------------------------------------------


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
        _spki(public_key),
        (NODE_USER_PREFIX + node_name).encode(),
        NODES_GROUP.encode(),
        *(u.encode() for u in usages),
    ):
        digest.update(enc(part) + b"|")
    return "node-csr-" + enc(digest.finalize()).decode()


def _now() -> datetime.datetime:
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
    now = now or _now()
    if _spki(cert.public_key()) != _spki(key.public_key()):
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


def _spki(public_key: Any) -> bytes:
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


def _write_private(path: Path, data: bytes) -> None:
    """Replace `path` atomically with a file only its owner can read: a crash never leaves half a key."""
    tmp = path.with_name(path.name + ".writing")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def _key_pem(key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> bytes:
    # SEC1 "EC PRIVATE KEY", as Go's keyutil writes it.
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )


# --- API objects ---------------------------------------------------------------------------------


def _time(t: datetime.datetime) -> str:
    return t.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _micro_time(t: datetime.datetime) -> str:
    return t.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def node_labels(config: KubeletConfig) -> dict[str, str]:
    """The labels kubelet registers with: its own, then --node-labels on top (kubelet's initialNode)."""
    labels = {
        LABEL_HOSTNAME: config.node_name,
        LABEL_OS: OS,
        LABEL_ARCH: ARCH,
        "beta.kubernetes.io/os": OS,
        "beta.kubernetes.io/arch": ARCH,
        LABEL_WINDOWS_BUILD: f"10.0.{config.os_build}",
    }
    labels.update(config.labels)
    return labels


def kernel_version(os_build: int) -> str:
    return f"10.0.{os_build}.{_UBR.get(os_build, 1)}"


_QUANTITY_SUFFIXES: dict[str, Fraction] = {
    **{suffix: Fraction(1024**power) for power, suffix in enumerate(("Ki", "Mi", "Gi", "Ti", "Pi", "Ei"), 1)},
    **{suffix: Fraction(1000**power) for power, suffix in enumerate(("k", "M", "G", "T", "P", "E"), 1)},
    "n": Fraction(1, 10**9),
    "u": Fraction(1, 10**6),
    "m": Fraction(1, 1000),
    "": Fraction(1),
}


def _quantity(text: str) -> Fraction | None:
    """Value of a resource quantity, so "16Gi" and "16777216Ki" compare equal; None if unreadable."""
    m = re.fullmatch(r"([+-]?[0-9.]+(?:[eE][+-]?[0-9]+)?)([A-Za-z]*)", text.strip())
    if not m or m.group(2) not in _QUANTITY_SUFFIXES:
        return None
    try:
        return Fraction(m.group(1)) * _QUANTITY_SUFFIXES[m.group(2)]
    except ValueError:
        return None


def _resources_equal(a: Mapping[str, Any] | None, b: Mapping[str, Any] | None) -> bool:
    a, b = a or {}, b or {}
    if a.keys() != b.keys():
        return False
    for k in a:
        va, vb = _quantity(str(a[k])), _quantity(str(b[k]))
        if va is None or va != vb:
            return False
    return True


@dataclass(frozen=True)
class NodeIdentity:
    machine_id: str
    system_uuid: str
    boot_id: str


def node_identity(node_name: str) -> NodeIdentity:
    machine = uuid.uuid5(uuid.NAMESPACE_DNS, f"{node_name}.machine.winnode.invalid")
    system = uuid.uuid5(uuid.NAMESPACE_DNS, f"{node_name}.system.winnode.invalid")
    return NodeIdentity(machine_id=machine.hex, system_uuid=str(system).upper(), boot_id=str(uuid.uuid4()))


def _capacity(config: KubeletConfig) -> tuple[dict[str, str], dict[str, str]]:
    capacity = {
        "cpu": str(config.cpu),
        "ephemeral-storage": f"{config.ephemeral_storage_bytes // 1024}Ki",
        "memory": f"{config.memory_bytes // 1024}Ki",
        "pods": str(config.max_pods),
    }
    storage = int(config.ephemeral_storage_bytes * (1 - _EVICTION_NODEFS_FRACTION))
    allocatable = {
        "cpu": str(config.cpu),
        "ephemeral-storage": str(storage),
        "memory": f"{max(0, config.memory_bytes - _EVICTION_MEMORY) // 1024}Ki",
        "pods": str(config.max_pods),
    }
    return capacity, allocatable


_CONDITIONS = (
    ("MemoryPressure", "False", "KubeletHasSufficientMemory", "kubelet has sufficient memory available"),
    ("DiskPressure", "False", "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
    ("PIDPressure", "False", "KubeletHasSufficientPID", "kubelet has sufficient PID available"),
    ("Ready", "True", "KubeletReady", "kubelet is posting ready status"),
)
_NOT_READY = (
    "Ready",
    "False",
    "KubeletNotReady",
    "container runtime network not ready: NetworkReady=false reason:NetworkPluginNotReady "
    "message:Network plugin returns error: cni plugin not initialized",
)


def node_status(
    config: KubeletConfig, identity: NodeIdentity, *, now: datetime.datetime, previous: Json | None = None
) -> Json:
    """The status kubelet's setters produce for this host; transition times kept where nothing changed."""
    before = {c.get("type"): c for c in (previous or {}).get("conditions") or [] if isinstance(c, dict)}
    stamp = _time(now)
    conditions = []
    network = config.network_error() if config.network_error is not None else None
    not_ready = _NOT_READY
    if network is not None:
        # kubelet pkg/kubelet/kubelet.go: the runtime's NetworkReady=false, with the CNI error.
        not_ready = (
            *_NOT_READY[:3],
            f"{_NOT_READY[3].split(' message:')[0]} message:Network plugin returns error: {network}",
        )
    table = (
        [not_ready if c[0] == "Ready" else c for c in _CONDITIONS]
        if config.never_ready or network
        else _CONDITIONS
    )
    for ctype, status, reason, message in table:
        old = before.get(ctype)
        same = old is not None and old.get("status") == status and old.get("lastTransitionTime")
        conditions.append(
            {
                "type": ctype,
                "status": status,
                "lastHeartbeatTime": stamp,
                "lastTransitionTime": old["lastTransitionTime"] if same and old else stamp,
                "reason": reason,
                "message": message,
            }
        )
    capacity, allocatable = _capacity(config)
    addresses = [{"type": "InternalIP", "address": a} for a in config.addresses]
    addresses.append({"type": "Hostname", "address": config.node_name})
    return {
        "capacity": capacity,
        "allocatable": allocatable,
        "conditions": conditions,
        "addresses": addresses,
        "daemonEndpoints": {"kubeletEndpoint": {"Port": KUBELET_PORT}},
        "nodeInfo": {
            "machineID": identity.machine_id,
            "systemUUID": identity.system_uuid,
            "bootID": identity.boot_id,
            "kernelVersion": kernel_version(config.os_build),
            "osImage": config.os_image,
            "containerRuntimeVersion": f"containerd://{config.containerd_version}",
            "kubeletVersion": config.kubelet_version,
            # DisableNodeKubeProxyVersion is locked on since 1.36: kubelet leaves this empty.
            "kubeProxyVersion": "",
            "operatingSystem": OS,
            "architecture": ARCH,
        },
    }


def node_status_changed(desired: Json, current: Json | None) -> bool:
    """Whether posting `desired` would change anything but heartbeat times."""
    current = current or {}

    def conds(status: Json) -> dict[str, tuple[Any, ...]]:
        return {
            str(c.get("type")): (c.get("status"), c.get("reason"), c.get("message"))
            for c in status.get("conditions") or []
            if isinstance(c, dict)
        }

    wanted = conds(desired)
    have = conds(current)
    if any(have.get(t) != v for t, v in wanted.items()):
        return True
    # Only the nodeInfo fields kubelet sets here; newer ones (swap, features) are not compared.
    info = current.get("nodeInfo") or {}
    return (
        any(info.get(k) != v for k, v in desired["nodeInfo"].items())
        or desired["addresses"] != current.get("addresses")
        or desired["daemonEndpoints"] != current.get("daemonEndpoints")
        or not _resources_equal(desired["capacity"], current.get("capacity"))
        or not _resources_equal(desired["allocatable"], current.get("allocatable"))
    )


def initial_node(
    config: KubeletConfig, identity: NodeIdentity, taints: list[Json], now: datetime.datetime
) -> Json:
    node: Json = {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": config.node_name,
            "labels": node_labels(config),
            "annotations": {CONTROLLER_MANAGED_ATTACH_ANNOTATION: "true"},
        },
        "spec": {},
        "status": node_status(config, identity, now=now),
    }
    if taints:
        node["spec"]["taints"] = taints
    return node


def default_labels_patch(config: KubeletConfig, existing: Json) -> Json | None:
    """Merge patch putting kubelet's own labels and annotation back on an existing Node, or None.

    Only those: on re-registration kubelet leaves --node-labels and taints as the cluster has them.
    """
    meta = existing.get("metadata") or {}
    have_labels = meta.get("labels") or {}
    initial = node_labels(config)
    labels = {k: initial[k] for k in DEFAULT_LABEL_KEYS if k in initial and have_labels.get(k) != initial[k]}
    patch: Json = {}
    if labels:
        patch["labels"] = labels
    if (meta.get("annotations") or {}).get(CONTROLLER_MANAGED_ATTACH_ANNOTATION) != "true":
        patch["annotations"] = {CONTROLLER_MANAGED_ATTACH_ANNOTATION: "true"}
    return {"metadata": patch} if patch else None


# Pods -----------------------------------------------------------------------------------------


def admission_rejection(pod: Json) -> tuple[str, str] | None:
    """(reason, message) when kubelet's admission on a Windows node refuses the pod."""
    os_name = ((pod.get("spec") or {}).get("os") or {}).get("name")
    if os_name and os_name != OS:
        return "PodOSNotSupported", "Failed to admit pod as the OS field doesn't match node OS"
    # kubelet compares the pod's *labels* here (not its nodeSelector); keep that quirk.
    label = ((pod.get("metadata") or {}).get("labels") or {}).get(LABEL_OS)
    if label is not None and label != OS:
        return (
            "PodOSSelectorNodeLabelDoesNotMatch",
            "Failed to admit pod as the `kubernetes.io/os` label doesn't match node label",
        )
    return None


def _container_id(uid: str, name: str) -> str:
    return "containerd://" + hashlib.sha256(f"{uid}/{name}".encode()).hexdigest()


def _image_id(image: str) -> str:
    return "sha256:" + hashlib.sha256(image.encode()).hexdigest()


def _is_sidecar(container: Json) -> bool:
    return container.get("restartPolicy") == "Always"


def _pod_condition(
    ctype: str,
    status: str,
    previous: Mapping[str, Json],
    now: str,
    generation: int | None,
    reason: str | None = None,
) -> Json:
    old = previous.get(ctype)
    unchanged = old is not None and old.get("status") == status and old.get("lastTransitionTime")
    cond: Json = {
        "type": ctype,
        "status": status,
        "lastProbeTime": None,
        "lastTransitionTime": old["lastTransitionTime"] if unchanged and old else now,
    }
    if generation is not None:
        cond["observedGeneration"] = generation
    if reason:
        cond["reason"] = reason
    return cond


def running_pod_status(pod: Json, *, host_ips: list[str], pod_ip: str, now: datetime.datetime) -> Json:
    """The status kubelet reports once every container of the pod has started (and passes its probes)."""
    meta = pod.get("metadata") or {}
    spec = pod.get("spec") or {}
    status = pod.get("status") or {}
    uid = str(meta.get("uid", ""))
    generation = meta.get("generation")
    stamp = _time(now)
    previous = {str(c.get("type")): c for c in status.get("conditions") or [] if isinstance(c, dict)}
    before = {
        c.get("name"): c
        for c in [*(status.get("containerStatuses") or []), *(status.get("initContainerStatuses") or [])]
        if isinstance(c, dict)
    }

    def started_at(name: str) -> str:
        state = (before.get(name) or {}).get("state") or {}
        return str((state.get("running") or state.get("terminated") or {}).get("startedAt") or stamp)

    def running(container: Json) -> Json:
        name = str(container.get("name"))
        return {
            "name": name,
            "image": container.get("image", ""),
            "imageID": _image_id(str(container.get("image", ""))),
            "containerID": _container_id(uid, name),
            "ready": True,
            "started": True,
            "restartCount": 0,
            "state": {"running": {"startedAt": started_at(name)}},
            "lastState": {},
        }

    def completed(container: Json) -> Json:
        name = str(container.get("name"))
        begun = started_at(name)
        old = ((before.get(name) or {}).get("state") or {}).get("terminated") or {}
        return {
            "name": name,
            "image": container.get("image", ""),
            "imageID": _image_id(str(container.get("image", ""))),
            "containerID": _container_id(uid, name),
            "ready": True,
            "started": False,
            "restartCount": 0,
            "state": {
                "terminated": {
                    "exitCode": 0,
                    "reason": "Completed",
                    "startedAt": begun,
                    "finishedAt": old.get("finishedAt") or begun,
                    "containerID": _container_id(uid, name),
                }
            },
            "lastState": {},
        }

    result: Json = {
        "phase": "Running",
        "conditions": [
            _pod_condition("PodReadyToStartContainers", "True", previous, stamp, generation),
            _pod_condition("Initialized", "True", previous, stamp, generation),
            _pod_condition("Ready", "True", previous, stamp, generation),
            _pod_condition("ContainersReady", "True", previous, stamp, generation),
            _pod_condition("PodScheduled", "True", previous, stamp, generation),
        ],
        "hostIP": host_ips[0] if host_ips else None,
        "hostIPs": [{"ip": ip} for ip in host_ips],
        "podIP": pod_ip,
        "podIPs": [{"ip": pod_ip}],
        "startTime": status.get("startTime") or stamp,
        "containerStatuses": [running(c) for c in spec.get("containers") or []],
    }
    init = spec.get("initContainers") or []
    if init:
        result["initContainerStatuses"] = [running(c) if _is_sidecar(c) else completed(c) for c in init]
    if generation is not None:
        result["observedGeneration"] = generation
    return result


def terminated_pod_status(pod: Json, *, now: datetime.datetime) -> Json:
    """Status after kubelet stopped every container of a pod being deleted (they exit on SIGTERM)."""
    meta = pod.get("metadata") or {}
    spec = pod.get("spec") or {}
    status = pod.get("status") or {}
    uid = str(meta.get("uid", ""))
    generation = meta.get("generation")
    stamp = _time(now)
    previous = {str(c.get("type")): c for c in status.get("conditions") or [] if isinstance(c, dict)}
    before = {c.get("name"): c for c in status.get("containerStatuses") or [] if isinstance(c, dict)}

    def terminated(container: Json) -> Json:
        name = str(container.get("name"))
        state = (before.get(name) or {}).get("state") or {}
        begun = (state.get("running") or state.get("terminated") or {}).get("startedAt") or stamp
        return {
            "name": name,
            "image": container.get("image", ""),
            "imageID": _image_id(str(container.get("image", ""))),
            "containerID": _container_id(uid, name),
            "ready": False,
            "started": False,
            "restartCount": int((before.get(name) or {}).get("restartCount") or 0),
            "state": {
                "terminated": {
                    "exitCode": 0,
                    "reason": "Completed",
                    "startedAt": begun,
                    "finishedAt": stamp,
                    "containerID": _container_id(uid, name),
                }
            },
            "lastState": {},
        }

    result: Json = {
        "phase": "Succeeded",
        "conditions": [
            _pod_condition("PodReadyToStartContainers", "False", previous, stamp, generation),
            _pod_condition("Initialized", "True", previous, stamp, generation, reason="PodCompleted"),
            _pod_condition("Ready", "False", previous, stamp, generation, reason="PodCompleted"),
            _pod_condition("ContainersReady", "False", previous, stamp, generation, reason="PodCompleted"),
            _pod_condition("PodScheduled", "True", previous, stamp, generation),
        ],
        "containerStatuses": [terminated(c) for c in spec.get("containers") or []],
    }
    if generation is not None:
        result["observedGeneration"] = generation
    return result


def pod_status_differs(desired: Json, current: Json | None) -> bool:
    """Whether the pod's status in the API disagrees with what kubelet reports (timestamps aside)."""
    current = current or {}

    def summary(status: Json) -> tuple[Any, ...]:
        conds = sorted(
            (str(c.get("type")), str(c.get("status")))
            for c in status.get("conditions") or []
            if isinstance(c, dict)
        )

        def containers(key: str) -> list[tuple[Any, ...]]:
            return [
                (
                    c.get("name"),
                    c.get("ready"),
                    c.get("started"),
                    sorted((c.get("state") or {}).keys()),
                    c.get("containerID"),
                )
                for c in status.get(key) or []
                if isinstance(c, dict)
            ]

        return (
            status.get("phase"),
            status.get("podIP"),
            status.get("hostIP"),
            conds,
            containers("containerStatuses"),
            containers("initContainerStatuses"),
            status.get("observedGeneration"),
        )

    wanted = summary(desired)
    have = summary(current)
    # Conditions other controllers own (DisruptionTarget, readiness gates) may sit beside ours.
    mine = set(wanted[3])
    have_conds = [c for c in have[3] if c[0] in {t for t, _ in mine}]
    return (wanted[:3], wanted[4:]) != (have[:3], have[4:]) or sorted(mine) != sorted(have_conds)


class PodNetwork:
    """Hands out pod addresses from one subnet, one per pod UID."""

    def __init__(self, node_name: str, pod_cidr: str | None = None) -> None:
        self.subnet = self._subnet(node_name, pod_cidr)
        self._by_uid: dict[str, str] = {}
        self._used: set[str] = set()

    @staticmethod
    def _subnet(node_name: str, pod_cidr: str | None) -> ipaddress.IPv4Network:
        if pod_cidr:
            with contextlib.suppress(ValueError):
                net = ipaddress.ip_network(pod_cidr, strict=False)
                if isinstance(net, ipaddress.IPv4Network) and net.num_addresses >= 16:
                    return net
        assert isinstance(FAKE_POD_RANGE, ipaddress.IPv4Network)
        count = FAKE_POD_RANGE.num_addresses // 256
        index = int.from_bytes(hashlib.sha256(node_name.encode()).digest()[:4], "big") % count
        return ipaddress.IPv4Network((int(FAKE_POD_RANGE.network_address) + index * 256, 24))

    def claim(self, uid: str, ip: str) -> None:
        self._by_uid[uid] = ip
        self._used.add(ip)

    def allocate(self, uid: str) -> str:
        if uid in self._by_uid:
            return self._by_uid[uid]
        # .1 is the gateway of an l2bridge/overlay network on Windows; start above it.
        for offset in range(2, self.subnet.num_addresses - 1):
            ip = str(self.subnet.network_address + offset)
            if ip not in self._used:
                self.claim(uid, ip)
                return ip
        raise RuntimeError(f"pod subnet {self.subnet} is exhausted")

    def release(self, uid: str) -> None:
        ip = self._by_uid.pop(uid, None)
        if ip is not None:
            self._used.discard(ip)


# --- HTTP ----------------------------------------------------------------------------------------


class ApiError(RuntimeError):
    """A non-2xx answer from the apiserver."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(f"{status} {reason}: {message}" if message else f"{status} {reason}")
        self.status = status
        self.reason = reason
        self.message = message


class TransportError(RuntimeError):
    """The apiserver could not be reached, or the connection broke."""


class _CertificateRequestEnded(RuntimeError):
    """A CSR was denied, failed, deleted or replaced: waiting longer is pointless."""


class _WatchExpired(Exception):
    """The watch's resourceVersion is too old (410 Gone): list again."""


Handler = Callable[[str, Json], Awaitable[bool]]
_CSR_PATH = "/apis/certificates.k8s.io/v1/certificatesigningrequests"
STRATEGIC_MERGE_PATCH = "application/strategic-merge-patch+json"
MERGE_PATCH = "application/merge-patch+json"
CONNECTIONS_PER_KUBELET = 2


class _Api:
    """Just enough HTTP for a kubelet: JSON requests and watch streams on one aiohttp session."""

    def __init__(
        self, access: ClusterAccess, ctx: ssl.SSLContext, *, bearer: str | None, user_agent: str
    ) -> None:
        self._server = access.server
        self._server_hostname = access.tls_server_name
        headers = {"Accept": "application/json", "User-Agent": user_agent}
        if bearer:
            headers["Authorization"] = f"Bearer {bearer}"
        self._session = aiohttp.ClientSession(
            # Each TLS connection costs ~300 KB (asyncio's SSL transport alone reads into a 256 KiB buffer):
            # one for the pod watch and one shared by the short requests is all a kubelet gets.
            connector=aiohttp.TCPConnector(ssl=ctx, limit=CONNECTIONS_PER_KUBELET),
            headers=headers,
            timeout=aiohttp.ClientTimeout(total=timeouts.KUBELET_API_REQUEST),
        )

    async def close(self) -> None:
        await self._session.close()

    def _extra(self) -> dict[str, Any]:
        return {"server_hostname": self._server_hostname} if self._server_hostname else {}

    @staticmethod
    def _error(status: int, body: bytes, fallback: str) -> ApiError:
        try:
            doc = json.loads(body)
        except ValueError:
            doc = None
        if isinstance(doc, dict) and doc.get("kind") == "Status":
            return ApiError(status, str(doc.get("reason") or fallback), str(doc.get("message") or ""))
        return ApiError(status, fallback, "")

    async def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        body: Json | None = None,
        content_type: str = "application/json",
    ) -> Json:
        data = json.dumps(body).encode() if body is not None else None
        headers = {"Content-Type": content_type} if data is not None else None
        try:
            async with self._session.request(
                method, self._server + path, params=params, data=data, headers=headers, **self._extra()
            ) as resp:
                payload = await resp.read()
                if resp.status >= 400:
                    raise self._error(resp.status, payload, resp.reason or "Error")
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise TransportError(f"{method} {path}: {exc or type(exc).__name__}") from None
        try:
            result = json.loads(payload) if payload else {}
        except ValueError:
            raise TransportError(f"{method} {path}: the answer is not JSON") from None
        return result if isinstance(result, dict) else {}

    async def watch(self, path: str, params: Mapping[str, str], handle: Handler) -> None:
        """Stream watch events to `handle(type, object)` until it returns True or the server ends the watch."""
        server_timeout = int(timeouts.KUBELET_WATCH_TIMEOUT * (1 + random.random()))
        query = {
            **params,
            "watch": "true",
            "allowWatchBookmarks": "true",
            "timeoutSeconds": str(server_timeout),
        }
        timeout = aiohttp.ClientTimeout(
            total=None,
            sock_connect=timeouts.KUBELET_API_REQUEST,
            sock_read=server_timeout + timeouts.KUBELET_API_REQUEST,
        )
        try:
            async with self._session.get(
                self._server + path, params=query, timeout=timeout, **self._extra()
            ) as resp:
                if resp.status == 410:
                    raise _WatchExpired()
                if resp.status >= 400:
                    raise self._error(resp.status, await resp.read(), resp.reason or "Error")
                # One JSON document per line; split here, aiohttp's line reader caps the line length.
                buf = bytearray()
                async for chunk in resp.content.iter_any():
                    buf.extend(chunk)
                    while (end := buf.find(b"\n")) >= 0:
                        line = bytes(buf[:end])
                        del buf[: end + 1]
                        if not line.strip():
                            continue
                        try:
                            event = json.loads(line)
                        except ValueError:
                            raise TransportError(f"watch {path}: an event is not JSON") from None
                        etype, obj = str(event.get("type")), event.get("object") or {}
                        if etype == "ERROR":
                            if obj.get("code") == 410:
                                raise _WatchExpired()
                            raise ApiError(
                                int(obj.get("code") or 500),
                                str(obj.get("reason") or "Error"),
                                str(obj.get("message") or ""),
                            )
                        if await handle(etype, obj):
                            return
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise TransportError(f"watch {path}: {exc or type(exc).__name__}") from None


def _ssl_context(access: ClusterAccess, cert_file: Path | None) -> ssl.SSLContext:
    if access.insecure:
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    else:
        ctx = ssl.create_default_context(cadata=access.ca_pem.decode() if access.ca_pem else None)
    if cert_file is not None:
        ctx.load_cert_chain(cert_file)
    return ctx


def _backoff(poll: timeouts.Poll) -> Callable[[], float]:
    """Successive delays of an exponential backoff with a little jitter, so many kubelets spread out."""
    delay = poll.interval

    def next_delay() -> float:
        nonlocal delay
        current = delay
        delay = min(delay * 2, poll.deadline)
        return current * (1 + 0.2 * random.random())

    return next_delay


def _csr_outcome(obj: Json, uid: str) -> bytes | None:
    """The issued certificate once approved and signed; None while pending; raises when it never will be."""
    meta = obj.get("metadata") or {}
    if meta.get("uid") != uid:
        raise _CertificateRequestEnded(f"CSR {meta.get('name')} was replaced by another object")
    status = obj.get("status") or {}
    approved = False
    for cond in status.get("conditions") or []:
        ctype = cond.get("type")
        if ctype in ("Denied", "Failed"):
            what = "denied" if ctype == "Denied" else "failed"
            raise _CertificateRequestEnded(
                f"certificate signing request {meta.get('name')} {what}, reason: {cond.get('reason')}, "
                f"message: {cond.get('message')}"
            )
        if ctype == "Approved":
            approved = True
    if approved and status.get("certificate"):
        return base64.b64decode(status["certificate"])
    return None


# --- the kubelet ---------------------------------------------------------------------------------


class EmulatedKubelet:
    """One kubelet. start() returns at once; the kubelet then runs as tasks of the caller's event loop."""

    state: KubeletState
    last_error: str | None

    def __init__(self, config: KubeletConfig) -> None:
        self.config = config
        self.state = "stopped"
        self.last_error = None
        # What happened, for tests and the emulator: the client CSR this start made (None when a stored
        # certificate was reused), the latest serving CSR, and whether a serving certificate is held.
        self.client_csr_name: str | None = None
        self.serving_csr_name: str | None = None
        self.serving_certificate_ready = False
        self.node_uid: str | None = None
        self._identity = node_identity(config.node_name)
        self._task: asyncio.Task[None] | None = None
        self._apis: list[_Api] = []
        self._access: ClusterAccess | None = None
        self._taints: list[Json] = []
        self._lease: Json | None = None
        self._last_status_post = 0.0
        self._network = PodNetwork(config.node_name)
        self._pods: dict[str, Json] = {}
        self._dirty: set[str] = set()
        self._wake = asyncio.Event()

    def __repr__(self) -> str:
        return f"EmulatedKubelet(node={self.config.node_name!r}, state={self.state!r})"

    # -- paths -----------------------------------------------------------------------------------

    @property
    def pki_dir(self) -> Path:
        return self.config.state_dir / "pki"

    @property
    def client_cert_path(self) -> Path:
        return self.pki_dir / "kubelet-client-current.pem"

    @property
    def serving_cert_path(self) -> Path:
        return self.pki_dir / "kubelet-server-current.pem"

    @property
    def kubeconfig_path(self) -> Path:
        """A kubeconfig for the node identity (what kubelet writes to --kubeconfig)."""
        return self.config.state_dir / "kubelet.conf"

    @property
    def _pending_key_path(self) -> Path:
        return self.pki_dir / "kubelet-client.key.tmp"

    @property
    def _name(self) -> str:
        return self.config.node_name

    # -- lifecycle -------------------------------------------------------------------------------

    async def start(self) -> None:
        """Check the configuration (raising KubeletConfigError, as kubelet exits on bad flags) and start."""
        if self._task is not None and not self._task.done():
            return
        access = parse_kubeconfig(self.config.bootstrap_kubeconfig)
        self._taints = _validate(self.config)
        self._access = access
        self.pki_dir.mkdir(parents=True, exist_ok=True)
        self.pki_dir.chmod(0o700)
        self.state = "bootstrapping"
        self.last_error = None
        self.client_csr_name = None
        self.serving_csr_name = None
        self.serving_certificate_ready = False
        self._lease = None
        self._pods.clear()
        self._dirty.clear()
        self._wake = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(self._run(), name=f"kubelet {self._name}")

    async def stop(self) -> None:
        """Stop everything; the Node stays and kcm marks it NotReady when the Lease runs out."""
        task, self._task = self._task, None
        if task is not None and not task.done():
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                current = asyncio.current_task()
                if current is not None and current.cancelling():
                    raise
        await self._close_apis()
        if self.state != "stopped":
            log.info("%s: kubelet stopped", self._name)
        self.state = "stopped"

    async def wait(self) -> None:
        """Return once the kubelet no longer runs; raise KubeletFailedError when it ended on its own."""
        task = self._task
        if task is not None:
            await asyncio.wait({task})
        if self.state == "failed":
            raise KubeletFailedError(self.last_error or "kubelet failed")

    async def _close_apis(self) -> None:
        apis, self._apis = self._apis, []
        for api in apis:
            with contextlib.suppress(Exception):
                await api.close()

    def _user_agent(self) -> str:
        return f"kubelet.exe/{self.config.kubelet_version} ({OS}/{ARCH}) kubernetes/winnode"

    def _open_api(self, ctx: ssl.SSLContext, bearer: str | None = None) -> _Api:
        assert self._access is not None
        api = _Api(self._access, ctx, bearer=bearer, user_agent=self._user_agent())
        self._apis.append(api)
        return api

    def _error(self, message: str) -> None:
        self.last_error = message
        log.warning("%s: %s", self._name, message)

    async def _run(self) -> None:
        try:
            await self._ensure_client_certificate()
            api = self._open_api(_ssl_context(self._require_access(), self.client_cert_path))
            await self._register(api)
            self.state = "registered"
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self._heartbeat(api), name=f"kubelet {self._name} heartbeat")
                tg.create_task(self._watch_pods(api), name=f"kubelet {self._name} pod watch")
                tg.create_task(self._pod_worker(api), name=f"kubelet {self._name} pod worker")
                tg.create_task(
                    self._serving_certificate(api), name=f"kubelet {self._name} serving certificate"
                )
        except asyncio.CancelledError:
            raise
        except KubeletFailedError as exc:
            self.state = "failed"
            self.last_error = str(exc)
            log.error("%s: kubelet exits: %s", self._name, exc)
        except Exception as exc:
            self.state = "failed"
            self.last_error = f"unexpected {type(exc).__name__}: {exc}"
            log.exception("%s: kubelet crashed", self._name)
        finally:
            await self._close_apis()

    def _require_access(self) -> ClusterAccess:
        assert self._access is not None
        return self._access

    # -- TLS bootstrap -----------------------------------------------------------------------------

    async def _ensure_client_certificate(self) -> None:
        access = self._require_access()
        stored = load_bundle(self.client_cert_path)
        if stored is not None:
            problem = certificate_problem(*stored, self._name, ca_pem=access.ca_pem)
            if problem is None:
                log.info(
                    "%s: client certificate in %s is valid, no bootstrap needed", self._name, self.pki_dir
                )
                self._write_kubeconfig()
                return
            log.info("%s: stored client certificate not usable (%s); bootstrapping", self._name, problem)

        # Keep the key of a pending request on disk: a restarted kubelet makes the same request (same
        # digest name) and so finds the one it is already waiting for.
        key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey
        pending = self._load_pending_key()
        if pending is None:
            key = new_key()
            _write_private(self._pending_key_path, _key_pem(key))
        else:
            key = pending
        usages = client_usages(key)
        name = client_csr_name(key.public_key(), self._name, usages)
        request = make_client_csr(key, self._name)

        bootstrap_ctx = self._bootstrap_ssl_context(access)
        api = self._open_api(bootstrap_ctx, bearer=access.token)
        csr_obj: Json = {
            "apiVersion": "certificates.k8s.io/v1",
            "kind": "CertificateSigningRequest",
            "metadata": {"name": name},
            "spec": {
                "request": base64.b64encode(request).decode(),
                "signerName": CLIENT_SIGNER,
                "usages": usages,
            },
        }
        next_delay = _backoff(timeouts.KUBELET_RETRY_BACKOFF)
        while True:
            try:
                try:
                    created = await api.request("POST", _CSR_PATH, body=csr_obj)
                except ApiError as exc:
                    if exc.status != 409:
                        raise
                    created = await self._reuse_client_csr(api, name, key)
                break
            except ApiError as exc:
                if exc.status in (401, 403):
                    raise KubeletFailedError(
                        f"cannot create certificate signing request: {exc} "
                        "(is the bootstrap token valid and bound to system:node-bootstrapper?)"
                    ) from None
                self._error(f"cannot create certificate signing request: {exc}")
            except TransportError as exc:
                self._error(f"cannot create certificate signing request: {exc}")
            await asyncio.sleep(next_delay())
        uid = str(created["metadata"]["uid"])
        self.client_csr_name = name
        self.state = "waiting-for-certificate"
        log.info("%s: waiting for client certificate request %s to be approved and issued", self._name, name)
        try:
            async with asyncio.timeout(timeouts.KUBELET_CLIENT_CSR_WAIT):
                cert_pem = await self._wait_for_certificate(api, name, uid)
        except TimeoutError:
            raise KubeletFailedError(
                f"client certificate request {name} was not issued within {timeouts.KUBELET_CLIENT_CSR_WAIT:.0f}s"
            ) from None
        except _CertificateRequestEnded as exc:
            raise KubeletFailedError(str(exc)) from None
        _write_private(self.client_cert_path, cert_pem + _key_pem(key))
        with contextlib.suppress(FileNotFoundError):
            self._pending_key_path.unlink()
        self._write_kubeconfig()
        log.info("%s: client certificate issued", self._name)
        self._apis.remove(api)
        await api.close()

    def _load_pending_key(self) -> ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey | None:
        try:
            key = serialization.load_pem_private_key(self._pending_key_path.read_bytes(), password=None)
        except (OSError, ValueError, TypeError):
            return None
        return key if isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) else None

    def _bootstrap_ssl_context(self, access: ClusterAccess) -> ssl.SSLContext:
        if access.client_cert_pem and access.client_key_pem:
            bundle = self.pki_dir / "bootstrap-client.pem"
            _write_private(bundle, access.client_cert_pem.rstrip(b"\n") + b"\n" + access.client_key_pem)
            return _ssl_context(access, bundle)
        return _ssl_context(access, None)

    async def _reuse_client_csr(
        self, api: _Api, name: str, key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey
    ) -> Json:
        """A CSR of this name exists (an earlier run made it): use it if it is ours (client-go ensureCompatible)."""
        existing = await api.request("GET", f"{_CSR_PATH}/{name}")
        spec = existing.get("spec") or {}
        try:
            theirs = x509.load_pem_x509_csr(base64.b64decode(spec.get("request", "")))
        except ValueError:
            raise KubeletFailedError(f"retrieved csr {name} is not compatible: unreadable request") from None
        same_key = _spki(theirs.public_key()) == _spki(key.public_key())
        if (
            theirs.subject != node_subject(self._name)
            or spec.get("signerName") != CLIENT_SIGNER
            or not same_key
        ):
            raise KubeletFailedError(f"retrieved csr {name} is not compatible with this node's request")
        log.info("%s: csr %s for this node already exists, reusing", self._name, name)
        return existing

    async def _wait_for_certificate(self, api: _Api, name: str, uid: str) -> bytes:
        """List-then-watch the CSR by name until it is issued (client-go WaitForCertificate)."""
        selector = {"fieldSelector": f"metadata.name={name}"}
        next_delay = _backoff(timeouts.KUBELET_RETRY_BACKOFF)
        issued: list[bytes] = []

        async def on_event(etype: str, obj: Json) -> bool:
            if etype == "DELETED":
                raise _CertificateRequestEnded(f"certificate signing request {name} was deleted")
            if etype in ("ADDED", "MODIFIED"):
                cert = _csr_outcome(obj, uid)
                if cert is not None:
                    issued.append(cert)
                    return True
            return False

        while True:
            try:
                listed = await api.request("GET", _CSR_PATH, params=selector)
                items = listed.get("items") or []
                if not items:
                    raise _CertificateRequestEnded(f"certificate signing request {name} was deleted")
                cert = _csr_outcome(items[0], uid)
                if cert is not None:
                    return cert
                rv = str((listed.get("metadata") or {}).get("resourceVersion", ""))
                await api.watch(_CSR_PATH, {**selector, "resourceVersion": rv}, on_event)
                if issued:
                    return issued[0]
                # The server ended the watch: list again.
            except _WatchExpired:
                continue
            except (ApiError, TransportError) as exc:
                self._error(f"waiting for certificate signing request {name}: {exc}")
                await asyncio.sleep(next_delay())

    def _write_kubeconfig(self) -> None:
        access = self._require_access()
        cluster: Json = {"server": access.server}
        if access.ca_pem:
            cluster["certificate-authority-data"] = base64.b64encode(access.ca_pem).decode()
        if access.insecure:
            cluster["insecure-skip-tls-verify"] = True
        if access.tls_server_name:
            cluster["tls-server-name"] = access.tls_server_name
        pem = str(self.client_cert_path.resolve())
        doc = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "default-cluster", "cluster": cluster}],
            "users": [{"name": "default-auth", "user": {"client-certificate": pem, "client-key": pem}}],
            "contexts": [
                {"name": "default-context", "context": {"cluster": "default-cluster", "user": "default-auth"}}
            ],
            "current-context": "default-context",
        }
        _write_private(self.kubeconfig_path, yaml.safe_dump(doc, sort_keys=False).encode())

    # -- registration and heartbeats ---------------------------------------------------------------

    async def _register(self, api: _Api) -> None:
        next_delay = _backoff(timeouts.KUBELET_REGISTER_BACKOFF)
        while True:
            node = initial_node(self.config, self._identity, self._taints, _now())
            try:
                try:
                    created = await api.request("POST", "/api/v1/nodes", body=node)
                    self._node_registered(created)
                    self._last_status_post = asyncio.get_running_loop().time()
                    log.info("%s: registered node", self._name)
                    return
                except ApiError as exc:
                    # Forbidden: creating is not allowed, yet the Node may exist (kubelet looks too).
                    if exc.status not in (403, 409):
                        raise
                existing = await api.request("GET", f"/api/v1/nodes/{self._name}")
                log.info("%s: node was previously registered; updating it", self._name)
                if patch := default_labels_patch(self.config, existing):
                    existing = await api.request(
                        "PATCH", f"/api/v1/nodes/{self._name}", body=patch, content_type=MERGE_PATCH
                    )
                self._node_registered(existing)
                await self._post_node_status(api, existing, force=True)
                return
            except (ApiError, TransportError) as exc:
                self._error(f"unable to register node with API server: {exc}")
            await asyncio.sleep(next_delay())

    def _node_registered(self, node: Json) -> None:
        meta = node.get("metadata") or {}
        self.node_uid = str(meta.get("uid"))
        self._network = PodNetwork(self._name, (node.get("spec") or {}).get("podCIDR"))

    async def _post_node_status(self, api: _Api, node: Json, *, force: bool = False) -> None:
        current = node.get("status") or {}
        desired = node_status(self.config, self._identity, now=_now(), previous=current)
        loop = asyncio.get_running_loop()
        stale = loop.time() - self._last_status_post >= timeouts.KUBELET_NODE_STATUS_REPORT
        if not (force or stale or node_status_changed(desired, current)):
            return
        status = dict(desired)
        if current.get("addresses") and current.get("addresses") != desired["addresses"]:
            # addresses is (wrongly) tagged patchStrategy=merge with key "type": a merge would mix old and
            # new addresses of one type. kubelet replaces the whole list the same way.
            status["addresses"] = [{"$patch": "replace"}, *desired["addresses"]]
        await api.request(
            "PATCH",
            f"/api/v1/nodes/{self._name}/status",
            body={"status": status},
            content_type=STRATEGIC_MERGE_PATCH,
        )
        self._last_status_post = loop.time()

    async def _renew_lease(self, api: _Api) -> None:
        path = f"/apis/coordination.k8s.io/v1/namespaces/{NODE_LEASE_NAMESPACE}/leases/{self._name}"
        now = _micro_time(_now())
        owner = [{"apiVersion": "v1", "kind": "Node", "name": self._name, "uid": self.node_uid}]
        if self._lease is None:
            try:
                self._lease = await api.request("GET", path)
            except ApiError as exc:
                if exc.status != 404:
                    raise
                new_lease: Json = {
                    "apiVersion": "coordination.k8s.io/v1",
                    "kind": "Lease",
                    "metadata": {
                        "name": self._name,
                        "namespace": NODE_LEASE_NAMESPACE,
                        "ownerReferences": owner,
                    },
                    "spec": {
                        "holderIdentity": self._name,
                        "leaseDurationSeconds": timeouts.KUBELET_LEASE_DURATION,
                        "renewTime": now,
                    },
                }
                self._lease = await api.request(
                    "POST",
                    f"/apis/coordination.k8s.io/v1/namespaces/{NODE_LEASE_NAMESPACE}/leases",
                    body=new_lease,
                )
                return
        lease = self._lease
        spec = lease.setdefault("spec", {})
        spec.update(
            holderIdentity=self._name, leaseDurationSeconds=timeouts.KUBELET_LEASE_DURATION, renewTime=now
        )
        meta = lease.setdefault("metadata", {})
        # The Lease goes with the Node (garbage collector); a Node re-created meanwhile has a new UID.
        if not any(
            r.get("kind") == "Node" and r.get("uid") == self.node_uid
            for r in meta.get("ownerReferences") or []
        ):
            meta["ownerReferences"] = owner
        try:
            self._lease = await api.request("PUT", path, body=lease)
        except ApiError:
            # Conflict (someone else wrote it) or gone with a deleted Node: read it afresh next beat.
            self._lease = None
            raise

    async def _heartbeat(self, api: _Api) -> None:
        loop = asyncio.get_running_loop()
        next_status = loop.time() + timeouts.KUBELET_NODE_STATUS_UPDATE
        while True:
            try:
                await self._renew_lease(api)
                if self.state == "registered":
                    self.state = "ready"
                    self.last_error = None
                    log.info(
                        "%s: node ready; lease renewed every %gs",
                        self._name,
                        self.config.heartbeat_interval_s,
                    )
            except (ApiError, TransportError) as exc:
                self._error(f"failed to update lease: {exc}")
            if loop.time() >= next_status:
                next_status = loop.time() + timeouts.KUBELET_NODE_STATUS_UPDATE
                try:
                    node = await api.request("GET", f"/api/v1/nodes/{self._name}")
                    await self._post_node_status(api, node)
                except (ApiError, TransportError) as exc:
                    # A deleted Node is not registered again until kubelet restarts, as with kubelet.
                    self._error(f"error updating node status: {exc}")
            await asyncio.sleep(self.config.heartbeat_interval_s)

    # -- serving certificate -----------------------------------------------------------------------

    async def _serving_certificate(self, api: _Api) -> None:
        dns_names, ips = serving_sans(self._name, self.config.addresses)
        if not ips:
            log.info("%s: no IP address to request a serving certificate for", self._name)
            return
        stored = load_bundle(self.serving_cert_path)
        if stored is not None:
            problem = certificate_problem(
                *stored, self._name, ca_pem=self._require_access().ca_pem, dns_names=dns_names, ips=ips
            )
            if problem is None:
                self.serving_certificate_ready = True
                return
            log.info("%s: stored serving certificate not usable (%s)", self._name, problem)
        next_delay = _backoff(timeouts.KUBELET_SERVING_CSR_BACKOFF)
        while True:
            key = new_key()
            usages = serving_usages(key)
            body = {
                "apiVersion": "certificates.k8s.io/v1",
                "kind": "CertificateSigningRequest",
                "metadata": {"generateName": "csr-"},
                "spec": {
                    "request": base64.b64encode(make_serving_csr(key, self._name, dns_names, ips)).decode(),
                    "signerName": SERVING_SIGNER,
                    "usages": usages,
                },
            }
            try:
                created = await api.request("POST", _CSR_PATH, body=body)
                meta = created.get("metadata") or {}
                name, uid = str(meta.get("name")), str(meta.get("uid"))
                self.serving_csr_name = name
                log.info(
                    "%s: requested serving certificate (%s); running without it until it is approved",
                    self._name,
                    name,
                )
                async with asyncio.timeout(timeouts.KUBELET_SERVING_CSR_WAIT):
                    cert_pem = await self._poll_for_certificate(api, name, uid)
                _write_private(self.serving_cert_path, cert_pem + _key_pem(key))
                self.serving_certificate_ready = True
                log.info("%s: serving certificate issued (%s)", self._name, name)
                return
            except TimeoutError:
                log.info("%s: serving certificate request still pending; asking again", self._name)
            except (ApiError, TransportError, _CertificateRequestEnded) as exc:
                self._error(f"serving certificate not issued: {exc}")
            await asyncio.sleep(next_delay())

    async def _poll_for_certificate(self, api: _Api, name: str, uid: str) -> bytes:
        """Poll one CSR until it is issued. Polled rather than watched: this wait may last for ever (nothing
        but the operator approves serving CSRs), and a watch would hold a connection all that time."""
        next_delay = _backoff(timeouts.KUBELET_SERVING_CSR_POLL)
        while True:
            await asyncio.sleep(next_delay())
            try:
                obj = await api.request("GET", f"{_CSR_PATH}/{name}")
            except ApiError as exc:
                if exc.status == 404:
                    raise _CertificateRequestEnded(
                        f"certificate signing request {name} was deleted"
                    ) from None
                self._error(f"checking certificate signing request {name}: {exc}")
                continue
            except TransportError as exc:
                self._error(f"checking certificate signing request {name}: {exc}")
                continue
            cert = _csr_outcome(obj, uid)
            if cert is not None:
                return cert

    # -- pods ----------------------------------------------------------------------------------------

    async def _watch_pods(self, api: _Api) -> None:
        selector = {"fieldSelector": f"spec.nodeName={self._name}"}
        next_delay = _backoff(timeouts.KUBELET_RETRY_BACKOFF)
        rv = ""

        async def on_event(etype: str, obj: Json) -> bool:
            nonlocal rv
            meta = obj.get("metadata") or {}
            rv = str(meta.get("resourceVersion") or rv)
            if etype == "BOOKMARK":
                return False
            uid = str(meta.get("uid"))
            if etype == "DELETED":
                self._forget(uid)
            elif etype in ("ADDED", "MODIFIED"):
                self._pods[uid] = obj
                self._mark(uid)
            return False

        while True:
            try:
                listed = await api.request("GET", "/api/v1/pods", params=selector)
                rv = str((listed.get("metadata") or {}).get("resourceVersion", ""))
                items = {str((p.get("metadata") or {}).get("uid")): p for p in listed.get("items") or []}
                for uid in set(self._pods) - set(items):
                    self._forget(uid)
                for uid, pod in items.items():
                    self._pods[uid] = pod
                    ip = (pod.get("status") or {}).get("podIP")
                    if ip and not (pod.get("spec") or {}).get("hostNetwork"):
                        self._network.claim(uid, str(ip))
                    self._mark(uid)
                next_delay = _backoff(timeouts.KUBELET_RETRY_BACKOFF)
                while True:
                    await api.watch("/api/v1/pods", {**selector, "resourceVersion": rv}, on_event)
            except _WatchExpired:
                continue
            except (ApiError, TransportError) as exc:
                self._error(f"pod watch failed: {exc}")
                await asyncio.sleep(next_delay())

    def _mark(self, uid: str) -> None:
        self._dirty.add(uid)
        self._wake.set()

    def _forget(self, uid: str) -> None:
        self._pods.pop(uid, None)
        self._dirty.discard(uid)
        self._network.release(uid)

    async def _pod_worker(self, api: _Api) -> None:
        next_delay = _backoff(timeouts.KUBELET_RETRY_BACKOFF)
        while True:
            await self._wake.wait()
            self._wake.clear()
            failed: set[str] = set()
            while self._dirty:
                uid = self._dirty.pop()
                pod = self._pods.get(uid)
                if pod is None:
                    continue
                try:
                    await self._sync_pod(api, pod)
                except (ApiError, TransportError) as exc:
                    meta = pod.get("metadata") or {}
                    self._error(f"syncing pod {meta.get('namespace')}/{meta.get('name')}: {exc}")
                    failed.add(uid)
            if failed:
                await asyncio.sleep(next_delay())
                for uid in failed:
                    if uid in self._pods:
                        self._mark(uid)
            else:
                next_delay = _backoff(timeouts.KUBELET_RETRY_BACKOFF)

    async def _sync_pod(self, api: _Api, pod: Json) -> None:
        meta = pod.get("metadata") or {}
        spec = pod.get("spec") or {}
        status = pod.get("status") or {}
        ns, name, uid = str(meta.get("namespace")), str(meta.get("name")), str(meta.get("uid"))
        path = f"/api/v1/namespaces/{ns}/pods/{name}"
        phase = status.get("phase")
        terminal = phase in ("Succeeded", "Failed")

        async def patch_status(new_status: Json) -> bool:
            # metadata.uid makes the patch fail if the pod was replaced by another of the same name.
            try:
                await api.request(
                    "PATCH",
                    f"{path}/status",
                    body={"metadata": {"uid": uid}, "status": new_status},
                    content_type=STRATEGIC_MERGE_PATCH,
                )
            except ApiError as exc:
                if exc.status in (404, 409):
                    return False
                raise
            return True

        if meta.get("deletionTimestamp"):
            if not terminal and not await patch_status(terminated_pod_status(pod, now=_now())):
                return
            try:
                await api.request(
                    "DELETE",
                    path,
                    body={
                        "apiVersion": "v1",
                        "kind": "DeleteOptions",
                        "gracePeriodSeconds": 0,
                        "preconditions": {"uid": uid},
                    },
                )
            except ApiError as exc:
                if exc.status not in (404, 409):
                    raise
            self._network.release(uid)
            log.debug("%s: pod %s/%s finished and deleted", self._name, ns, name)
            return
        if terminal:
            return
        if rejection := admission_rejection(pod):
            reason, message = rejection
            await patch_status(
                {"phase": "Failed", "reason": reason, "message": "Pod was rejected: " + message}
            )
            return
        if spec.get("hostNetwork"):
            pod_ip = self.config.addresses[0] if self.config.addresses else "127.0.0.1"
        else:
            pod_ip = str(status.get("podIP") or "") or self._network.allocate(uid)
        desired = running_pod_status(pod, host_ips=list(self.config.addresses), pod_ip=pod_ip, now=_now())
        if not pod_status_differs(desired, status):
            return
        if await patch_status(desired) and phase != "Running":
            log.debug("%s: pod %s/%s running", self._name, ns, name)
