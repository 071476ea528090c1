"""Which pods may run on Windows: one container at a time, and no Linux-only fields that Windows ignores.

Pure functions over the JSON dicts the API serves; no I/O. The webhook (server.py) calls `judge`; the
ValidatingAdmissionPolicy built in config.py states the same rule in CEL, and a test drives both
through the real apiserver to keep them in agreement, down to the wording of the message.

Why one container: Windows containers cannot share a network namespace, so the containers of a pod
cannot talk over localhost the way Linux pods do. Counted are the containers that run at the same
time: app containers, restartable ("sidecar") init containers and ephemeral containers. Regular init
containers run one after another before the app starts and are fine. HostProcess pods are exempt:
every container of one runs in the host's network namespace, so there is nothing to share.

"Targets Windows", in the order reasons are reported. The first three are "definite": the pod spec
alone says it, so the CEL policy (config.py) judges them inside the apiserver as well. The last needs
the cluster's Windows nodes, which only the webhook knows (from a watch):
1. spec.os.name is windows;
2. nodeSelector sets a label only a Windows node carries: kubernetes.io/os=windows, the legacy
   beta.kubernetes.io/os=windows, or node.kubernetes.io/windows-build (any value);
3. required node affinity lets the pod onto Windows nodes and onto no Linux node. Every kubelet labels
   its Node kubernetes.io/os and beta.kubernetes.io/os with the OS it runs on (and restores them when it
   starts; pkg/kubelet/kubelet_node_status.go), and only a Windows kubelet sets
   node.kubernetes.io/windows-build (pkg/kubelet/kubelet_node_status_windows.go). Kubelets run on linux
   and windows only, so a term is judged over those two kinds of node: for the OS labels `In` admits
   the values listed, `NotIn` the others, `Exists` both, `DoesNotExist` and `Gt`/`Lt` neither; for the
   build label a Linux node has none (`NotIn`, `DoesNotExist`) and a Windows node some build (`In`,
   `NotIn`, `Exists`); other keys and matchFields constrain both kinds alike. A term without
   expressions or fields matches no node (API semantics). Terms are ORed: the pod targets Windows when
   no term admits linux and at least one admits windows. So `NotIn [linux]` counts as Windows: on such
   a cluster it can only land on a Windows node.
4. it is pinned by name to Windows nodes only: spec.nodeName names a Windows node; nodeSelector
   kubernetes.io/hostname is a Windows node's; or every required node-affinity term names nodes
   (matchFields metadata.name In, or kubernetes.io/hostname In) and all of them are Windows nodes.
   A `pods/binding` of a pod to a Windows node (the scheduler's, or anyone's) is judged by the pod it
   binds, looked up by the webhook.

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
BETA_OS_LABEL = "beta.kubernetes.io/os"
OS_LABELS = (OS_LABEL, BETA_OS_LABEL)
# Set by the kubelet on Windows only (pkg/kubelet/kubelet_node_status_windows.go).
WINDOWS_BUILD_LABEL = "node.kubernetes.io/windows-build"
HOSTNAME_LABEL = "kubernetes.io/hostname"
NAME_FIELD = "metadata.name"
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
BINDING_SUBRESOURCE = "binding"

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


class Mode(StrEnum):
    """How the one-container rule is enforced: a site policy admins can soften while they migrate."""

    DENY = "Deny"  # refuse the object (default)
    WARN = "Warn"  # admit it; the client is shown the message as a warning
    AUDIT = "Audit"  # admit it; the message goes into the audit event as an annotation


# The audit annotation key (the apiserver prefixes it with the webhook's name).
AUDIT_KEY = "one-container"


@dataclass(frozen=True)
class Verdict:
    allowed: bool
    reason: Reason
    message: str = ""
    warnings: tuple[str, ...] = field(default=())
    audit_annotations: tuple[tuple[str, str], ...] = field(default=())
    # Set when the mode turned a refusal into an admission.
    softened: Mode | None = None


def apply_mode(verdict: Verdict, mode: Mode) -> Verdict:
    """The verdict under `mode`: Warn and Audit admit what Deny refuses, and say so."""
    if verdict.allowed or mode is Mode.DENY:
        return verdict
    if mode is Mode.WARN:
        return Verdict(
            True, verdict.reason, warnings=(*verdict.warnings, verdict.message), softened=Mode.WARN
        )
    return Verdict(
        True,
        verdict.reason,
        warnings=verdict.warnings,
        audit_annotations=((AUDIT_KEY, verdict.message),),
        softened=Mode.AUDIT,
    )


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


def expression_admits(expr: Mapping[str, Any], os_value: str) -> bool:
    """Whether a node of `os_value` (linux or windows) can satisfy one nodeSelectorRequirement."""
    key = _str(expr.get("key"))
    operator = _str(expr.get("operator"))
    values = _list(expr.get("values"))
    if key in OS_LABELS:
        if operator == "In":
            return os_value in values
        if operator == "NotIn":
            return os_value not in values
        return operator == "Exists"
    if key == WINDOWS_BUILD_LABEL:
        if os_value == WINDOWS:
            return operator in ("NotIn", "Exists") or (operator == "In" and bool(values))
        return operator in ("NotIn", "DoesNotExist")
    return True


def term_admits(term: Mapping[str, Any], os_value: str) -> bool:
    """Whether a nodeSelectorTerm admits some node of `os_value` (module docstring, rule 3)."""
    expressions = _list(term.get("matchExpressions"))
    if not expressions and not _list(term.get("matchFields")):
        return False
    return all(expression_admits(_dict(raw), os_value) for raw in expressions)


def _required_terms(spec: Mapping[str, Any]) -> list[dict[str, Any]]:
    return [
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


def affinity_admits_only_windows(spec: Mapping[str, Any]) -> bool:
    terms = _required_terms(spec)
    if not terms:
        return False
    return not any(term_admits(t, LINUX) for t in terms) and any(term_admits(t, WINDOWS) for t in terms)


def selector_reason(spec: Mapping[str, Any]) -> str | None:
    """The nodeSelector label, if any, that only a Windows node carries."""
    selector = _dict(spec.get("nodeSelector"))
    for key in OS_LABELS:
        if _str(selector.get(key)) == WINDOWS:
            return f"its nodeSelector sets {key}={WINDOWS}"
    if WINDOWS_BUILD_LABEL in selector:
        return f"its nodeSelector sets {WINDOWS_BUILD_LABEL}={_str(selector.get(WINDOWS_BUILD_LABEL))}"
    return None


@dataclass(frozen=True)
class WindowsNodeNames:
    """What the webhook knows of the cluster's Windows nodes: their names and kubernetes.io/hostname
    labels (normally the same; --hostname-override makes them differ)."""

    names: frozenset[str] = frozenset()
    hostnames: frozenset[str] = frozenset()

    @classmethod
    def of(cls, nodes: Collection[str] | WindowsNodeNames) -> WindowsNodeNames:
        if isinstance(nodes, WindowsNodeNames):
            return nodes
        return cls(frozenset(nodes), frozenset(nodes))


def _term_pins_to_windows(term: Mapping[str, Any], nodes: WindowsNodeNames) -> bool:
    """A term that names its nodes (by metadata.name or hostname, operator In) and names only Windows ones."""
    pinned = False
    for raw in _list(term.get("matchFields")):
        req = _dict(raw)
        if _str(req.get("key")) == NAME_FIELD and _str(req.get("operator")) == "In":
            values = [_str(v) for v in _list(req.get("values"))]
            if not values or not set(values) <= nodes.names:
                return False
            pinned = True
    for raw in _list(term.get("matchExpressions")):
        req = _dict(raw)
        if _str(req.get("key")) == HOSTNAME_LABEL and _str(req.get("operator")) == "In":
            values = [_str(v) for v in _list(req.get("values"))]
            if not values or not set(values) <= nodes.hostnames:
                return False
            pinned = True
    return pinned


def name_reason(spec: Mapping[str, Any], nodes: WindowsNodeNames) -> str | None:
    """Why the pod is pinned by name to Windows nodes only (module docstring, rule 4), or None."""
    node_name = _str(spec.get("nodeName"))
    if node_name and node_name in nodes.names:
        return f"its nodeName {node_name} is a Windows node"
    hostname = _str(_dict(spec.get("nodeSelector")).get(HOSTNAME_LABEL))
    if hostname and hostname in nodes.hostnames:
        return f"its nodeSelector pins it to Windows node {hostname} ({HOSTNAME_LABEL})"
    terms = _required_terms(spec)
    if terms and all(_term_pins_to_windows(t, nodes) for t in terms):
        return "its required node affinity names only Windows nodes"
    return None


def definite_reason(spec: Mapping[str, Any]) -> str | None:
    """Why the pod spec alone targets Windows (rules 1-3, what the CEL policy sees too), or None."""
    if _str(_dig(spec, ("os", "name"))) == WINDOWS:
        return "spec.os.name is windows"
    if (reason := selector_reason(spec)) is not None:
        return reason
    if affinity_admits_only_windows(spec):
        return f"its required node affinity admits only {OS_LABEL}={WINDOWS} nodes"
    return None


def windows_reason(
    spec: Mapping[str, Any], windows_nodes: Collection[str] | WindowsNodeNames = ()
) -> str | None:
    """Why this pod spec targets Windows (a clause for a message), or None when it does not."""
    reason = definite_reason(spec)
    if reason is None:
        reason = name_reason(spec, WindowsNodeNames.of(windows_nodes))
    return reason


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


def judge_pod_spec(
    spec: Mapping[str, Any],
    subject: Subject,
    windows_nodes: Collection[str] | WindowsNodeNames = (),
    *,
    reason: str | None = None,
) -> Verdict:
    """The verdict on one pod spec; `reason` says it targets Windows when the caller already knows why."""
    reason = reason or windows_reason(spec, windows_nodes)
    if reason is None:
        return Verdict(True, Reason.NOT_WINDOWS)
    warnings = tuple(warnings_for(spec, subject))
    if is_host_process(spec):
        return Verdict(True, Reason.HOST_PROCESS, warnings=warnings)
    running = running_containers(spec)
    if len(running) <= 1:
        return Verdict(True, Reason.ONE_CONTAINER, warnings=warnings)
    return Verdict(False, Reason.TOO_MANY_CONTAINERS, too_many_message(subject, running, reason), warnings)


def binding_target(obj: Mapping[str, Any]) -> str:
    """The node a Binding (pods/binding) places its pod on."""
    target = _dict(obj.get("target"))
    return _str(target.get("name")) if _str(target.get("kind")) in ("", "Node") else ""


def judge_binding(
    binding: Mapping[str, Any],
    pod: Mapping[str, Any] | None,
    windows_nodes: Collection[str] | WindowsNodeNames,
    *,
    namespace: str = "",
    name: str = "",
) -> Verdict:
    """A pod being bound to a node: judged by the pod it binds when that node runs Windows.

    `pod` is None when the webhook could not read it; then the binding is let through (the entry that
    sends bindings here fails open too) and the caller says so in its log.
    """
    node = binding_target(binding)
    nodes = WindowsNodeNames.of(windows_nodes)
    if not node or node not in nodes.names:
        return Verdict(True, Reason.NOT_WINDOWS)
    if pod is None:
        return Verdict(True, Reason.NOT_JUDGED)
    meta = _dict(pod.get("metadata"))
    subject = Subject("Pod", _str(meta.get("namespace")) or namespace, _str(meta.get("name")) or name)
    return judge_pod_spec(
        _dict(pod.get("spec")), subject, nodes, reason=f"it is being bound to Windows node {node}"
    )


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
    windows_nodes: Collection[str] | WindowsNodeNames = (),
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
