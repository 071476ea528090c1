"""What every winnode pod shares: the restricted Pod Security profile, the user the image runs as, the
writable /tmp, and the measured resources of each process."""

from __future__ import annotations

from typing import Any

# The image's USER (Dockerfile). Numeric, so the kubelet can check runAsNonRoot without /etc/passwd.
RUN_AS_UID = 10001
TMP_VOLUME = "tmp"
TMP_PATH = "/tmp"  # noqa: S108  (an emptyDir of the pod's own: the root filesystem is read-only)
# Room for what the kubernetes client and the TLS library write there (CA and key files); a few KiB.
TMP_SIZE_LIMIT = "16Mi"

# Requests are what each process uses in steady state, limits leave headroom for bursts (a relist of
# every Node, many hosts configuring at once). Measured on a 2-core x86_64 machine, Python 3.11, with
# `.venv/bin/pytest tests/e2e/test_install.py -s -k installs`, which prints VmRSS/VmHWM (from
# /proc/<pid>/status) and user+system CPU seconds (from /proc/<pid>/stat) of the `winnode run` and
# `winnode webhook` processes it runs, after one emulated host reached Ready and the webhook denied a pod:
#   winnode run      RSS 108 MiB (peak 108), 3.0 CPU-s for start-up + one node configured
#   winnode webhook  RSS  63 MiB (peak  63), 0.7 CPU-s for start-up + certificates + a few reviews
# Scale of the reconciler: `python -m tests.bench lifecycle` (bench-results/lifecycle.json) grows from
# 115 MiB at 1 node to 190 MiB at 50 nodes configuring at once (that process also hosts the emulator, so
# it overstates), about 1.5 MiB per node in flight, and spends ~1 CPU-s per node configured: request
# 128Mi/100m, limit 512Mi (~250 nodes in flight, extrapolated). No CPU limit: a burst is slowed to the
# request's share under contention, never throttled on an idle node.
# The webhook answers ~1500 reviews/s per core (bench-results/webhook.json) and its memory grows only
# with the Windows-node name set: request 96Mi/50m, limit 192Mi.
RECONCILER_RESOURCES: dict[str, Any] = {
    "requests": {"cpu": "100m", "memory": "128Mi"},
    "limits": {"memory": "512Mi"},
}
WEBHOOK_RESOURCES: dict[str, Any] = {
    "requests": {"cpu": "50m", "memory": "96Mi"},
    "limits": {"memory": "192Mi"},
}


def resources(measured: dict[str, Any]) -> dict[str, Any]:
    """A copy for one container (a shared dict would be dumped as a YAML alias)."""
    return {k: dict(v) for k, v in measured.items()}


def pod_security_context() -> dict[str, Any]:
    """Pod level of the `restricted` Pod Security Standard."""
    return {
        "runAsNonRoot": True,
        "runAsUser": RUN_AS_UID,
        "runAsGroup": RUN_AS_UID,
        "fsGroup": RUN_AS_UID,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def container_security_context() -> dict[str, Any]:
    """Container level of the `restricted` Pod Security Standard, plus a read-only root filesystem."""
    return {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def tmp_volume() -> dict[str, Any]:
    return {"name": TMP_VOLUME, "emptyDir": {"medium": "Memory", "sizeLimit": TMP_SIZE_LIMIT}}


def tmp_mount() -> dict[str, Any]:
    return {"name": TMP_VOLUME, "mountPath": TMP_PATH}


def spread_preferred(labels: dict[str, str]) -> dict[str, Any]:
    """Pod anti-affinity: replicas on different nodes when there are nodes enough, so one node going
    away leaves a replica running (preferred, not required: a one-node cluster still runs both)."""
    return {
        "podAntiAffinity": {
            "preferredDuringSchedulingIgnoredDuringExecution": [
                {
                    "weight": 100,
                    "podAffinityTerm": {
                        "topologyKey": "kubernetes.io/hostname",
                        "labelSelector": {"matchLabels": dict(labels)},
                    },
                }
            ]
        }
    }
