"""What the reconciler (`winnode run`) may do in the cluster, as data; manifests are rendered from it.

Three parts:
- CLUSTER_RULES: a ClusterRole, for cluster-scoped objects and for objects in any namespace;
- KUBE_SYSTEM_RULES: a Role in kube-system, where bootstrap token Secrets live (writing Secrets
  cluster-wide would be far more than we need);
- OPERATOR_NAMESPACE_RULES: a Role in the operator's own namespace (leader election, the WinRM
  credentials Secrets);
- CREDENTIALS_READER_RULES: a ClusterRole no one is bound to at install; an admin grants it in a
  namespace with a RoleBinding to let winnode read credentials Secrets there (opt-in).
BINDINGS lists the bindings the joining kubelets themselves need.

The webhook (`winnode webhook`) has its own, smaller set: webhook_cluster_rules() and
webhook_namespace_rules(), parameterised by the names of the objects it may touch.

Every rule carries a `why`; the shipped manifests print it as a comment above the rule
(winnode.kube.render refuses to render a rule that has none).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from winnode.api.windowsnetwork import WINDOWS_NETWORK
from winnode.api.windowsnode import WINDOWS_NODE
from winnode.kube import proxy_identity
from winnode.kube.signers import CLIENT_SIGNER, SERVING_SIGNER
from winnode.kube.tokens import EXTRA_GROUP
from winnode.settings import API_GROUP

CLUSTER_ROLE_NAME = "winnode"
# Bound by nobody at install: an admin who keeps WinRM credentials in another namespace grants it there
# with a RoleBinding (and lists the namespace in WINNODE_CREDENTIALS_NAMESPACES).
CREDENTIALS_READER_ROLE_NAME = "winnode:credentials-reader"
KUBE_SYSTEM_ROLE_NAME = "winnode:bootstrap-tokens"
OPERATOR_ROLE_NAME = "winnode:leader-election"
KUBE_PROXY_ROLE_NAME = "winnode:kube-proxy-identities"


@dataclass(frozen=True)
class Rule:
    api_groups: tuple[str, ...]
    resources: tuple[str, ...]
    verbs: tuple[str, ...]
    why: str
    resource_names: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """As a PolicyRule in a (Cluster)Role."""
        out: dict[str, Any] = {
            "apiGroups": list(self.api_groups),
            "resources": list(self.resources),
            "verbs": list(self.verbs),
        }
        if self.resource_names:
            out["resourceNames"] = list(self.resource_names)
        return out


_OURS = (WINDOWS_NODE.plural, WINDOWS_NETWORK.plural)

CLUSTER_RULES: tuple[Rule, ...] = (
    Rule(
        ("",),
        ("configmaps",),
        ("get",),
        "the apiserver URL and CA for kubelets, from kube-public/cluster-info as kubeadm join reads them "
        "(only that name; a ClusterRole because clusters without kubeadm have no Role in kube-public)",
        resource_names=("cluster-info",),
    ),
    Rule(
        (API_GROUP,),
        _OURS,
        ("get", "list", "watch", "patch", "update"),
        "reconcile WindowsNodes and WindowsNetworks; kopf writes its progress and our finalizer on them",
    ),
    Rule(
        (API_GROUP,),
        tuple(f"{p}/status" for p in _OURS),
        ("get", "patch", "update"),
        "report phase, conditions, versions and subnet allocations",
    ),
    Rule(
        ("apiextensions.k8s.io",),
        ("customresourcedefinitions",),
        ("get", "list", "watch"),
        "kopf discovers the resources it serves and waits for their CRDs",
    ),
    Rule(
        ("",),
        ("nodes",),
        ("get", "list", "watch", "patch", "update", "delete"),
        "wait for our nodes to register and turn Ready; cordon, labels, taints, pod CIDR; delete on removal; "
        "watch every Node to route pod subnets and publish flannel leases on ours",
    ),
    Rule(("",), ("pods",), ("get", "list", "watch"), "drain: find the pods bound to a node"),
    Rule(
        ("",),
        ("services",),
        ("get",),
        "the kubelet's clusterDNS: read the ClusterIP of Service kube-system/kube-dns",
    ),
    Rule(
        ("",),
        ("pods/eviction",),
        ("create",),
        "drain through the Eviction API so PodDisruptionBudgets are respected (pods are never deleted)",
    ),
    Rule(
        ("policy",),
        ("poddisruptionbudgets",),
        ("get", "list"),
        "name the PodDisruptionBudget that refuses an eviction",
    ),
    Rule(
        ("certificates.k8s.io",),
        ("certificatesigningrequests",),
        ("get", "list", "watch"),
        "find the client and serving CSRs of the kubelets we configure",
    ),
    Rule(
        ("certificates.k8s.io",),
        ("certificatesigningrequests/approval",),
        ("update",),
        "approve those CSRs after checking them (never deny: an admin decides about the rest)",
    ),
    Rule(
        ("certificates.k8s.io",),
        ("signers",),
        ("approve",),
        "approval is also authorized per signer; only the two kubelet signers",
        resource_names=(CLIENT_SIGNER, SERVING_SIGNER),
    ),
    Rule(
        ("",),
        ("events",),
        ("create", "patch"),
        "record Events on WindowsNodes (namespace default) and fold repeats into one (patch count)",
    ),
)

KUBE_SYSTEM_RULES: tuple[Rule, ...] = (
    Rule(
        ("",),
        ("secrets",),
        ("get", "list", "create", "delete"),
        "mint, reuse and revoke the per-node bootstrap token Secrets (names are random, so no resourceNames)",
    ),
)

# In proxy_identity.NAMESPACE only: kube-proxy's per-node ServiceAccounts and their current tokens.
KUBE_PROXY_NAMESPACE_RULES: tuple[Rule, ...] = (
    Rule(
        ("",),
        ("serviceaccounts",),
        ("get", "create", "delete"),
        "one ServiceAccount per node for its kube-proxy; deleting it revokes every token it issued",
    ),
    Rule(
        ("",),
        ("serviceaccounts/token",),
        ("create",),
        "issue kube-proxy's short-lived tokens (TokenRequest) and renew them before they expire",
    ),
    Rule(
        ("",),
        ("secrets",),
        ("get", "create", "update", "delete"),
        "keep each node's current kube-proxy token, so every reconcile writes the host the same one",
    ),
)

OPERATOR_NAMESPACE_RULES: tuple[Rule, ...] = (
    Rule(
        ("",),
        ("secrets",),
        ("get", "list", "watch"),
        "WinRM credentials Secrets live in the operator's namespace; watched so a changed Secret is acted "
        "on within seconds (other namespaces only where an admin binds winnode:credentials-reader)",
    ),
    Rule(
        ("coordination.k8s.io",),
        ("leases",),
        ("get", "list", "watch", "create", "update", "patch"),
        "one active reconciler: leader election on a Lease; the upgrade budget's slot holders live on "
        "the Lease winnode-disruption-slots (create once, then resourceVersion-guarded updates)",
    ),
)


CREDENTIALS_READER_RULES: tuple[Rule, ...] = (
    Rule(
        ("",),
        ("secrets",),
        ("get", "list", "watch"),
        "opt-in: bound with a RoleBinding in a namespace the admin chose, it lets winnode read and watch "
        "WinRM credentials Secrets there",
    ),
)


def webhook_cluster_rules(webhook_config_name: str) -> tuple[Rule, ...]:
    return (
        Rule(
            ("",),
            ("nodes",),
            ("list", "watch"),
            "the by-name cases: keep the names and hostnames of Windows nodes by a watch, so judging a pod "
            "makes no API call",
        ),
        Rule(
            ("",),
            ("pods",),
            ("get",),
            "a binding (pods/binding) to a Windows node carries no pod spec: read the pod it binds",
        ),
        Rule(
            (API_GROUP,),
            (WINDOWS_NETWORK.plural, WINDOWS_NODE.plural),
            ("list",),
            "WindowsNetwork admission: refuse ranges overlapping another network, and deleting a network "
            "WindowsNodes still name; WindowsNode admission: refuse a second WindowsNode for one host",
        ),
        Rule(
            ("admissionregistration.k8s.io",),
            ("validatingwebhookconfigurations",),
            ("get", "patch"),
            "keep the caBundle of our own webhook configuration current (no other configuration)",
            resource_names=(webhook_config_name,),
        ),
    )


def webhook_namespace_rules(secret_name: str) -> tuple[Rule, ...]:
    return (
        Rule(
            ("",),
            ("secrets",),
            ("create",),
            "create the TLS Secret on first start (create cannot be limited to a name: the object does not exist yet)",
        ),
        Rule(
            ("",),
            ("secrets",),
            ("get", "update"),
            "read and renew its own CA and serving certificate, and no other Secret",
            resource_names=(secret_name,),
        ),
    )


@dataclass(frozen=True)
class Binding:
    """A ClusterRoleBinding of a built-in ClusterRole to a group."""

    name: str
    cluster_role: str
    group: str
    why: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": self.name},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": self.cluster_role,
            },
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": self.group}],
        }


# Deliberately absent: binding `system:certificates.k8s.io:certificatesigningrequests:nodeclient` to
# our bootstrap group. That would let kcm approve first-join client CSRs unchecked; winnode
# approves them itself, after checking who asks for which node.
BINDINGS: tuple[Binding, ...] = (
    Binding(
        "winnode:node-bootstrapper",
        "system:node-bootstrapper",
        EXTRA_GROUP,
        "a joining kubelet, holding only its bootstrap token, may create and read its CSR",
    ),
    Binding(
        "winnode:kube-proxy",
        proxy_identity.CLUSTER_ROLE,
        proxy_identity.GROUP,
        "kube-proxy on Windows nodes, as its per-node ServiceAccount: the apiserver's own kube-proxy role "
        "(list/watch services, endpoints, endpointslices; read nodes; write events), nothing more",
    ),
    Binding(
        "winnode:node-client-renewal",
        "system:certificates.k8s.io:certificatesigningrequests:selfnodeclient",
        "system:nodes",
        "kcm approves a node's renewal of its own client certificate (same identity, as kubeadm sets up)",
    ),
)


def cluster_role() -> dict[str, Any]:
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRole",
        "metadata": {"name": CLUSTER_ROLE_NAME},
        "rules": [r.to_dict() for r in CLUSTER_RULES],
    }


def role(name: str, namespace: str, rules: tuple[Rule, ...]) -> dict[str, Any]:
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role",
        "metadata": {"name": name, "namespace": namespace},
        "rules": [r.to_dict() for r in rules],
    }
