"""Shared fixtures: one real control plane (etcd + kube-apiserver + kcm) for the whole session.

Any test that uses `control_plane` (directly or through another fixture) is marked `integration`,
so `pytest -m 'not integration'` runs without the binaries.

Modules share the cluster and leave their objects behind: each module's WindowsNetwork takes a
clusterCIDR of its own (10.230-10.251.0.0/16), because while a module runs the admission webhook,
overlapping networks are refused.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

from winnode.testing.cluster import BinariesMissingError, ControlPlane, pid_alive, start_control_plane

if TYPE_CHECKING:
    import kubernetes.client


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # tryfirst: the marker must be on the items before `-m` deselects by it.
    for item in items:
        if "control_plane" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def control_plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    """A started local control plane shared by the session; admin kubeconfig at `.kubeconfig`."""
    try:
        cp = start_control_plane(tmp_path_factory.mktemp("control-plane"))
    except BinariesMissingError as exc:
        pytest.fail(
            f"{exc}\nrun `make control-plane` to build etcd, kube-apiserver, kcm and kubectl", pytrace=False
        )
    try:
        yield cp
    finally:
        cp.stop()
    left = [pid for pid in cp.pids if pid_alive(pid)]
    assert not left, f"control-plane processes still running after stop(): {left}"


@pytest.fixture(scope="session")
def kube_api(control_plane: ControlPlane) -> Iterator[kubernetes.client.ApiClient]:
    """An admin `kubernetes` ApiClient for the session's control plane."""
    client = control_plane.api_client()
    try:
        yield client
    finally:
        client.close()  # type: ignore[no-untyped-call]
