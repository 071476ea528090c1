"""The webhook process stopped, with its configuration and the ValidatingAdmissionPolicy still installed:
an outage of the webhook never refuses a pod that does not target Windows, and the policy alone still
refuses every pod whose spec says Windows and runs two containers.

What an outage lets through (README, "Admission: which layer judges what"): a two-container pod pinned
to a Windows node only by name (nodeName, hostname, matchFields) or bound there. The entry that judges
those fails open so that Linux pods pinned by name are never refused; the table shows that consequence.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from winnode.testing.admission import AdmissionEnv, SyncApi, free_port, pod_object, wait_for
from winnode.testing.cluster import ControlPlane

WIN = {"kubernetes.io/os": "windows"}


pod = pod_object


def containers(*names: str) -> list[dict[str, Any]]:
    return [{"name": n, "image": "busybox"} for n in names]


def required(term: dict[str, Any]) -> dict[str, Any]:
    return {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [term]}}}


@pytest.fixture(scope="module")
def stopped(control_plane: ControlPlane, tmp_path_factory: pytest.TempPathFactory) -> Iterator[AdmissionEnv]:
    """Policy + webhook configuration installed, webhook started once (so its caBundle is real), then stopped."""
    api = SyncApi.from_kubeconfig(control_plane.kubeconfig)
    e = AdmissionEnv(api, uuid.uuid4().hex[:6], tmp_path_factory.mktemp("admission-failover"))
    try:
        e.setup_namespaces()
        e.setup_policy()
        port = free_port()
        e.setup_webhook_config(port)
        for os_name in ("win", "lin"):
            labels = {"kubernetes.io/os": "windows" if os_name == "win" else "linux"}
            labels["kubernetes.io/hostname"] = f"adm-{e.suffix}-{os_name}"
            e.create(
                {
                    "apiVersion": "v1",
                    "kind": "Node",
                    "metadata": {"name": f"adm-{e.suffix}-{os_name}", "labels": labels},
                }
            )
        e.webhook = e.start_webhook(control_plane.kubeconfig, port=port)
        pinned = pod(
            "probe", e.namespace, {"nodeName": f"adm-{e.suffix}-win", "containers": containers("a", "b")}
        )
        wait_for(lambda: e.dry_run_create(pinned)[0] == 403, "webhook answers through the apiserver")
        two = pod("probe", e.namespace, {"nodeSelector": WIN, "containers": containers("a", "b")})
        wait_for(lambda: e.dry_run_create(two)[0] == 403, "policy in force")
        assert e.webhook.stop() == 0
        # The apiserver now fails to call the webhook: wait until it says so for a pinned pod (admitted).
        wait_for(lambda: e.dry_run_create(pinned)[0] == 201, "webhook unreachable, fail-open entry ignored")
        yield e
    finally:
        if e.webhook is not None:
            e.webhook.stop()
        e.teardown()
        api.close()


def linux_shapes(suffix: str) -> dict[str, dict[str, Any]]:
    lin = f"adm-{suffix}-lin"
    two = containers("app", "sidecar")
    return {
        "no selector": {"containers": two},
        "os.name linux": {"os": {"name": "linux"}, "containers": two},
        "nodeSelector linux": {"nodeSelector": {"kubernetes.io/os": "linux"}, "containers": two},
        "affinity linux": {
            "affinity": required(
                {"matchExpressions": [{"key": "kubernetes.io/os", "operator": "In", "values": ["linux"]}]}
            ),
            "containers": two,
        },
        "nodeName of a Linux node": {"nodeName": lin, "containers": two},
        "hostname of a Linux node": {"nodeSelector": {"kubernetes.io/hostname": lin}, "containers": two},
        "matchFields of a Linux node": {
            "affinity": required(
                {"matchFields": [{"key": "metadata.name", "operator": "In", "values": [lin]}]}
            ),
            "containers": two,
        },
    }


def windows_single_shapes(suffix: str) -> dict[str, dict[str, Any]]:
    one = containers("app")
    return {
        "os.name windows": {"os": {"name": "windows"}, "containers": one},
        "nodeSelector windows": {"nodeSelector": WIN, "containers": one},
        "nodeName of a Windows node": {"nodeName": f"adm-{suffix}-win", "containers": one},
    }


def windows_two_definite_shapes() -> dict[str, dict[str, Any]]:
    two = containers("app", "log-shipper")
    return {
        "os.name windows": {"os": {"name": "windows"}, "containers": two},
        "nodeSelector windows": {"nodeSelector": WIN, "containers": two},
        "beta.kubernetes.io/os": {"nodeSelector": {"beta.kubernetes.io/os": "windows"}, "containers": two},
        "windows-build": {
            "nodeSelector": {"node.kubernetes.io/windows-build": "10.0.20348"},
            "containers": two,
        },
        "affinity NotIn linux": {
            "affinity": required(
                {"matchExpressions": [{"key": "kubernetes.io/os", "operator": "NotIn", "values": ["linux"]}]}
            ),
            "containers": two,
        },
        "native sidecar": {
            "nodeSelector": WIN,
            "initContainers": [{"name": "mesh", "image": "busybox", "restartPolicy": "Always"}],
            "containers": containers("app"),
        },
    }


def test_linux_pods_in_every_shape_are_created(control_plane: ControlPlane, stopped: AdmissionEnv) -> None:
    for i, (shape, spec) in enumerate(linux_shapes(stopped.suffix).items()):
        result = control_plane.kubectl(
            "apply", "-f", "-", input=json.dumps(pod(f"linux-{i}", stopped.namespace, spec)), check=False
        )
        assert result.returncode == 0, f"{shape}: {result.stderr}"


def test_single_container_windows_pods_are_created(
    control_plane: ControlPlane, stopped: AdmissionEnv
) -> None:
    for i, (shape, spec) in enumerate(windows_single_shapes(stopped.suffix).items()):
        result = control_plane.kubectl(
            "apply", "-f", "-", input=json.dumps(pod(f"single-{i}", stopped.namespace, spec)), check=False
        )
        assert result.returncode == 0, f"{shape}: {result.stderr}"


def test_ordinary_updates_succeed(control_plane: ControlPlane, stopped: AdmissionEnv) -> None:
    spec = {"nodeName": f"adm-{stopped.suffix}-lin", "containers": containers("app", "sidecar")}
    created = control_plane.kubectl(
        "apply", "-f", "-", input=json.dumps(pod("updated", stopped.namespace, spec)), check=False
    )
    assert created.returncode == 0, created.stderr
    for args in (
        ("label", "pod", "updated", "team=a"),
        ("annotate", "pod", "updated", "note=x"),
        (
            "patch",
            "pod",
            "updated",
            "--type=merge",
            "-p",
            json.dumps({"metadata": {"finalizers": ["example.com/x"]}}),
        ),
        (
            "patch",
            "pod",
            "updated",
            "--type=json",
            "-p",
            json.dumps([{"op": "remove", "path": "/metadata/finalizers"}]),
        ),
    ):
        result = control_plane.kubectl(*args, "-n", stopped.namespace, check=False)
        assert result.returncode == 0, f"{args}: {result.stderr}"


def test_two_container_windows_pods_still_refused_by_the_policy(
    control_plane: ControlPlane, stopped: AdmissionEnv
) -> None:
    for shape, spec in windows_two_definite_shapes().items():
        obj = pod("web", stopped.namespace, spec)
        result = control_plane.kubectl("apply", "-f", "-", input=json.dumps(obj), check=False)
        assert result.returncode != 0, shape
        assert f"ValidatingAdmissionPolicy 'winnode-one-container-{stopped.suffix}'" in result.stderr, shape
        assert f"pod {stopped.namespace}/web runs 2 containers at once on Windows" in result.stderr, shape


def test_pinned_by_name_is_the_documented_gap(control_plane: ControlPlane, stopped: AdmissionEnv) -> None:
    """Only the webhook knows which node names run Windows; while it is down these are admitted."""
    win = f"adm-{stopped.suffix}-win"
    two = containers("app", "log-shipper")
    for shape, spec in {
        "nodeName": {"nodeName": win, "containers": two},
        "hostname": {"nodeSelector": {"kubernetes.io/hostname": win}, "containers": two},
        "matchFields": {
            "affinity": required(
                {"matchFields": [{"key": "metadata.name", "operator": "In", "values": [win]}]}
            ),
            "containers": two,
        },
    }.items():
        status, doc = stopped.dry_run_create(pod("gap", stopped.namespace, spec))
        assert status == 201, f"{shape}: {doc.get('message')}"
