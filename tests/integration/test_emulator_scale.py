"""Hundreds of emulated hosts in one process answer concurrent pywinrm clients."""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Literal

import pytest
from winrm.protocol import Protocol

from winnode.host.protocol import parse_result
from winnode.testing.emulator import EmulatedHost, EmulatorServer, HostSpec, run_script_with_pywinrm
from winnode.testing.hostmodel import script_for

Transport = Literal["basic", "ntlm", "certificate"]

HOSTS = 200
CLIENT_THREADS = 16
DEADLINE_S = 120.0


@pytest.fixture(scope="module")
def server() -> Iterator[EmulatorServer]:
    with EmulatorServer(strict=True) as srv:
        yield srv


def facts_of(host: EmulatedHost, transport: Transport) -> tuple[str, dict[str, object], int]:
    # A fresh Protocol per call: pywinrm sessions are not thread-safe.
    p = Protocol(
        host.endpoint, transport=transport, username=host.username, password=host.password, ca_trust_path=None
    )
    stdout, _, code = run_script_with_pywinrm(p, script_for("facts", {}))
    return host.hostname, parse_result(stdout), code


def test_two_hundred_hosts_answer_concurrent_commands(server: EmulatorServer) -> None:
    hosts = server.add_hosts(HOSTS, HostSpec(password="Scale-Test-1!"), prefix="scale-")
    addresses = {h.address for h in hosts}
    assert len(hosts) == HOSTS
    assert len(addresses) == HOSTS
    assert "127.0.0.1" not in addresses
    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=CLIENT_THREADS) as pool:
        futures = [pool.submit(facts_of, h, "ntlm" if i % 2 else "basic") for i, h in enumerate(hosts)]
        results = [f.result(timeout=max(1.0, DEADLINE_S - (time.monotonic() - started))) for f in futures]
    for (hostname, facts, code), host in zip(results, hosts, strict=True):
        assert code == 0
        assert facts["ok"] is True
        assert facts["hostname"] == hostname == host.hostname
        assert host.address in facts["addresses"]
        assert facts["default_route_ipv4"] == host.address
    assert all(len(h.actions) == 1 for h in hosts)
    server.assert_no_leaked_shells()
    for host in hosts:
        server.remove_host(host)
    assert server.hosts == []
