"""The admission objects winnode installs, as data: ValidatingWebhookConfiguration, ValidatingAdmissionPolicy
and its binding, and the webhook's own Deployment, Service, PodDisruptionBudget and RBAC.

manifests/admission/*.yaml are rendered from here (`winnode webhook --write-manifests manifests/admission`;
a unit test fails when they drift), and the integration tests build their loopback variants from the same
functions, so what is tested is what ships.

The CEL below restates policy.py; the integration tests drive both through the real apiserver and compare
verdicts and messages. Change one, change the other.
"""

from __future__ import annotations

import base64
import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from winnode import __version__
from winnode.admission import policy, windowsnodes
from winnode.kube import podspec
from winnode.settings import OPERATOR_NAMESPACE_DEFAULT

WEBHOOK_CONFIG_NAME = "winnode-admission"
# Two pod entries, split by what an outage of the webhook may cost (README, "Admission"):
# the spec alone targets Windows and the rule refuses it -> fails closed, like the policy beside it;
# only node names can tell (nodeName, hostname, matchFields, bindings) or a warning to give -> fails
# open, so an outage never refuses a pod that does not target Windows.
WEBHOOK_NAME = "one-container.windows.winnode.io"
NODE_NAMES_WEBHOOK_NAME = "node-names.windows.winnode.io"
POLICY_NAME = "winnode-one-container-per-windows-pod"
SERVICE_NAME = "winnode-webhook"
SECRET_NAME = "winnode-webhook-tls"
SERVICE_ACCOUNT = "winnode-webhook"
WEBHOOK_PATH = "/validate"
SERVICE_PORT = 443
CONTAINER_PORT = 8443
# The apiserver waits this long for an answer; with failurePolicy Fail a late answer is a refusal.
# The handler needs milliseconds; the rest is headroom for a replica that is briefly starved.
TIMEOUT_SECONDS = 3
REPLICAS = 2
IMAGE = f"winnode:{__version__}"
APP_LABELS = {"app.kubernetes.io/name": "winnode", "app.kubernetes.io/component": "webhook"}
MANIFEST_DIR = Path("manifests") / "admission"

# (API group, version, resources) of everything judged; pods/ephemeralcontainers is `kubectl debug`.
RESOURCE_RULES: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("", "v1", ("pods", "pods/ephemeralcontainers", "replicationcontrollers")),
    ("apps", "v1", ("deployments", "replicasets", "statefulsets", "daemonsets")),
    ("batch", "v1", ("jobs", "cronjobs")),
)
# Placing a pod on a node: the scheduler's pods/binding, and the older bindings resource.
BINDING_RULE: tuple[str, str, tuple[str, ...]] = ("", "v1", ("pods/binding", "bindings"))
# Namespaces labelled so are left alone by the rule (webhook entries and policy binding alike).
EXEMPT_LABEL = "winnode.io/one-container"
EXEMPT_VALUE = "exempt"
OPERATIONS = ("CREATE", "UPDATE")
NETWORK_WEBHOOK_NAME = "windowsnetworks.winnode.io"
NETWORK_OPERATIONS = ("CREATE", "UPDATE", "DELETE")


def excluded_namespaces(namespace: str = OPERATOR_NAMESPACE_DEFAULT) -> list[str]:
    # kube-system: the cluster's own pods must never wait on us. Our namespace: the webhook's own
    # pods must be able to start while no webhook answers.
    return sorted({"kube-system", namespace})


# --- CEL ------------------------------------------------------------------------------------------
#
# Every expression must evaluate, without error, on every request the apiserver can send to it: an
# error under failurePolicy Fail is a refusal of whatever was asked, however unrelated (a label update,
# a Job's finalizer). So fields the apiserver may leave out are read with `?.`/orValue, `object` may be
# null (DELETE) or not a pod at all (a Binding), and tests/unit/test_admission_cel_shapes.py runs the
# apiserver's own CEL code (hack/celcheck) over every request shape.

TEMPLATE_KINDS = tuple(k for k in policy.POD_SPEC_PATHS if k not in ("Pod", "CronJob"))

# The pod spec of whatever kind the request is about (policy.POD_SPEC_PATHS), {} for anything else.
SPEC = (
    "(object == null ? {} : request.kind.kind == 'Pod' ? object.?spec.orValue({}) : "
    "request.kind.kind == 'CronJob' ? object.?spec.?jobTemplate.?spec.?template.?spec.orValue({}) : "
    f"request.kind.kind in [{', '.join(repr(k) for k in TEMPLATE_KINDS)}] ? "
    "object.?spec.?template.?spec.orValue({}) : {})"
)


def _meta(field: str) -> str:
    """object.metadata.<field>, else the request's (a string either way, so the type checker follows)."""
    fallback = f"request.?{field}.orValue('')"
    return f"(object == null ? {fallback} : object.?metadata.?{field}.orValue({fallback}))"


IS_BINDING = (
    f"(request.?subResource.orValue('') == '{policy.BINDING_SUBRESOURCE}' || request.kind.kind == 'Binding')"
)


def _cel_str(value: str) -> str:
    if "'" in value or "\\" in value:
        raise ValueError(f"{value!r} needs escaping in CEL")
    return f"'{value}'"


def _cel_list(values: Sequence[str]) -> str:
    return "[" + ", ".join(_cel_str(v) for v in values) + "]"


def cel_expression_admits(expr: str, os_value: str) -> str:
    """CEL twin of policy.expression_admits."""
    v = _cel_str(os_value)
    values = f"{expr}.?values.orValue([])"
    op = f"{expr}.?operator.orValue('')"
    if os_value == policy.WINDOWS:
        build = f"({op} == 'NotIn' || {op} == 'Exists' || ({op} == 'In' && size({values}) > 0))"
    else:
        build = f"({op} == 'NotIn' || {op} == 'DoesNotExist')"
    key = f"{expr}.?key.orValue('')"
    return (
        f"({key} in {_cel_list(policy.OS_LABELS)} ? ({op} == 'In' ? {v} in {values} : "
        f"{op} == 'NotIn' ? !({v} in {values}) : {op} == 'Exists') : "
        f"{key} == {_cel_str(policy.WINDOWS_BUILD_LABEL)} ? {build} : true)"
    )


def cel_term_admits(term: str, os_value: str) -> str:
    """CEL twin of policy.term_admits."""
    exprs = f"{term}.?matchExpressions.orValue([])"
    return (
        f"(size({exprs}) + size({term}.?matchFields.orValue([])) > 0 && "
        f"{exprs}.all(e, {cel_expression_admits('e', os_value)}))"
    )


def _terms(spec: str) -> str:
    return f"{spec}.?affinity.?nodeAffinity.?requiredDuringSchedulingIgnoredDuringExecution.?nodeSelectorTerms.orValue([])"


def cel_affinity_only_windows(spec: str = SPEC) -> str:
    """CEL twin of policy.affinity_admits_only_windows."""
    terms = _terms(spec)
    return (
        f"(size({terms}) > 0 && {terms}.all(t, !{cel_term_admits('t', policy.LINUX)}) && "
        f"{terms}.exists(t, {cel_term_admits('t', policy.WINDOWS)}))"
    )


def cel_os_name_windows(spec: str = SPEC) -> str:
    return f"{spec}.?os.?name.orValue('') == {_cel_str(policy.WINDOWS)}"


def cel_selector_label_windows(label: str, spec: str = SPEC) -> str:
    return f"{spec}.?nodeSelector[?{_cel_str(label)}].orValue('') == {_cel_str(policy.WINDOWS)}"


def cel_selector_build(spec: str = SPEC) -> str:
    return f"{spec}.?nodeSelector[?{_cel_str(policy.WINDOWS_BUILD_LABEL)}].hasValue()"


def cel_node_selector_windows(spec: str = SPEC) -> str:
    """CEL twin of policy.selector_reason (is there one)."""
    return " || ".join(
        [*(cel_selector_label_windows(label, spec) for label in policy.OS_LABELS), cel_selector_build(spec)]
    )


def cel_targets_windows(spec: str = SPEC) -> str:
    """CEL twin of policy.definite_reason: what the pod spec alone says (no node names)."""
    return f"({cel_os_name_windows(spec)} || {cel_node_selector_windows(spec)} || {cel_affinity_only_windows(spec)})"


def cel_names_nodes(spec: str = SPEC) -> str:
    """The pod names its node (nodeName, hostname, matchFields): policy.name_reason may apply, which
    only the webhook can judge."""
    terms = _terms(spec)
    hostname = _cel_str(policy.HOSTNAME_LABEL)
    return (
        f"({spec}.?nodeName.orValue('') != '' || {spec}.?nodeSelector[?{hostname}].hasValue() || "
        f"{terms}.exists(t, size(t.?matchFields.orValue([])) > 0 || "
        f"t.?matchExpressions.orValue([]).exists(e, e.?key.orValue('') == {hostname})))"
    )


def cel_host_process(spec: str = SPEC) -> str:
    """CEL twin of policy.is_host_process."""
    hp = ".?securityContext.?windowsOptions.?hostProcess.orValue(false)"
    return f"({spec}{hp} || {spec}.?containers.orValue([]).exists(c, c{hp}))"


def cel_running_count(spec: str = SPEC) -> str:
    """CEL twin of len(policy.running_containers)."""
    return (
        f"(size({spec}.?containers.orValue([])) + "
        f"size({spec}.?initContainers.orValue([]).filter(c, c.?restartPolicy.orValue('') == 'Always')) + "
        f"size({spec}.?ephemeralContainers.orValue([])))"
    )


def cel_too_many(spec: str = SPEC) -> str:
    """More than one container runs at once and the pod is not HostProcess: what the rule refuses."""
    return f"(!{cel_host_process(spec)} && {cel_running_count(spec)} > 1)"


def cel_update_relevant() -> str:
    """CEL twin of policy.update_is_relevant: true for CREATE and for updates that can change the verdict."""
    return (
        "request.operation != 'UPDATE' || (request.kind.kind == 'Pod' ? "
        f"(request.?subResource.orValue('') == {_cel_str(policy.EPHEMERAL_SUBRESOURCE)} || "
        "object.?spec.?nodeSelector != oldObject.?spec.?nodeSelector || "
        "object.?spec.?affinity != oldObject.?spec.?affinity) : "
        "request.kind.kind == 'CronJob' ? "
        "object.?spec.?jobTemplate.?spec.?template != oldObject.?spec.?jobTemplate.?spec.?template : "
        "object.?spec.?template != oldObject.?spec.?template)"
    )


JUDGED_OPERATION = "request.operation == 'CREATE' || request.operation == 'UPDATE'"


def match_conditions(*, include_node_name: bool) -> list[dict[str, str]]:
    """Conditions (ANDed) a request must meet to be judged at all.

    Without node names (the policy, and the webhook entry that fails closed): what the pod spec alone
    says targets Windows. With them (the webhook entry that fails open): the rest, which needs the
    cluster's Windows nodes, and the warnings.
    """
    if not include_node_name:
        return [
            {"name": "judged-operation", "expression": f"({JUDGED_OPERATION}) && !{IS_BINDING}"},
            {"name": "update-can-change-verdict", "expression": cel_update_relevant()},
            {"name": "targets-windows", "expression": cel_targets_windows()},
        ]
    return [
        {"name": "judged-operation", "expression": JUDGED_OPERATION},
        {"name": "update-can-change-verdict", "expression": cel_update_relevant()},
        {
            "name": "needs-node-names-or-warnings",
            # Definite and refused: the policy and the fail-closed entry have it. Definite and admitted:
            # here for its warnings. Not definite: here when it names nodes (one may run Windows).
            "expression": (
                f"{IS_BINDING} || ({cel_targets_windows()} ? !{cel_too_many()} : {cel_names_nodes()})"
            ),
        },
    ]


def fail_closed_conditions() -> list[dict[str, str]]:
    """The webhook entry that fails closed sees exactly what the rule refuses on the spec alone."""
    return [
        *match_conditions(include_node_name=False),
        {"name": "runs-more-than-one", "expression": cel_too_many()},
    ]


def policy_variables() -> list[dict[str, str]]:
    sidecar = "c.?restartPolicy.orValue('') == 'Always'"
    build = _cel_str(policy.WINDOWS_BUILD_LABEL)
    selector_reasons = " : ".join(
        f"{cel_selector_label_windows(label, 'variables.spec')} ? "
        f"'its nodeSelector sets {label}={policy.WINDOWS}'"
        for label in policy.OS_LABELS
    )
    return [
        {"name": "spec", "expression": SPEC},
        {"name": "apps", "expression": "variables.spec.?containers.orValue([]).map(c, c.?name.orValue(''))"},
        {
            "name": "sidecars",
            "expression": f"variables.spec.?initContainers.orValue([]).filter(c, {sidecar}).map(c, c.?name.orValue(''))",
        },
        {
            "name": "ephemeral",
            "expression": "variables.spec.?ephemeralContainers.orValue([]).map(c, c.?name.orValue(''))",
        },
        {"name": "running", "expression": "variables.apps + variables.sidecars + variables.ephemeral"},
        {
            "name": "extraApps",
            "expression": "size(variables.apps) == 0 ? [] : variables.apps.filter(n, n != variables.apps[0])",
        },
        {"name": "hostProcess", "expression": cel_host_process("variables.spec")},
        {
            "name": "reason",
            "expression": (
                f"{cel_os_name_windows('variables.spec')} ? 'spec.os.name is windows' : "
                f"{selector_reasons} : "
                f"{cel_selector_build('variables.spec')} ? "
                f"'its nodeSelector sets {policy.WINDOWS_BUILD_LABEL}=' + variables.spec.nodeSelector[{build}] : "
                f"'its required node affinity admits only {policy.OS_LABEL}={policy.WINDOWS} nodes'"
            ),
        },
        {
            "name": "fixes",
            "expression": (
                "(size(variables.extraApps) > 0 ? ['move ' + variables.extraApps.join(', ') + ' into ' + "
                "(size(variables.extraApps) == 1 ? 'its own pod' : 'their own pods')] : []) + "
                "(size(variables.sidecars) > 0 ? [size(variables.sidecars) == 1 ? "
                "'make ' + variables.sidecars.join(', ') + "
                "' a regular (non-restartable) init container or move it into its own pod' : "
                "'make ' + variables.sidecars.join(', ') + "
                "' regular (non-restartable) init containers or move them into their own pods'] : []) + "
                "(size(variables.ephemeral) > 0 ? ['debug from a separate pod on the same node instead of adding ' + "
                "(size(variables.ephemeral) == 1 ? 'ephemeral container ' : 'ephemeral containers ') + "
                "variables.ephemeral.join(', ')] : [])"
            ),
        },
    ]


# Same text as policy.too_many_message.
MESSAGE_EXPRESSION = (
    f"request.kind.kind.lowerAscii() + ' ' + {_meta('namespace')} + '/' + {_meta('name')} + "
    "(request.kind.kind == 'Pod' ? ' runs ' : ' has a pod template that runs ') + "
    "string(size(variables.running)) + ' containers at once on Windows (' + variables.running.join(', ') + '); "
    f"{policy.WHY}: ' + variables.fixes.join('; ') + '. It targets Windows because ' + variables.reason + '.'"
)
STATIC_MESSAGE = (
    f"a pod that targets Windows runs more than one container at once; {policy.WHY}: move the others "
    "into their own pods, or make sidecars regular (non-restartable) init containers"
)


# --- objects --------------------------------------------------------------------------------------


def _rules(kind: str, *, bindings: bool = False) -> list[dict[str, Any]]:
    rules = []
    for group, version, resources in (*RESOURCE_RULES, *((BINDING_RULE,) if bindings else ())):
        rule: dict[str, Any] = {
            "apiGroups": [group],
            "apiVersions": [version],
            "operations": list(OPERATIONS),
            "resources": list(resources),
        }
        if kind == "webhook":
            rule["scope"] = "Namespaced"
        rules.append(rule)
    return rules


def namespace_selector(namespace: str, match_labels: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Everything but kube-system, our namespace and namespaces labelled exempt; tests narrow it further
    to their own namespaces."""
    selector: dict[str, Any] = {
        "matchExpressions": [
            {
                "key": "kubernetes.io/metadata.name",
                "operator": "NotIn",
                "values": excluded_namespaces(namespace),
            },
            {"key": EXEMPT_LABEL, "operator": "NotIn", "values": [EXEMPT_VALUE]},
        ]
    }
    if match_labels:
        selector["matchLabels"] = dict(match_labels)
    return selector


@dataclass(frozen=True)
class ServiceTarget:
    namespace: str = OPERATOR_NAMESPACE_DEFAULT
    name: str = SERVICE_NAME
    port: int = SERVICE_PORT
    path: str = WEBHOOK_PATH


def webhook_configuration(
    *,
    name: str = WEBHOOK_CONFIG_NAME,
    namespace: str = OPERATOR_NAMESPACE_DEFAULT,
    url: str | None = None,
    service: ServiceTarget | None = None,
    ca_bundle: bytes = b"",
    namespace_match_labels: Mapping[str, str] | None = None,
    timeout_seconds: int = TIMEOUT_SECONDS,
    mode: policy.Mode = policy.Mode.DENY,
) -> dict[str, Any]:
    """Our ValidatingWebhookConfiguration: through the Service in a cluster, or `url` (tests, loopback).

    caBundle starts empty and is patched by the webhook (certs.py) or by cert-manager's CA injector.
    """
    client_config: dict[str, Any]
    if url is not None:
        client_config = {"url": url}
    else:
        svc = service or ServiceTarget(namespace=namespace)
        client_config = {
            "service": {"namespace": svc.namespace, "name": svc.name, "port": svc.port, "path": svc.path}
        }
    if ca_bundle:
        client_config["caBundle"] = base64.b64encode(ca_bundle).decode()
    selector = namespace_selector(namespace, namespace_match_labels)

    def entry(
        name: str, rules: list[dict[str, Any]], conditions: list[dict[str, str]], fail: bool
    ) -> dict[str, Any]:
        return {
            "name": name,
            # A copy each: a shared dict would be written as a YAML anchor and alias.
            "clientConfig": copy.deepcopy(client_config),
            "rules": rules,
            "matchPolicy": "Equivalent",
            "namespaceSelector": copy.deepcopy(selector),
            "matchConditions": conditions,
            "failurePolicy": "Fail" if fail else "Ignore",
            "sideEffects": "None",
            "timeoutSeconds": timeout_seconds,
            "admissionReviewVersions": ["v1"],
        }

    webhooks = []
    if mode is policy.Mode.DENY:
        # Under Warn and Audit the policy alone speaks for these (a second warning would repeat it).
        webhooks.append(entry(WEBHOOK_NAME, _rules("webhook"), fail_closed_conditions(), fail=True))
    webhooks.append(
        entry(
            NODE_NAMES_WEBHOOK_NAME,
            _rules("webhook", bindings=True),
            match_conditions(include_node_name=True),
            fail=False,
        )
    )
    webhooks.append(network_webhook(client_config, timeout_seconds))
    webhooks.append(windowsnodes.webhook_entry(client_config, timeout_seconds))
    return {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingWebhookConfiguration",
        "metadata": {"name": name, "labels": dict(APP_LABELS)},
        "webhooks": webhooks,
    }


def network_webhook(
    client_config: Mapping[str, Any], timeout_seconds: int = TIMEOUT_SECONDS
) -> dict[str, Any]:
    """The WindowsNetwork entry (networks.py): overlap with other networks on write, in-use on delete.

    Its own entry: no namespace selector or pod match conditions apply to a cluster-scoped resource,
    and DELETE is judged too.
    """
    from winnode.api.windowsnetwork import WINDOWS_NETWORK

    return {
        "name": NETWORK_WEBHOOK_NAME,
        # A copy: a shared dict would be written as a YAML anchor and alias.
        "clientConfig": copy.deepcopy(dict(client_config)),
        "rules": [
            {
                "apiGroups": [WINDOWS_NETWORK.group],
                "apiVersions": ["*"],
                "operations": list(NETWORK_OPERATIONS),
                "resources": [WINDOWS_NETWORK.plural],
                "scope": "Cluster",
            }
        ],
        "matchPolicy": "Equivalent",
        "failurePolicy": "Fail",
        "sideEffects": "None",
        "timeoutSeconds": timeout_seconds,
        "admissionReviewVersions": ["v1"],
    }


def admission_policy(name: str = POLICY_NAME) -> dict[str, Any]:
    """The one-container rule inside the apiserver: holds while no webhook replica answers."""
    return {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicy",
        "metadata": {"name": name, "labels": dict(APP_LABELS)},
        "spec": {
            "failurePolicy": "Fail",
            "matchConstraints": {"matchPolicy": "Equivalent", "resourceRules": _rules("policy")},
            "matchConditions": match_conditions(include_node_name=False),
            "variables": policy_variables(),
            "validations": [
                {
                    "expression": "variables.hostProcess || size(variables.running) <= 1",
                    "messageExpression": MESSAGE_EXPRESSION,
                    "message": STATIC_MESSAGE,
                    "reason": "Forbidden",
                }
            ],
        },
    }


def admission_policy_binding(
    *,
    name: str = POLICY_NAME,
    policy_name: str = POLICY_NAME,
    namespace: str = OPERATOR_NAMESPACE_DEFAULT,
    namespace_match_labels: Mapping[str, str] | None = None,
    mode: policy.Mode = policy.Mode.DENY,
) -> dict[str, Any]:
    return {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicyBinding",
        "metadata": {"name": name, "labels": dict(APP_LABELS)},
        "spec": {
            "policyName": policy_name,
            "validationActions": [mode.value],
            "matchResources": {"namespaceSelector": namespace_selector(namespace, namespace_match_labels)},
        },
    }


def webhook_rbac(
    namespace: str = OPERATOR_NAMESPACE_DEFAULT,
    *,
    name: str = "winnode-webhook",
    service_account: str = SERVICE_ACCOUNT,
    webhook_config_name: str = WEBHOOK_CONFIG_NAME,
    secret_name: str = SECRET_NAME,
) -> list[dict[str, Any]]:
    """What `winnode webhook` needs: its TLS Secret, our webhook configuration's caBundle, Node names."""
    # Imported here: winnode.kube pulls in the kubernetes client, which the webhook process never loads.
    from winnode.kube import rbac

    meta = {"labels": dict(APP_LABELS)}
    cluster_name = name
    return [
        {
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": {"name": service_account, "namespace": namespace, **meta},
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": {"name": cluster_name, "namespace": namespace, **meta},
            "rules": [r.to_dict() for r in rbac.webhook_namespace_rules(secret_name)],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": {"name": cluster_name, "namespace": namespace, **meta},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": cluster_name},
            "subjects": [{"kind": "ServiceAccount", "name": service_account, "namespace": namespace}],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": {"name": cluster_name, **meta},
            "rules": [r.to_dict() for r in rbac.webhook_cluster_rules(webhook_config_name)],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": cluster_name, **meta},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": cluster_name},
            "subjects": [{"kind": "ServiceAccount", "name": service_account, "namespace": namespace}],
        },
    ]


def webhook_workload(
    namespace: str = OPERATOR_NAMESPACE_DEFAULT,
    image: str = IMAGE,
    replicas: int = REPLICAS,
    mode: policy.Mode = policy.Mode.DENY,
) -> list[dict[str, Any]]:
    """Service, Deployment and PodDisruptionBudget of `winnode webhook`."""
    meta = {"labels": dict(APP_LABELS)}

    def probe(path: str, failures: int) -> dict[str, Any]:
        return {
            "httpGet": {"path": path, "port": "https", "scheme": "HTTPS"},
            "periodSeconds": 5,
            "failureThreshold": failures,
        }

    return [
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": SERVICE_NAME, "namespace": namespace, **meta},
            "spec": {
                "selector": dict(APP_LABELS),
                "ports": [{"name": "https", "port": SERVICE_PORT, "targetPort": "https", "protocol": "TCP"}],
            },
        },
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": SERVICE_NAME, "namespace": namespace, **meta},
            "spec": {
                "replicas": replicas,
                "selector": {"matchLabels": dict(APP_LABELS)},
                "template": {
                    "metadata": {"labels": dict(APP_LABELS)},
                    "spec": {
                        "serviceAccountName": SERVICE_ACCOUNT,
                        "nodeSelector": {policy.OS_LABEL: policy.LINUX},
                        "securityContext": podspec.pod_security_context(),
                        "affinity": podspec.spread_preferred(APP_LABELS),
                        # Replicas on different nodes, so one node going away leaves one answering.
                        "topologySpreadConstraints": [
                            {
                                "maxSkew": 1,
                                "topologyKey": "kubernetes.io/hostname",
                                "whenUnsatisfiable": "ScheduleAnyway",
                                "labelSelector": {"matchLabels": dict(APP_LABELS)},
                            }
                        ],
                        "containers": [
                            {
                                "name": "webhook",
                                "image": image,
                                "command": ["winnode", "webhook", f"--namespace={namespace}"],
                                "ports": [{"name": "https", "containerPort": CONTAINER_PORT}],
                                "env": [
                                    {"name": "WINNODE_WEBHOOK_PORT", "value": str(CONTAINER_PORT)},
                                    # Keep in step with the webhook configuration and the policy binding.
                                    {"name": "WINNODE_ADMISSION_MODE", "value": mode.value},
                                ],
                                "readinessProbe": probe("/readyz", 2),
                                "livenessProbe": probe("/healthz", 6),
                                # Measured: see winnode.kube.podspec.
                                "resources": podspec.resources(podspec.WEBHOOK_RESOURCES),
                                "securityContext": podspec.container_security_context(),
                                # The serving key is written here for the TLS library to load.
                                "volumeMounts": [podspec.tmp_mount()],
                            }
                        ],
                        "volumes": [podspec.tmp_volume()],
                    },
                },
            },
        },
        {
            "apiVersion": "policy/v1",
            "kind": "PodDisruptionBudget",
            "metadata": {"name": SERVICE_NAME, "namespace": namespace, **meta},
            "spec": {"minAvailable": 1, "selector": {"matchLabels": dict(APP_LABELS)}},
        },
    ]


# --- manifests ------------------------------------------------------------------------------------

_HEADER = "# Generated by `winnode webhook --write-manifests manifests/admission` from winnode/admission/config.py.\n"


def manifests(
    namespace: str = OPERATOR_NAMESPACE_DEFAULT,
    image: str = IMAGE,
    mode: policy.Mode = policy.Mode.DENY,
) -> dict[str, list[dict[str, Any]]]:
    """File name -> objects, as shipped in manifests/admission/ (the mode Deny)."""
    return {
        "webhook-configuration.yaml": [webhook_configuration(namespace=namespace, mode=mode)],
        "admission-policy.yaml": [
            admission_policy(),
            admission_policy_binding(namespace=namespace, mode=mode),
        ],
        "webhook-rbac.yaml": webhook_rbac(namespace),
        "webhook-deployment.yaml": webhook_workload(namespace, image, mode=mode),
    }


def render(objects: Sequence[Mapping[str, Any]]) -> str:
    """YAML with the `why` of each RBAC rule (winnode.kube.rbac) as a comment above it."""
    from winnode.kube import rbac
    from winnode.kube.render import render_documents

    rules = (*rbac.webhook_cluster_rules(WEBHOOK_CONFIG_NAME), *rbac.webhook_namespace_rules(SECRET_NAME))
    return render_documents(objects, _HEADER, rules)


def rendered_manifests(mode: policy.Mode = policy.Mode.DENY) -> dict[str, str]:
    return {name: render(objs) for name, objs in manifests(mode=mode).items()}


def write_manifests(directory: Path, mode: policy.Mode = policy.Mode.DENY) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in rendered_manifests(mode).items():
        path = directory / name
        path.write_text(text)
        written.append(path)
    return written
