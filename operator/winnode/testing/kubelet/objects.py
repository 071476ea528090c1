"""The API objects a kubelet writes: the Node (labels, status, capacity), pod statuses and pod IPs.

Pure functions of the configuration and the objects read; the agent posts what they return.
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import ipaddress
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

from .config import (
    ARCH,
    CONTROLLER_MANAGED_ATTACH_ANNOTATION,
    DEFAULT_LABEL_KEYS,
    FAKE_POD_RANGE,
    LABEL_ARCH,
    LABEL_HOSTNAME,
    LABEL_OS,
    LABEL_WINDOWS_BUILD,
    OS,
    KubeletConfig,
)

Json = dict[str, Any]


# Update build revision (UBR) reported in kernelVersion; any plausible value per release does.
_UBR = {17763: 7009, 20348: 3207, 26100: 3476}
# Kubelet's default hard eviction thresholds on Windows reduce allocatable by these.
_EVICTION_MEMORY = 100 * 1024**2
_EVICTION_NODEFS_FRACTION = Fraction(1, 10)


def _time(t: datetime.datetime) -> str:
    return t.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def micro_time(t: datetime.datetime) -> str:
    return t.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def node_labels(config: KubeletConfig) -> dict[str, str]:
    """The labels kubelet registers with: its own, then --node-labels on top (kubelet's initialNode)."""
    labels = {
        LABEL_HOSTNAME: config.node_name,
        LABEL_OS: OS,
        LABEL_ARCH: ARCH,
        "beta.kubernetes.io/os": OS,
        "beta.kubernetes.io/arch": ARCH,
        LABEL_WINDOWS_BUILD: f"10.0.{config.os_build}",
    }
    labels.update(config.labels)
    return labels


def kernel_version(os_build: int) -> str:
    return f"10.0.{os_build}.{_UBR.get(os_build, 1)}"


_QUANTITY_SUFFIXES: dict[str, Fraction] = {
    **{suffix: Fraction(1024**power) for power, suffix in enumerate(("Ki", "Mi", "Gi", "Ti", "Pi", "Ei"), 1)},
    **{suffix: Fraction(1000**power) for power, suffix in enumerate(("k", "M", "G", "T", "P", "E"), 1)},
    "n": Fraction(1, 10**9),
    "u": Fraction(1, 10**6),
    "m": Fraction(1, 1000),
    "": Fraction(1),
}


def _quantity(text: str) -> Fraction | None:
    """Value of a resource quantity, so "16Gi" and "16777216Ki" compare equal; None if unreadable."""
    m = re.fullmatch(r"([+-]?[0-9.]+(?:[eE][+-]?[0-9]+)?)([A-Za-z]*)", text.strip())
    if not m or m.group(2) not in _QUANTITY_SUFFIXES:
        return None
    try:
        return Fraction(m.group(1)) * _QUANTITY_SUFFIXES[m.group(2)]
    except ValueError:
        return None


def _resources_equal(a: Mapping[str, Any] | None, b: Mapping[str, Any] | None) -> bool:
    a, b = a or {}, b or {}
    if a.keys() != b.keys():
        return False
    for k in a:
        va, vb = _quantity(str(a[k])), _quantity(str(b[k]))
        if va is None or va != vb:
            return False
    return True


@dataclass(frozen=True)
class NodeIdentity:
    machine_id: str
    system_uuid: str
    boot_id: str


def node_identity(node_name: str) -> NodeIdentity:
    machine = uuid.uuid5(uuid.NAMESPACE_DNS, f"{node_name}.machine.winnode.invalid")
    system = uuid.uuid5(uuid.NAMESPACE_DNS, f"{node_name}.system.winnode.invalid")
    return NodeIdentity(machine_id=machine.hex, system_uuid=str(system).upper(), boot_id=str(uuid.uuid4()))


def _capacity(config: KubeletConfig) -> tuple[dict[str, str], dict[str, str]]:
    capacity = {
        "cpu": str(config.cpu),
        "ephemeral-storage": f"{config.ephemeral_storage_bytes // 1024}Ki",
        "memory": f"{config.memory_bytes // 1024}Ki",
        "pods": str(config.max_pods),
    }
    storage = int(config.ephemeral_storage_bytes * (1 - _EVICTION_NODEFS_FRACTION))
    allocatable = {
        "cpu": str(config.cpu),
        "ephemeral-storage": str(storage),
        "memory": f"{max(0, config.memory_bytes - _EVICTION_MEMORY) // 1024}Ki",
        "pods": str(config.max_pods),
    }
    return capacity, allocatable


_CONDITIONS = (
    ("MemoryPressure", "False", "KubeletHasSufficientMemory", "kubelet has sufficient memory available"),
    ("DiskPressure", "False", "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
    ("PIDPressure", "False", "KubeletHasSufficientPID", "kubelet has sufficient PID available"),
    ("Ready", "True", "KubeletReady", "kubelet is posting ready status"),
)
_NOT_READY = (
    "Ready",
    "False",
    "KubeletNotReady",
    "container runtime network not ready: NetworkReady=false reason:NetworkPluginNotReady "
    "message:Network plugin returns error: cni plugin not initialized",
)


def node_status(
    config: KubeletConfig, identity: NodeIdentity, *, now: datetime.datetime, previous: Json | None = None
) -> Json:
    """The status kubelet's setters produce for this host; transition times kept where nothing changed."""
    before = {c.get("type"): c for c in (previous or {}).get("conditions") or [] if isinstance(c, dict)}
    stamp = _time(now)
    conditions = []
    network = config.network_error() if config.network_error is not None else None
    not_ready = _NOT_READY
    if network is not None:
        # kubelet pkg/kubelet/kubelet.go: the runtime's NetworkReady=false, with the CNI error.
        not_ready = (
            *_NOT_READY[:3],
            f"{_NOT_READY[3].split(' message:')[0]} message:Network plugin returns error: {network}",
        )
    table = (
        [not_ready if c[0] == "Ready" else c for c in _CONDITIONS]
        if config.never_ready or network
        else _CONDITIONS
    )
    for ctype, status, reason, message in table:
        old = before.get(ctype)
        same = old is not None and old.get("status") == status and old.get("lastTransitionTime")
        conditions.append(
            {
                "type": ctype,
                "status": status,
                "lastHeartbeatTime": stamp,
                "lastTransitionTime": old["lastTransitionTime"] if same and old else stamp,
                "reason": reason,
                "message": message,
            }
        )
    capacity, allocatable = _capacity(config)
    addresses = [{"type": "InternalIP", "address": a} for a in config.addresses]
    addresses.append({"type": "Hostname", "address": config.node_name})
    return {
        "capacity": capacity,
        "allocatable": allocatable,
        "conditions": conditions,
        "addresses": addresses,
        "daemonEndpoints": {"kubeletEndpoint": {"Port": config.port}},
        "nodeInfo": {
            "machineID": identity.machine_id,
            "systemUUID": identity.system_uuid,
            "bootID": identity.boot_id,
            "kernelVersion": kernel_version(config.os_build),
            "osImage": config.os_image,
            "containerRuntimeVersion": f"containerd://{config.containerd_version}",
            "kubeletVersion": config.kubelet_version,
            # DisableNodeKubeProxyVersion is locked on since 1.36: kubelet leaves this empty.
            "kubeProxyVersion": "",
            "operatingSystem": OS,
            "architecture": ARCH,
        },
    }


def node_status_changed(desired: Json, current: Json | None) -> bool:
    """Whether posting `desired` would change anything but heartbeat times."""
    current = current or {}

    def conds(status: Json) -> dict[str, tuple[Any, ...]]:
        return {
            str(c.get("type")): (c.get("status"), c.get("reason"), c.get("message"))
            for c in status.get("conditions") or []
            if isinstance(c, dict)
        }

    wanted = conds(desired)
    have = conds(current)
    if any(have.get(t) != v for t, v in wanted.items()):
        return True
    # Only the nodeInfo fields kubelet sets here; newer ones (swap, features) are not compared.
    info = current.get("nodeInfo") or {}
    return (
        any(info.get(k) != v for k, v in desired["nodeInfo"].items())
        or desired["addresses"] != current.get("addresses")
        or desired["daemonEndpoints"] != current.get("daemonEndpoints")
        or not _resources_equal(desired["capacity"], current.get("capacity"))
        or not _resources_equal(desired["allocatable"], current.get("allocatable"))
    )


def initial_node(
    config: KubeletConfig, identity: NodeIdentity, taints: list[Json], now: datetime.datetime
) -> Json:
    node: Json = {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": config.node_name,
            "labels": node_labels(config),
            "annotations": {CONTROLLER_MANAGED_ATTACH_ANNOTATION: "true"},
        },
        "spec": {},
        "status": node_status(config, identity, now=now),
    }
    if taints:
        node["spec"]["taints"] = taints
    return node


def default_labels_patch(config: KubeletConfig, existing: Json) -> Json | None:
    """Merge patch putting kubelet's own labels and annotation back on an existing Node, or None.

    Only those: on re-registration kubelet leaves --node-labels and taints as the cluster has them.
    """
    meta = existing.get("metadata") or {}
    have_labels = meta.get("labels") or {}
    initial = node_labels(config)
    labels = {k: initial[k] for k in DEFAULT_LABEL_KEYS if k in initial and have_labels.get(k) != initial[k]}
    patch: Json = {}
    if labels:
        patch["labels"] = labels
    if (meta.get("annotations") or {}).get(CONTROLLER_MANAGED_ATTACH_ANNOTATION) != "true":
        patch["annotations"] = {CONTROLLER_MANAGED_ATTACH_ANNOTATION: "true"}
    return {"metadata": patch} if patch else None


# Pods -----------------------------------------------------------------------------------------


def admission_rejection(pod: Json) -> tuple[str, str] | None:
    """(reason, message) when kubelet's admission on a Windows node refuses the pod."""
    os_name = ((pod.get("spec") or {}).get("os") or {}).get("name")
    if os_name and os_name != OS:
        return "PodOSNotSupported", "Failed to admit pod as the OS field doesn't match node OS"
    # kubelet compares the pod's *labels* here (not its nodeSelector); keep that quirk.
    label = ((pod.get("metadata") or {}).get("labels") or {}).get(LABEL_OS)
    if label is not None and label != OS:
        return (
            "PodOSSelectorNodeLabelDoesNotMatch",
            "Failed to admit pod as the `kubernetes.io/os` label doesn't match node label",
        )
    return None


def _container_id(uid: str, name: str) -> str:
    return "containerd://" + hashlib.sha256(f"{uid}/{name}".encode()).hexdigest()


def _image_id(image: str) -> str:
    return "sha256:" + hashlib.sha256(image.encode()).hexdigest()


def _is_sidecar(container: Json) -> bool:
    return container.get("restartPolicy") == "Always"


def _pod_condition(
    ctype: str,
    status: str,
    previous: Mapping[str, Json],
    now: str,
    generation: int | None,
    reason: str | None = None,
) -> Json:
    old = previous.get(ctype)
    unchanged = old is not None and old.get("status") == status and old.get("lastTransitionTime")
    cond: Json = {
        "type": ctype,
        "status": status,
        "lastProbeTime": None,
        "lastTransitionTime": old["lastTransitionTime"] if unchanged and old else now,
    }
    if generation is not None:
        cond["observedGeneration"] = generation
    if reason:
        cond["reason"] = reason
    return cond


def running_pod_status(pod: Json, *, host_ips: list[str], pod_ip: str, now: datetime.datetime) -> Json:
    """The status kubelet reports once every container of the pod has started (and passes its probes)."""
    meta = pod.get("metadata") or {}
    spec = pod.get("spec") or {}
    status = pod.get("status") or {}
    uid = str(meta.get("uid", ""))
    generation = meta.get("generation")
    stamp = _time(now)
    previous = {str(c.get("type")): c for c in status.get("conditions") or [] if isinstance(c, dict)}
    before = {
        c.get("name"): c
        for c in [*(status.get("containerStatuses") or []), *(status.get("initContainerStatuses") or [])]
        if isinstance(c, dict)
    }

    def started_at(name: str) -> str:
        state = (before.get(name) or {}).get("state") or {}
        return str((state.get("running") or state.get("terminated") or {}).get("startedAt") or stamp)

    def running(container: Json) -> Json:
        name = str(container.get("name"))
        return {
            "name": name,
            "image": container.get("image", ""),
            "imageID": _image_id(str(container.get("image", ""))),
            "containerID": _container_id(uid, name),
            "ready": True,
            "started": True,
            "restartCount": 0,
            "state": {"running": {"startedAt": started_at(name)}},
            "lastState": {},
        }

    def completed(container: Json) -> Json:
        name = str(container.get("name"))
        begun = started_at(name)
        old = ((before.get(name) or {}).get("state") or {}).get("terminated") or {}
        return {
            "name": name,
            "image": container.get("image", ""),
            "imageID": _image_id(str(container.get("image", ""))),
            "containerID": _container_id(uid, name),
            "ready": True,
            "started": False,
            "restartCount": 0,
            "state": {
                "terminated": {
                    "exitCode": 0,
                    "reason": "Completed",
                    "startedAt": begun,
                    "finishedAt": old.get("finishedAt") or begun,
                    "containerID": _container_id(uid, name),
                }
            },
            "lastState": {},
        }

    result: Json = {
        "phase": "Running",
        "conditions": [
            _pod_condition("PodReadyToStartContainers", "True", previous, stamp, generation),
            _pod_condition("Initialized", "True", previous, stamp, generation),
            _pod_condition("Ready", "True", previous, stamp, generation),
            _pod_condition("ContainersReady", "True", previous, stamp, generation),
            _pod_condition("PodScheduled", "True", previous, stamp, generation),
        ],
        "hostIP": host_ips[0] if host_ips else None,
        "hostIPs": [{"ip": ip} for ip in host_ips],
        "podIP": pod_ip,
        "podIPs": [{"ip": pod_ip}],
        "startTime": status.get("startTime") or stamp,
        "containerStatuses": [running(c) for c in spec.get("containers") or []],
    }
    init = spec.get("initContainers") or []
    if init:
        result["initContainerStatuses"] = [running(c) if _is_sidecar(c) else completed(c) for c in init]
    if generation is not None:
        result["observedGeneration"] = generation
    return result


def terminated_pod_status(pod: Json, *, now: datetime.datetime) -> Json:
    """Status after kubelet stopped every container of a pod being deleted (they exit on SIGTERM)."""
    meta = pod.get("metadata") or {}
    spec = pod.get("spec") or {}
    status = pod.get("status") or {}
    uid = str(meta.get("uid", ""))
    generation = meta.get("generation")
    stamp = _time(now)
    previous = {str(c.get("type")): c for c in status.get("conditions") or [] if isinstance(c, dict)}
    before = {c.get("name"): c for c in status.get("containerStatuses") or [] if isinstance(c, dict)}

    def terminated(container: Json) -> Json:
        name = str(container.get("name"))
        state = (before.get(name) or {}).get("state") or {}
        begun = (state.get("running") or state.get("terminated") or {}).get("startedAt") or stamp
        return {
            "name": name,
            "image": container.get("image", ""),
            "imageID": _image_id(str(container.get("image", ""))),
            "containerID": _container_id(uid, name),
            "ready": False,
            "started": False,
            "restartCount": int((before.get(name) or {}).get("restartCount") or 0),
            "state": {
                "terminated": {
                    "exitCode": 0,
                    "reason": "Completed",
                    "startedAt": begun,
                    "finishedAt": stamp,
                    "containerID": _container_id(uid, name),
                }
            },
            "lastState": {},
        }

    result: Json = {
        "phase": "Succeeded",
        "conditions": [
            _pod_condition("PodReadyToStartContainers", "False", previous, stamp, generation),
            _pod_condition("Initialized", "True", previous, stamp, generation, reason="PodCompleted"),
            _pod_condition("Ready", "False", previous, stamp, generation, reason="PodCompleted"),
            _pod_condition("ContainersReady", "False", previous, stamp, generation, reason="PodCompleted"),
            _pod_condition("PodScheduled", "True", previous, stamp, generation),
        ],
        "containerStatuses": [terminated(c) for c in spec.get("containers") or []],
    }
    if generation is not None:
        result["observedGeneration"] = generation
    return result


def pod_status_differs(desired: Json, current: Json | None) -> bool:
    """Whether the pod's status in the API disagrees with what kubelet reports (timestamps aside)."""
    current = current or {}

    def summary(status: Json) -> tuple[Any, ...]:
        conds = sorted(
            (str(c.get("type")), str(c.get("status")))
            for c in status.get("conditions") or []
            if isinstance(c, dict)
        )

        def containers(key: str) -> list[tuple[Any, ...]]:
            return [
                (
                    c.get("name"),
                    c.get("ready"),
                    c.get("started"),
                    sorted((c.get("state") or {}).keys()),
                    c.get("containerID"),
                )
                for c in status.get(key) or []
                if isinstance(c, dict)
            ]

        return (
            status.get("phase"),
            status.get("podIP"),
            status.get("hostIP"),
            conds,
            containers("containerStatuses"),
            containers("initContainerStatuses"),
            status.get("observedGeneration"),
        )

    wanted = summary(desired)
    have = summary(current)
    # Conditions other controllers own (DisruptionTarget, readiness gates) may sit beside ours.
    mine = set(wanted[3])
    have_conds = [c for c in have[3] if c[0] in {t for t, _ in mine}]
    return (wanted[:3], wanted[4:]) != (have[:3], have[4:]) or sorted(mine) != sorted(have_conds)


class PodNetwork:
    """Hands out pod addresses from one subnet, one per pod UID."""

    def __init__(self, node_name: str, pod_cidr: str | None = None) -> None:
        self.subnet = self._subnet(node_name, pod_cidr)
        self._by_uid: dict[str, str] = {}
        self._used: set[str] = set()

    @staticmethod
    def _subnet(node_name: str, pod_cidr: str | None) -> ipaddress.IPv4Network:
        if pod_cidr:
            with contextlib.suppress(ValueError):
                net = ipaddress.ip_network(pod_cidr, strict=False)
                if isinstance(net, ipaddress.IPv4Network) and net.num_addresses >= 16:
                    return net
        assert isinstance(FAKE_POD_RANGE, ipaddress.IPv4Network)
        count = FAKE_POD_RANGE.num_addresses // 256
        index = int.from_bytes(hashlib.sha256(node_name.encode()).digest()[:4], "big") % count
        return ipaddress.IPv4Network((int(FAKE_POD_RANGE.network_address) + index * 256, 24))

    def claim(self, uid: str, ip: str) -> None:
        self._by_uid[uid] = ip
        self._used.add(ip)

    def allocate(self, uid: str) -> str:
        if uid in self._by_uid:
            return self._by_uid[uid]
        # .1 is the gateway of an l2bridge/overlay network on Windows; start above it.
        for offset in range(2, self.subnet.num_addresses - 1):
            ip = str(self.subnet.network_address + offset)
            if ip not in self._used:
                self.claim(uid, ip)
                return ip
        raise RuntimeError(f"pod subnet {self.subnet} is exhausted")

    def release(self, uid: str) -> None:
        ip = self._by_uid.pop(uid, None)
        if ip is not None:
            self._used.discard(ip)
