"""No secret in any text a Windows host may log as a script block (event 4104).

PowerShell's script-block logging records the text of every script block it compiles: the
`-EncodedCommand` bootstrap and the script it compiles from stdin. The emulated host records the same
texts (`EmulatedHost.script_block_log`); secrets must reach the host only as data after the script.
The scan looks for each planted secret in plain text, JSON-escaped, UTF-16, and base64 of its UTF-8
and UTF-16LE bytes at every alignment, and inside every base64 run of the log decoded both ways.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import time
from collections.abc import Iterator
from typing import Any

import pytest

from winnode.host import actions as A
from winnode.host.client import HostClient
from winnode.host.errors import HostError
from winnode.host.protocol import BOOTSTRAP, HEADER_PREFIX
from winnode.host.transport import HostConnection, TransportLimits, WinRMTransport
from winnode.lifecycle import kubelet_config as kc
from winnode.network.hns import HnsHost, network_params
from winnode.settings import Settings
from winnode.testing.cluster import ControlPlane
from winnode.testing.demo import World
from winnode.testing.emulator import EmulatorServer, HostSpec
from winnode.testing.hostmodel import SECRET_FILE_ACL

# The HNS of a fully updated Server 2022 host (the emulator's default build).
HNS_2022 = HnsHost(version=(13, 2))

TIMEOUT = 120.0
PASSWORD = "Planted-WinRM-Pa55word-4104!"
PLANTED = "planted-secret-Zq8vX2mN4pL7"
LIMITS = TransportLimits(connect_s=3.0, request_s=10.0, receive_wait_s=1.0, cleanup_s=3.0)
_BASE64_RUN = re.compile(r"[A-Za-z0-9+/]{16,}={0,2}")


def _base64_forms(data: bytes) -> set[str]:
    """The base64 text of `data` as it shows inside any longer base64 string, whatever its offset."""
    forms: set[str] = set()
    for pad in range(3):
        encoded = base64.b64encode(b"\0" * pad + data + b"\0\0").decode()
        # Drop the characters that depend on the neighbouring bytes at both ends.
        start = (pad * 4 + 2) // 3 + 1
        end = len(encoded) - 4
        forms.add(encoded[start:end])
    return {f for f in forms if len(f) >= 8}


def secret_forms(secret: str) -> set[str]:
    utf16 = secret.encode("utf-16-le")
    return (
        {secret, json.dumps(secret)[1:-1], utf16.decode("latin-1")}
        | _base64_forms(secret.encode("utf-8"))
        | _base64_forms(utf16)
    )


def occurrences(secret: str, texts: list[str]) -> list[str]:
    """Where `secret` shows in `texts`, in any of its forms or inside a decoded base64 run."""
    forms = secret_forms(secret)
    found: list[str] = []
    for index, text in enumerate(texts):
        found += [f"block {index}: {form[:12]}..." for form in forms if form in text]
        for run in _BASE64_RUN.findall(text):
            try:
                raw = base64.b64decode(run + "=" * (-len(run) % 4))
            except binascii.Error:
                continue
            for decoded in (raw.decode("utf-8", "replace"), raw.decode("utf-16-le", "replace")):
                if secret in decoded or json.dumps(secret)[1:-1] in decoded:
                    found.append(f"block {index}: inside base64 {run[:12]}...")
    return found


def test_the_scan_finds_a_secret_in_every_form() -> None:
    # The scan itself must not be blind: each encoding a careless script could use is caught.
    secret = "tok3n.abcdef0123456789"
    for carrier in (
        f"$x = '{secret}'",
        "# " + json.dumps({"content": f"token: {secret}\n"}),
        "$p = '" + base64.b64encode(json.dumps({"c": f"a{secret}b"}).encode()).decode() + "'",
        "$p = '" + base64.b64encode(("xy" + secret).encode("utf-16-le")).decode() + "'",
        ("pre" + secret).encode("utf-16-le").decode("latin-1"),
    ):
        assert occurrences(secret, [carrier]), carrier
    assert occurrences(secret, ["nothing to see"]) == []


# --- every action, through the operator's own transport ----------------------------------------


def samples() -> list[A.Params]:
    """One call of every action the catalogue has; every secret field holds the planted secret."""
    params: list[A.Params] = [
        A.FactsParams(),
        A.EnsureDirectoriesParams(paths=["C:\\k", "C:\\k\\staging"]),
        A.WriteFileParams(path="C:\\k\\bootstrap-kubelet.conf", content=f"token: {PLANTED}\n", secret=True),
        A.WriteFileParams(path="C:\\k\\plain.txt", content=f"not secret, but a secret field: {PLANTED}"),
        A.StatFilesParams(paths=["C:\\k\\bootstrap-kubelet.conf"]),
        A.CopyFileParams(source="C:\\k\\plain.txt", path="C:\\k\\staging\\plain.txt"),
        A.FetchFileParams(url="http://127.0.0.1:9/none.exe", path="C:\\k\\none.exe"),
        A.ServiceEnsureParams(
            name="winnode-probe",
            binary_path='"C:\\k\\plain.txt" --run',
            display_name="probe",
            description="Managed by winnode: probe",
        ),
        A.ServiceQueryParams(names=["winnode-probe"]),
        A.ServiceStartParams(name="winnode-probe", timeout_s=5),
        A.ServiceStopParams(name="winnode-probe", timeout_s=5),
        A.ServiceRemoveParams(name="winnode-probe"),
        network_params(
            HNS_2022,
            name="probe",
            type_=A.HnsNetworkType.L2BRIDGE,
            prefix="10.99.0.0/24",
            gateway="10.99.0.1",
        ),
        A.HnsNetworkQueryParams(names=["probe"]),
        A.HnsRoutesSyncParams(
            network="probe", managed_prefixes=["10.99.0.0/16"], bridge_endpoint_ip="10.99.0.2"
        ),
        A.HnsNetworkRemoveParams(name="probe"),
        A.FirewallRuleEnsureParams(name="probe", display_name="probe", protocol="TCP", local_port=10250),
        A.FirewallRuleRemoveParams(name="probe"),
        A.RemovePathParams(path="C:\\k\\staging", recurse=True),
        A.DefenderExclusionsEnsureParams(processes=["C:\\k\\kubelet.exe"]),
        A.HostOwnerQueryParams(),
        A.HostOwnerSetParams(owner_uid="0123abcd", owner_name="sbl-actions"),
        A.ProbeParams(paths=["C:\\k"], tcp=["127.0.0.1:9"]),
        A.ObserveParams(
            files=["C:\\k\\bootstrap-kubelet.conf"],
            services=["winnode-probe"],
            hns_networks=["probe"],
            firewall_rules=["probe"],
            defender_processes=["C:\\k\\kubelet.exe"],
        ),
        A.RebootParams(reason="probe", delay_s=0),
    ]
    assert {p.action for p in params} == set(A.ACTIONS), "a sample for every action"
    for p in params:
        for name in p.secret_fields:
            assert PLANTED in str(getattr(p, name)), f"{p.action}.{name} carries the planted secret"
    return params


@pytest.fixture(scope="module")
def server() -> Iterator[EmulatorServer]:
    with EmulatorServer(strict=True) as srv:
        yield srv


async def test_every_action_logs_no_secret(server: EmulatorServer) -> None:
    host = server.add_host(HostSpec(hostname="sbl-actions", password=PASSWORD, reboot_downtime_s=0.3))
    transport = WinRMTransport(Settings(winrm_operation_timeout_s=30.0), limits=LIMITS)
    conn = HostConnection(
        address=host.address, port=host.port, scheme=host.scheme, username=host.username, password=PASSWORD
    )
    client = HostClient(conn, transport)
    outcomes: dict[str, str] = {}
    try:
        for params in samples():
            try:
                await client.run(params)
                outcomes[params.action] = "ok"
            except HostError as exc:
                outcomes[params.action] = type(exc).__name__
    finally:
        await transport.aclose()
    log = list(host.script_block_log)
    # The log is what a host records: the bootstrap, and one script per action with its header.
    assert BOOTSTRAP in log
    logged_actions = {
        json.loads(t.split("\n", 1)[0][len(HEADER_PREFIX) :])["action"]
        for t in log
        if t.startswith(HEADER_PREFIX)
    }
    assert logged_actions == set(A.ACTIONS), outcomes
    assert outcomes["write_file"] == "ok"
    # The secret did arrive, as data, where the script put it; with the ACL of a secret file.
    entry = host.call(lambda m: m.file("C:\\k\\bootstrap-kubelet.conf"))
    assert entry is not None
    assert entry.text == f"token: {PLANTED}\n"
    assert entry.acl == SECRET_FILE_ACL
    assert host.call(lambda m: m.file("C:\\k\\plain.txt")).acl is None
    for secret in (PLANTED, PASSWORD):
        assert occurrences(secret, log) == [], secret


# --- the whole lifecycle, with a real bootstrap token ------------------------------------------


@pytest.fixture(scope="module")
def world(control_plane: ControlPlane) -> Iterator[World]:
    with World(
        control_plane, settings=Settings(metrics_port=0, drift_interval_s=2.0), namespace="wn-sbl"
    ) as w:
        w.apply(w.network("sbl-net", clusterCIDR="10.241.0.0/16"))
        yield w


def test_lifecycle_logs_no_secret_and_guards_the_bootstrap_kubeconfig(world: World) -> None:
    host = world.add_host(HostSpec.server2022(hostname="sbl-a", password=PASSWORD))
    world.apply(world.windows_node(host, "sbl-a", network="sbl-net"))

    # While the node joins, the bootstrap kubeconfig is on the host, for SYSTEM and Administrators only.
    seen: dict[str, Any] = {}
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline and not seen:
        entry = host.call(lambda m: m.file(kc.BOOTSTRAP_KUBECONFIG))
        if entry is not None:
            seen = {"acl": entry.acl, "text": entry.text}
        else:
            time.sleep(0.02)
    assert seen, "the bootstrap kubeconfig was written"
    assert seen["acl"] == SECRET_FILE_ACL

    world.wait_phase("sbl-a", "Ready", TIMEOUT)
    token = seen["text"].split("token: ")[1].split()[0]
    assert host.call(lambda m: m.file(kc.BOOTSTRAP_KUBECONFIG)) is None, "removed once the node joined"
    world.cp.kubectl("delete", "windowsnode", "sbl-a", "--wait=false")
    world.wait_for("WindowsNode gone", lambda: world.get("windowsnode", "sbl-a") is None, TIMEOUT)

    log = list(host.script_block_log)
    actions = {t.split('"action":"', 1)[1].split('"', 1)[0] for t in log if t.startswith(HEADER_PREFIX)}
    assert {"facts", "write_file", "service_ensure", "remove_path", "service_remove"} <= actions
    for secret in (token, token.split(".")[1], PASSWORD):
        assert occurrences(secret, log) == [], "a secret in a logged script block"
