"""What a kubelet reads before it starts: its configuration, its kubeconfig, its labels and taints.

Where kubelet v1.37.2 refuses to start, the checks here refuse too; each names its upstream rule.
"""

from __future__ import annotations

import base64
import ipaddress
import re
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

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
    # The host's files, for the node log query (/logs/): when given, the kubelet serves HTTPS on its first
    # address and `port` once its serving certificate is issued. None: no server (most tests).
    read_file: Callable[[str], bytes | None] | None = None
    port: int = KUBELET_PORT
    # Binds the HTTPS server's socket (a node address in a network namespace); None: bind here.
    listen: Callable[[str, int], socket.socket] | None = None
    # Where what kubelet prints goes (kube-log-runner's -log-file on an emulated host); None: nowhere.
    log_line: Callable[[str], None] | None = None


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


def validate_config(config: KubeletConfig) -> list[Json]:
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
