"""The one-container rule as a site policy softened while a site migrates: in Warn mode kubectl prints
the refusal as a warning and the pod is created; in Audit mode the pod is created and the refusal is
an annotation of its audit event. Both layers follow the mode: the policy (its binding's
validationActions) for what the spec says, the webhook for pods pinned to a Windows node by name."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from winnode.admission import config, policy
from winnode.testing.admission import AdmissionEnv, SyncApi, install, pod_object, wait_for, windows_node
from winnode.testing.cluster import ControlPlane

WIN = {"kubernetes.io/os": "windows"}
TWO = [{"name": "app", "image": "busybox"}, {"name": "log-shipper", "image": "busybox"}]


pod = pod_object


@pytest.fixture(scope="module", params=[policy.Mode.WARN, policy.Mode.AUDIT], ids=["Warn", "Audit"])
def env(
    request: pytest.FixtureRequest, control_plane: ControlPlane, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[AdmissionEnv]:
    mode: policy.Mode = request.param
    api = SyncApi.from_kubeconfig(control_plane.kubeconfig)
    suffix = uuid.uuid4().hex[:6]
    workdir = tmp_path_factory.mktemp(f"admission-{mode.value.lower()}")
    e = AdmissionEnv(api, suffix, workdir, mode=mode)
    try:
        user = f"system:serviceaccount:adm-sys-{suffix}:{config.SERVICE_ACCOUNT}"
        kubeconfig = control_plane.user_kubeconfig(user, ["system:serviceaccounts"])
        e = install(api, suffix, workdir, kubeconfig, mode=mode, nodes=[windows_node(f"adm-{suffix}-win")])
        yield e
    finally:
        if e.webhook is not None:
            e.webhook.stop()
        e.teardown()
        api.close()


def apply(cp: ControlPlane, obj: dict[str, Any], *extra: str) -> tuple[int, str, str]:
    result = cp.kubectl("apply", "-f", "-", *extra, input=json.dumps(obj), check=False)
    return result.returncode, result.stdout, result.stderr


def audit_annotations(log: Path, namespace: str, name: str) -> dict[str, str]:
    """Annotations of the audit events of creating pod namespace/name, merged."""
    out: dict[str, str] = {}
    if not log.exists():
        return out
    for line in log.read_text(errors="replace").splitlines():
        if f'"namespace":"{namespace}"' not in line or f'"name":"{name}"' not in line:
            continue
        event = json.loads(line)
        ref = event.get("objectRef") or {}
        if event.get("verb") == "create" and ref.get("name") == name and not ref.get("subresource"):
            out.update(event.get("annotations") or {})
    return out


def policy_in_force(cp: ControlPlane, env: AdmissionEnv) -> None:
    """Bindings take effect when the apiserver's informers see them: wait for the first softened answer."""
    counter = iter(range(10_000))

    def softened() -> bool:
        name = f"probe-{next(counter)}"
        code, _, err = apply(
            cp, pod(name, env.namespace, {"nodeSelector": WIN, "containers": TWO}), "--dry-run=server"
        )
        if env.mode is policy.Mode.WARN:
            return code == 0 and "ValidatingAdmissionPolicy" in err
        return code == 0 and any(
            "validation_failure" in k for k in audit_annotations(cp.audit_log_path, env.namespace, name)
        )

    wait_for(softened, f"policy binding in {env.mode.value} mode")


def test_definite_two_container_pod_is_created_and_the_policy_says_why(
    control_plane: ControlPlane, env: AdmissionEnv
) -> None:
    policy_in_force(control_plane, env)
    code, out, err = apply(control_plane, pod("web", env.namespace, {"nodeSelector": WIN, "containers": TWO}))
    print(f"$ kubectl apply -f web.yaml   # mode {env.mode.value}\n{err}{out}")
    assert code == 0, err
    assert "pod/web created" in out
    message = (
        f"pod {env.namespace}/web runs 2 containers at once on Windows (app, log-shipper); {policy.WHY}: "
        "move log-shipper into its own pod. It targets Windows because its nodeSelector sets kubernetes.io/os=windows."
    )
    if env.mode is policy.Mode.WARN:
        assert (
            f"Warning: Validation failed for ValidatingAdmissionPolicy 'winnode-one-container-{env.suffix}'"
            in err
        )
        assert message in err
    else:
        assert "Warning" not in err
        annotations = wait_for(
            lambda: audit_annotations(control_plane.audit_log_path, env.namespace, "web"),
            "audit event of pod web",
        )
        failures = json.loads(annotations["validation.policy.admission.k8s.io/validation_failure"])
        assert failures[0]["message"] == message
        assert failures[0]["validationActions"] == ["Audit"]
    assert control_plane.kubectl("get", "pod", "web", "-n", env.namespace, check=False).returncode == 0


def test_pod_pinned_by_name_is_created_and_the_webhook_says_why(
    control_plane: ControlPlane, env: AdmissionEnv
) -> None:
    spec = {"nodeName": f"adm-{env.suffix}-win", "containers": TWO}
    code, out, err = apply(control_plane, pod("pinned", env.namespace, spec))
    print(f"$ kubectl apply -f pinned.yaml   # mode {env.mode.value}\n{err}{out}")
    assert code == 0, err
    assert "pod/pinned created" in out
    message = (
        f"pod {env.namespace}/pinned runs 2 containers at once on Windows (app, log-shipper); {policy.WHY}: "
        f"move log-shipper into its own pod. It targets Windows because its nodeName adm-{env.suffix}-win is a Windows node."
    )
    if env.mode is policy.Mode.WARN:
        assert f"Warning: {message}" in err
    else:
        assert "Warning" not in err
        key = f"{config.NODE_NAMES_WEBHOOK_NAME}/{policy.AUDIT_KEY}"
        annotations = wait_for(
            lambda: audit_annotations(control_plane.audit_log_path, env.namespace, "pinned").get(key),
            "audit annotation from the webhook",
        )
        assert annotations == message
    assert env.webhook is not None
    metrics = env.webhook.metrics(env.ca_context())
    label = "warned" if env.mode is policy.Mode.WARN else "audited"
    assert (
        metrics[f"winnode_webhook_decisions_total{{kind=Pod,reason=TooManyContainers,verdict={label}}}"] >= 1
    )
