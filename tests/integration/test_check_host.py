"""`winnode check-host` against an emulated host over real WS-Management: a passing run, and for each
preflight item a run where only that item fails (the others still pass, or are skipped when they
cannot be checked)."""

from __future__ import annotations

import dataclasses
import os
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from winnode.lifecycle import kubelet_config as kc
from winnode.lifecycle.checkhost import CNI_PLUGINS, Item, Status, Target, check
from winnode.testing.artifacts import ArtifactServer, kubernetes_release
from winnode.testing.emulator import EmulatedHost, EmulatorServer, HostSpec
from winnode.testing.hostmodel import GIB
from winnode.testing.winauth import CertificateAuthority

VERSION = "v1.37.2"
ITEMS = (
    "WinRM listener",
    "WinRM certificate",
    "Authentication",
    "OS build",
    "Containers feature",
    "containerd",
    "CNI plugins",
    "Disk",
    "Clock",
    "Pending reboot",
    "Apiserver from host",
    "Mirror from host",
)


@pytest.fixture(scope="module")
def emulator() -> Iterator[EmulatorServer]:
    server = EmulatorServer(strict=True).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def mirror() -> Iterator[ArtifactServer]:
    server = ArtifactServer(kubernetes_release(VERSION)).start()
    try:
        yield server
    finally:
        server.stop()


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def prepared(emulator: EmulatorServer, **spec: Any) -> EmulatedHost:
    """A host prepared as the README says: HTTPS listener, containerd, the CNI plugins in place."""
    host = emulator.add_host(HostSpec(**{"os_build": 20348, "https": True, **spec}))

    def plugins(m: Any) -> None:
        m.make_dirs(kc.CNI_CONF_DIR)
        for plugin in CNI_PLUGINS["overlay"]:
            m.write_bytes(f"{kc.CNI_BIN_DIR}\\{plugin}", b"MZ plugin", system=True)

    host.call(plugins)
    return host


def target(host: EmulatedHost, mirror: ArtifactServer, **changes: Any) -> Target:
    base = Target(
        address=host.address,
        port=host.port,
        scheme="https",
        auth="ntlm",
        username=host.username,
        password=host.password,
        ca_bundle=host.ca_pem,
        # Something listens there, as an apiserver would; the host must reach it.
        apiserver_url=f"https://127.0.0.1:{mirror.url.rsplit(':', 1)[1].split('/')[0]}",
        mirror_url=mirror.url,
        kubernetes_version=VERSION,
    )
    return dataclasses.replace(base, **changes)


def run(t: Target) -> dict[str, Item]:
    import asyncio

    items = asyncio.run(check(t))
    assert [i.name for i in items] == list(ITEMS)
    return {i.name: i for i in items}


def test_a_prepared_host_passes_every_item(emulator: EmulatorServer, mirror: ArtifactServer) -> None:
    host = prepared(emulator, hostname="check-ok")
    before = host.call(lambda m: (set(m.files), set(m.directories), set(m.services)))
    items = run(target(host, mirror))
    assert {n: i.status for n, i in items.items()} == dict.fromkeys(ITEMS, Status.PASS), items
    assert "valid until" in items["WinRM certificate"].detail
    assert "Windows Server 2022" in items["OS build"].detail
    assert host.call(lambda m: (set(m.files), set(m.directories), set(m.services))) == before, "read-only"


def test_the_command_line_prints_the_table_and_exits_zero(
    emulator: EmulatorServer, mirror: ArtifactServer, tmp_path: Any
) -> None:
    host = prepared(emulator, hostname="check-cli")
    t = target(host, mirror)
    ca = tmp_path / "ca.pem"
    ca.write_text(host.ca_pem or "")
    env = {**os.environ, "WINNODE_HOST_PASSWORD": host.password}
    result = subprocess.run(
        [
            sys.executable, "-m", "winnode", "check-host", host.address, "--port", str(host.port),
            "--username", host.username, "--ca-bundle", str(ca), "--apiserver-url", t.apiserver_url or "",
            "--mirror", mirror.url, "--kubernetes-version", VERSION,
        ],
        capture_output=True, text=True, env=env, timeout=120, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "host is ready to become a node" in result.stdout
    assert host.password not in result.stdout + result.stderr
    assert "Traceback" not in result.stderr

    # A wrong password: exit code 1, the failed item with its fix, the later ones skipped.
    env["WINNODE_HOST_PASSWORD"] = "not-the-password"
    failed = subprocess.run(result.args, capture_output=True, text=True, env=env, timeout=120, check=False)
    assert failed.returncode == 1, failed.stdout + failed.stderr
    assert "FAIL  Authentication" in failed.stdout
    assert "fix: check the user name and password" in failed.stdout
    assert "SKIP  OS build" in failed.stdout
    assert "1 item(s) failed" in failed.stdout
    assert "Traceback" not in failed.stderr


Case = tuple[str, dict[str, Any], Callable[[Any], None] | None, dict[str, Any], str]
# (item that fails, HostSpec overrides, change to the host model, Target changes, part of the message)
CASES: list[Case] = [
    ("WinRM listener", {}, None, {"port": closed_port()}, "no TCP connection"),
    (
        "WinRM certificate",
        {},
        None,
        {"ca_bundle": CertificateAuthority("another CA").cert_pem},
        "does not verify",
    ),
    ("Authentication", {}, None, {"password": "wrong-password"}, ""),
    ("OS build", {"os_build": 14393}, None, {}, "Reinstall the host"),
    ("Containers feature", {"features": {"Containers": False}}, None, {}, "Install-WindowsFeature"),
    ("containerd", {"containerd_installed": False}, None, {}, "containerd is not installed"),
    ("CNI plugins", {}, lambda m: m.remove(kc.CNI_BIN_DIR, recurse=True), {}, "win-overlay.exe"),
    ("Disk", {"free_disk_bytes": 2 * GIB}, None, {}, "GiB free"),
    ("Clock", {}, lambda m: setattr(m, "clock_skew_s", 900.0), {}, "w32tm"),
    ("Pending reboot", {}, lambda m: setattr(m, "reboot_pending", True), {}, "Restart-Computer"),
    (
        "Apiserver from host",
        {},
        None,
        {"apiserver_url": f"https://127.0.0.1:{closed_port()}"},
        "cannot connect",
    ),
    ("Mirror from host", {}, None, {"kubernetes_version": "v1.30.9"}, "HTTP 404"),
]


@pytest.mark.parametrize(
    ("failing", "spec", "change", "changes", "message"), CASES, ids=[c[0] for c in CASES]
)
def test_each_item_fails_alone_with_its_fix(
    emulator: EmulatorServer,
    mirror: ArtifactServer,
    failing: str,
    spec: dict[str, Any],
    change: Callable[[Any], None] | None,
    changes: dict[str, Any],
    message: str,
) -> None:
    host = prepared(emulator, **spec)
    if change is not None:
        host.call(change)
    items = run(target(host, mirror, **changes))
    assert items[failing].status is Status.FAIL, items[failing]
    assert message in items[failing].detail + items[failing].fix
    after = ITEMS[ITEMS.index(failing) + 1 :]
    for name, item in items.items():
        if name == failing:
            continue
        if failing in ("WinRM listener", "WinRM certificate", "Authentication") and name in after:
            assert item.status is Status.SKIP, item
        else:
            assert item.status is Status.PASS, item


def test_windows_server_2019_is_a_warning_not_a_failure(
    emulator: EmulatorServer, mirror: ArtifactServer
) -> None:
    host = prepared(emulator, os_build=17763)
    items = run(target(host, mirror))
    assert items["OS build"].status is Status.WARN
    assert "Windows Server 2019" in items["OS build"].detail
    assert all(i.status is Status.PASS for n, i in items.items() if n != "OS build")
