"""The one-container-per-Windows-pod policy as pure functions: targeting, counting, messages, updates."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from winnode.admission import policy
from winnode.admission.policy import Reason, Role, RunningContainer, Subject, judge

WIN_SELECTOR = {"kubernetes.io/os": "windows"}


def c(name: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "image": "img", **extra}


def pod(spec: dict[str, Any], name: str = "web", namespace: str = "default") -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    }


def affinity(*terms: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [{"matchExpressions": exprs} for exprs in terms]
            }
        }
    }


def os_expr(operator: str, *values: str) -> dict[str, Any]:
    expr: dict[str, Any] = {"key": "kubernetes.io/os", "operator": operator}
    if values:
        expr["values"] = list(values)
    return expr


def wrap(kind: str, spec: dict[str, Any], name: str = "web") -> dict[str, Any]:
    """`spec` as the pod template of `kind`."""
    meta = {"name": name, "namespace": "default"}
    template = {"metadata": {"labels": {"app": name}}, "spec": spec}
    if kind == "Pod":
        return {"kind": "Pod", "metadata": meta, "spec": spec}
    if kind == "CronJob":
        return {
            "kind": kind,
            "metadata": meta,
            "spec": {"schedule": "* * * * *", "jobTemplate": {"spec": {"template": template}}},
        }
    return {"kind": kind, "metadata": meta, "spec": {"template": template}}


# --- targeting ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "reason"),
    [
        ({"os": {"name": "windows"}}, "spec.os.name is windows"),
        ({"nodeSelector": WIN_SELECTOR}, "its nodeSelector sets kubernetes.io/os=windows"),
        (
            {"nodeSelector": {"kubernetes.io/os": "windows", "zone": "a"}},
            "its nodeSelector sets kubernetes.io/os=windows",
        ),
        (
            {"affinity": affinity([os_expr("In", "windows")])},
            "its required node affinity admits only kubernetes.io/os=windows nodes",
        ),
        # Kubelets label their Node with linux or windows: excluding linux leaves windows.
        (
            {"affinity": affinity([os_expr("NotIn", "linux")])},
            "its required node affinity admits only kubernetes.io/os=windows nodes",
        ),
        # Every term must keep linux out; one that admits nothing does not matter.
        (
            {"affinity": affinity([os_expr("In", "windows")], [os_expr("DoesNotExist")])},
            "its required node affinity admits only kubernetes.io/os=windows nodes",
        ),
        (
            {
                "affinity": affinity(
                    [os_expr("In", "windows"), {"key": "zone", "operator": "In", "values": ["a"]}]
                )
            },
            "its required node affinity admits only kubernetes.io/os=windows nodes",
        ),
        # The legacy OS label and the build label only a Windows kubelet sets.
        (
            {"nodeSelector": {"beta.kubernetes.io/os": "windows"}},
            "its nodeSelector sets beta.kubernetes.io/os=windows",
        ),
        (
            {"nodeSelector": {"node.kubernetes.io/windows-build": "10.0.20348"}},
            "its nodeSelector sets node.kubernetes.io/windows-build=10.0.20348",
        ),
        (
            {
                "affinity": affinity(
                    [{"key": "beta.kubernetes.io/os", "operator": "In", "values": ["windows"]}]
                )
            },
            "its required node affinity admits only kubernetes.io/os=windows nodes",
        ),
        (
            {"affinity": affinity([{"key": "node.kubernetes.io/windows-build", "operator": "Exists"}])},
            "its required node affinity admits only kubernetes.io/os=windows nodes",
        ),
        (
            {
                "affinity": affinity(
                    [{"key": "node.kubernetes.io/windows-build", "operator": "In", "values": ["10.0.26100"]}]
                )
            },
            "its required node affinity admits only kubernetes.io/os=windows nodes",
        ),
        # os.name is reported first when several say Windows.
        ({"os": {"name": "windows"}, "nodeSelector": WIN_SELECTOR}, "spec.os.name is windows"),
    ],
)
def test_targets_windows(spec: dict[str, Any], reason: str) -> None:
    assert policy.windows_reason(spec) == reason


@pytest.mark.parametrize(
    "spec",
    [
        {},
        {"os": {"name": "linux"}},
        {"nodeSelector": {"kubernetes.io/os": "linux"}},
        {"nodeSelector": {"kubernetes.io/os": "Windows"}},  # label values are case-sensitive
        {"affinity": affinity([os_expr("In", "windows", "linux")])},
        {"affinity": affinity([os_expr("In", "windows")], [os_expr("In", "linux")])},  # terms are ORed
        {"affinity": affinity([os_expr("In", "windows")], [{"key": "zone", "operator": "Exists"}])},
        {"affinity": affinity([os_expr("Exists")])},
        {"affinity": affinity([os_expr("NotIn", "windows")])},
        {"affinity": affinity([os_expr("DoesNotExist")])},  # matches no kubelet's node
        {"affinity": affinity([os_expr("Gt", "1")])},
        {"affinity": {"nodeAffinity": {}}},
        {
            "affinity": {
                "nodeAffinity": {
                    "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [{}]}
                }
            }
        },
        # preferred affinity only prefers: the pod may still land on Linux
        {
            "affinity": {
                "nodeAffinity": {
                    "preferredDuringSchedulingIgnoredDuringExecution": [
                        {"weight": 1, "preference": {"matchExpressions": [os_expr("In", "windows")]}}
                    ]
                }
            }
        },
        {"nodeName": "linux-1"},
        # A Linux node has no build label: these admit Linux nodes too.
        {"affinity": affinity([{"key": "node.kubernetes.io/windows-build", "operator": "DoesNotExist"}])},
        {
            "affinity": affinity(
                [{"key": "node.kubernetes.io/windows-build", "operator": "NotIn", "values": ["x"]}]
            )
        },
        {
            "affinity": affinity(
                [{"key": "beta.kubernetes.io/os", "operator": "NotIn", "values": ["windows"]}]
            )
        },
    ],
)
def test_does_not_target_windows(spec: dict[str, Any]) -> None:
    assert policy.windows_reason(spec, windows_nodes={"win-1"}) is None


def names_term(*names: str) -> dict[str, Any]:
    return {"matchFields": [{"key": "metadata.name", "operator": "In", "values": list(names)}]}


def hostname_term(*names: str) -> dict[str, Any]:
    return {"matchExpressions": [{"key": "kubernetes.io/hostname", "operator": "In", "values": list(names)}]}


def required(*terms: dict[str, Any]) -> dict[str, Any]:
    return {
        "nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": list(terms)}}
    }


KNOWN = policy.WindowsNodeNames(frozenset({"win-1", "win-2"}), frozenset({"win-1-host", "win-2"}))


@pytest.mark.parametrize(
    ("spec", "reason"),
    [
        ({"nodeName": "win-1"}, "its nodeName win-1 is a Windows node"),
        ({"affinity": required(names_term("win-1"))}, "its required node affinity names only Windows nodes"),
        (
            {"affinity": required(names_term("win-1"), hostname_term("win-2"))},
            "its required node affinity names only Windows nodes",
        ),
        (
            {"affinity": required(hostname_term("win-1-host"))},
            "its required node affinity names only Windows nodes",
        ),
        (
            {"nodeSelector": {"kubernetes.io/hostname": "win-1-host"}},
            "its nodeSelector pins it to Windows node win-1-host (kubernetes.io/hostname)",
        ),
    ],
)
def test_pinned_to_windows_nodes_by_name(spec: dict[str, Any], reason: str) -> None:
    assert policy.windows_reason(spec, KNOWN) == reason
    assert policy.definite_reason(spec) is None  # only the webhook, which knows the nodes, can tell


@pytest.mark.parametrize(
    "spec",
    [
        {"affinity": required(names_term("win-1", "linux-1"))},  # may land on a Linux node
        {"affinity": required(names_term("win-1"), {"matchExpressions": [os_expr("In", "linux")]})},
        {"affinity": required(hostname_term("win-1"))},  # win-1's hostname label is win-1-host
        {
            "affinity": required(
                {"matchFields": [{"key": "metadata.name", "operator": "NotIn", "values": ["x"]}]}
            )
        },
        {"nodeSelector": {"kubernetes.io/hostname": "linux-1"}},
        {"nodeName": "unknown-node"},
    ],
)
def test_not_pinned_to_windows_nodes(spec: dict[str, Any]) -> None:
    assert policy.windows_reason(spec, KNOWN) is None


def binding(node: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Binding",
        "metadata": {"name": "p"},
        "target": {"kind": "Node", "name": node},
    }


def test_binding_to_a_windows_node_is_judged_by_the_pod() -> None:
    two = {
        "metadata": {"name": "p", "namespace": "ns"},
        "spec": {"containers": [{"name": "a"}, {"name": "b"}]},
    }
    verdict = policy.judge_binding(binding("win-1"), two, KNOWN, namespace="ns", name="p")
    assert not verdict.allowed
    assert verdict.message.startswith("pod ns/p runs 2 containers at once on Windows (a, b)")
    assert verdict.message.endswith("It targets Windows because it is being bound to Windows node win-1.")
    assert policy.judge_binding(binding("linux-1"), two, KNOWN).allowed
    one = {"metadata": {"name": "p"}, "spec": {"containers": [{"name": "a"}]}}
    assert policy.judge_binding(binding("win-1"), one, KNOWN).allowed
    unread = policy.judge_binding(binding("win-1"), None, KNOWN)
    assert unread.allowed
    assert unread.reason is policy.Reason.NOT_JUDGED


def test_modes_soften_a_refusal() -> None:
    denied = policy.judge(
        "Pod",
        {
            "metadata": {"name": "p"},
            "spec": {"nodeSelector": WIN_SELECTOR, "containers": [{"name": "a"}, {"name": "b"}]},
        },
    )
    assert not denied.allowed
    assert policy.apply_mode(denied, policy.Mode.DENY) == denied
    warned = policy.apply_mode(denied, policy.Mode.WARN)
    assert warned.allowed
    assert warned.warnings[-1] == denied.message
    assert warned.softened is policy.Mode.WARN
    audited = policy.apply_mode(denied, policy.Mode.AUDIT)
    assert audited.allowed
    assert dict(audited.audit_annotations) == {policy.AUDIT_KEY: denied.message}
    allowed = policy.judge("Pod", {"spec": {"containers": [{"name": "a"}]}})
    assert policy.apply_mode(allowed, policy.Mode.WARN) == allowed


def test_modes_match_the_settings() -> None:
    from winnode.settings import ADMISSION_MODES

    assert tuple(m.value for m in policy.Mode) == ADMISSION_MODES


def test_node_name_of_a_windows_node() -> None:
    assert policy.windows_reason({"nodeName": "win-1"}, {"win-1"}) == "its nodeName win-1 is a Windows node"
    assert policy.windows_reason({"nodeName": "win-1"}, set()) is None


def test_match_fields_term_counts_as_a_term() -> None:
    # A term with only matchFields admits any OS (the field picks a node, not an OS).
    spec = {
        "affinity": {
            "nodeAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": {
                    "nodeSelectorTerms": [
                        {"matchExpressions": [os_expr("In", "windows")]},
                        {"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["n1"]}]},
                    ]
                }
            }
        }
    }
    assert policy.windows_reason(spec) is None


# --- counting -------------------------------------------------------------------------------------


def test_running_containers_counts_apps_sidecars_and_ephemeral() -> None:
    spec = {
        "initContainers": [
            c("setup"),
            c("proxy", restartPolicy="Always"),
            c("migrate", restartPolicy="Never"),
        ],
        "containers": [c("app"), c("log")],
        "ephemeralContainers": [c("debugger")],
    }
    assert policy.running_containers(spec) == [
        RunningContainer("app", Role.APP),
        RunningContainer("log", Role.APP),
        RunningContainer("proxy", Role.SIDECAR),
        RunningContainer("debugger", Role.EPHEMERAL),
    ]


def test_regular_init_containers_are_fine() -> None:
    spec = {"nodeSelector": WIN_SELECTOR, "initContainers": [c("a"), c("b")], "containers": [c("app")]}
    verdict = judge("Pod", pod(spec))
    assert verdict.allowed
    assert verdict.reason is Reason.ONE_CONTAINER


# --- verdicts and messages ------------------------------------------------------------------------


def test_issue_example_message() -> None:
    spec = {"nodeSelector": WIN_SELECTOR, "containers": [c("app"), c("log-shipper")]}
    verdict = judge("Pod", pod(spec))
    assert not verdict.allowed
    assert verdict.reason is Reason.TOO_MANY_CONTAINERS
    assert verdict.message == (
        "pod default/web runs 2 containers at once on Windows (app, log-shipper); Windows containers cannot share "
        "a network namespace, so a Windows pod runs one container: move log-shipper into its own pod. "
        "It targets Windows because its nodeSelector sets kubernetes.io/os=windows."
    )


def test_sidecar_message_says_how_to_fix_it() -> None:
    spec = {
        "os": {"name": "windows"},
        "initContainers": [c("proxy", restartPolicy="Always")],
        "containers": [c("app")],
    }
    verdict = judge("Pod", pod(spec))
    assert not verdict.allowed
    assert "(app, proxy)" in verdict.message
    assert (
        "make proxy a regular (non-restartable) init container or move it into its own pod" in verdict.message
    )


def test_plural_fixes() -> None:
    spec = {
        "os": {"name": "windows"},
        "initContainers": [c("s1", restartPolicy="Always"), c("s2", restartPolicy="Always")],
        "containers": [c("app"), c("b"), c("c")],
        "ephemeralContainers": [c("d1"), c("d2")],
    }
    msg = judge("Pod", pod(spec)).message
    assert "runs 7 containers at once on Windows (app, b, c, s1, s2, d1, d2)" in msg
    assert "move b, c into their own pods" in msg
    assert "make s1, s2 regular (non-restartable) init containers or move them into their own pods" in msg
    assert "instead of adding ephemeral containers d1, d2" in msg


def test_ephemeral_container_on_a_running_windows_pod() -> None:
    old = pod({"nodeName": "win-1", "containers": [c("app")]})
    new = copy.deepcopy(old)
    new["spec"]["ephemeralContainers"] = [c("debugger-x")]
    verdict = judge(
        "Pod",
        new,
        operation="UPDATE",
        old_object=old,
        sub_resource="ephemeralcontainers",
        windows_nodes={"win-1"},
    )
    assert not verdict.allowed
    assert (
        "debug from a separate pod on the same node instead of adding ephemeral container debugger-x"
        in verdict.message
    )
    assert "its nodeName win-1 is a Windows node" in verdict.message


@pytest.mark.parametrize("kind", sorted(policy.POD_SPEC_PATHS))
def test_every_kind_is_judged_by_its_template(kind: str) -> None:
    two = {"nodeSelector": WIN_SELECTOR, "containers": [c("app"), c("b")]}
    one = {"nodeSelector": WIN_SELECTOR, "containers": [c("app")]}
    denied = judge(kind, wrap(kind, two))
    assert not denied.allowed
    runs = "runs" if kind == "Pod" else "has a pod template that runs"
    assert denied.message.startswith(
        f"{kind.lower()} default/web {runs} 2 containers at once on Windows (app, b)"
    )
    assert judge(kind, wrap(kind, one)).allowed


def test_host_process_pods_may_run_several_containers() -> None:
    base = {"os": {"name": "windows"}, "hostNetwork": True, "containers": [c("a"), c("b")]}
    pod_level = {**base, "securityContext": {"windowsOptions": {"hostProcess": True}}}
    per_container = {
        **base,
        "containers": [c(n, securityContext={"windowsOptions": {"hostProcess": True}}) for n in ("a", "b")],
    }
    for spec in (pod_level, per_container):
        verdict = judge("DaemonSet", wrap("DaemonSet", spec))
        assert verdict.allowed
        assert verdict.reason is Reason.HOST_PROCESS


def test_linux_pods_and_unknown_kinds_are_not_judged() -> None:
    assert judge("Pod", pod({"containers": [c("a"), c("b")]})).reason is Reason.NOT_WINDOWS
    assert judge("ConfigMap", {"data": {}}).reason is Reason.NOT_JUDGED
    assert judge(
        "Pod", pod({"nodeSelector": WIN_SELECTOR, "containers": [c("a"), c("b")]}), operation="DELETE"
    ).allowed
    assert judge(
        "Pod", pod({"nodeSelector": WIN_SELECTOR, "containers": [c("a"), c("b")]}), sub_resource="status"
    ).allowed
    assert judge("Deployment", {"spec": {}}).reason is Reason.NOT_JUDGED  # no template: nothing to judge


def test_name_and_namespace_fall_back_to_the_request() -> None:
    obj = {"spec": {"nodeSelector": WIN_SELECTOR, "containers": [c("a"), c("b")]}}
    assert judge("Pod", obj, namespace="ns", name="p").message.startswith("pod ns/p runs")


# --- warnings -------------------------------------------------------------------------------------


def test_linux_only_fields_warn_without_os_name() -> None:
    spec = {
        "nodeSelector": WIN_SELECTOR,
        "securityContext": {"runAsUser": 1000, "fsGroup": 2000, "sysctls": []},
        "shareProcessNamespace": True,
        "hostPID": False,
        "containers": [
            c("app", securityContext={"privileged": True, "capabilities": {"add": ["NET_ADMIN"]}})
        ],
    }
    verdict = judge("Pod", pod(spec))
    assert verdict.allowed
    (warning,) = verdict.warnings
    assert warning.startswith(
        "pod default/web targets Windows but sets Linux-only spec.securityContext.fsGroup, "
        "spec.securityContext.runAsUser, spec.shareProcessNamespace, spec.containers[app].securityContext.capabilities"
        " and 1 more: "
    )
    assert "set spec.os.name: windows" in warning


def test_no_linux_field_warning_with_os_name_the_apiserver_refuses_those() -> None:
    spec = {"os": {"name": "windows"}, "securityContext": {"runAsUser": 1}, "containers": [c("app")]}
    assert judge("Pod", pod(spec)).warnings == ()


def test_host_network_without_host_process_warns() -> None:
    spec = {"os": {"name": "windows"}, "hostNetwork": True, "containers": [c("app")]}
    (warning,) = judge("Pod", pod(spec)).warnings
    assert "hostNetwork but is not a HostProcess pod" in warning


def test_warnings_ride_along_with_a_denial() -> None:
    spec = {"nodeSelector": WIN_SELECTOR, "securityContext": {"runAsUser": 1}, "containers": [c("a"), c("b")]}
    verdict = judge("Pod", pod(spec))
    assert not verdict.allowed
    assert len(verdict.warnings) == 1


def test_linux_pods_get_no_warnings() -> None:
    assert judge("Pod", pod({"securityContext": {"runAsUser": 1}, "containers": [c("a")]})).warnings == ()


# --- updates --------------------------------------------------------------------------------------


def test_metadata_update_of_a_legacy_pod_is_allowed() -> None:
    old = pod({"nodeSelector": WIN_SELECTOR, "containers": [c("a"), c("b")]})
    new = copy.deepcopy(old)
    new["metadata"]["finalizers"] = []
    new["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    verdict = judge("Pod", new, operation="UPDATE", old_object=old)
    assert verdict.allowed
    assert verdict.reason is Reason.UNCHANGED


def test_gated_pod_gaining_a_windows_selector_is_judged() -> None:
    old = pod({"schedulingGates": [{"name": "g"}], "containers": [c("a"), c("b")]})
    new = copy.deepcopy(old)
    new["spec"]["nodeSelector"] = WIN_SELECTOR
    assert not judge("Pod", new, operation="UPDATE", old_object=old).allowed


def test_workload_update_judged_only_when_the_template_changes() -> None:
    old = wrap("Deployment", {"nodeSelector": WIN_SELECTOR, "containers": [c("a"), c("b")]})
    scaled = copy.deepcopy(old)
    scaled["spec"]["replicas"] = 5
    assert judge("Deployment", scaled, operation="UPDATE", old_object=old).reason is Reason.UNCHANGED
    restarted = copy.deepcopy(old)
    restarted["spec"]["template"]["metadata"]["annotations"] = {"kubectl.kubernetes.io/restartedAt": "now"}
    assert not judge("Deployment", restarted, operation="UPDATE", old_object=old).allowed


def test_cronjob_update_compares_the_job_template() -> None:
    old = wrap("CronJob", {"nodeSelector": WIN_SELECTOR, "containers": [c("a")]})
    new = copy.deepcopy(old)
    new["spec"]["schedule"] = "0 * * * *"
    assert judge("CronJob", new, operation="UPDATE", old_object=old).reason is Reason.UNCHANGED
    new["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"].append(c("b"))
    assert not judge("CronJob", new, operation="UPDATE", old_object=old).allowed


# --- properties -----------------------------------------------------------------------------------

names = st.text(alphabet="abcdefghijklmnopqrstuvwxyz", min_size=1, max_size=6)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=12,
)
spec_keys = st.sampled_from(
    [
        "os",
        "nodeSelector",
        "affinity",
        "nodeName",
        "containers",
        "initContainers",
        "ephemeralContainers",
        "securityContext",
        "hostNetwork",
    ]
)


# Generation of nested JSON is slow on a loaded machine; the property is cheap, so let it take its time.
@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
@given(
    spec=st.dictionaries(spec_keys, json_values, max_size=6),
    kind=st.sampled_from(sorted(policy.POD_SPEC_PATHS)),
)
def test_judge_never_raises_on_any_json(spec: dict[str, Any], kind: str) -> None:
    verdict = judge(kind, wrap(kind, spec), windows_nodes={"a"})
    assert verdict.allowed or verdict.message


@st.composite
def windows_pod_specs(draw: st.DrawFn) -> dict[str, Any]:
    container_names = draw(st.lists(names, min_size=1, max_size=6, unique=True))
    n_apps = draw(st.integers(1, len(container_names)))
    apps, inits = container_names[:n_apps], container_names[n_apps:]
    spec: dict[str, Any] = {
        "nodeSelector": WIN_SELECTOR,
        "containers": [c(n) for n in apps],
        "initContainers": [c(n, restartPolicy="Always") if draw(st.booleans()) else c(n) for n in inits],
    }
    return spec


@settings(max_examples=200)
@given(spec=windows_pod_specs(), kind=st.sampled_from(sorted(policy.POD_SPEC_PATHS)))
def test_denied_exactly_when_more_than_one_runs_and_message_names_them(
    spec: dict[str, Any], kind: str
) -> None:
    running = policy.running_containers(spec)
    verdict = judge(kind, wrap(kind, spec))
    assert verdict.allowed == (len(running) <= 1)
    if not verdict.allowed:
        assert f"{kind.lower()} default/web" in verdict.message
        assert f"({', '.join(r.name for r in running)})" in verdict.message
        for extra in running[1:]:
            assert f" {extra.name} " in verdict.message or f" {extra.name}," in verdict.message


def test_subject_describe() -> None:
    assert Subject("ReplicationController", "ns", "rc").describe() == "replicationcontroller ns/rc"
    assert Subject("Pod", "", "p").describe() == "pod p"
