"""What the emulated kubelet registers, reports and refuses, built without an apiserver."""

from __future__ import annotations

import datetime
import ipaddress
from pathlib import Path
from typing import Any

import pytest

from winnode.testing.kubelet import EmulatedKubelet
from winnode.testing.kubelet.config import (
    FAKE_POD_RANGE,
    KubeletConfig,
    KubeletConfigError,
    parse_taint,
    validate_node_labels,
)
from winnode.testing.kubelet.objects import (
    PodNetwork,
    admission_rejection,
    default_labels_patch,
    initial_node,
    node_identity,
    node_labels,
    node_status,
    node_status_changed,
    pod_status_differs,
    running_pod_status,
    terminated_pod_status,
)

NOW = datetime.datetime(2026, 11, 27, 10, 0, 0, tzinfo=datetime.UTC)
LATER = NOW + datetime.timedelta(seconds=30)
KUBECONFIG = (
    "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: https://10.0.0.1:6443\n"
    "users:\n- name: u\n  user:\n    token: abcdef.0123456789abcdef\n"
    "contexts:\n- name: x\n  context: {cluster: c, user: u}\ncurrent-context: x\n"
)


def config(tmp_path: Path, **overrides: Any) -> KubeletConfig:
    values: dict[str, Any] = {
        "node_name": "win-01",
        "bootstrap_kubeconfig": KUBECONFIG,
        "kubelet_version": "v1.37.2",
        "os_build": 26100,
        "os_image": "Windows Server 2025 Datacenter",
        "addresses": ["10.1.2.3"],
        "labels": {"winnode.io/pool": "blue"},
        "taints": ["os=windows:NoSchedule"],
        "state_dir": tmp_path,
    }
    values.update(overrides)
    return KubeletConfig(**values)


# --- flags ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "labels",
    [
        {"winnode.io/pool": "blue", "plain": ""},
        {"node.kubernetes.io/windows-build": "10.0.20348", "kubelet.kubernetes.io/x": "y"},
        {"pool.node.kubernetes.io/tier": "a", "kubernetes.io/hostname": "win-01"},
        {"topology.kubernetes.io/zone": "z1", "node.kubernetes.io/instance-type": "d4"},
    ],
)
def test_labels_kubelet_may_set(labels: dict[str, str]) -> None:
    validate_node_labels(labels)


@pytest.mark.parametrize(
    ("labels", "message"),
    [
        ({"node-restriction.kubernetes.io/pool": "x"}, "unknown 'kubernetes.io' or 'k8s.io' labels"),
        ({"node-role.kubernetes.io/worker": ""}, "node-role.kubernetes.io/worker"),
        ({"kubernetes.io/role": "x"}, "unknown"),
        ({"example.k8s.io/x": "y"}, "unknown"),
        ({"bad key": "x"}, "invalid node labels"),
        ({"ok": "not ok!"}, "invalid node labels"),
        ({"Upper.Case/x": "y"}, "invalid node labels"),
    ],
)
def test_labels_kubelet_refuses(labels: dict[str, str], message: str) -> None:
    with pytest.raises(KubeletConfigError, match=message):
        validate_node_labels(labels)


def test_taints() -> None:
    assert parse_taint("os=windows:NoSchedule") == {"key": "os", "value": "windows", "effect": "NoSchedule"}
    assert parse_taint("winnode.io/preparing:NoExecute") == {
        "key": "winnode.io/preparing",
        "effect": "NoExecute",
    }
    assert parse_taint("dedicated=:PreferNoSchedule") == {"key": "dedicated", "effect": "PreferNoSchedule"}
    for bad in ("os=windows", "os=windows:Sometimes", ":NoSchedule", "a b=c:NoSchedule"):
        with pytest.raises(KubeletConfigError, match="invalid taint"):
            parse_taint(bad)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"labels": {"node-restriction.kubernetes.io/x": "y"}}, "unknown"),
        ({"taints": ["os=windows"]}, "invalid taint"),
        ({"taints": ["a=1:NoSchedule", "a=2:NoSchedule"]}, "duplicate taint"),
        ({"node_name": "Win_01"}, "DNS subdomain"),
        ({"addresses": ["win-01.example"]}, "not an IP address"),
        ({"bootstrap_kubeconfig": "apiVersion: v1\nkind: Config\n"}, "no clusters"),
    ],
)
async def test_start_refuses_what_kubelet_refuses(
    tmp_path: Path, overrides: dict[str, Any], message: str
) -> None:
    kubelet = EmulatedKubelet(config(tmp_path, **overrides))
    with pytest.raises(KubeletConfigError, match=message):
        await kubelet.start()
    assert kubelet.state == "stopped"
    await kubelet.stop()


# --- the Node ---------------------------------------------------------------------------------------


def test_registration_object(tmp_path: Path) -> None:
    cfg = config(tmp_path, labels={"winnode.io/pool": "blue", "kubernetes.io/hostname": "override"})
    node = initial_node(cfg, node_identity(cfg.node_name), [parse_taint(t) for t in cfg.taints], NOW)
    labels = node["metadata"]["labels"]
    assert labels == {
        "kubernetes.io/hostname": "override",  # --node-labels win over kubelet's own, as in kubelet
        "kubernetes.io/os": "windows",
        "kubernetes.io/arch": "amd64",
        "beta.kubernetes.io/os": "windows",
        "beta.kubernetes.io/arch": "amd64",
        "node.kubernetes.io/windows-build": "10.0.26100",
        "winnode.io/pool": "blue",
    }
    assert node["metadata"]["annotations"] == {
        "volumes.kubernetes.io/controller-managed-attach-detach": "true"
    }
    assert node["spec"]["taints"] == [{"key": "os", "value": "windows", "effect": "NoSchedule"}]
    status = node["status"]
    assert status["nodeInfo"]["kernelVersion"].startswith("10.0.26100.")
    assert status["nodeInfo"]["osImage"] == "Windows Server 2025 Datacenter"
    assert status["nodeInfo"]["kubeletVersion"] == "v1.37.2"
    assert status["nodeInfo"]["containerRuntimeVersion"].startswith("containerd://")
    assert status["addresses"] == [
        {"type": "InternalIP", "address": "10.1.2.3"},
        {"type": "Hostname", "address": "win-01"},
    ]
    assert [c["type"] for c in status["conditions"]] == [
        "MemoryPressure",
        "DiskPressure",
        "PIDPressure",
        "Ready",
    ]
    assert status["capacity"]["pods"] == "110"
    assert status["allocatable"]["memory"] != status["capacity"]["memory"]


def test_no_taints_no_taint_list(tmp_path: Path) -> None:
    cfg = config(tmp_path, taints=[])
    assert "taints" not in initial_node(cfg, node_identity(cfg.node_name), [], NOW)["spec"]


def test_status_changes_only_when_something_but_heartbeats_differs(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    identity = node_identity(cfg.node_name)
    posted = node_status(cfg, identity, now=NOW)
    again = node_status(cfg, identity, now=LATER, previous=posted)
    assert not node_status_changed(again, posted)
    ready = {c["type"]: c for c in again["conditions"]}["Ready"]
    assert ready["lastTransitionTime"] == "2026-11-27T10:00:00Z"
    assert ready["lastHeartbeatTime"] == "2026-11-27T10:00:30Z"

    # The apiserver may print quantities differently; the values are what count.
    reformatted = {**posted, "capacity": {**posted["capacity"], "memory": "16Gi"}}
    assert not node_status_changed(again, reformatted)

    # kcm marked it Unknown while the kubelet was away.
    unknown = {
        **posted,
        "conditions": [
            {**c, "status": "Unknown", "reason": "NodeStatusUnknown"} if c["type"] == "Ready" else c
            for c in posted["conditions"]
        ],
    }
    back = node_status(cfg, identity, now=LATER, previous=unknown)
    assert node_status_changed(back, unknown)
    assert {c["type"]: c for c in back["conditions"]}["Ready"]["lastTransitionTime"] == "2026-11-27T10:00:30Z"

    upgraded = node_status(config(tmp_path, kubelet_version="v1.37.3"), identity, now=LATER, previous=posted)
    assert node_status_changed(upgraded, posted)
    # Fields newer kubelets add are not ours to compare.
    assert not node_status_changed(again, {**posted, "nodeInfo": {**posted["nodeInfo"], "swap": {}}})


def test_re_registration_restores_only_kubelets_own_labels(tmp_path: Path) -> None:
    cfg = config(tmp_path, os_build=20348)
    existing = {
        "metadata": {
            "labels": {
                **node_labels(config(tmp_path, os_build=17763)),  # before an in-place OS upgrade
                "winnode.io/pool": "green",  # changed by an admin since registration
            },
            "annotations": {"volumes.kubernetes.io/controller-managed-attach-detach": "true"},
        }
    }
    assert default_labels_patch(cfg, existing) == {
        "metadata": {"labels": {"node.kubernetes.io/windows-build": "10.0.20348"}}
    }
    existing["metadata"]["labels"]["node.kubernetes.io/windows-build"] = "10.0.20348"
    assert default_labels_patch(cfg, existing) is None


# --- pods -------------------------------------------------------------------------------------------


def pod(**spec: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": "web", "namespace": "default", "uid": "u-1", "generation": 1},
        "spec": {
            "nodeName": "win-01",
            "containers": [{"name": "app", "image": "nanoserver:ltsc2022"}],
            **spec,
        },
        "status": {"phase": "Pending", "qosClass": "BestEffort"},
    }


def test_running_status_and_idempotence() -> None:
    p = pod(
        initContainers=[
            {"name": "setup", "image": "init:1"},
            {"name": "proxy", "image": "sidecar:1", "restartPolicy": "Always"},
        ]
    )
    status = running_pod_status(p, host_ips=["10.1.2.3"], pod_ip="100.64.0.2", now=NOW)
    assert status["phase"] == "Running"
    assert (status["hostIP"], status["podIP"]) == ("10.1.2.3", "100.64.0.2")
    assert status["podIPs"] == [{"ip": "100.64.0.2"}]
    conditions = {c["type"]: c["status"] for c in status["conditions"]}
    assert conditions == {
        "PodReadyToStartContainers": "True",
        "Initialized": "True",
        "Ready": "True",
        "ContainersReady": "True",
        "PodScheduled": "True",
    }
    (app,) = status["containerStatuses"]
    assert app["ready"]
    assert app["started"]
    assert "running" in app["state"]
    setup, proxy = status["initContainerStatuses"]
    assert setup["state"]["terminated"]["reason"] == "Completed"
    assert "running" in proxy["state"]
    assert status["observedGeneration"] == 1
    assert pod_status_differs(status, p["status"])

    # Reported once, nothing to do; a later pass keeps ids and start times.
    p["status"] = status
    later = running_pod_status(p, host_ips=["10.1.2.3"], pod_ip="100.64.0.2", now=LATER)
    assert not pod_status_differs(later, p["status"])
    assert later["containerStatuses"] == status["containerStatuses"]
    assert later["startTime"] == status["startTime"]

    # kcm marks pods of an unreachable node not ready; a kubelet that is back reports them ready again.
    p["status"] = {
        **status,
        "conditions": [{**c, "status": "False"} if c["type"] == "Ready" else c for c in status["conditions"]],
    }
    assert pod_status_differs(later, p["status"])
    # Conditions of others (DisruptionTarget, readiness gates) are not ours.
    p["status"] = {
        **status,
        "conditions": [*status["conditions"], {"type": "DisruptionTarget", "status": "True"}],
    }
    assert not pod_status_differs(later, p["status"])


def test_terminated_status() -> None:
    p = pod()
    p["status"] = running_pod_status(p, host_ips=["10.1.2.3"], pod_ip="100.64.0.2", now=NOW)
    done = terminated_pod_status(p, now=LATER)
    assert done["phase"] == "Succeeded"
    (app,) = done["containerStatuses"]
    terminated = app["state"]["terminated"]
    assert (terminated["exitCode"], terminated["reason"]) == (0, "Completed")
    assert terminated["startedAt"] == "2026-11-27T10:00:00Z"
    assert terminated["finishedAt"] == "2026-11-27T10:00:30Z"
    assert {c["type"]: c["status"] for c in done["conditions"]}["Ready"] == "False"


def test_admission_on_a_windows_node() -> None:
    assert admission_rejection(pod(os={"name": "windows"})) is None
    assert admission_rejection(pod()) is None
    reason, message = admission_rejection(pod(os={"name": "linux"})) or ("", "")
    assert reason == "PodOSNotSupported"
    assert "OS field" in message
    labelled = pod()
    labelled["metadata"]["labels"] = {"kubernetes.io/os": "linux"}
    assert (admission_rejection(labelled) or ("",))[0] == "PodOSSelectorNodeLabelDoesNotMatch"


def test_pod_network() -> None:
    net = PodNetwork("win-01")
    assert net.subnet.subnet_of(FAKE_POD_RANGE)  # type: ignore[arg-type]
    assert PodNetwork("win-01").subnet == net.subnet
    a, b = net.allocate("a"), net.allocate("b")
    assert a != b
    assert net.allocate("a") == a
    net.release("a")
    assert net.allocate("c") == a
    own = PodNetwork("win-01", "10.244.7.0/24")
    assert ipaddress.ip_address(own.allocate("x")) in ipaddress.ip_network("10.244.7.0/24")
    net.claim("d", str(net.subnet.network_address + 5))
    assert str(net.subnet.network_address + 5) not in {net.allocate(f"p{i}") for i in range(10)}
