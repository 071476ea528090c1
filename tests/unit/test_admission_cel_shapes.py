"""Every CEL expression we install (both webhook entries' matchConditions, the policy's matchConditions,
variables, validation and messageExpression) evaluated by kube-apiserver's own CEL code (hack/celcheck,
the pinned k8s.io/apiserver) against every shape of AdmissionRequest the apiserver sends for the kinds
we match: CREATE, UPDATE, UPDATE of status, scale, ephemeralcontainers, bindings, DELETE, CONNECT; with
and without each optional field. An error under failurePolicy Fail is a refusal of whatever was asked,
so no expression may error on any of them, in any mode."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from winnode.admission import config, policy
from winnode.testing.admission import workload_object
from winnode.testing.celcheck import Outcome, RequestShape, evaluate

NS = "apps"
WIN = {"kubernetes.io/os": "windows"}
API = {
    "Pod": ("", "v1", "pods"),
    "ReplicationController": ("", "v1", "replicationcontrollers"),
    "Deployment": ("apps", "v1", "deployments"),
    "ReplicaSet": ("apps", "v1", "replicasets"),
    "StatefulSet": ("apps", "v1", "statefulsets"),
    "DaemonSet": ("apps", "v1", "daemonsets"),
    "Job": ("batch", "v1", "jobs"),
    "CronJob": ("batch", "v1", "cronjobs"),
}


def containers(*names: str) -> list[dict[str, Any]]:
    return [{"name": n, "image": "img"} for n in names]


# Pod specs of every targeting form, one and two containers.
SPECS: dict[str, dict[str, Any]] = {
    "linux-scheduled-2": {"nodeName": "linux-1", "containers": containers("app", "log")},
    "linux-selector-2": {"nodeSelector": {"kubernetes.io/os": "linux"}, "containers": containers("a", "b")},
    "bare-1": {"containers": containers("app")},
    "windows-selector-1": {"nodeSelector": WIN, "containers": containers("app")},
    "windows-selector-2": {"nodeSelector": WIN, "containers": containers("app", "log")},
    "windows-os-2": {"os": {"name": "windows"}, "containers": containers("app", "log")},
    "windows-beta-2": {
        "nodeSelector": {"beta.kubernetes.io/os": "windows"},
        "containers": containers("a", "b"),
    },
    "windows-build-2": {
        "nodeSelector": {"node.kubernetes.io/windows-build": "10.0.20348"},
        "containers": containers("a", "b"),
    },
    "windows-node-name-2": {"nodeName": "win-1", "containers": containers("a", "b")},
    "match-fields-2": {
        "affinity": {
            "nodeAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": {
                    "nodeSelectorTerms": [
                        {"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["win-1"]}]}
                    ]
                }
            }
        },
        "containers": containers("a", "b"),
    },
    "sidecar-2": {
        "nodeSelector": WIN,
        "containers": containers("app"),
        "initContainers": [{"name": "mesh", "image": "img", "restartPolicy": "Always"}],
    },
    "host-process-2": {
        "nodeSelector": WIN,
        "hostNetwork": True,
        "securityContext": {"windowsOptions": {"hostProcess": True, "runAsUserName": "NT AUTHORITY\\SYSTEM"}},
        "containers": containers("a", "b"),
    },
}


def pod(spec_name: str, *, name: str | None = "p", **meta: Any) -> dict[str, Any]:
    metadata: dict[str, Any] = {"namespace": NS, **meta}
    if name is None:
        metadata["generateName"] = "p-"
    else:
        metadata["name"] = name
    return {"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": copy.deepcopy(SPECS[spec_name])}


def workload(kind: str, spec_name: str) -> dict[str, Any]:
    return workload_object(kind, "w", NS, copy.deepcopy(SPECS[spec_name]))


def kind_of(kind: str) -> tuple[str, str, str]:
    group, version, _ = API[kind]
    return (group, version, kind)


def shapes() -> list[RequestShape]:
    out: list[RequestShape] = []
    pod_kind, pod_res = kind_of("Pod"), API["Pod"]
    for spec_name in SPECS:
        created = pod(spec_name)
        out.append(
            RequestShape(f"CREATE pod {spec_name}", "CREATE", pod_kind, pod_res, NS, "p", object=created)
        )
        out.append(
            RequestShape(
                f"CREATE pod {spec_name} generateName dryRun",
                "CREATE",
                pod_kind,
                pod_res,
                NS,
                "",
                object=pod(spec_name, name=None),
                dry_run=True,
            )
        )
        labelled = pod(spec_name, labels={"team": "a"}, annotations={"note": "x"})
        finalized = pod(spec_name, finalizers=["batch.kubernetes.io/job-tracking"])
        owned = pod(
            spec_name, ownerReferences=[{"apiVersion": "v1", "kind": "Node", "name": "n", "uid": "u"}]
        )
        for what, new, old in (
            ("labels", labelled, created),
            ("finalizer removed", created, finalized),
            ("ownerReferences", owned, created),
        ):
            out.append(
                RequestShape(
                    f"UPDATE pod {spec_name} {what}",
                    "UPDATE",
                    pod_kind,
                    pod_res,
                    NS,
                    "p",
                    object=new,
                    old_object=old,
                )
            )
        with_status = {**created, "status": {"phase": "Succeeded"}}
        out.append(
            RequestShape(
                f"UPDATE pods/status {spec_name}",
                "UPDATE",
                pod_kind,
                pod_res,
                NS,
                "p",
                "status",
                with_status,
                created,
            )
        )
        debugged = copy.deepcopy(created)
        debugged["spec"]["ephemeralContainers"] = [{"name": "debugger", "image": "img"}]
        out.append(
            RequestShape(
                f"UPDATE pods/ephemeralcontainers {spec_name}",
                "UPDATE",
                pod_kind,
                pod_res,
                NS,
                "p",
                policy.EPHEMERAL_SUBRESOURCE,
                debugged,
                created,
            )
        )
        out.append(
            RequestShape(f"DELETE pod {spec_name}", "DELETE", pod_kind, pod_res, NS, "p", old_object=created)
        )
    binding = {
        "apiVersion": "v1",
        "kind": "Binding",
        "metadata": {"name": "p", "namespace": NS},
        "target": {"apiVersion": "v1", "kind": "Node", "name": "win-1"},
    }
    out.append(
        RequestShape(
            "CREATE pods/binding", "CREATE", ("", "v1", "Binding"), pod_res, NS, "p", "binding", binding
        )
    )
    out.append(
        RequestShape(
            "CREATE bindings",
            "CREATE",
            ("", "v1", "Binding"),
            ("", "v1", "bindings"),
            NS,
            "p",
            object=binding,
        )
    )
    exec_options = {"apiVersion": "v1", "kind": "PodExecOptions", "command": ["cmd"], "stdout": True}
    out.append(
        RequestShape(
            "CONNECT pods/exec",
            "CONNECT",
            ("", "v1", "PodExecOptions"),
            pod_res,
            NS,
            "p",
            "exec",
            exec_options,
        )
    )
    for kind in API:
        if kind == "Pod":
            continue
        res = API[kind]
        for spec_name in ("linux-scheduled-2", "windows-selector-2", "windows-selector-1"):
            obj = workload(kind, spec_name)
            out.append(
                RequestShape(f"CREATE {kind} {spec_name}", "CREATE", kind_of(kind), res, NS, "w", object=obj)
            )
            relabelled = {**obj, "metadata": {**obj["metadata"], "labels": {"x": "y"}}}
            out.append(
                RequestShape(
                    f"UPDATE {kind} {spec_name} labels",
                    "UPDATE",
                    kind_of(kind),
                    res,
                    NS,
                    "w",
                    object=relabelled,
                    old_object=obj,
                )
            )
            out.append(
                RequestShape(
                    f"UPDATE {kind} {spec_name} status",
                    "UPDATE",
                    kind_of(kind),
                    res,
                    NS,
                    "w",
                    "status",
                    obj,
                    obj,
                )
            )
            out.append(
                RequestShape(
                    f"DELETE {kind} {spec_name}", "DELETE", kind_of(kind), res, NS, "w", old_object=obj
                )
            )
        if kind in ("Deployment", "ReplicaSet", "StatefulSet", "ReplicationController"):
            scale = {
                "apiVersion": "autoscaling/v1",
                "kind": "Scale",
                "metadata": {"name": "w", "namespace": NS},
                "spec": {"replicas": 3},
            }
            out.append(
                RequestShape(
                    f"UPDATE {kind}/scale",
                    "UPDATE",
                    ("autoscaling", "v1", "Scale"),
                    res,
                    NS,
                    "w",
                    "scale",
                    scale,
                    scale,
                )
            )
    return out


SHAPES = shapes()


@pytest.fixture(scope="module", params=list(policy.Mode))
def outcomes(request: pytest.FixtureRequest) -> dict[str, Outcome]:
    mode = request.param
    hooks = config.webhook_configuration(mode=mode)["webhooks"]
    result = evaluate(SHAPES, webhooks=hooks, policy=config.admission_policy())
    return {o.shape: o for o in result}


def test_no_expression_errors_on_any_request_shape(outcomes: dict[str, Outcome]) -> None:
    assert len(outcomes) == len(SHAPES)
    errors = [e for o in outcomes.values() for e in o.errors()]
    assert not errors, "\n".join(errors[:20])


def _matched(o: Outcome) -> set[str]:
    pod_entries = (config.WEBHOOK_NAME, config.NODE_NAMES_WEBHOOK_NAME)
    names = {w.name for w in o.webhooks if w.match.matches and w.name in pod_entries}
    if o.policy is not None and o.policy.match.matches:
        names.add("policy")
    return names


def test_metadata_status_scale_and_delete_requests_never_reach_the_rule(outcomes: dict[str, Outcome]) -> None:
    quiet = [
        s
        for s in outcomes
        if any(
            w in s
            for w in (
                " labels",
                "finalizer removed",
                "ownerReferences",
                "/status",
                "/scale",
                "DELETE",
                "CONNECT",
            )
        )
        or (s.startswith("UPDATE") and " status" in s)
    ]
    assert len(quiet) > 100
    for shape in quiet:
        assert _matched(outcomes[shape]) == set(), shape


def test_definite_two_container_pods_are_refused_by_the_policy(outcomes: dict[str, Outcome]) -> None:
    for spec_name in ("windows-selector-2", "windows-os-2", "windows-beta-2", "windows-build-2", "sidecar-2"):
        o = outcomes[f"CREATE pod {spec_name}"]
        assert o.policy is not None
        assert o.policy.match.matches, spec_name
        assert o.policy.denied, spec_name
        expected = policy.judge("Pod", pod(spec_name))
        assert not expected.allowed
        assert [d["message"] for d in o.policy.decisions] == [expected.message]


def test_name_pinned_and_bindings_go_only_to_the_fail_open_entry(outcomes: dict[str, Outcome]) -> None:
    for shape in (
        "CREATE pod windows-node-name-2",
        "CREATE pod match-fields-2",
        "CREATE pods/binding",
        "CREATE bindings",
    ):
        assert _matched(outcomes[shape]) == {config.NODE_NAMES_WEBHOOK_NAME}, shape
    hooks = {w["name"]: w for w in config.webhook_configuration()["webhooks"]}
    assert hooks[config.NODE_NAMES_WEBHOOK_NAME]["failurePolicy"] == "Ignore"


def test_pods_the_rule_admits_never_reach_a_fail_closed_layer(outcomes: dict[str, Outcome]) -> None:
    for spec_name in (
        "linux-scheduled-2",
        "linux-selector-2",
        "bare-1",
        "windows-selector-1",
        "host-process-2",
    ):
        matched = _matched(outcomes[f"CREATE pod {spec_name}"])
        assert config.WEBHOOK_NAME not in matched, spec_name
        o = outcomes[f"CREATE pod {spec_name}"]
        assert o.policy is not None
        assert not o.policy.denied, spec_name


def test_ephemeral_container_on_a_windows_pod_reaches_the_rule(outcomes: dict[str, Outcome]) -> None:
    o = outcomes["UPDATE pods/ephemeralcontainers windows-selector-1"]
    assert o.policy is not None
    assert o.policy.denied
    assert "debugger" in o.policy.decisions[0]["message"]
