"""Which apiserver URL (and CA) the kubelets on Windows hosts are given.

The operator's own address is often the wrong one: in a cluster it talks to the `kubernetes`
Service's ClusterIP, which a Windows host outside the pod network cannot reach, so a kubelet handed
that address fails at join. In order:

1. WINNODE_APISERVER_URL (the Deployment's env, manifests/reconciler-deployment.yaml): the admin's
   word; the CA is cluster-info's if there is one, else the operator's own.
2. The ConfigMap kube-public/cluster-info, as `kubeadm join` discovers the control plane: its
   `kubeconfig` key holds a kubeconfig with one cluster, its `server` and
   `certificate-authority-data` (written by kubeadm in
   cmd/kubeadm/app/phases/bootstraptoken/clusterinfo/clusterinfo.go, read on join in
   cmd/kubeadm/app/discovery/token/token.go, kubernetes v1.37.2).
3. The operator's own URL, when it runs outside the cluster (a kubeconfig, as in tests and the
   demo): whatever it reaches, a host on the same network reaches too.

When none applies (in the cluster, no cluster-info, no setting) the URL is unknown: configure stops
before touching the host with one condition, ApiserverURLUnknown, saying which setting to fill in.
"""

from __future__ import annotations

import base64
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import yaml

from winnode.lifecycle.context import ClusterInfo
from winnode.lifecycle.status import C, StepFailure

if TYPE_CHECKING:
    from winnode.kube.client import Kube
    from winnode.lifecycle.session import Session
    from winnode.settings import Settings

log = logging.getLogger(__name__)

CLUSTER_INFO_NAMESPACE = "kube-public"
CLUSTER_INFO_NAME = "cluster-info"
CLUSTER_INFO_KEY = "kubeconfig"
SETTING = "WINNODE_APISERVER_URL"


class ClusterInfoError(ValueError):
    """cluster-info exists but does not hold a usable kubeconfig."""


@dataclass(frozen=True)
class Endpoint:
    """The result: the URL and CA for kubelets (server empty when unknown), and where they came from."""

    cluster: ClusterInfo
    source: str

    @property
    def known(self) -> bool:
        return bool(self.cluster.server)


def parse_cluster_info(data: Mapping[str, str]) -> ClusterInfo:
    """The server and CA in a cluster-info ConfigMap's data. Raises ClusterInfoError."""
    raw = data.get(CLUSTER_INFO_KEY)
    if not raw:
        raise ClusterInfoError(f"it has no {CLUSTER_INFO_KEY!r} key")
    try:
        doc: Any = yaml.safe_load(raw)
    except yaml.YAMLError as exc:
        raise ClusterInfoError(f"its {CLUSTER_INFO_KEY!r} is not YAML: {exc}") from None
    clusters = doc.get("clusters") if isinstance(doc, dict) else None
    if not isinstance(clusters, list) or not clusters or not isinstance(clusters[0], dict):
        raise ClusterInfoError(f"its {CLUSTER_INFO_KEY!r} names no cluster")
    cluster = clusters[0].get("cluster") or {}
    server = str(cluster.get("server") or "")
    if urlsplit(server).scheme != "https":
        raise ClusterInfoError(f"its cluster server {server!r} is not an https URL")
    ca_data = cluster.get("certificate-authority-data")
    if not ca_data:
        raise ClusterInfoError("its cluster has no certificate-authority-data")
    try:
        ca_pem = base64.b64decode(str(ca_data), validate=True).decode("ascii")
    except (ValueError, UnicodeDecodeError):
        raise ClusterInfoError("its certificate-authority-data is not base64 of a PEM certificate") from None
    if "-----BEGIN CERTIFICATE-----" not in ca_pem:
        raise ClusterInfoError("its certificate-authority-data is not a PEM certificate")
    return ClusterInfo(server=server.rstrip("/"), ca_pem=ca_pem)


def in_cluster_address(server: str, environ: Mapping[str, str]) -> bool:
    """Whether `server` is the in-cluster `kubernetes` Service address the kubelet sees in its pod env."""
    service_host = environ.get("KUBERNETES_SERVICE_HOST", "").strip("[]")
    host = urlsplit(server).hostname or ""
    return (bool(service_host) and host == service_host) or host == "kubernetes.default.svc"


def choose(
    *,
    setting: str,
    cluster_info: ClusterInfo | None,
    own: ClusterInfo,
    in_cluster: bool,
) -> Endpoint:
    """The rule of the module docstring, as a pure function."""
    if setting:
        ca = cluster_info.ca_pem if cluster_info is not None else own.ca_pem
        return Endpoint(ClusterInfo(server=setting.rstrip("/"), ca_pem=ca), SETTING)
    if cluster_info is not None:
        return Endpoint(cluster_info, f"ConfigMap {CLUSTER_INFO_NAMESPACE}/{CLUSTER_INFO_NAME}")
    if not in_cluster:
        return Endpoint(own, "the operator's own kubeconfig")
    return Endpoint(ClusterInfo(server="", ca_pem=own.ca_pem), "")


def read_cluster_info(kube: Kube) -> ClusterInfo | None:
    """cluster-info's server and CA; None when it does not exist or cannot be used (logged)."""
    from winnode.kube.api import ApiError, path

    try:
        cm = kube.run_blocking(
            kube.request(
                "GET",
                path("api", "v1", "namespaces", CLUSTER_INFO_NAMESPACE, "configmaps", CLUSTER_INFO_NAME),
            )
        )
    except ApiError as exc:
        # Not found is the normal case outside kubeadm clusters; anything else is said, not fatal.
        level = logging.INFO if exc.status == 404 else logging.WARNING
        log.log(
            level,
            "cannot use ConfigMap %s/%s: %s %s",
            CLUSTER_INFO_NAMESPACE,
            CLUSTER_INFO_NAME,
            exc.status,
            exc.reason,
        )
        return None
    try:
        return parse_cluster_info(cm.get("data") or {})
    except ClusterInfoError as exc:
        log.warning("ConfigMap %s/%s is not usable: %s", CLUSTER_INFO_NAMESPACE, CLUSTER_INFO_NAME, exc)
        return None


def resolve(
    kube: Kube, settings: Settings, own: ClusterInfo, environ: Mapping[str, str] | None = None
) -> Endpoint:
    env = os.environ if environ is None else environ
    endpoint = choose(
        setting=settings.apiserver_url,
        cluster_info=read_cluster_info(kube),
        own=own,
        in_cluster=in_cluster_address(own.server, env),
    )
    if endpoint.known:
        log.info(
            "kubelets on Windows hosts reach the apiserver at %s (from %s)",
            endpoint.cluster.server,
            endpoint.source,
        )
    else:
        log.warning("%s", unknown_message())
    return endpoint


def unknown_message() -> str:
    return (
        "winnode does not know the apiserver URL Windows hosts should use: there is no ConfigMap "
        f"{CLUSTER_INFO_NAMESPACE}/{CLUSTER_INFO_NAME} and {SETTING} is not set, and the operator's own "
        "address is the in-cluster Service, which hosts outside the pod network cannot reach. Set "
        f"{SETTING} (e.g. https://api.example.com:6443) in the winnode Deployment "
        "(manifests/reconciler-deployment.yaml); nothing was changed on the host"
    )


def require_known(s: Session) -> None:
    """Stop configuring before the host is touched when the URL for its kubelet is unknown."""
    if not s.deps.cluster.server:
        raise StepFailure("ApiserverURLUnknown", unknown_message(), condition=C.NODE_REGISTERED, admin=True)
