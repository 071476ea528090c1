"""Faults during a WindowsNode's life: each becomes a named condition, a Warning Event and a retry,
and the node converges once the fault is gone. Same world as the end-to-end test: real apiserver,
emulated hosts over WS-Management, emulated kubelets, the operator in-process."""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator
from typing import Any

import pytest

from winnode.lifecycle import kubelet_config as kc
from winnode.network.cni_plugins import CNI_PLUGINS
from winnode.settings import Settings
from winnode.testing.artifacts import fake_binary
from winnode.testing.cluster import ControlPlane
from winnode.testing.demo import World
from winnode.testing.emulator import EmulatedHost, HostSpec
from winnode.testing.hostmodel import HostModel

TIMEOUT = 120.0


@pytest.fixture(scope="module")
def world(control_plane: ControlPlane) -> Iterator[World]:
    settings = Settings(metrics_port=0, drift_interval_s=2.0)
    with World(control_plane, settings=settings, namespace="wn-faults") as w:
        w.apply(w.network(name="faults", clusterCIDR="10.245.0.0/16"))
        yield w


def node_for(world: World, host: EmulatedHost, name: str, **spec: Any) -> dict[str, Any]:
    return world.windows_node(host, name, network="faults", **spec)


def wait_condition(
    world: World, name: str, type_: str, status: str, reason: str | None = None
) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        c = world.condition(name, type_)
        if c and c["status"] == status and (reason is None or c["reason"] == reason):
            return c
        return None

    try:
        result: dict[str, Any] = world.wait_for(f"{name}: {type_}={status} {reason or ''}", check, TIMEOUT)
    except TimeoutError:
        raise AssertionError(
            f"{name}: no {type_}={status}/{reason}; status: {world.get('windowsnode', name)}"
        ) from None
    return result


def delete(world: World, name: str) -> None:
    world.cp.kubectl("delete", "windowsnode", name, "--wait=false")
    world.wait_for(f"{name} gone", lambda: world.get("windowsnode", name) is None, TIMEOUT)


def kubelet_state(host: EmulatedHost) -> str | None:
    def state(m: HostModel) -> str | None:
        service = m.service("kubelet")
        return service.state.value if service else None

    return host.call(state)


def sha256s(host: EmulatedHost, paths: tuple[str, ...]) -> dict[str, str | None]:
    def read(m: HostModel) -> dict[str, str | None]:
        return {p: (f.sha256 if (f := m.file(p)) else None) for p in paths}

    return host.call(read)


def service_states(host: EmulatedHost) -> dict[str, str | None]:
    def read(m: HostModel) -> dict[str, str | None]:
        return {n: (s.state.value if (s := m.service(n)) else None) for n in kc.SERVICES}

    return host.call(read)


def test_auth_failure_is_named_then_converges(world: World) -> None:
    host = world.add_host(HostSpec.server2022(hostname="f-auth"))
    host.faults.auth_failure = True
    world.apply(node_for(world, host, "f-auth"))
    condition = wait_condition(world, "f-auth", "Authenticated", "False", "AuthenticationFailed")
    assert "Secret" in condition["message"], "the message says what to check"
    obj = world.must_get("windowsnode", "f-auth")
    assert obj["status"]["phase"] == "Failed"
    assert obj["status"]["lastError"].startswith("AuthenticationFailed:")
    assert next(c for c in obj["status"]["conditions"] if c["type"] == "Reachable")["status"] == "True"
    events = world.events("f-auth", "AuthenticationFailed")
    assert events
    assert events[0]["type"] == "Warning"
    assert host.password not in str(obj) + str(events)
    assert kubelet_state(host) is None, "nothing was installed"

    host.faults.auth_failure = False
    obj = world.wait_phase("f-auth", "Ready", TIMEOUT)
    assert "lastError" not in obj["status"]
    delete(world, "f-auth")


def test_checksum_mismatch_stops_install_then_converges(world: World) -> None:
    host = world.add_host(HostSpec.server2022(hostname="f-sum"))
    host.faults.checksum_mismatch = True
    world.apply(node_for(world, host, "f-sum"))
    condition = wait_condition(world, "f-sum", "BinariesInstalled", "False", "ChecksumMismatch")
    assert "kubelet.exe" in condition["message"]
    assert world.phase("f-sum") == "Failed"
    assert world.events("f-sum", "ChecksumMismatch")
    assert host.call(lambda m: m.file(kc.KUBELET_EXE)) is None, "a corrupt download is never kept"
    assert kubelet_state(host) is None

    host.faults.checksum_mismatch = False
    world.wait_phase("f-sum", "Ready", TIMEOUT)
    delete(world, "f-sum")


def test_missing_secret_then_created(world: World) -> None:
    assert world.emulator is not None
    host = world.emulator.add_host(HostSpec.server2022(hostname="f-secret"))  # no Secret applied
    world.apply(node_for(world, host, "f-secret"))
    condition = wait_condition(world, "f-secret", "CredentialsAvailable", "False", "SecretNotFound")
    assert "kubectl create secret" in condition["message"]
    assert world.phase("f-secret") == "Failed"
    assert world.events("f-secret", "SecretNotFound")
    assert not host.actions, "the host is not touched without credentials"

    world.apply(world.credentials_secret(host))
    world.wait_phase("f-secret", "Ready", TIMEOUT)
    delete(world, "f-secret")


def test_drift_is_repaired(world: World) -> None:
    host = world.add_host(HostSpec.server2022(hostname="f-drift"))
    world.apply(node_for(world, host, "f-drift"))
    world.wait_phase("f-drift", "Ready", TIMEOUT)
    paths = (kc.KUBELET_CONFIG, kc.KUBE_PROXY_EXE, kc.CNI_CONF)
    want = sha256s(host, paths)
    assert None not in want.values()
    assert world.emulator is not None

    async def break_host() -> None:
        m = host.model
        await m.stop_service("kubelet")  # stops kube-proxy too (it depends on kubelet)
        m.remove(kc.KUBELET_CONFIG)
        m.write_bytes(kc.KUBE_PROXY_EXE, fake_binary("kube-proxy", "v0.0.1-tampered"))
        m.remove(kc.CNI_CONF)
        m.hns_networks.clear()

    world.emulator.run(break_host())

    def repaired() -> list[dict[str, Any]] | None:
        events = world.events("f-drift", "DriftRepaired")
        text = " ".join(e["message"] for e in events)
        needed = (
            "kubelet configuration",
            "kube-proxy.exe",
            "CNI configuration",
            "HNS network",
            "started service kubelet",
        )
        return events if all(n in text for n in needed) else None

    world.wait_for("DriftRepaired Event", repaired, TIMEOUT)
    assert sha256s(host, paths) == want
    assert service_states(host) == {"kubelet": "Running", "kube-proxy": "Running"}
    assert host.call(lambda m: sorted(m.hns_networks)) == ["External", "winnode"]
    world.wait_phase("f-drift", "Ready", TIMEOUT)
    delete(world, "f-drift")


def drift_check_commands(host: EmulatedHost, since: float) -> list[list[str]]:
    """The commands of each complete drift check that ran after `since`: from one observe to the next.
    Route sync (its own handler, woken by Node events) may run between them and is left out."""
    actions = [a.action or "?" for a in list(host.actions) if a.at >= since and a.action != "hns_routes_sync"]
    starts = [i for i, a in enumerate(actions) if a == "observe"]
    return [actions[b:e] for b, e in itertools.pairwise(starts)]


def test_a_drift_check_is_one_command_and_a_repair_adds_only_itself(world: World) -> None:
    host = world.add_host(HostSpec.server2022(hostname="f-count"))
    world.apply(node_for(world, host, "f-count"))
    world.wait_phase("f-count", "Ready", TIMEOUT)
    since = time.time()

    def three_checks() -> list[list[str]] | None:
        checks = drift_check_commands(host, since)
        return checks[:3] if len(checks) >= 3 else None

    healthy = world.wait_for("three drift checks", three_checks, TIMEOUT)
    assert healthy == [["observe"]] * 3, "a healthy node: one command per check, the owner marker included"

    since = time.time()
    host.call(lambda m: m.remove(kc.KUBELET_CONFIG))

    def repairing() -> list[list[str]] | None:
        checks = drift_check_commands(host, since)
        done = [i for i, c in enumerate(checks) if c != ["observe"]]
        return checks[: done[0] + 2] if done and len(checks) >= done[0] + 2 else None

    checks = world.wait_for("the repair and one check after it", repairing, TIMEOUT)
    assert checks[-2] == ["observe", "write_file"], "the deleted file is written back, nothing else runs"
    assert checks[-1] == ["observe"]
    assert all(c == ["observe"] for c in checks[:-2])
    assert any(kc.KUBELET_CONFIG in e["message"] for e in world.events("f-count", "DriftRepaired"))
    assert sha256s(host, (kc.KUBELET_CONFIG,))[kc.KUBELET_CONFIG] is not None
    delete(world, "f-count")


def test_a_failed_observe_is_read_again_part_by_part(world: World) -> None:
    host = world.add_host(HostSpec.server2022(hostname="f-fallback"))
    world.apply(node_for(world, host, "f-fallback"))
    world.wait_phase("f-fallback", "Ready", TIMEOUT)
    since = time.time()
    world.wait_for("a drift check", lambda: drift_check_commands(host, since), TIMEOUT)
    since = time.time()
    host.faults.fail_next(1)

    def after_failure() -> list[tuple[str, bool]] | None:
        ran = [(a.action or "?", a.ok) for a in list(host.actions) if a.at >= since]
        failed = [i for i, (action, ok) in enumerate(ran) if action == "observe" and not ok]
        if not failed:
            return None
        rest = ran[failed[0] :]
        observes = [i for i, (action, _) in enumerate(rest) if action == "observe"]
        return rest[: observes[2] + 1] if len(observes) >= 3 else None

    ran = world.wait_for("the failed read, its fallback and the next check", after_failure, TIMEOUT)
    actions = [action for action, _ in ran if action != "hns_routes_sync"]
    assert ran[0] == ("observe", False)
    assert ran[1] == ("observe", True), "the facts alone, at once"
    for part in ("stat_files", "hns_network_query", "firewall_rule_ensure", "service_query"):
        assert part in actions, f"{part}: the steps read what the failed read did not"
    assert actions[-1] == "observe"
    assert all(ok for _, ok in ran[1:])
    assert world.phase("f-fallback") == "Ready"
    prerequisites = world.condition("f-fallback", "PrerequisitesMet")
    assert prerequisites is not None
    assert prerequisites["status"] == "True"
    delete(world, "f-fallback")


def test_paused_node_is_left_alone(world: World) -> None:
    host = world.add_host(HostSpec.server2022(hostname="f-pause"))
    world.apply(node_for(world, host, "f-pause", paused=True))
    wait_condition(world, "f-pause", "Paused", "True", "PausedBySpec")
    assert world.events("f-pause", "Paused")
    assert not host.actions, "a paused node's host is not touched"
    world.cp.kubectl("patch", "windowsnode", "f-pause", "--type=merge", "-p", '{"spec":{"paused":false}}')
    world.wait_phase("f-pause", "Ready", TIMEOUT)
    paused = world.condition("f-pause", "Paused")
    assert paused is not None
    assert paused["status"] == "False"
    delete(world, "f-pause")


def test_unreachable_host_deletion_forced_by_annotation(world: World) -> None:
    host = world.add_host(HostSpec.server2022(hostname="f-gone"))
    world.apply(node_for(world, host, "f-gone"))
    world.wait_phase("f-gone", "Ready", TIMEOUT)
    assert world.emulator is not None
    world.emulator.run(host.model.stop_service("kubelet"))  # the host goes away...
    host.faults.refuse_connections = True  # ...and stays away

    world.cp.kubectl("delete", "windowsnode", "f-gone", "--wait=false")

    def blocked() -> str | None:
        obj = world.get("windowsnode", "f-gone")
        error = ((obj or {}).get("status") or {}).get("lastError") or ""
        return error if "winnode.io/force-delete" in error else None

    error = world.wait_for("deletion blocked on the unreachable host", blocked, TIMEOUT)
    assert error.startswith("ConnectionRefused")
    assert world.phase("f-gone") == "Deconfiguring"
    world.cp.kubectl("annotate", "windowsnode", "f-gone", "winnode.io/force-delete=true")
    world.wait_for("WindowsNode gone", lambda: world.get("windowsnode", "f-gone") is None, TIMEOUT)
    assert world.get("node", "f-gone") is None
    events = world.events("f-gone", "HostNotCleaned")
    assert events
    assert events[0]["type"] == "Warning"
    assert "service kubelet" in events[0]["message"]
    assert "C:\\k" in events[0]["message"]


def test_operator_restart_mid_configure_resumes(world: World) -> None:
    host = world.add_host(HostSpec.server2022(hostname="f-restart"))
    host.faults.latency_s = 0.3  # every WinRM request is slow: configure takes a while
    world.apply(node_for(world, host, "f-restart"))
    world.wait_for(
        "configure under way", lambda: world.phase("f-restart") in ("Installing", "Joining"), TIMEOUT
    )
    world.stop_operator()  # interrupted somewhere in the middle of the host steps
    phase = world.phase("f-restart")
    assert phase in ("Installing", "Joining"), phase
    host.faults.latency_s = 0.0
    world.start_operator()  # a new operator process resumes the object
    obj = world.wait_phase("f-restart", "Ready", TIMEOUT)
    assert obj["status"]["installed"]["kubelet"] == world.version
    fetches = [a for a in host.actions_named("fetch_file") if a.ok]
    # The Kubernetes binaries and the CNI plugins, each fetched once.
    assert len({a.params["path"] for a in fetches if a.params}) == len(kc.BINARIES) + len(CNI_PLUGINS)
    delete(world, "f-restart")


def test_changed_credentials_are_verified(world: World) -> None:
    host = world.add_host(HostSpec.server2022(hostname="f-creds"))
    world.apply(node_for(world, host, "f-creds"))
    world.wait_phase("f-creds", "Ready", TIMEOUT)
    secret = world.credentials_secret(host)
    secret["metadata"]["labels"] = {"rotated": "1"}  # a new resourceVersion, same credentials
    world.apply(secret)
    events = world.wait_for(
        "CredentialsVerified Event", lambda: world.events("f-creds", "CredentialsVerified"), TIMEOUT
    )
    assert "logging in with it works" in events[0]["message"]
    # A wrong password in the Secret shows up on the next check, on a node that stays up.
    world.apply(world.credentials_secret(host, password="wrong-password"))
    wait_condition(world, "f-creds", "Authenticated", "False", "AuthenticationFailed")
    assert world.phase("f-creds") == "Failed"
    assert kubelet_state(host) == "Running", "a credentials problem never stops a running node"
    world.apply(world.credentials_secret(host))
    world.wait_phase("f-creds", "Ready", TIMEOUT)
    delete(world, "f-creds")
