"""The admission objects: what they promise, and manifests/admission/ matching the code that renders them."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
import yaml

from winnode.admission import config, policy
from winnode.settings import OPERATOR_NAMESPACE_DEFAULT

REPO = Path(__file__).resolve().parents[2]

# resource -> kind, for every resource the rules name (subresources judged as their parent).
RESOURCE_KINDS = {
    "pods": "Pod",
    "pods/ephemeralcontainers": "Pod",
    "replicationcontrollers": "ReplicationController",
    "deployments": "Deployment",
    "replicasets": "ReplicaSet",
    "statefulsets": "StatefulSet",
    "daemonsets": "DaemonSet",
    "jobs": "Job",
    "cronjobs": "CronJob",
}


def test_manifests_match_the_code() -> None:
    directory = REPO / config.MANIFEST_DIR
    expected = config.rendered_manifests()
    on_disk = {p.name: p.read_text() for p in directory.glob("*.yaml")}
    assert set(on_disk) == set(expected), "run `winnode webhook --write-manifests manifests/admission`"
    for name, text in expected.items():
        assert on_disk[name] == text, (
            f"{name} drifted: run `winnode webhook --write-manifests manifests/admission`"
        )


def test_manifests_parse_and_name_their_namespace() -> None:
    for text in config.rendered_manifests().values():
        for doc in yaml.safe_load_all(text):
            assert doc["apiVersion"]
            assert doc["kind"]
            if "namespace" in doc["metadata"]:
                assert doc["metadata"]["namespace"] == OPERATOR_NAMESPACE_DEFAULT


def test_webhook_configuration_promises() -> None:
    vwc = config.webhook_configuration()
    hook, names_hook, _network_hook, _windows_node_hook = vwc["webhooks"]
    assert hook["failurePolicy"] == "Fail"
    # An outage of the webhook must never refuse a pod that does not target Windows.
    assert names_hook["failurePolicy"] == "Ignore"
    for h in (hook, names_hook):
        assert h["sideEffects"] == "None"
        assert h["timeoutSeconds"] in (2, 3)
        assert h["admissionReviewVersions"] == ["v1"]
        assert h["clientConfig"] == {
            "service": {
                "namespace": "winnode-system",
                "name": "winnode-webhook",
                "port": 443,
                "path": "/validate",
            }
        }
        assert h["namespaceSelector"]["matchExpressions"] == [
            {
                "key": "kubernetes.io/metadata.name",
                "operator": "NotIn",
                "values": ["kube-system", OPERATOR_NAMESPACE_DEFAULT],
            },
            {"key": config.EXEMPT_LABEL, "operator": "NotIn", "values": [config.EXEMPT_VALUE]},
        ]
    names = [m["name"] for m in hook["matchConditions"]]
    assert names == ["judged-operation", "update-can-change-verdict", "targets-windows", "runs-more-than-one"]
    assert "nodeName" not in json.dumps(hook["matchConditions"])
    assert "nodeName" in names_hook["matchConditions"][-1]["expression"]
    binding_resources = [r for rule in names_hook["rules"] for r in rule["resources"]]
    assert "pods/binding" in binding_resources
    assert "bindings" in binding_resources


@pytest.mark.parametrize("mode", list(policy.Mode))
def test_mode_reaches_every_layer(mode: policy.Mode) -> None:
    objs = config.manifests(mode=mode)
    (vwc,) = objs["webhook-configuration.yaml"]
    hooks = {h["name"]: h for h in vwc["webhooks"]}
    # Under Warn and Audit nothing may fail closed: the policy warns or audits the definite cases.
    assert (config.WEBHOOK_NAME in hooks) is (mode is policy.Mode.DENY)
    _vap, binding = objs["admission-policy.yaml"]
    assert binding["spec"]["validationActions"] == [mode.value]
    deployment = next(o for o in objs["webhook-deployment.yaml"] if o["kind"] == "Deployment")
    env = deployment["spec"]["template"]["spec"]["containers"][0]["env"]
    assert {"name": "WINNODE_ADMISSION_MODE", "value": mode.value} in env


def test_rules_cover_exactly_the_kinds_the_policy_judges() -> None:
    vwc = config.webhook_configuration()
    resources = [r for rule in vwc["webhooks"][0]["rules"] for r in rule["resources"]]
    assert sorted(resources) == sorted(RESOURCE_KINDS)
    assert set(RESOURCE_KINDS.values()) == set(policy.POD_SPEC_PATHS)
    vap = config.admission_policy()
    vap_resources = [
        r for rule in vap["spec"]["matchConstraints"]["resourceRules"] for r in rule["resources"]
    ]
    assert sorted(vap_resources) == sorted(resources)
    for rule in vwc["webhooks"][0]["rules"]:
        assert rule["operations"] == ["CREATE", "UPDATE"]


def test_loopback_variant_for_tests() -> None:
    vwc = config.webhook_configuration(
        name="t",
        namespace="ns",
        url="https://127.0.0.1:1234/validate",
        ca_bundle=b"PEM",
        namespace_match_labels={"a": "b"},
    )
    hook = vwc["webhooks"][0]
    assert hook["clientConfig"] == {
        "url": "https://127.0.0.1:1234/validate",
        "caBundle": base64.b64encode(b"PEM").decode(),
    }
    assert hook["namespaceSelector"]["matchLabels"] == {"a": "b"}
    assert hook["namespaceSelector"]["matchExpressions"][0]["values"] == ["kube-system", "ns"]


def test_policy_has_no_node_name_condition_and_binding_denies() -> None:
    vap = config.admission_policy()
    assert vap["spec"]["failurePolicy"] == "Fail"
    assert "nodeName" not in vap["spec"]["matchConditions"][1]["expression"]
    (validation,) = vap["spec"]["validations"]
    assert validation["messageExpression"] == config.MESSAGE_EXPRESSION
    binding = config.admission_policy_binding()
    assert binding["spec"]["policyName"] == vap["metadata"]["name"]
    assert binding["spec"]["validationActions"] == ["Deny"]


def test_cel_fragments_name_the_right_fields() -> None:
    # The CEL twins must read the same label and values as the Python policy.
    assert f"'{policy.OS_LABEL}'" in config.cel_node_selector_windows()
    assert "'linux'" in config.cel_affinity_only_windows()
    assert "'windows'" in config.cel_affinity_only_windows()
    assert policy.WHY in config.MESSAGE_EXPRESSION


def test_webhook_workload_is_highly_available_and_linux_only() -> None:
    svc, deploy, pdb = config.webhook_workload()
    assert deploy["spec"]["replicas"] >= 2
    assert pdb["spec"]["minAvailable"] == 1
    pod_spec = deploy["spec"]["template"]["spec"]
    assert pod_spec["nodeSelector"] == {"kubernetes.io/os": "linux"}
    (container,) = pod_spec["containers"]
    assert container["command"][:2] == ["winnode", "webhook"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert svc["spec"]["ports"][0]["port"] == config.SERVICE_PORT


def test_rbac_is_scoped_to_our_objects() -> None:
    objs = {o["kind"]: o for o in config.webhook_rbac()}
    role_rules = objs["Role"]["rules"]
    assert {"apiGroups": [""], "resources": ["secrets"], "verbs": ["create"]} in role_rules
    named = [r for r in role_rules if r.get("resourceNames")]
    assert named[0]["resourceNames"] == [config.SECRET_NAME]
    cluster_rules = objs["ClusterRole"]["rules"]
    vwc_rule = next(r for r in cluster_rules if r["resources"] == ["validatingwebhookconfigurations"])
    assert vwc_rule["resourceNames"] == [config.WEBHOOK_CONFIG_NAME]
    assert "delete" not in vwc_rule["verbs"]
