"""With the webhook process stopped, the ValidatingAdmissionPolicy still holds the one-container rule inside
the apiserver, and Linux pods (which never match the webhook) are created as usual."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from winnode.testing.admission import AdmissionEnv, SyncApi, free_port, wait_for
from winnode.testing.cluster import ControlPlane

WIN = {"kubernetes.io/os": "windows"}


def pod(name: str, namespace: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    }


def containers(*names: str) -> list[dict[str, Any]]:
    return [{"name": n, "image": "busybox"} for n in names]


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
        e.webhook = e.start_webhook(control_plane.kubeconfig, port=port)
        one = pod("probe", e.namespace, {"nodeSelector": WIN, "containers": containers("a")})
        wait_for(lambda: e.dry_run_create(one)[0] == 201, "webhook answers through the apiserver")
        two = pod("probe", e.namespace, {"nodeSelector": WIN, "containers": containers("a", "b")})
        wait_for(lambda: e.dry_run_create(two)[0] == 403, "policy in force")
        assert e.webhook.stop() == 0
        yield e
    finally:
        if e.webhook is not None:
            e.webhook.stop()
        e.teardown()
        api.close()


def test_linux_pods_still_created(control_plane: ControlPlane, stopped: AdmissionEnv) -> None:
    specs: list[dict[str, Any]] = [
        {"containers": containers("app", "sidecar")},
        {"nodeSelector": {"kubernetes.io/os": "linux"}, "containers": containers("app", "sidecar")},
    ]
    for i, spec in enumerate(specs):
        result = control_plane.kubectl(
            "apply", "-f", "-", input=json.dumps(pod(f"linux-{i}", stopped.namespace, spec)), check=False
        )
        assert result.returncode == 0, result.stderr


def test_two_container_windows_pod_still_denied_by_the_policy(
    control_plane: ControlPlane, stopped: AdmissionEnv
) -> None:
    obj = pod("web", stopped.namespace, {"nodeSelector": WIN, "containers": containers("app", "log-shipper")})
    result = control_plane.kubectl("apply", "-f", "-", input=json.dumps(obj), check=False)
    assert result.returncode != 0
    assert f"ValidatingAdmissionPolicy 'winnode-one-container-{stopped.suffix}'" in result.stderr
    assert (
        f"pod {stopped.namespace}/web runs 2 containers at once on Windows (app, log-shipper)"
        in result.stderr
    )


def test_windows_pods_the_policy_admits_fail_closed(stopped: AdmissionEnv) -> None:
    # failurePolicy Fail: with no webhook answering, what only the webhook could judge is refused
    # rather than let through unchecked.
    status, doc = stopped.dry_run_create(
        pod("single", stopped.namespace, {"nodeSelector": WIN, "containers": containers("app")})
    )
    assert status == 500, doc
    assert "failed calling webhook" in doc.get("message", "")
