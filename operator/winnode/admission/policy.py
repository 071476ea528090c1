"""Which pods may run on Windows: one container at a time, and no Linux-only fields that Windows ignores.

Pure functions over the JSON dicts the API serves; no I/O. The webhook (server.py) calls `judge`; the
ValidatingAdmissionPolicy built in config.py states the same rule in CEL, and a test drives both
through the real apiserver to keep them in agreement, down to the wording of the message.

Why one container: Windows containers cannot share a network namespace, so the containers of a pod
cannot talk over localhost the way Linux pods do. Counted are the containers that run at the same
time: app containers, restartable ("sidecar") init containers and ephemeral containers. Regular init
containers run one after another before the app starts and are fine. HostProcess pods are exempt:
every container of one runs in the host's network namespace, so there is nothing to share.

"Targets Windows", in the order reasons are reported:
1. spec.os.name is windows;
2. nodeSelector has kubernetes.io/os=windows;
3. required node affinity lets the pod onto Windows nodes and onto no Linux node. Every kubelet
   labels its Node kubernetes.io/os with the OS it runs on (and restores the label when it starts),
   and kubelets run on linux and windows only, so a term is judged over those two values: `In`
   admits the values listed, `NotIn` the others, `Exists` both, `DoesNotExist` and `Gt`/`Lt` neither.
   So `NotIn [linux]` counts as Windows: on such a cluster it can only land on a Windows node. A
   term without expressions or fields matches no node (API semantics). Terms are ORed: the pod
   targets Windows when no term admits linux and at least one admits windows. The deprecated
   beta.kubernetes.io/os label is not read.
4. nodeName names a Windows node (the webhook keeps their names from a watch; CEL cannot see it).

Updates: the containers of a pod are immutable, so a pod UPDATE is judged only when it can change the
verdict: the ephemeralcontainers subresource, or nodeSelector/affinity changed (allowed while the pod
has scheduling gates). A workload UPDATE is judged only when its pod template changed. So a
metadata-only update (a finalizer removed during deletion, a label) of an object admitted before
this policy existed is never refused.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

OS_LABEL = "kubernetes.io/os"
WINDOWS = "windows"
LINUX = "linux"
# The node OS values a kubelet can report (see the module docstring, rule 3).
KUBELET_OSES = (LINUX, WINDOWS)

# kind -> where its pod spec lives. Pods are judged themselves, the rest by their pod template.
POD_SPEC_PATHS: Mapping[str, tuple[str, ...]] = {
    "Pod": ("spec",),
    "Deployment": ("spec", "template", "spec"),
    "ReplicaSet": ("spec", "template", "spec"),
    "StatefulSet": ("spec", "template", "spec"),
    "DaemonSet": ("spec", "template", "spec"),
    "Job": ("spec", "template", "spec"),
    "ReplicationController": ("spec", "template", "spec"),
    "CronJob": ("spec", "jobTemplate", "spec", "template", "spec"),
}
EPHEMERAL_SUBRESOURCE = "ephemeralcontainers"

# Fields the apiserver refuses once spec.os.name is windows (validateWindows in
# k8s.io/kubernetes/pkg/apis/core/validation), which the Windows kubelet otherwise ignores.
LINUX_ONLY_POD_SECURITY = (
    "appArmorProfile",
    "seLinuxOptions",
    "seccompProfile",
    "fsGroup",
    "fsGroupChangePolicy",
    "sysctls",
    "runAsUser",
    "runAsGroup",
    "supplementalGroups",
    "supplementalGroupsPolicy",
    "seLinuxChangePolicy",
)
# Refused when set at all, or (the booleans without a pointer) when true.
LINUX_ONLY_POD_FIELDS_SET = ("hostUsers", "shareProcessNamespace")
LINUX_ONLY_POD_FIELDS_TRUE = ("hostPID", "hostIPC")
LINUX_ONLY_CONTAINER_SECURITY = (
    "appArmorProfile",
    "seLinuxOptions",
    "seccompProfile",
    "capabilities",
    "readOnlyRootFilesystem",
    "privileged",
    "allowPrivilegeEscalation",
    "procMount",
    "runAsUser",
    "runAsGroup",
)
# The apiserver truncates a warning past 256 runes; long lists are cut by us, readably.
WARNING_MAX_FIELDS = 4

WHY = "Windows containers cannot share a network namespace, so a Windows pod runs one container"


class Role(StrEnum):
    APP = "app"
    SIDECAR = "sidecar"  # init container with restartPolicy Always: runs alongside the app
    EPHEMERAL = "ephemeral"


class Reason(StrEnum):
    """Why a verdict came out as it did (metrics label and test handle; the message is for humans)."""

    NOT_WINDOWS = "NotWindows"
    ONE_CONTAINER = "OneContainer"
    HOST_PROCESS = "HostProcess"
    UNCHANGED = "UpdateUnchanged"
    NOT_JUDGED = "NotJudged"  # a kind or operation this policy has no opinion on
    TOO_MANY_CONTAINERS = "TooManyContainers"


@dataclass(frozen=True)
class RunningContainer:
    name: str
    role: Role


@dataclass(frozen=True)
class Subject:
    """The object a message is about."""

    kind: str
    namespace: str
    name: str

    def describe(self) -> str:
        where = f"{self.namespace}/{self.name}" if self.namespace else self.name
        return f"{self.kind.lower()} {where}"


@dataclass(frozen=True)
class Verdict:
    allowed: bool
    reason: Reason
    message: str = ""
    warnings: tuple[str, ...] = field(default=())


# --- reading JSON defensively: the webhook may be handed anything ---------------------------------


def _dict(value: object) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _list(value: object) -> list[Any]:
    return value if isinstance(value, list) else []


def _str(value: object) -> str:
    return value if isinstance(value, str) else ""


def _dig(obj: object, path: Sequence[str]) -> object:
    for key in path:
        if not isinstance(obj, dict):
            return None
        obj = obj.get(key)
    return obj


def pod_spec_of(kind: str, obj: Mapping[str, Any]) -> dict[str, Any] | None:
    """The pod spec a `kind` object runs, or None for a kind we do not judge or a missing template."""
    path = POD_SPEC_PATHS.get(kind)
    if path is None:
        return None
    spec = _dig(obj, path)
    return spec if isinstance(spec, dict) else None


# --- targeting ------------------------------------------------------------------------------------


def term_admits(term: Mapping[str, Any], os_value: str) -> bool:
    """Whether a nodeSelectorTerm admits a node labelled kubernetes.io/os=`os_value`."""
    expressions = _list(term.get("matchExpressions"))
    if not expressions and not _list(term.get("matchFields")):
        return False
    for raw in expressions:
        expr = _dict(raw)
        if _str(expr.get("key")) != OS_LABEL:
            continue
        operator = _str(expr.get("operator"))
        values = _list(expr.get("values"))
        if operator == "In":
            ok = os_value in values
        elif operator == "NotIn":
            ok = os_value not in values
        else:
            ok = operator == "Exists"
        if not ok:
            return False
    return True


def affinity_admits_only_windows(spec: Mapping[str, Any]) -> bool:
    terms = [
        _dict(t)
        for t in _list(
            _dig(
                spec,
                (
                    "affinity",
                    "nodeAffinity",
                    "requiredDuringSchedulingIgnoredDuringExecution",
                    "nodeSelectorTerms",
                ),
            )
        )
    ]
    if not terms:
        return False
    return not any(term_admits(t, LINUX) for t in terms) and any(term_admits(t, WINDOWS) for t in terms)


def windows_reason(spec: Mapping[str, Any], windows_nodes: Collection[str] = ()) -> str | None:
    """Why this pod spec targets Windows (a clause for a message), or None when it does not."""
    if _str(_dig(spec, ("os", "name"))) == WINDOWS:
        return "spec.os.name is windows"
    if _str(_dict(spec.get("nodeSelector")).get(OS_LABEL)) == WINDOWS:
        return f"its nodeSelector sets {OS_LABEL}={WINDOWS}"
    if affinity_admits_only_windows(spec):
        return f"its required node affinity admits only {OS_LABEL}={WINDOWS} nodes"
    node_name = _str(spec.get("nodeName"))
    if node_name and node_name in windows_nodes:
        return f"its nodeName {node_name} is a Windows node"
    return None


def is_host_process(spec: Mapping[str, Any]) -> bool:
    """A HostProcess pod. The apiserver makes every container of one agree (all or none), so the pod
    setting and the app containers tell."""
    if _dig(spec, ("securityContext", "windowsOptions", "hostProcess")) is True:
        return True
    return any(
        _dig(c, ("securityContext", "windowsOptions", "hostProcess")) is True
        for c in _list(spec.get("containers"))
    )


def running_containers(spec: Mapping[str, Any]) -> list[RunningContainer]:
    """The containers that run at the same time: apps, then sidecars, then ephemeral containers."""
    out = [RunningContainer(_str(_dict(c).get("name")), Role.APP) for c in _list(spec.get("containers"))]
    out += [
        RunningContainer(_str(_dict(c).get("name")), Role.SIDECAR)
        for c in _list(spec.get("initContainers"))
        if _str(_dict(c).get("restartPolicy")) == "Always"
    ]
    out += [
        RunningContainer(_str(_dict(c).get("name")), Role.EPHEMERAL)
        for c in _list(spec.get("ephemeralContainers"))
    ]
    return out


def _names(containers: Sequence[RunningContainer]) -> str:
    return ", ".join(c.name for c in containers)


def fixes(running: Sequence[RunningContainer]) -> list[str]:
    """How to get down to one container: the first app container stays, the others go."""
    apps = [c for c in running if c.role is Role.APP]
    extra_apps = apps[1:]
    sidecars = [c for c in running if c.role is Role.SIDECAR]
    ephemeral = [c for c in running if c.role is Role.EPHEMERAL]
    out = []
    if extra_apps:
        out.append(
            f"move {_names(extra_apps)} into " + ("its own pod" if len(extra_apps) == 1 else "their own pods")
        )
    if sidecars:
        if len(sidecars) == 1:
            out.append(
                f"make {_names(sidecars)} a regular (non-restartable) init container or move it into its own pod"
            )
        else:
            out.append(
                f"make {_names(sidecars)} regular (non-restartable) init containers or move them into their own pods"
            )
    if ephemeral:
        noun = "ephemeral container" if len(ephemeral) == 1 else "ephemeral containers"
        out.append(f"debug from a separate pod on the same node instead of adding {noun} {_names(ephemeral)}")
    return out


def too_many_message(subject: Subject, running: Sequence[RunningContainer], reason: str) -> str:
    """The denial message. config.py builds the CEL messageExpression to produce the same text."""
    runs = "runs" if subject.kind == "Pod" else "has a pod template that runs"
    return (
        f"{subject.describe()} {runs} {len(running)} containers at once on Windows ({_names(running)}); "
        f"{WHY}: {'; '.join(fixes(running))}. It targets Windows because {reason}."
    )


def linux_only_fields(spec: Mapping[str, Any]) -> list[str]:
    """Paths of set fields the apiserver refuses for spec.os.name windows (Windows ignores them)."""
    found = []
    pod_sc = _dict(spec.get("securityContext"))
    found += [f"spec.securityContext.{f}" for f in LINUX_ONLY_POD_SECURITY if pod_sc.get(f) not in (None, [])]
    found += [f"spec.{f}" for f in LINUX_ONLY_POD_FIELDS_SET if spec.get(f) is not None]
    found += [f"spec.{f}" for f in LINUX_ONLY_POD_FIELDS_TRUE if spec.get(f) is True]
    for group in ("initContainers", "containers", "ephemeralContainers"):
        for raw in _list(spec.get(group)):
            c = _dict(raw)
            sc = _dict(c.get("securityContext"))
            found += [
                f"spec.{group}[{_str(c.get('name'))}].securityContext.{f}"
                for f in LINUX_ONLY_CONTAINER_SECURITY
                if sc.get(f) is not None
            ]
    return found


def warnings_for(spec: Mapping[str, Any], subject: Subject) -> list[str]:
    """Advice for a pod that targets Windows; never a reason to refuse it."""
    out = []
    if _str(_dig(spec, ("os", "name"))) != WINDOWS:
        fields = linux_only_fields(spec)
        if fields:
            shown = ", ".join(fields[:WARNING_MAX_FIELDS])
            more = f" and {len(fields) - WARNING_MAX_FIELDS} more" if len(fields) > WARNING_MAX_FIELDS else ""
            out.append(
                f"{subject.describe()} targets Windows but sets Linux-only {shown}{more}: Windows ignores "
                "them; set spec.os.name: windows to have them refused, use securityContext.windowsOptions"
            )
    if spec.get("hostNetwork") is True and not is_host_process(spec):
        out.append(
            f"{subject.describe()} targets Windows with hostNetwork but is not a HostProcess pod: Windows "
            "runs only HostProcess pods on the host network (securityContext.windowsOptions.hostProcess)"
        )
    return out


def judge_pod_spec(spec: Mapping[str, Any], subject: Subject, windows_nodes: Collection[str] = ()) -> Verdict:
    reason = windows_reason(spec, windows_nodes)
    if reason is None:
        return Verdict(True, Reason.NOT_WINDOWS)
    warnings = tuple(warnings_for(spec, subject))
    if is_host_process(spec):
        return Verdict(True, Reason.HOST_PROCESS, warnings=warnings)
    running = running_containers(spec)
    if len(running) <= 1:
        return Verdict(True, Reason.ONE_CONTAINER, warnings=warnings)
    return Verdict(False, Reason.TOO_MANY_CONTAINERS, too_many_message(subject, running, reason), warnings)


# --- whole objects and updates --------------------------------------------------------------------


def update_is_relevant(
    kind: str, obj: Mapping[str, Any], old: Mapping[str, Any] | None, sub_resource: str = ""
) -> bool:
    """Whether an UPDATE can change the verdict (see the module docstring)."""
    if old is None:
        return True
    if kind == "Pod":
        if sub_resource == EPHEMERAL_SUBRESOURCE:
            return True
        new_spec, old_spec = _dict(obj.get("spec")), _dict(old.get("spec"))
        return any(new_spec.get(k) != old_spec.get(k) for k in ("nodeSelector", "affinity"))
    path = POD_SPEC_PATHS.get(kind)
    if path is None:
        return False
    template = path[:-1]
    return _dig(obj, template) != _dig(old, template)


def judge(
    kind: str,
    obj: Mapping[str, Any],
    *,
    operation: str = "CREATE",
    old_object: Mapping[str, Any] | None = None,
    sub_resource: str = "",
    namespace: str = "",
    name: str = "",
    windows_nodes: Collection[str] = (),
) -> Verdict:
    """The verdict on an admission request for `obj` of `kind` (CREATE or UPDATE).

    `namespace` and `name` are the request's, used when the object's metadata lacks them.
    """
    if operation not in ("CREATE", "UPDATE"):
        return Verdict(True, Reason.NOT_JUDGED)
    if sub_resource not in ("", EPHEMERAL_SUBRESOURCE) or (sub_resource and kind != "Pod"):
        return Verdict(True, Reason.NOT_JUDGED)
    spec = pod_spec_of(kind, obj)
    if spec is None:
        return Verdict(True, Reason.NOT_JUDGED)
    if operation == "UPDATE" and not update_is_relevant(kind, obj, old_object, sub_resource):
        return Verdict(True, Reason.UNCHANGED)
    meta = _dict(obj.get("metadata"))
    subject = Subject(kind, _str(meta.get("namespace")) or namespace, _str(meta.get("name")) or name)
    return judge_pod_spec(spec, subject, windows_nodes)
