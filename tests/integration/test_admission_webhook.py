"""The admission webhook and policy through the real apiserver: `winnode webhook` runs on loopback as a
separate process, with the shipped RBAC (as its service account), our webhook configuration (URL form)
and the ValidatingAdmissionPolicy, all limited to this module's labelled namespace."""

from __future__ import annotations

import json
import ssl
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from winnode.admission import config
from winnode.testing.admission import (
    API_VERSIONS,
    AdmissionEnv,
    SyncApi,
    collection_path,
    denial_message,
    free_port,
    wait_for,
)
from winnode.testing.cluster import ControlPlane

WIN = {"kubernetes.io/os": "windows"}
WORKLOAD_KINDS = [
    "Deployment",
    "ReplicaSet",
    "StatefulSet",
    "DaemonSet",
    "Job",
    "CronJob",
    "ReplicationController",
]


def container(name: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "image": "mcr.microsoft.com/windows/nanoserver:ltsc2022", **extra}


def pod(name: str, namespace: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    }


def workload(kind: str, name: str, namespace: str, spec: dict[str, Any]) -> dict[str, Any]:
    labels = {"app": name}
    restart = "Never" if kind in ("Job", "CronJob") else "Always"
    template = {"metadata": {"labels": labels}, "spec": {"restartPolicy": restart, **spec}}
    body: dict[str, Any]
    if kind == "CronJob":
        body = {"schedule": "0 0 * * *", "jobTemplate": {"spec": {"template": template}}}
    elif kind == "Job":
        body = {"template": template}
    elif kind == "ReplicationController":
        body = {"replicas": 0, "selector": labels, "template": template}
    else:
        body = {"selector": {"matchLabels": labels}, "template": template}
        if kind != "DaemonSet":
            body["replicas"] = 0
        if kind == "StatefulSet":
            body["serviceName"] = name
    return {
        "apiVersion": API_VERSIONS[kind],
        "kind": kind,
        "metadata": {"name": name, "namespace": namespace},
        "spec": body,
    }


@pytest.fixture(scope="module")
def env(control_plane: ControlPlane, tmp_path_factory: pytest.TempPathFactory) -> Iterator[AdmissionEnv]:
    api = SyncApi.from_kubeconfig(control_plane.kubeconfig)
    e = AdmissionEnv(api, uuid.uuid4().hex[:6], tmp_path_factory.mktemp("admission"))
    try:
        e.setup_namespaces()
        e.setup_rbac()
        e.setup_policy()
        port = free_port()
        e.setup_webhook_config(port)
        # Least privilege: the webhook runs as its service account with only the shipped RBAC.
        kubeconfig = control_plane.user_kubeconfig(e.service_account_user, ["system:serviceaccounts"])
        e.webhook = e.start_webhook(kubeconfig, port=port)
        e.create(
            {"apiVersion": "v1", "kind": "Node", "metadata": {"name": f"adm-{e.suffix}-win", "labels": WIN}}
        )
        e.create(
            {
                "apiVersion": "v1",
                "kind": "Node",
                "metadata": {"name": f"adm-{e.suffix}-lin", "labels": {"kubernetes.io/os": "linux"}},
            }
        )
        # The apiserver acts on new admission objects after its informers see them; the webhook needs to
        # have seen the Windows node. Wait for all three.
        wait_for(
            lambda: (
                _status(
                    e, pod("probe", e.namespace, {"os": {"name": "windows"}, "containers": [container("a")]})
                )
                == 201
            ),
            "webhook admits",
        )
        wait_for(
            lambda: (
                _status(
                    e,
                    pod(
                        "probe",
                        e.namespace,
                        {"os": {"name": "windows"}, "containers": [container("a"), container("b")]},
                    ),
                )
                == 403
            ),
            "policy denies",
        )
        wait_for(
            lambda: (
                _status(
                    e,
                    pod(
                        "probe",
                        e.namespace,
                        {"nodeName": f"adm-{e.suffix}-win", "containers": [container("a"), container("b")]},
                    ),
                )
                == 403
            ),
            "webhook knows the Windows node",
        )
        yield e
    finally:
        if e.webhook is not None:
            e.webhook.stop()
        e.teardown()
        api.close()


def _status(e: AdmissionEnv, obj: dict[str, Any]) -> int:
    return e.dry_run_create(obj)[0]


@pytest.fixture(scope="module")
def ca(env: AdmissionEnv) -> ssl.SSLContext:
    return env.ca_context()


def apply(cp: ControlPlane, obj: dict[str, Any], *extra: str) -> tuple[int, str]:
    result = cp.kubectl("apply", "-f", "-", *extra, input=json.dumps(obj), check=False)
    return result.returncode, result.stdout + result.stderr


def requests_seen(env: AdmissionEnv, ca: ssl.SSLContext) -> float:
    assert env.webhook is not None
    return env.webhook.request_count(ca)


# --- pods -----------------------------------------------------------------------------------------


def test_two_container_windows_pod_denied_with_pod_containers_and_fix(
    control_plane: ControlPlane, env: AdmissionEnv
) -> None:
    obj = pod(
        "web",
        env.namespace,
        {"nodeSelector": WIN, "containers": [container("app"), container("log-shipper")]},
    )
    code, out = apply(control_plane, obj)
    assert code != 0
    assert (
        f"pod {env.namespace}/web runs 2 containers at once on Windows (app, log-shipper); Windows containers cannot "
        "share a network namespace, so a Windows pod runs one container: move log-shipper into its own pod. "
        "It targets Windows because its nodeSelector sets kubernetes.io/os=windows." in out
    )
    assert control_plane.kubectl("get", "pod", "web", "-n", env.namespace, check=False).returncode != 0


def test_one_container_windows_pod_admitted_and_seen_by_the_webhook(
    control_plane: ControlPlane, env: AdmissionEnv, ca: ssl.SSLContext
) -> None:
    before = requests_seen(env, ca)
    obj = pod(
        "single",
        env.namespace,
        {"os": {"name": "windows"}, "nodeSelector": WIN, "containers": [container("app")]},
    )
    code, out = apply(control_plane, obj)
    assert code == 0, out
    assert requests_seen(env, ca) == before + 1


def test_linux_pods_never_reach_the_webhook(
    control_plane: ControlPlane, env: AdmissionEnv, ca: ssl.SSLContext
) -> None:
    before = requests_seen(env, ca)
    two = [container("app"), container("sidecar")]
    linux_specs: list[dict[str, Any]] = [
        {"containers": two},
        {"os": {"name": "linux"}, "containers": two},
        {"nodeSelector": {"kubernetes.io/os": "linux"}, "containers": two},
        {
            "affinity": {
                "nodeAffinity": {
                    "requiredDuringSchedulingIgnoredDuringExecution": {
                        "nodeSelectorTerms": [
                            {
                                "matchExpressions": [
                                    {"key": "kubernetes.io/os", "operator": "In", "values": ["linux"]}
                                ]
                            }
                        ]
                    }
                }
            },
            "containers": two,
        },
    ]
    for i, spec in enumerate(linux_specs):
        code, out = apply(control_plane, pod(f"linux-{i}", env.namespace, spec))
        assert code == 0, out
    code, out = apply(
        control_plane, workload("Deployment", "linux-deploy", env.namespace, {"containers": two})
    )
    assert code == 0, out
    assert requests_seen(env, ca) == before


def test_native_sidecar_counts(control_plane: ControlPlane, env: AdmissionEnv) -> None:
    spec = {
        "os": {"name": "windows"},
        "initContainers": [container("proxy", restartPolicy="Always")],
        "containers": [container("app")],
    }
    code, out = apply(control_plane, pod("sidecar", env.namespace, spec))
    assert code != 0
    assert "runs 2 containers at once on Windows (app, proxy)" in out
    assert "make proxy a regular (non-restartable) init container or move it into its own pod" in out
    # A regular init container runs before the app, never beside it.
    spec["initContainers"] = [container("proxy")]
    code, out = apply(control_plane, pod("sidecar", env.namespace, spec), "--dry-run=server")
    assert code == 0, out


def test_node_name_of_a_windows_node_denied_by_the_webhook(
    control_plane: ControlPlane, env: AdmissionEnv
) -> None:
    spec = {"nodeName": f"adm-{env.suffix}-win", "containers": [container("app"), container("b")]}
    code, out = apply(control_plane, pod("pinned", env.namespace, spec))
    assert code != 0
    assert f'admission webhook "{config.NODE_NAMES_WEBHOOK_NAME}" denied the request' in out
    assert f"pod {env.namespace}/pinned runs 2 containers at once on Windows (app, b)" in out
    assert f"It targets Windows because its nodeName adm-{env.suffix}-win is a Windows node." in out
    # The same pod on a Linux node is fine.
    spec["nodeName"] = f"adm-{env.suffix}-lin"
    code, out = apply(control_plane, pod("pinned", env.namespace, spec), "--dry-run=server")
    assert code == 0, out


def test_linux_only_fields_come_back_as_warnings(control_plane: ControlPlane, env: AdmissionEnv) -> None:
    spec = {
        "nodeName": f"adm-{env.suffix}-win",
        "securityContext": {"runAsUser": 1000},
        "containers": [container("app", securityContext={"privileged": True})],
    }
    code, out = apply(control_plane, pod("warned", env.namespace, spec), "--dry-run=server")
    assert code == 0, out
    assert "Warning: pod " in out
    assert "Linux-only spec.securityContext.runAsUser, spec.containers[app].securityContext.privileged" in out


# --- ephemeral containers -------------------------------------------------------------------------


def test_ephemeral_container_denied_by_the_policy(control_plane: ControlPlane, env: AdmissionEnv) -> None:
    obj = pod(
        "debug-me",
        env.namespace,
        {"os": {"name": "windows"}, "nodeName": f"adm-{env.suffix}-win", "containers": [container("app")]},
    )
    code, out = apply(control_plane, obj)
    assert code == 0, out
    result = control_plane.kubectl(
        "debug",
        "-n",
        env.namespace,
        "debug-me",
        "--image=busybox",
        "--profile=baseline",
        "--container=dbg",
        check=False,
    )
    assert result.returncode != 0
    assert "ValidatingAdmissionPolicy" in result.stderr
    assert "runs 2 containers at once on Windows (app, dbg)" in result.stderr
    assert (
        "debug from a separate pod on the same node instead of adding ephemeral container dbg"
        in result.stderr
    )


def test_ephemeral_container_denied_by_the_webhook_on_a_windows_node(
    control_plane: ControlPlane, env: AdmissionEnv
) -> None:
    # Only the nodeName says Windows: the policy cannot see that, the webhook can.
    obj = pod(
        "debug-node", env.namespace, {"nodeName": f"adm-{env.suffix}-win", "containers": [container("app")]}
    )
    code, out = apply(control_plane, obj)
    assert code == 0, out
    patch = {
        "spec": {"ephemeralContainers": [{"name": "dbg", "image": "busybox", "targetContainerName": "app"}]}
    }
    result = control_plane.kubectl(
        "patch", "pod", "debug-node", "-n", env.namespace, "--subresource=ephemeralcontainers", "--type=strategic",
        "-p", json.dumps(patch), check=False,
    )  # fmt: skip
    assert result.returncode != 0
    assert f'admission webhook "{config.NODE_NAMES_WEBHOOK_NAME}" denied the request' in result.stderr
    assert "instead of adding ephemeral container dbg" in result.stderr


# --- workloads ------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", WORKLOAD_KINDS)
def test_workload_with_two_container_windows_template_denied_at_apply(
    control_plane: ControlPlane, env: AdmissionEnv, kind: str
) -> None:
    name = f"w-{kind.lower()}"
    code, out = apply(
        control_plane,
        workload(
            kind, name, env.namespace, {"nodeSelector": WIN, "containers": [container("app"), container("b")]}
        ),
    )
    assert code != 0
    assert (
        f"{kind.lower()} {env.namespace}/{name} has a pod template that runs 2 containers at once on Windows (app, b)"
        in out
    )
    assert "move b into its own pod" in out
    code, out = apply(
        control_plane,
        workload(kind, name, env.namespace, {"nodeSelector": WIN, "containers": [container("app")]}),
        "--dry-run=server",
    )
    assert code == 0, out


def test_workload_update_judged_when_the_template_changes(
    control_plane: ControlPlane, env: AdmissionEnv
) -> None:
    obj = workload(
        "Deployment", "grows", env.namespace, {"os": {"name": "windows"}, "containers": [container("app")]}
    )
    code, out = apply(control_plane, obj)
    assert code == 0, out
    scaled = control_plane.kubectl(
        "scale", "deployment/grows", "-n", env.namespace, "--replicas=0", check=False
    )
    assert scaled.returncode == 0, scaled.stderr
    obj["spec"]["template"]["spec"]["containers"].append(container("extra"))
    code, out = apply(control_plane, obj)
    assert code != 0
    assert f"deployment {env.namespace}/grows has a pod template that runs 2 containers" in out


def test_gated_pod_cannot_be_steered_onto_windows_later(
    control_plane: ControlPlane, env: AdmissionEnv
) -> None:
    obj = pod(
        "gated",
        env.namespace,
        {"schedulingGates": [{"name": "example.com/wait"}], "containers": [container("a"), container("b")]},
    )
    code, out = apply(control_plane, obj)
    assert code == 0, out
    result = control_plane.kubectl(
        "patch",
        "pod",
        "gated",
        "-n",
        env.namespace,
        "-p",
        json.dumps({"spec": {"nodeSelector": WIN}}),
        check=False,
    )
    assert result.returncode != 0
    assert f"pod {env.namespace}/gated runs 2 containers at once on Windows (a, b)" in result.stderr
    labelled = control_plane.kubectl("label", "pod", "gated", "-n", env.namespace, "team=x", check=False)
    assert labelled.returncode == 0, labelled.stderr


# --- the node watch -------------------------------------------------------------------------------


def test_node_watch_follows_labels(control_plane: ControlPlane, env: AdmissionEnv) -> None:
    name = f"adm-{env.suffix}-flip"
    node = {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name, "labels": {"kubernetes.io/os": "linux"}},
    }
    env.create(node)
    two = pod("flip", env.namespace, {"nodeName": name, "containers": [container("a"), container("b")]})
    assert _status(env, two) == 201
    control_plane.kubectl("label", "node", name, "kubernetes.io/os=windows", "--overwrite")
    wait_for(lambda: _status(env, two) == 403, "webhook sees the relabelled Windows node")
    control_plane.kubectl("delete", "node", name)
    wait_for(lambda: _status(env, two) == 201, "webhook forgets the deleted node")


# --- malformed reviews, straight to the webhook ---------------------------------------------------


@pytest.mark.parametrize(
    ("body", "status", "fragment"),
    [
        (b"{oops", 400, "not JSON"),
        (
            json.dumps(
                {"apiVersion": "admission.k8s.io/v1beta1", "kind": "AdmissionReview", "request": {}}
            ).encode(),
            400,
            "expected apiVersion",
        ),
        (
            json.dumps({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview"}).encode(),
            400,
            "request is missing",
        ),
        (
            json.dumps(
                {
                    "apiVersion": "admission.k8s.io/v1",
                    "kind": "AdmissionReview",
                    "request": {"kind": {"kind": "Pod"}, "operation": "CREATE", "object": {}},
                }
            ).encode(),
            400,
            "request.uid is missing",
        ),
        (
            json.dumps(
                {
                    "apiVersion": "admission.k8s.io/v1",
                    "kind": "AdmissionReview",
                    "request": {"uid": "u", "kind": {"kind": "Pod"}, "operation": "CREATE"},
                }
            ).encode(),
            400,
            "request.object is missing",
        ),
        (b" " * (5 * 1024 * 1024 + 10), 413, "over the limit"),
    ],
)
def test_malformed_reviews_get_4xx(
    env: AdmissionEnv, ca: ssl.SSLContext, body: bytes, status: int, fragment: str
) -> None:
    assert env.webhook is not None
    code, text = env.webhook.post(config.WEBHOOK_PATH, body, ca)
    assert code == status
    assert fragment in json.loads(text)["message"]
    assert env.webhook.get("/healthz", ca)[0] == 200
    assert env.webhook.popen is not None
    assert env.webhook.popen.poll() is None


def test_probes_and_metrics(env: AdmissionEnv, ca: ssl.SSLContext) -> None:
    assert env.webhook is not None
    assert env.webhook.get("/readyz", ca) == (200, "ok\n")
    samples = env.webhook.metrics(ca)
    assert samples["winnode_webhook_decisions_total{kind=Pod,reason=TooManyContainers,verdict=denied}"] >= 1
    assert samples["winnode_webhook_review_duration_seconds_count"] >= 1
    assert samples["winnode_webhook_windows_nodes"] >= 1


# --- the shipped manifests ------------------------------------------------------------------------


def test_shipped_objects_pass_apiserver_validation(env: AdmissionEnv) -> None:
    objs: list[dict[str, Any]] = [
        config.webhook_configuration(name=f"dry-{env.suffix}", namespace=env.system_namespace),
        config.admission_policy(f"dry-{env.suffix}"),
        config.admission_policy_binding(name=f"dry-{env.suffix}", policy_name=f"dry-{env.suffix}"),
        *config.webhook_rbac(env.namespace, name=f"dry-{env.suffix}"),
        *config.webhook_workload(env.namespace),
    ]
    for obj in objs:
        status, doc = env.api.request("POST", collection_path(obj), obj, {"dryRun": "All"})
        assert status == 201, f"{obj['kind']}: {doc.get('message')}"


def test_denial_message_helper() -> None:
    assert denial_message({"message": 'admission webhook "x" denied the request: no'}) == "no"
