"""Kubernetes version skew policy for the kubelet and kube-proxy we install.

kubelet may be older than kube-apiserver by up to three minor versions and never newer
(https://kubernetes.io/releases/version-skew-policy/); kube-proxy follows the same rule.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import total_ordering

MAX_MINORS_BEHIND = 3
# The newest release this winnode knows (and tests against): hack/versions.env KUBE_VERSION, which a
# unit test keeps equal. Tools that plan without a cluster (render, check-host) default to it.
NEWEST_KNOWN = "v1.37.2"
_VERSION = re.compile(r"^v?(\d+)\.(\d+)\.(\d+)(?:[-+].*)?$")


class VersionError(ValueError):
    pass


@total_ordering
@dataclass(frozen=True)
class Version:
    major: int
    minor: int
    patch: int

    @classmethod
    def parse(cls, text: str) -> Version:
        m = _VERSION.match(text.strip())
        if not m:
            raise VersionError(f"{text!r} is not a Kubernetes version like v1.37.2")
        return cls(int(m[1]), int(m[2]), int(m[3]))

    def __lt__(self, other: object) -> bool:
        if not isinstance(other, Version):
            return NotImplemented
        return (self.major, self.minor, self.patch) < (other.major, other.minor, other.patch)

    def __str__(self) -> str:
        return f"v{self.major}.{self.minor}.{self.patch}"


def default_version(apiserver: str) -> Version:
    """With no spec.kubernetesVersion, nodes run the apiserver's own release (build suffix dropped)."""
    return Version.parse(apiserver)


def skew_problem(kubelet: Version, apiserver: Version) -> str | None:
    """Why this kubelet version may not join this apiserver, or None when it may."""
    if kubelet.major != apiserver.major:
        return f"kubelet {kubelet} and kube-apiserver {apiserver} differ in major version"
    if kubelet > apiserver and kubelet.minor > apiserver.minor:
        return (
            f"kubelet {kubelet} is newer than kube-apiserver {apiserver}; "
            f"set spec.kubernetesVersion to v{apiserver.major}.{apiserver.minor}.x or older, "
            "or upgrade the control plane first"
        )
    if apiserver.minor - kubelet.minor > MAX_MINORS_BEHIND:
        oldest = f"v{apiserver.major}.{apiserver.minor - MAX_MINORS_BEHIND}"
        return (
            f"kubelet {kubelet} is more than {MAX_MINORS_BEHIND} minor versions older than "
            f"kube-apiserver {apiserver}; set spec.kubernetesVersion to {oldest}.x or newer"
        )
    return None


def newest_known_version() -> str:
    return NEWEST_KNOWN
