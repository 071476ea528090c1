"""The CNI side of a node: where its containerd looks (from the host facts) and the checksums of
the plugins winnode installs there."""

from __future__ import annotations

from typing import TYPE_CHECKING

from winnode.host.actions import FactsResult
from winnode.lifecycle import kubelet_config as kc
from winnode.lifecycle.context import ChecksumError
from winnode.lifecycle.status import C, StepFailure
from winnode.network.cni_plugins import CNI_PLUGINS, CNI_PLUGINS_VERSION, cni_plugin_url
from winnode.network.containerd import CniLayout, ContainerdConfigError, layout_from_config_dump

if TYPE_CHECKING:
    from winnode.lifecycle.session import Session


def cni_layout(facts: FactsResult) -> CniLayout:
    """Where this host's containerd loads CNI configuration and plugins. Raises StepFailure
    (PrerequisitesMet) when its configuration does not allow a pod network (preflight says so first)."""
    dump = facts.containerd.config_dump
    if dump is None:
        raise StepFailure(
            "ContainerdConfigUnreadable",
            f"`containerd config dump` failed on {facts.hostname}; run it on the host to see why",
            condition=C.PREREQUISITES_MET,
            admin=True,
        )
    try:
        return layout_from_config_dump(dump, facts.hostname)
    except ContainerdConfigError as exc:
        raise StepFailure(exc.reason, str(exc), condition=C.PREREQUISITES_MET, admin=True) from exc


async def resolve_cni_checksums(s: Session) -> dict[str, str]:
    """SHA-256 of each CNI plugin: from spec.artifacts.sha256, else the mirror's `<file>.sha256`."""
    artifacts = s.node.spec.artifacts
    base_url = artifacts.base_url if artifacts else kc.DEFAULT_ARTIFACTS_URL
    out: dict[str, str] = {}
    for plugin in CNI_PLUGINS:
        given = artifacts.sha256.get(plugin) if artifacts else None
        if given:
            out[plugin] = given.lower()
            continue
        try:
            out[plugin] = await s.deps.checksums.sha256_of(
                cni_plugin_url(base_url, CNI_PLUGINS_VERSION, plugin)
            )
        except ChecksumError as exc:
            raise StepFailure(
                exc.reason,
                f"{exc}; the CNI plugins {', '.join(CNI_PLUGINS)} of containernetworking/plugins "
                f"{CNI_PLUGINS_VERSION} are read from the artifact mirror "
                f"(<baseURL>/cni-plugins/{CNI_PLUGINS_VERSION}/windows/amd64/<plugin>): extract them "
                "from the release's cni-plugins-windows-amd64 archive there, or set their sha256 in "
                "spec.artifacts.sha256",
                condition=C.BINARIES_INSTALLED,
                admin=True,
            ) from exc
    return out
