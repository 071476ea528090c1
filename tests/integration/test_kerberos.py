"""Kerberos end to end: a real MIT KDC on loopback, pyspnego/GSSAPI in the operator, a keytab acceptor in the host.

The realm is Debian's krb5-kdc (testing/kdc.py, installed by hack/install-krb5.sh from `make`); the
emulated host accepts the AP-REQ with python-gssapi and its HTTP/<name> keytab and seals every message
over http. Each failure a Kerberos admin meets gets its own reason.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from winnode.host import actions as A
from winnode.host.client import HostClient
from winnode.host.errors import HostAuthenticationError, HostError, HostUnreachableError
from winnode.host.transport import HostConnection, TransportLimits, WinRMTransport
from winnode.settings import Settings
from winnode.testing import clock, kdc
from winnode.testing.cluster import ControlPlane
from winnode.testing.demo import World
from winnode.testing.emulator import EmulatedHost, EmulatorServer, HostSpec

ADMIN_PASSWORD = "Kerb-Admin-Pa55!"
LIMITS = TransportLimits(connect_s=3.0, request_s=10.0, receive_wait_s=1.0, cleanup_s=3.0)
SPN_HOST = "win-k1.winnode.test"


@pytest.fixture(scope="module")
def realm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[kdc.KerberosRealm]:
    missing = kdc.tools_missing()
    if missing:
        # Never a silent skip: `make test` installs them (hack/install-krb5.sh).
        pytest.fail(f"MIT Kerberos KDC programs missing ({', '.join(missing)}): run hack/install-krb5.sh")
    directory = tmp_path_factory.mktemp("realm")
    saved = os.environ.get("KRB5_CONFIG")
    with kdc.KerberosRealm(directory) as r:
        r.add_user("winnode-admin", ADMIN_PASSWORD)
        r.add_user("someone-else", ADMIN_PASSWORD)
        r.add_user("expired-admin", ADMIN_PASSWORD)
        r.add_user("short-life", ADMIN_PASSWORD, max_life="3 seconds")
        r.add_user("never-logged-on", ADMIN_PASSWORD)
        r.expire_password("expired-admin")
        r.add_service(SPN_HOST, directory / "http.keytab")
        # The operator's process reads the realm from KRB5_CONFIG, as from a mounted ConfigMap.
        os.environ["KRB5_CONFIG"] = str(r.krb5_conf)
        try:
            yield r
        finally:
            if saved is None:
                os.environ.pop("KRB5_CONFIG", None)
            else:
                os.environ["KRB5_CONFIG"] = saved


@pytest.fixture(scope="module")
def server() -> Iterator[EmulatorServer]:
    with EmulatorServer(strict=True) as srv:
        yield srv


@pytest.fixture(scope="module")
def host(server: EmulatorServer, realm: kdc.KerberosRealm) -> EmulatedHost:
    return server.add_host(
        HostSpec(
            hostname="win-k1",
            password="Local-Pa55word!",
            auth_modes=("ntlm", "kerberos"),
            kerberos_keytab=str(realm.directory / "http.keytab"),
            kerberos_principals=(
                realm.principal("winnode-admin"),
                realm.principal("expired-admin"),
                realm.principal("short-life"),
            ),
        )
    )


@pytest.fixture
async def transport() -> AsyncIterator[WinRMTransport]:
    t = WinRMTransport(Settings(winrm_global_concurrency=4, winrm_operation_timeout_s=30.0), limits=LIMITS)
    try:
        yield t
    finally:
        await t.aclose()


def client(
    host: EmulatedHost, transport: WinRMTransport, realm: kdc.KerberosRealm, **overrides: Any
) -> HostClient:
    values: dict[str, Any] = {
        "address": host.address,
        "port": host.port,
        "scheme": host.scheme,
        "auth": "kerberos",
        "username": realm.principal("winnode-admin"),
        "password": ADMIN_PASSWORD,
        "name": host.hostname,
        "kerberos_hostname": SPN_HOST,
    }
    values.update(overrides)
    return HostClient(HostConnection(**values), transport)


async def test_kerberos_logon_with_every_message_sealed(
    host: EmulatedHost, transport: WinRMTransport, realm: kdc.KerberosRealm
) -> None:
    host.clear_records()
    facts = await client(host, transport, realm).run(A.FactsParams())
    assert facts.hostname == host.hostname
    operations = [
        r for r in host.requests if r.operation in ("Create", "Command", "Send", "Receive", "Delete")
    ]
    assert operations
    assert all(r.encrypted for r in operations)
    assert all(r.user == host.username for r in operations)
    # The KDC issued the ticket: its log names the service principal for our user.
    log = (realm.directory / "kdc.log").read_text()
    assert f"for HTTP/{SPN_HOST}@{realm.realm}" in log
    assert ADMIN_PASSWORD not in log


async def test_kerberos_over_https_with_a_pinned_certificate(
    server: EmulatorServer, transport: WinRMTransport, realm: kdc.KerberosRealm
) -> None:
    from winnode.host.pinning import certificate_sha256

    realm.add_service("win-k2.winnode.test", realm.directory / "k2.keytab")
    https_host = server.add_host(
        HostSpec(
            hostname="win-k2",
            password="Local-Pa55word!",
            https=True,
            auth_modes=("kerberos",),
            kerberos_keytab=str(realm.directory / "k2.keytab"),
            kerberos_principals=(realm.principal("winnode-admin"),),
        )
    )
    pin = certificate_sha256(https_host.address, https_host.port, 5.0)
    c = client(https_host, transport, realm, kerberos_hostname="win-k2.winnode.test", pinned_sha256=pin)
    facts = await c.run(A.FactsParams())
    assert facts.hostname == "win-k2"
    # The kept connection serves the next operation: the pinned adapter and the Kerberos auth
    # stay on its session (a rebuilt session would have neither).
    accepted = https_host.connections_accepted
    assert (await c.run(A.FactsParams())).hostname == "win-k2"
    assert https_host.connections_accepted == accepted
    # TLS protects the messages: they are not sealed a second time.
    assert not [r for r in https_host.requests if r.encrypted]


def tickets_issued(realm: kdc.KerberosRealm, user: str) -> int:
    """AS exchanges the KDC answered with a ticket for `user` (its log, one ISSUE line each)."""
    lines = (realm.directory / "kdc.log").read_text().splitlines()
    return sum(
        1
        for line in lines
        if "AS_REQ" in line and "ISSUE" in line and f" {realm.principal(user)} for" in line
    )


async def test_the_ticket_is_reused_and_acquired_again_when_it_expires(
    host: EmulatedHost, transport: WinRMTransport, realm: kdc.KerberosRealm
) -> None:
    """The second operation reuses the kept connection: same TCP connection, same GSS context, every
    message still sealed and no new AS exchange (a new logon would need a new Protocol, hence a new
    TCP connection). Once the 3-second ticket has expired the
    kept context is expired too (GSS refuses to wrap with it before a byte is sent), so the next
    operation connects again and acquires a new ticket from the password, without a failure."""
    c = client(host, transport, realm, username=realm.principal("short-life"))
    connections_before = host.connections_accepted
    await c.run(A.FactsParams())
    first = len(host.requests)
    await c.run(A.FactsParams())
    assert tickets_issued(realm, "short-life") == 1, "one AS exchange serves both operations"
    assert host.connections_accepted == connections_before + 1, "the kept connection served both"
    second = host.requests[first:]
    assert second, "the second operation went over the wire"
    assert all(r.encrypted for r in second), "the kept GSS context still seals every message"
    # The KDC gives this principal 3-second tickets: the next operation finds the cached one expired
    # and acquires a new one from the password, without a failure.
    await asyncio.sleep(4)
    facts = await c.run(A.FactsParams())
    assert facts.hostname == host.hostname
    assert tickets_issued(realm, "short-life") == 2
    assert host.connections_accepted == connections_before + 2, "an expired context is not reused"


async def _failure(coro: Any) -> HostError:
    with pytest.raises(HostError) as info:
        await coro
    return info.value


async def test_wrong_password_is_named(
    host: EmulatedHost, transport: WinRMTransport, realm: kdc.KerberosRealm
) -> None:
    error = await _failure(client(host, transport, realm, password="not-it").run(A.FactsParams()))
    assert isinstance(error, HostAuthenticationError)
    assert error.reason == "KerberosPasswordRejected"
    assert "not-it" not in str(error)


async def test_principal_not_an_administrator_of_the_host(
    host: EmulatedHost, transport: WinRMTransport, realm: kdc.KerberosRealm
) -> None:
    error = await _failure(
        client(host, transport, realm, username=realm.principal("someone-else")).run(A.FactsParams())
    )
    assert isinstance(error, HostAuthenticationError)
    assert error.reason == "KerberosPrincipalRejected"
    assert [r for r in host.requests if r.operation == "Rejected"]


async def test_unknown_principal(
    host: EmulatedHost, transport: WinRMTransport, realm: kdc.KerberosRealm
) -> None:
    error = await _failure(
        client(host, transport, realm, username=realm.principal("nobody")).run(A.FactsParams())
    )
    assert error.reason == "KerberosPrincipalUnknown"


async def test_unregistered_service_principal(
    host: EmulatedHost, transport: WinRMTransport, realm: kdc.KerberosRealm
) -> None:
    error = await _failure(
        client(host, transport, realm, kerberos_hostname="other.winnode.test").run(A.FactsParams())
    )
    assert error.reason == "KerberosServicePrincipalUnknown"
    assert "HTTP/other.winnode.test" in str(error)


async def test_expired_password(
    host: EmulatedHost, transport: WinRMTransport, realm: kdc.KerberosRealm
) -> None:
    error = await _failure(
        client(host, transport, realm, username=realm.principal("expired-admin")).run(A.FactsParams())
    )
    assert error.reason == "KerberosPasswordExpired"


async def test_kdc_unreachable(
    host: EmulatedHost, transport: WinRMTransport, realm: kdc.KerberosRealm, tmp_path: Path
) -> None:
    # A krb5.conf whose only KDC is a loopback port nobody listens on.
    dead = tmp_path / "krb5.conf"
    text = realm.krb5_conf.read_text().replace(f"127.0.0.1:{realm.port}", f"127.0.0.1:{kdc._free_port()}")
    dead.write_text(text)
    await client(host, transport, realm).run(A.FactsParams())  # a ticket for winnode-admin is cached
    os.environ["KRB5_CONFIG"] = str(dead)
    try:
        # A principal with no ticket yet must reach a KDC.
        error = await _failure(
            client(host, transport, realm, username=realm.principal("never-logged-on")).run(A.FactsParams())
        )
        # One whose ticket is cached goes on working while the KDC is down.
        facts = await client(host, transport, realm).run(A.FactsParams())
    finally:
        os.environ["KRB5_CONFIG"] = str(realm.krb5_conf)
    assert facts.hostname == host.hostname
    assert isinstance(error, HostUnreachableError)
    assert error.reason == "KerberosKDCUnreachable"


# --- a host whose clock is ahead: the host's own acceptor judges the ticket ------------------------------

# The realm's tickets live 1 hour (KerberosRealm.max_life) and hosts allow 5 minutes of skew (krb5's and
# Windows' default). 10 minutes ahead: the authenticator is out of the skew (KRB_AP_ERR_SKEW). 2 hours
# ahead: the ticket's end time has passed for the host (KRB_AP_ERR_TKT_EXPIRED), though not for the
# operator, which holds it as valid for another hour.
SKEW_S = 10 * 60
EXPIRED_S = 2 * 60 * 60


@pytest.fixture(scope="module")
def faketime() -> None:
    if clock.faketime_library() is None:
        # Never a silent skip: `make test` installs it (hack/install-krb5.sh).
        pytest.fail(f"libfaketime missing ({clock.FAKETIME_GLOB}): run hack/install-krb5.sh")
    # The moved clock is measured in a child, not assumed.
    seen = clock.child_clock_offset(EXPIRED_S)
    assert abs(seen - EXPIRED_S) < clock.OFFSET_TOLERANCE_S, f"libfaketime moved the clock by {seen:.0f}s"


@pytest.fixture
def skewed(realm: kdc.KerberosRealm, faketime: None, tmp_path: Path) -> Any:
    """Start a host `offset_s` ahead whose service principal is HTTP/<prefix>.winnode.test."""
    started: list[clock.SkewedEmulator] = []

    def start(offset_s: int, prefix: str) -> clock.SkewedHost:
        keytab = tmp_path / f"{prefix}.keytab"
        realm.add_service(f"{prefix}.winnode.test", keytab)
        emulator = clock.SkewedEmulator(
            offset_s=offset_s,
            keytab=keytab,
            principals=(realm.principal("winnode-admin"),),
            krb5_conf=realm.krb5_conf,
            prefix=f"{prefix}-",
            log=tmp_path / f"{prefix}.log",
        )
        started.append(emulator)
        return emulator.start()

    try:
        yield start
    finally:
        for emulator in started:
            emulator.stop()


@pytest.mark.parametrize(
    ("offset_s", "reason", "krb5_text"),
    [
        (SKEW_S, "KerberosClockSkew", "Clock skew too great"),
        (EXPIRED_S, "KerberosTicketExpired", "Ticket expired"),
    ],
)
async def test_a_host_whose_clock_is_ahead_refuses_the_ticket_with_a_named_reason(
    host: EmulatedHost,
    transport: WinRMTransport,
    realm: kdc.KerberosRealm,
    skewed: Any,
    offset_s: int,
    reason: str,
    krb5_text: str,
) -> None:
    late = skewed(offset_s, f"late{offset_s}")
    # The same principal and ticket cache work against a host on real time.
    await client(host, transport, realm).run(A.FactsParams())
    c = HostClient(
        HostConnection(
            address=late.address, port=late.port, scheme=late.scheme, auth="kerberos",
            username=realm.principal("winnode-admin"), password=ADMIN_PASSWORD, name=late.hostname,
            kerberos_hostname=f"late{offset_s}.winnode.test",
        ),
        transport,
    )  # fmt: skip
    error = await _failure(c.run(A.FactsParams()))
    assert isinstance(error, HostAuthenticationError)
    assert error.reason == reason
    # krb5's text of the KRB-ERROR the host's acceptor sent back: the host judged it, not the operator.
    assert krb5_text in str(error)
    assert ADMIN_PASSWORD not in str(error)


# --- a WindowsNode with auth kerberos, through the operator --------------------------------------------

TIMEOUT = 120.0


@pytest.fixture(scope="module")
def world(control_plane: ControlPlane, realm: kdc.KerberosRealm) -> Iterator[World]:
    with World(control_plane, settings=Settings(metrics_port=0), namespace="wn-kerberos") as w:
        w.apply(w.network(name="kerberos", clusterCIDR="10.236.0.0/16"))
        yield w


def kerberos_node(
    world: World, realm: kdc.KerberosRealm, name: str, spn_host: str, password: str
) -> EmulatedHost:
    keytab = realm.directory / f"{name}.keytab"
    realm.add_service(spn_host, keytab)
    host = world.add_host(
        HostSpec.server2022(
            hostname=name,
            auth_modes=("ntlm", "kerberos"),
            kerberos_keytab=str(keytab),
            kerberos_principals=(realm.principal("winnode-admin"),),
        )
    )
    secret = world.credentials_secret(host)
    secret["stringData"] = {"username": realm.principal("winnode-admin"), "password": password}
    world.apply(secret)
    doc = world.windows_node(host, name, network="kerberos")
    # The emulated host listens on a 127.x address: the service principal's name comes from the spec.
    doc["spec"]["winrm"].update({"scheme": "http", "auth": "kerberos", "kerberosHostname": spn_host})
    world.apply(doc)
    return host


def test_windows_node_with_kerberos_reaches_ready(world: World, realm: kdc.KerberosRealm) -> None:
    host = kerberos_node(world, realm, "kerb-ready", "kerb-ready.winnode.test", ADMIN_PASSWORD)
    world.wait_phase("kerb-ready", "Ready", TIMEOUT)
    sealed = [r for r in host.requests if r.operation in ("Create", "Command", "Send", "Receive")]
    assert sealed
    assert all(r.encrypted for r in sealed)
    assert all(r.user == host.username for r in sealed)
    assert "for HTTP/kerb-ready.winnode.test@" in (realm.directory / "kdc.log").read_text()


def test_windows_node_with_a_wrong_kerberos_password_gets_a_named_condition(
    world: World, realm: kdc.KerberosRealm
) -> None:
    host = kerberos_node(world, realm, "kerb-badpw", "kerb-badpw.winnode.test", "Wrong-Pa55!")

    def condition() -> dict[str, Any] | None:
        conditions = (world.get("windowsnode", "kerb-badpw") or {}).get("status", {}).get("conditions") or []
        found = [c for c in conditions if c["reason"] == "KerberosPasswordRejected"]
        return found[0] if found else None

    found = world.wait_for("the KerberosPasswordRejected condition", condition, TIMEOUT)
    assert found["status"] == "False"
    assert "Wrong-Pa55!" not in found["message"]
    assert not [r for r in host.requests if r.operation == "Create"], "no ticket, so no request got through"


# --- the emulated acceptor, message by message --------------------------------------------------------


def test_acceptor_unwraps_pywinrm_framing_and_refuses_a_tampered_message(realm: kdc.KerberosRealm) -> None:
    import requests
    import spnego
    from winrm.encryption import Encryption

    from winnode.host.kerberos import KerberosAuth, KerberosTarget
    from winnode.testing.winauth import AuthConfig, ConnectionAuth, EncryptionError

    keytab = realm.directory / "unit.keytab"
    realm.add_service("unit.winnode.test", keytab)
    config = AuthConfig(
        hostname="UNIT",
        modes=frozenset({"kerberos"}),
        passwords={"administrator": "local-only"},
        names={"administrator": "Administrator"},
        keytab=str(keytab),
        kerberos_users={realm.principal("winnode-admin").casefold(): "Administrator"},
    )
    conn = ConnectionAuth(config, tls=False, peer_cert_der=None)
    auth = KerberosAuth(KerberosTarget(realm.principal("winnode-admin"), "unit.winnode.test"), ADMIN_PASSWORD)
    auth._context = auth._new_context()
    token = base64.b64encode(auth._context.step()).decode()
    decision = conn.authenticate(f"Negotiate {token}")
    assert decision.user == "Administrator"
    assert decision.final is not None
    auth._context.step(base64.b64decode(decision.final.split(" ", 1)[1]))
    assert auth._context.complete

    session = requests.Session()
    session.auth = auth
    encryption = Encryption(session, "kerberos")
    body = (
        encryption._encrypt_message(b"<s:Envelope>hello</s:Envelope>", "unit") + b"--Encrypted Boundary--\r\n"
    )
    assert conn.unwrap(body) == b"<s:Envelope>hello</s:Envelope>"
    tampered = bytearray(body)
    tampered[-40] ^= 0x01
    with pytest.raises(EncryptionError):
        conn.unwrap(bytes(tampered))

    # The answer is sealed so that pywinrm's own decryption reads it.
    sealed = conn.wrap(b"<s:Envelope>answer</s:Envelope>")
    response = requests.Response()
    response._content = sealed
    response.headers["Content-Type"] = conn.content_type
    assert encryption._decrypt_response(response, "unit") == b"<s:Envelope>answer</s:Envelope>"

    # A principal the host does not list is refused even with a valid ticket.
    other = spnego.client(
        realm.principal("someone-else"), ADMIN_PASSWORD, hostname="unit.winnode.test", service="HTTP",
        protocol="kerberos",
    )  # fmt: skip
    refused = ConnectionAuth(config, tls=False, peer_cert_der=None).authenticate(
        "Negotiate " + base64.b64encode(other.step() or b"").decode()
    )
    assert refused.user is None
    assert "not an administrator" in refused.reason


def test_windows_node_whose_host_finds_the_ticket_expired_gets_a_named_condition_and_event(
    world: World, realm: kdc.KerberosRealm, skewed: Any
) -> None:
    late = skewed(EXPIRED_S, "kerb-late")
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": late.credentials_secret_name, "namespace": world.namespace},
        "type": "kubernetes.io/basic-auth",
        "stringData": {"username": realm.principal("winnode-admin"), "password": ADMIN_PASSWORD},
    }
    world.apply(secret)
    world.apply(
        {
            "apiVersion": "winnode.io/v1alpha1",
            "kind": "WindowsNode",
            "metadata": {"name": "kerb-late"},
            "spec": {
                "address": late.address,
                "network": "kerberos",
                "winrm": {
                    "scheme": "http",
                    "port": late.port,
                    "auth": "kerberos",
                    "kerberosHostname": "kerb-late.winnode.test",
                    "credentialsSecretRef": {
                        "namespace": world.namespace,
                        "name": late.credentials_secret_name,
                    },
                },
                "artifacts": {"baseURL": world.artifacts.url if world.artifacts else ""},
            },
        }
    )

    def condition() -> dict[str, Any] | None:
        conditions = (world.get("windowsnode", "kerb-late") or {}).get("status", {}).get("conditions") or []
        found = [c for c in conditions if c["reason"] == "KerberosTicketExpired"]
        return found[0] if found else None

    found = world.wait_for("the KerberosTicketExpired condition", condition, TIMEOUT)
    assert found["status"] == "False"
    assert "Ticket expired" in found["message"]
    events = world.wait_for(
        "a KerberosTicketExpired Event", lambda: world.events("kerb-late", "KerberosTicketExpired"), TIMEOUT
    )
    obj = world.get("windowsnode", "kerb-late") or {}
    for text in [found["message"], *(e.get("message", "") for e in events), json.dumps(obj)]:
        assert ADMIN_PASSWORD not in text
    assert obj.get("status", {}).get("phase") != "Ready"
    assert world.get("node", "kerb-late") is None
