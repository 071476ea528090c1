"""Credentials Secrets: a changed Secret is acted on within seconds, and only allowed namespaces are read.

kopf's retry delays are stretched to ten minutes here, so a node that recovers within seconds of
its Secret being fixed can only have been woken by the operator's watch of Secrets.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from winnode import timeouts
from winnode.settings import Settings
from winnode.testing.cluster import ControlPlane
from winnode.testing.demo import World
from winnode.testing.emulator import HostSpec

TIMEOUT = 120.0
NAMESPACE = "wn-credwatch"
# Waking, connecting and joining the node; kopf alone would first wait its 600 s retry delay.
WOKEN_WITHIN_S = 90.0


@pytest.fixture(scope="module")
def world(control_plane: ControlPlane) -> Iterator[World]:
    # The operator's own namespace holds the credentials: no opt-in needed.
    settings = Settings(metrics_port=0, namespace=NAMESPACE)
    with World(control_plane, settings=settings, namespace=NAMESPACE) as w:
        w.apply(w.network(name="credwatch", clusterCIDR="10.239.0.0/16"))
        yield w


def condition(world: World, name: str, type_: str) -> dict[str, Any] | None:
    obj = world.get("windowsnode", name) or {}
    found = [c for c in (obj.get("status") or {}).get("conditions") or [] if c["type"] == type_]
    return found[0] if found else None


def test_fixed_secret_is_acted_on_within_seconds(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    slow = timeouts.Poll(interval=600.0, deadline=600.0)
    monkeypatch.setattr(timeouts, "ADMIN_ACTION_BACKOFF", slow)
    monkeypatch.setattr(timeouts, "RECONCILE_BACKOFF", slow)
    host = world.add_host(HostSpec.server2022(hostname="cw-a"))
    world.apply(world.credentials_secret(host, password="not-the-password"))
    world.apply(world.windows_node(host, "cw-a", network="credwatch"))

    def refused() -> dict[str, Any] | None:
        found = condition(world, "cw-a", "Authenticated")
        return found if found and found["status"] == "False" else None

    world.wait_for("the wrong password to be refused", refused, TIMEOUT)
    fixed_at = time.monotonic()
    world.apply(world.credentials_secret(host))
    world.wait_phase("cw-a", "Ready", TIMEOUT)
    woken = time.monotonic() - fixed_at
    print(f"\nReady {woken:.1f}s after the Secret was fixed (kopf's own retry was 600s away)")
    assert woken < WOKEN_WITHIN_S
    first_auth = condition(world, "cw-a", "Authenticated")
    assert first_auth is not None
    assert first_auth["status"] == "True"


def test_secret_outside_allowed_namespaces_is_refused_with_the_opt_in(world: World) -> None:
    host = world.add_host(HostSpec.server2022(hostname="cw-b"))
    world.cp.kubectl("create", "namespace", "cw-elsewhere", check=False)
    secret = world.credentials_secret(host)
    secret["metadata"]["namespace"] = "cw-elsewhere"
    world.apply(secret)
    node = world.windows_node(host, "cw-b", network="credwatch")
    node["spec"]["winrm"]["credentialsSecretRef"]["namespace"] = "cw-elsewhere"
    world.apply(node)

    def refused() -> dict[str, Any] | None:
        found = condition(world, "cw-b", "CredentialsAvailable")
        return found if found and found["status"] == "False" else None

    found = world.wait_for("the namespace to be refused", refused, TIMEOUT)
    assert found["reason"] == "SecretNamespaceNotAllowed"
    assert "winnode:credentials-reader" in found["message"]
    assert "WINNODE_CREDENTIALS_NAMESPACES" in found["message"]
    assert host.actions == [], "no host contact without credentials"
    world.cp.kubectl("delete", "windowsnode", "cw-b", "--wait=false")
    world.wait_for("cw-b gone", lambda: world.get("windowsnode", "cw-b") is None, TIMEOUT)
