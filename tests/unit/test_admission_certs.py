"""Webhook certificates: the rotation plan over a moving clock, the Secret format, live TLS reloads."""

from __future__ import annotations

import asyncio
import datetime
import ssl
from pathlib import Path

import pytest
from cryptography import x509

from winnode.admission import certs
from winnode.admission.certs import CertFiles, CertPolicy, ServingTls, TlsMaterial, plan

T0 = datetime.datetime(2030, 1, 1, tzinfo=datetime.UTC)
POLICY = CertPolicy(
    sans=("winnode-webhook.winnode-system.svc", "127.0.0.1"),
    serving_lifetime=datetime.timedelta(hours=30),
    ca_lifetime=datetime.timedelta(hours=90),
)


def never(_: x509.Certificate) -> float:
    return 0.0


def always(_: x509.Certificate) -> float:
    return float("inf")


def at(hours: float) -> datetime.datetime:
    return T0 + datetime.timedelta(hours=hours)


def test_first_plan_makes_a_ca_and_a_serving_cert() -> None:
    p = plan(None, POLICY, T0, never)
    assert p.changed
    assert p.issued == ["ca", "serving"]
    m = p.material
    assert len(m.cas) == 1
    assert certs.signed_by(m.serving.cert, m.cas[0])
    assert certs.cert_sans(m.serving.cert) == {"winnode-webhook.winnode-system.svc", "127.0.0.1"}
    assert m.serving.cert.not_valid_after_utc == T0 + POLICY.serving_lifetime
    assert m.cas[0].not_valid_after_utc == T0 + POLICY.ca_lifetime
    basic = m.cas[0].extensions.get_extension_for_class(x509.BasicConstraints).value
    assert basic.ca
    eku = m.serving.cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert x509.oid.ExtendedKeyUsageOID.SERVER_AUTH in eku


def test_fresh_material_is_left_alone() -> None:
    m = plan(None, POLICY, T0, never).material
    p = plan(m, POLICY, at(10), never)
    assert not p.changed
    assert p.material == m


def test_serving_cert_renewed_with_a_third_left_from_the_same_ca() -> None:
    m = plan(None, POLICY, T0, never).material
    p = plan(m, POLICY, at(21), always)  # 9 h of 30 left
    assert p.issued == ["serving"]
    assert p.material.cas == m.cas
    assert p.material.serving.cert.serial_number != m.serving.cert.serial_number
    assert certs.signed_by(p.material.serving.cert, m.cas[0])


def test_ca_rotation_waits_for_the_bundle_to_propagate() -> None:
    m = plan(None, POLICY, T0, never).material
    # Keep the serving certificate young so only the CA is due.
    m = plan(m, POLICY, at(55), always).material
    assert m.serving.cert.not_valid_before_utc > at(54)
    rotated = plan(m, POLICY, at(61), never)  # 29 h of 90 left: a new CA
    assert rotated.issued == ["ca"]
    new_ca, old_ca = rotated.material.cas
    assert old_ca == m.cas[0]
    assert rotated.material.serving == m.serving  # still signed by the old CA, which stays trusted
    assert "propagate" in rotated.waiting
    # Not yet propagated: nothing more happens.
    assert not plan(rotated.material, POLICY, at(61.1), never).changed
    # Once the apiserver has trusted the new CA long enough, the serving cert moves over.
    moved = plan(rotated.material, POLICY, at(61.2), always)
    assert moved.issued == ["serving"]
    assert certs.signed_by(moved.material.serving.cert, new_ca)
    assert moved.material.cas == (new_ca, old_ca)


def test_expired_cas_leave_the_bundle() -> None:
    m = plan(None, POLICY, T0, never).material
    m = plan(plan(m, POLICY, at(61), never).material, POLICY, at(61.5), always).material
    assert len(m.cas) == 2
    p = plan(m, POLICY, at(90.5), always)
    assert len(p.material.cas) == 1
    assert p.changed


def test_untrusted_serving_cert_is_replaced_even_before_propagation() -> None:
    m = plan(None, POLICY, T0, never).material
    stranger = plan(None, POLICY, T0, never).material
    broken = TlsMaterial(m.cas, m.ca_key, stranger.serving)
    p = plan(broken, POLICY, at(1), never)
    assert p.issued == ["serving"]
    assert certs.signed_by(p.material.serving.cert, m.cas[0])


def test_name_change_reissues() -> None:
    m = plan(None, POLICY, T0, never).material
    other = CertPolicy(("other.svc",), POLICY.serving_lifetime, POLICY.ca_lifetime)
    p = plan(m, other, at(1), always)
    assert p.issued == ["serving"]
    assert certs.cert_sans(p.material.serving.cert) == {"other.svc"}


def test_expired_ca_starts_over() -> None:
    m = plan(None, POLICY, T0, never).material
    p = plan(m, POLICY, at(100), never)
    assert p.issued == ["ca", "serving"]
    assert len(p.material.cas) == 1


def test_serving_cert_never_outlives_its_ca() -> None:
    ca = certs.new_ca(T0, datetime.timedelta(hours=1))
    serving = certs.issue_serving(ca, ["a.svc"], T0, datetime.timedelta(hours=5))
    assert serving.cert.not_valid_after_utc == ca.cert.not_valid_after_utc


def test_secret_round_trip_and_rejects() -> None:
    m = plan(None, POLICY, T0, never).material
    data = m.to_secret_data()
    assert set(data) == {"tls.crt", "tls.key", "ca.crt", "ca.key"}
    back = TlsMaterial.from_secret_data(data)
    assert back is not None
    assert back.cas == m.cas
    assert back.serving.cert == m.serving.cert
    other = plan(None, POLICY, T0, never).material.to_secret_data()
    assert TlsMaterial.from_secret_data({**data, "tls.key": other["tls.key"]}) is None
    assert TlsMaterial.from_secret_data({**data, "ca.key": other["ca.key"]}) is None
    assert TlsMaterial.from_secret_data({**data, "ca.crt": "bm90IGEgY2VydA=="}) is None
    assert TlsMaterial.from_secret_data({k: v for k, v in data.items() if k != "ca.key"}) is None


def test_policy_intervals_shrink_for_short_lifetimes() -> None:
    short = CertPolicy(("a",), datetime.timedelta(seconds=8), datetime.timedelta(seconds=24))
    assert short.check_interval == pytest.approx(0.4)
    assert short.propagation == pytest.approx(1.2)
    assert POLICY.check_interval == 60.0
    assert POLICY.propagation == 30.0


# --- the live TLS listener ------------------------------------------------------------------------


async def _peer_serial(port: int, ca_pem: bytes) -> int:
    ctx = ssl.create_default_context(cadata=ca_pem.decode())
    _, writer = await asyncio.open_connection("127.0.0.1", port, ssl=ctx)
    try:
        der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
    finally:
        writer.close()
        await writer.wait_closed()
    return x509.load_der_x509_certificate(der).serial_number


async def test_serving_tls_swaps_the_certificate_of_a_live_listener() -> None:
    now = datetime.datetime.now(datetime.UTC)
    ca = certs.new_ca(now, datetime.timedelta(hours=2))
    first = certs.issue_serving(ca, ["127.0.0.1"], now, datetime.timedelta(hours=1))
    second = certs.issue_serving(ca, ["127.0.0.1"], now, datetime.timedelta(hours=1))
    tls = ServingTls()
    assert not tls.loaded
    assert tls.load(first.cert_pem, first.key_pem)
    assert not tls.load(first.cert_pem, first.key_pem)  # same material: no reload

    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.close()

    server = await asyncio.start_server(echo, "127.0.0.1", 0, ssl=tls.context)
    port = server.sockets[0].getsockname()[1]
    try:
        assert await _peer_serial(port, ca.cert_pem) == first.cert.serial_number
        assert tls.load(second.cert_pem, second.key_pem)
        assert await _peer_serial(port, ca.cert_pem) == second.cert.serial_number
        # A mismatched pair is refused and the listener keeps serving what it had.
        with pytest.raises(ValueError, match="do not belong together"):
            tls.load(first.cert_pem, second.key_pem)
        assert await _peer_serial(port, ca.cert_pem) == second.cert.serial_number
    finally:
        server.close()
        await server.wait_closed()


async def _serial_on(tls: ServingTls, ca_pem: bytes) -> int:
    async def close(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.close()

    server = await asyncio.start_server(close, "127.0.0.1", 0, ssl=tls.context)
    try:
        return await _peer_serial(server.sockets[0].getsockname()[1], ca_pem)
    finally:
        server.close()
        await server.wait_closed()


async def test_cert_files_are_reread_when_they_change(tmp_path: Path) -> None:
    now = datetime.datetime.now(datetime.UTC)
    ca = certs.new_ca(now, datetime.timedelta(hours=2))
    one = certs.issue_serving(ca, ["127.0.0.1"], now, datetime.timedelta(hours=1))
    two = certs.issue_serving(ca, ["127.0.0.1"], now, datetime.timedelta(hours=1))
    (tmp_path / "tls.crt").write_bytes(one.cert_pem)
    (tmp_path / "tls.key").write_bytes(one.key_pem)
    tls = ServingTls()
    files = CertFiles(tmp_path, tls, poll=0.05)
    task = asyncio.create_task(files.run())
    try:
        for _ in range(100):
            if tls.loaded:
                break
            await asyncio.sleep(0.02)
        assert tls.serial == one.cert.serial_number
        # A half-written renewal (new cert, old key) is skipped, not fatal.
        (tmp_path / "tls.crt").write_bytes(two.cert_pem)
        await asyncio.sleep(0.15)
        assert not task.done()
        assert await _serial_on(tls, ca.cert_pem) == one.cert.serial_number
        (tmp_path / "tls.key").write_bytes(two.key_pem)
        for _ in range(100):
            if tls.serial == two.cert.serial_number:
                break
            await asyncio.sleep(0.02)
        assert tls.serial == two.cert.serial_number
        assert await _serial_on(tls, ca.cert_pem) == two.cert.serial_number
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
