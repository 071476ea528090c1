"""manifests/ is generated (`winnode manifests --write manifests/`): it must match the code, explain
every RBAC rule, and keep every pod within the `restricted` Pod Security Standard."""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any

import pytest
import yaml

from winnode.admission import config
from winnode.deploy import manifests
from winnode.kube import podspec, proxy_identity, rbac
from winnode.kube.render import UnexplainedRuleError, render_object
from winnode.settings import OPERATOR_NAMESPACE_DEFAULT

MANIFESTS = Path(__file__).resolve().parents[2] / "manifests"
FIX = "run `winnode manifests --write manifests/`"


def on_disk() -> dict[str, str]:
    out = {}
    for path in sorted(
        [*MANIFESTS.rglob("*.yaml"), *MANIFESTS.rglob("*.yml"), *MANIFESTS.rglob("[Kk]ustomization*")]
    ):
        rel = path.relative_to(MANIFESTS)
        if rel.parts[0] not in manifests.FOREIGN_DIRS:
            out[rel.as_posix()] = path.read_text()
    return out


def all_objects() -> list[dict[str, Any]]:
    return [
        doc
        for name, text in manifests.rendered().items()
        if name != manifests.KUSTOMIZATION_FILE
        for doc in yaml.safe_load_all(text)
        if doc
    ]


def test_manifests_match_the_code() -> None:
    expected = manifests.rendered()
    found = on_disk()
    problems = [f"manifests/{n} is missing" for n in sorted(expected.keys() - found.keys())]
    problems += [f"manifests/{n} is not generated (stale?)" for n in sorted(found.keys() - expected.keys())]
    for name in sorted(expected.keys() & found.keys()):
        if expected[name] != found[name]:
            diff = difflib.unified_diff(
                found[name].splitlines(),
                expected[name].splitlines(),
                f"{name} (on disk)",
                f"{name} (code)",
                lineterm="",
                n=1,
            )
            problems.append("\n".join(list(diff)[:40]))
    assert not problems, f"manifests/ differs from winnode.deploy; {FIX}:\n" + "\n".join(problems)


def test_kustomization_lists_every_generated_file() -> None:
    kustomization = yaml.safe_load(manifests.rendered()[manifests.KUSTOMIZATION_FILE])
    assert sorted(kustomization["resources"]) == sorted(set(on_disk()) - {manifests.KUSTOMIZATION_FILE})


def test_every_rbac_rule_has_a_why_comment_above_it() -> None:
    rendered = 0
    for name, text in manifests.rendered().items():
        lines = text.splitlines()
        for i, line in enumerate(lines):
            if line.startswith("- apiGroups:"):
                assert lines[i - 1].startswith("# "), f"{name}: rule at line {i + 1} has no comment"
                rendered += 1
    roles = [o for o in all_objects() if o["kind"] in ("Role", "ClusterRole")]
    assert rendered == sum(len(r["rules"]) for r in roles) > 0


def test_a_rule_without_a_why_is_refused() -> None:
    role = rbac.role("r", "ns", rbac.KUBE_SYSTEM_RULES)
    role["rules"].append({"apiGroups": [""], "resources": ["pods"], "verbs": ["delete"]})
    with pytest.raises(UnexplainedRuleError, match=r"Role r: rule .* has no `why`"):
        render_object(role, rbac.KUBE_SYSTEM_RULES)


def test_every_object_lives_in_our_namespace_or_is_cluster_scoped() -> None:
    namespaced = {"ServiceAccount", "Deployment", "Service", "PodDisruptionBudget", "Role", "RoleBinding"}
    for obj in all_objects():
        ns = obj["metadata"].get("namespace")
        if obj["kind"] in namespaced:
            # The exceptions: bootstrap token Secrets live in kube-system, kube-proxy's per-node
            # ServiceAccounts in a namespace of their own (kube/proxy_identity.py).
            assert ns in (OPERATOR_NAMESPACE_DEFAULT, "kube-system", proxy_identity.NAMESPACE), obj
            if ns == proxy_identity.NAMESPACE:
                assert obj["metadata"]["name"] == rbac.KUBE_PROXY_ROLE_NAME
            if ns == "kube-system":
                assert obj["metadata"]["name"] == rbac.KUBE_SYSTEM_ROLE_NAME
        else:
            assert ns is None, obj


def test_namespace_enforces_restricted_pod_security() -> None:
    namespaces = {o["metadata"]["name"]: o for o in all_objects() if o["kind"] == "Namespace"}
    assert set(namespaces) == {OPERATOR_NAMESPACE_DEFAULT, proxy_identity.NAMESPACE}
    for ns in namespaces.values():
        assert ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"


def deployments() -> dict[str, dict[str, Any]]:
    return {o["metadata"]["name"]: o for o in all_objects() if o["kind"] == "Deployment"}


@pytest.mark.parametrize("name", [manifests.RECONCILER_NAME, config.SERVICE_NAME])
def test_pods_are_restricted_read_only_and_sized(name: str) -> None:
    spec = deployments()[name]["spec"]["template"]["spec"]
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["runAsUser"] == podspec.RUN_AS_UID
    assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert spec["nodeSelector"] == {"kubernetes.io/os": "linux"}
    assert spec["affinity"]["podAntiAffinity"]
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert "hostPath" not in str(volumes)
    (container,) = spec["containers"]
    sc = container["securityContext"]
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert "privileged" not in sc
    tmp = next(m for m in container["volumeMounts"] if m["mountPath"] == "/tmp")
    assert "emptyDir" in volumes[tmp["name"]]
    resources = container["resources"]
    assert resources["requests"]["cpu"]
    assert resources["requests"]["memory"]
    assert resources["limits"]["memory"]
    assert container["image"] == config.IMAGE
    assert container["command"][0] == "winnode"


def test_reconciler_runs_two_replicas_with_leader_election() -> None:
    deploy = deployments()[manifests.RECONCILER_NAME]
    assert deploy["spec"]["replicas"] == 2
    spec = deploy["spec"]["template"]["spec"]
    assert spec["serviceAccountName"] == manifests.RECONCILER_SERVICE_ACCOUNT
    (container,) = spec["containers"]
    assert container["command"] == ["winnode", "run"]
    env = {e["name"]: e for e in container["env"]}
    assert env["WINNODE_LEADER_ELECTION"]["value"] == "true"
    assert env["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    assert env["POD_NAMESPACE"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.namespace"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    (svc,) = [
        o
        for o in all_objects()
        if o["kind"] == "Service" and o["metadata"]["name"] == manifests.METRICS_SERVICE
    ]
    assert svc["spec"]["selector"] == deploy["spec"]["selector"]["matchLabels"]
    assert svc["spec"]["ports"][0]["targetPort"] == container["ports"][0]["name"]


def test_webhook_has_a_disruption_budget_and_spreads() -> None:
    deploy = deployments()[config.SERVICE_NAME]
    assert deploy["spec"]["replicas"] >= 2
    pdbs = [o for o in all_objects() if o["kind"] == "PodDisruptionBudget"]
    assert [p["spec"]["selector"] for p in pdbs] == [deploy["spec"]["selector"]]
    assert deploy["spec"]["template"]["spec"]["serviceAccountName"] == config.SERVICE_ACCOUNT


def test_service_accounts_are_bound_to_their_roles_only() -> None:
    objs = all_objects()
    bindings = [o for o in objs if o["kind"] in ("RoleBinding", "ClusterRoleBinding")]
    sa_bindings = [b for b in bindings if b["subjects"][0]["kind"] == "ServiceAccount"]
    by_sa: dict[str, set[str]] = {}
    for b in sa_bindings:
        by_sa.setdefault(b["subjects"][0]["name"], set()).add(b["roleRef"]["name"])
    assert by_sa == {
        manifests.RECONCILER_SERVICE_ACCOUNT: {
            rbac.CLUSTER_ROLE_NAME,
            rbac.KUBE_SYSTEM_ROLE_NAME,
            rbac.OPERATOR_ROLE_NAME,
            rbac.KUBE_PROXY_ROLE_NAME,
        },
        config.SERVICE_ACCOUNT: {"winnode-webhook"},
    }
    # No binding to a built-in role of ours grants anything to a ServiceAccount of ours.
    for b in bindings:
        if b["roleRef"]["name"].startswith("system:"):
            assert b["subjects"][0]["kind"] == "Group"
    for role in (o for o in objs if o["kind"] in ("Role", "ClusterRole")):
        for rule in role["rules"]:
            assert "*" not in rule["verbs"], role["metadata"]["name"]
            assert "*" not in rule["resources"], role["metadata"]["name"]
            assert not {"bind", "escalate", "impersonate"} & set(rule["verbs"]), role["metadata"]["name"]
