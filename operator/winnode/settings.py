"""Every tunable of winnode in one place: environment variables with their defaults.

Read once at start-up (`Settings.from_env()`); tests build their own `Settings(...)`.
Timeouts and poll intervals that are not meant to be tuned by an admin live in `winnode.timeouts`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, fields
from pathlib import Path

API_GROUP = "winnode.io"
API_VERSION = "v1alpha1"
OPERATOR_NAMESPACE_DEFAULT = "winnode-system"
# Prefix for everything we write on foreign objects (annotations, labels, finalizers, kopf progress).
FIELD_PREFIX = API_GROUP


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
    # Cluster-wide upgrade budget (nodes unschedulable or NotReady at once because of us).
    upgrade_max_unavailable: int = 1
    metrics_port: int = 8080
    webhook_port: int = 8443

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
                values[f.name] = typ(raw)
            except ValueError as exc:
                raise ValueError(
                    f"environment variable WINNODE_{f.name.upper()}={raw!r} is not a valid {typ.__name__}"
                ) from exc
        return cls(**values)  # type: ignore[arg-type]
