"""With the webhook and the policy installed, ordinary cluster work goes on: metadata updates of
scheduled pods (Linux and Windows), a Job on a Linux node completing and losing its tracking finalizer.
And no node-targeting form that only a Windows node satisfies gets a two-container pod past both layers:
the legacy OS label, the build label, matchFields and hostname of a Windows node, and a pods/binding."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from winnode import timeouts
from winnode.admission import config
from winnode.testing.admission import (
    AdmissionEnv,
    SyncApi,
    install,
    linux_node,
    pod_object,
    wait_for,
    windows_node,
)
from winnode.testing.cluster import ControlPlane

JOB_DEADLINE_S = 60.0


def containers(*names: str) -> list[dict[str, Any]]:
    return [{"name": n, "image": "busybox"} for n in names]


pod = pod_object


def required(term: dict[str, Any]) -> dict[str, Any]:
    return {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [term]}}}


@pytest.fixture(scope="module")
def env(control_plane: ControlPlane, tmp_path_factory: pytest.TempPathFactory) -> Iterator[AdmissionEnv]:
    api = SyncApi.from_kubeconfig(control_plane.kubeconfig)
    suffix = uuid.uuid4().hex[:6]
    workdir = tmp_path_factory.mktemp("admission-safety")
    e = AdmissionEnv(api, suffix, workdir)
    try:
        user = f"system:serviceaccount:adm-sys-{suffix}:{config.SERVICE_ACCOUNT}"
        kubeconfig = control_plane.user_kubeconfig(user, ["system:serviceaccounts"])
        nodes = [
            windows_node(f"adm-{suffix}-win", hostname=f"adm-{suffix}-win-host"),
            linux_node(f"adm-{suffix}-lin"),
        ]
        e = install(api, suffix, workdir, kubeconfig, nodes=nodes)
        yield e
    finally:
        if e.webhook is not None:
            e.webhook.stop()
        e.teardown()
        api.close()


def kubectl(cp: ControlPlane, env: AdmissionEnv, *args: str, stdin: Any = None) -> tuple[int, str]:
    result = cp.kubectl(
        *args, "-n", env.namespace, input=None if stdin is None else json.dumps(stdin), check=False
    )
    return result.returncode, result.stdout + result.stderr


# --- ordinary work --------------------------------------------------------------------------------


def test_metadata_updates_of_scheduled_linux_and_windows_pods_succeed(
    control_plane: ControlPlane, env: AdmissionEnv
) -> None:
    specs = {
        "linux-two": {"nodeName": f"adm-{env.suffix}-lin", "containers": containers("app", "sidecar")},
        "win-pinned": {"nodeName": f"adm-{env.suffix}-win", "containers": containers("app")},
        "win-selected": {
            "os": {"name": "windows"},
            "nodeSelector": {"kubernetes.io/os": "windows"},
            "nodeName": f"adm-{env.suffix}-win",
            "containers": containers("app"),
        },
    }
    owner = {"apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": str(uuid.uuid4())}
    for name, spec in specs.items():
        code, out = kubectl(control_plane, env, "apply", "-f", "-", stdin=pod(name, env.namespace, spec))
        assert code == 0, out
        for args in (
            ("label", "pod", name, "team=a"),
            ("annotate", "pod", name, "note=x"),
            (
                "patch",
                "pod",
                name,
                "--type=merge",
                "-p",
                json.dumps({"metadata": {"finalizers": ["example.com/x"]}}),
            ),
            (
                "patch",
                "pod",
                name,
                "--type=merge",
                "-p",
                json.dumps({"metadata": {"ownerReferences": [owner]}}),
            ),
            (
                "patch",
                "pod",
                name,
                "--type=json",
                "-p",
                json.dumps([{"op": "remove", "path": "/metadata/finalizers"}]),
            ),
        ):
            code, out = kubectl(control_plane, env, *args)
            assert code == 0, f"{name} {args[0]}: {out}"


def test_job_on_a_linux_node_completes_and_loses_its_tracking_finalizer(
    control_plane: ControlPlane, env: AdmissionEnv
) -> None:
    job = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": "batch", "namespace": env.namespace},
        "spec": {
            "template": {
                "spec": {
                    "restartPolicy": "Never",
                    "nodeName": f"adm-{env.suffix}-lin",
                    "containers": containers("work", "log"),
                }
            }
        },
    }
    code, out = kubectl(control_plane, env, "apply", "-f", "-", stdin=job)
    assert code == 0, out
    selector = "batch.kubernetes.io/job-name=batch"

    def job_pod() -> dict[str, Any] | None:
        pods = env.api.ok(
            "GET", f"/api/v1/namespaces/{env.namespace}/pods", params={"labelSelector": selector}
        )
        items = pods.get("items") or []
        return items[0] if items else None

    created = wait_for(job_pod, "the Job controller creates its pod")
    assert "batch.kubernetes.io/job-tracking" in created["metadata"].get("finalizers", [])
    # What the kubelet would report: both containers ran and exited 0.
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    terminated = {"terminated": {"exitCode": 0, "reason": "Completed", "startedAt": now, "finishedAt": now}}
    status = {
        "phase": "Succeeded",
        "containerStatuses": [
            {
                "name": c,
                "image": "busybox",
                "imageID": "",
                "ready": False,
                "restartCount": 0,
                "state": terminated,
            }
            for c in ("work", "log")
        ],
    }
    name = created["metadata"]["name"]
    code, doc = env.api.request(
        "PATCH",
        f"/api/v1/namespaces/{env.namespace}/pods/{name}/status",
        {"status": status},
        content_type="application/merge-patch+json",
    )
    assert code == 200, doc

    def complete() -> dict[str, Any] | None:
        got = env.api.ok("GET", f"/apis/batch/v1/namespaces/{env.namespace}/jobs/batch")
        done = [c for c in got.get("status", {}).get("conditions", []) if c["type"] == "Complete"]
        return got if done and done[0]["status"] == "True" else None

    finished = wait_for(
        complete, "the Job completes", poll=timeouts.Poll(interval=0.5, deadline=JOB_DEADLINE_S)
    )
    assert finished["status"]["succeeded"] == 1
    left = job_pod()
    assert left is not None
    assert "batch.kubernetes.io/job-tracking" not in left["metadata"].get("finalizers", [])


# --- bypasses -------------------------------------------------------------------------------------


def bypass_specs(suffix: str) -> dict[str, tuple[dict[str, Any], str]]:
    """shape -> (pod spec, the layer that refuses it)."""
    win = f"adm-{suffix}-win"
    two = containers("app", "log-shipper")
    policy_layer = "ValidatingAdmissionPolicy"
    webhook_layer = f'admission webhook "{config.NODE_NAMES_WEBHOOK_NAME}"'
    return {
        "matchFields metadata.name": (
            {
                "affinity": required(
                    {"matchFields": [{"key": "metadata.name", "operator": "In", "values": [win]}]}
                ),
                "containers": two,
            },
            webhook_layer,
        ),
        "hostname in affinity": (
            {
                "affinity": required(
                    {
                        "matchExpressions": [
                            {"key": "kubernetes.io/hostname", "operator": "In", "values": [f"{win}-host"]}
                        ]
                    }
                ),
                "containers": two,
            },
            webhook_layer,
        ),
        "hostname in nodeSelector": (
            {"nodeSelector": {"kubernetes.io/hostname": f"{win}-host"}, "containers": two},
            webhook_layer,
        ),
        "windows-build selector": (
            {"nodeSelector": {"node.kubernetes.io/windows-build": "10.0.20348"}, "containers": two},
            policy_layer,
        ),
        "windows-build affinity": (
            {
                "affinity": required(
                    {"matchExpressions": [{"key": "node.kubernetes.io/windows-build", "operator": "Exists"}]}
                ),
                "containers": two,
            },
            policy_layer,
        ),
        "beta.kubernetes.io/os selector": (
            {"nodeSelector": {"beta.kubernetes.io/os": "windows"}, "containers": two},
            policy_layer,
        ),
        "beta.kubernetes.io/os affinity": (
            {
                "affinity": required(
                    {
                        "matchExpressions": [
                            {"key": "beta.kubernetes.io/os", "operator": "In", "values": ["windows"]}
                        ]
                    }
                ),
                "containers": two,
            },
            policy_layer,
        ),
    }


@pytest.mark.parametrize(
    "shape",
    [
        "matchFields metadata.name",
        "hostname in affinity",
        "hostname in nodeSelector",
        "windows-build selector",
        "windows-build affinity",
        "beta.kubernetes.io/os selector",
        "beta.kubernetes.io/os affinity",
    ],
)
def test_bypass_is_closed(control_plane: ControlPlane, env: AdmissionEnv, shape: str) -> None:
    spec, layer = bypass_specs(env.suffix)[shape]
    code, out = kubectl(control_plane, env, "apply", "-f", "-", stdin=pod("bypass", env.namespace, spec))
    assert code != 0, f"{shape} admitted: {out}"
    assert layer in out, out
    assert f"pod {env.namespace}/bypass runs 2 containers at once on Windows (app, log-shipper)" in out


def test_the_same_forms_on_a_linux_node_are_admitted(control_plane: ControlPlane, env: AdmissionEnv) -> None:
    lin = f"adm-{env.suffix}-lin"
    two = containers("app", "sidecar")
    for shape, spec in {
        "matchFields": {
            "affinity": required(
                {"matchFields": [{"key": "metadata.name", "operator": "In", "values": [lin]}]}
            ),
            "containers": two,
        },
        "hostname": {"nodeSelector": {"kubernetes.io/hostname": lin}, "containers": two},
        "build DoesNotExist": {
            "affinity": required(
                {
                    "matchExpressions": [
                        {"key": "node.kubernetes.io/windows-build", "operator": "DoesNotExist"}
                    ]
                }
            ),
            "containers": two,
        },
    }.items():
        code, out = kubectl(
            control_plane, env, "apply", "--dry-run=server", "-f", "-", stdin=pod("fine", env.namespace, spec)
        )
        assert code == 0, f"{shape}: {out}"


def test_binding_a_two_container_pod_to_a_windows_node_is_refused(
    control_plane: ControlPlane, env: AdmissionEnv
) -> None:
    # Nothing in the spec says Windows: admitted at create, refused when placed on a Windows node.
    spec = {"tolerations": [{"operator": "Exists"}], "containers": containers("app", "log-shipper")}
    code, out = kubectl(control_plane, env, "apply", "-f", "-", stdin=pod("unplaced", env.namespace, spec))
    assert code == 0, out

    def bind(node: str) -> tuple[int, dict[str, Any]]:
        binding = {
            "apiVersion": "v1",
            "kind": "Binding",
            "metadata": {"name": "unplaced", "namespace": env.namespace},
            "target": {"apiVersion": "v1", "kind": "Node", "name": node},
        }
        return env.api.request("POST", f"/api/v1/namespaces/{env.namespace}/pods/unplaced/binding", binding)

    status, doc = bind(f"adm-{env.suffix}-win")
    assert status == 403, doc
    message = doc.get("message", "")
    assert f'admission webhook "{config.NODE_NAMES_WEBHOOK_NAME}" denied the request' in message
    assert f"It targets Windows because it is being bound to Windows node adm-{env.suffix}-win." in message
    status, doc = bind(f"adm-{env.suffix}-lin")
    assert status == 201, doc
    placed = env.api.ok("GET", f"/api/v1/namespaces/{env.namespace}/pods/unplaced")
    assert placed["spec"]["nodeName"] == f"adm-{env.suffix}-lin"
