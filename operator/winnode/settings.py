"""Every tunable of winnode in one place: environment variables with their defaults.

Read once at start-up (`Settings.from_env()`); tests build their own `Settings(...)`.
Timeouts and poll intervals that are not meant to be tuned by an admin live in `winnode.timeouts`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, fields
from pathlib import Path

from winnode import timeouts

API_GROUP = "winnode.io"
API_VERSION = "v1alpha1"
OPERATOR_NAMESPACE_DEFAULT = "winnode-system"
# Prefix for everything we write on foreign objects (annotations, labels, finalizers, kopf progress).
FIELD_PREFIX = API_GROUP
# Settings.upgrade_drain_blocked_policy: give up the drain for now, or keep waiting with the slot held.
DRAIN_BLOCKED_POLICIES = ("abort", "wait")
# The one-container rule's enforcement modes (winnode.admission.policy.Mode has the same values).
ADMISSION_MODES = ("Deny", "Warn", "Audit")


def cache_dir() -> Path:
    """Where heavy builds (the local control plane) are cached, outside any checkout."""
    base = os.environ.get("WINNODE_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "winnode"
    )
    return Path(base)


@dataclass(frozen=True)
class Settings:
    namespace: str = OPERATOR_NAMESPACE_DEFAULT
    # WinRM concurrency: one mutating operation per host; this bounds all hosts together.
    winrm_global_concurrency: int = 32
    winrm_operation_timeout_s: float = 600.0
    # Largest WS-Management message the hosts accept (winrm/config MaxEnvelopeSizekb; 150 on older
    # releases, 500 on current ones). Scripts are sent to the host in pieces that fit.
    winrm_max_envelope_size_kb: int = 150
    # Cluster-wide budget of upgrades and reboots: nodes cordoned, drained or restarting at once
    # because of us (WINNODE_MAX_UNAVAILABLE).
    max_unavailable: int = 1
    # What an upgrade or reboot does when its drain stays blocked (a PodDisruptionBudget) for
    # timeouts.UPGRADE_DRAIN: "abort" (uncordon, release the slot, try again later) or "wait" (keep
    # the node cordoned and its slot, and keep trying).
    upgrade_drain_blocked_policy: str = "abort"
    # WindowsNode lifecycle: seconds between periodic drift checks of a Ready node (plus up to 20%
    # jitter). A Node leaving Ready or changing kubelet version triggers a check at once
    # (lifecycle/drift_triggers.py), so the timer only catches what the Node does not show (a stopped
    # kube-proxy, an edited file). Measured (tests/bench/fleet_bench.py, N=5, 50 ms per request): a
    # check costs about 145 ms of operator CPU (9.5 WinRM commands), so every 60 s cost 132 ms per
    # node-minute and every 600 s costs about 13.
    drift_interval_s: float = 600.0
    # The apiserver URL written into kubelets' bootstrap kubeconfig; empty = the one the operator
    # uses. Set it when hosts reach the apiserver by another address (in-cluster the operator sees
    # the `kubernetes` Service IP, which Windows hosts outside the pod network cannot reach).
    apiserver_url: str = ""
    # Namespaces besides `namespace` whose Secrets may hold WinRM credentials, comma-separated
    # (WINNODE_CREDENTIALS_NAMESPACES). Each needs a RoleBinding there to the ClusterRole
    # winnode:credentials-reader, which the admin grants (README: credentials in other namespaces).
    credentials_namespaces: str = ""
    metrics_port: int = 8080
    webhook_port: int = 8443
    # Admission webhook: request bodies past this are refused (413); pods are far smaller.
    webhook_max_body_bytes: int = 5 * 1024 * 1024
    # Self-managed webhook certificates: serving cert and the CA that signs it. Each is renewed once
    # a third of its lifetime is left.
    webhook_cert_lifetime_s: float = 30 * 24 * 3600.0
    webhook_ca_lifetime_s: float = 365 * 24 * 3600.0
    # How the webhook enforces the one-container rule: Deny, Warn or Audit (winnode.admission.policy.Mode).
    # The policy binding's validationActions say the same; `winnode webhook --write-manifests DIR
    # --mode M` writes both.
    admission_mode: str = "Deny"
    # Leader election of `winnode run` (also `--leader-elect`): one active reconciler, standbys warm.
    # Off by default so a local `winnode run` needs no Lease; the Deployment turns it on. The
    # durations default to winnode.timeouts (client-go's values); tests shorten them.
    leader_election: bool = False
    leader_lease_name: str = "winnode-operator"
    leader_lease_duration_s: float = timeouts.LEADER_LEASE_DURATION
    leader_renew_deadline_s: float = timeouts.LEADER_RENEW_DEADLINE
    leader_retry_period_s: float = timeouts.LEADER_RETRY_PERIOD

    def __post_init__(self) -> None:
        if self.admission_mode not in ADMISSION_MODES:
            raise ValueError(
                f"WINNODE_ADMISSION_MODE={self.admission_mode!r} must be one of " + ", ".join(ADMISSION_MODES)
            )
        if self.apiserver_url and not self.apiserver_url.startswith("https://"):
            raise ValueError(
                f"WINNODE_APISERVER_URL={self.apiserver_url!r} must be an https:// URL that the Windows hosts "
                "reach (e.g. https://api.example.com:6443), or empty"
            )
        if self.max_unavailable < 1:
            raise ValueError(
                f"WINNODE_MAX_UNAVAILABLE={self.max_unavailable} must be at least 1 (nodes upgraded at once)"
            )
        if self.upgrade_drain_blocked_policy not in DRAIN_BLOCKED_POLICIES:
            raise ValueError(
                f"WINNODE_UPGRADE_DRAIN_BLOCKED_POLICY={self.upgrade_drain_blocked_policy!r} must be one of "
                + ", ".join(DRAIN_BLOCKED_POLICIES)
            )

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        values: dict[str, object] = {}
        for f in fields(cls):
            raw = env.get("WINNODE_" + f.name.upper())
            if raw is None:
                continue
            typ = type(getattr(cls, f.name))
            try:
                values[f.name] = _parse_bool(raw) if typ is bool else typ(raw)
            except ValueError as exc:
                raise ValueError(
                    f"environment variable WINNODE_{f.name.upper()}={raw!r} is not a valid {typ.__name__}"
                ) from exc
        return cls(**values)  # type: ignore[arg-type]


def _parse_bool(raw: str) -> bool:
    value = raw.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(f"expected true or false, got {raw!r}")
