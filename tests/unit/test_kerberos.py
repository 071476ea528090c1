"""Kerberos pieces that need no KDC: naming krb5's errors, a missing library, and the emulator's framing."""

from __future__ import annotations

import base64
import importlib.util

import pytest

from winnode.host import kerberos
from winnode.host.errors import HostAuthenticationError, HostUnreachableError
from winnode.host.transport import HostConnection, classify_error
from winnode.testing.winauth import _is_kerberos_token

CONN = HostConnection(
    address="10.1.2.3", scheme="http", port=5985, auth="kerberos", username="op@CORP.EXAMPLE",
    password="s3cret-Pa55", kerberos_hostname="WIN-01.corp.example",
)  # fmt: skip


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        (
            "Client 'nobody@CORP.EXAMPLE' not found in Kerberos database -1765328378",
            "KerberosPrincipalUnknown",
        ),
        ("Decrypt integrity check failed -1765328353", "KerberosPasswordRejected"),
        ("Preauthentication failed", "KerberosPasswordRejected"),
        ("Password has expired -1765328361", "KerberosPasswordExpired"),
        ("Cannot contact any KDC for realm 'CORP.EXAMPLE' -1765328228", "KerberosKDCUnreachable"),
        (
            "Major (851968): Unspecified GSS failure, Minor (2529638919): Server HTTP/win-02@CORP.EXAMPLE "
            "not found in Kerberos database",
            "KerberosServicePrincipalUnknown",
        ),
        ("Minor (2529638949): Clock skew too great", "KerberosClockSkew"),
        ("Minor (2529638945): Ticket not yet valid", "KerberosClockSkew"),
        ("Minor (2529638944): Ticket expired", "KerberosTicketExpired"),
        ("Minor (100001): Ticket expired", "KerberosTicketExpired"),
        ("The referenced credential has expired", "KerberosTicketExpired"),
        ("something else entirely", "KerberosFailed"),
    ],
)
def test_krb5_errors_are_named(text: str, reason: str) -> None:
    assert kerberos.classify_krb5(RuntimeError(text)).reason == reason


def test_named_failures_become_host_errors_with_the_fix() -> None:
    error = classify_error(
        kerberos.KerberosFailure("KerberosServicePrincipalUnknown", "Server not found"), CONN,
        action="facts", command_sent=False,
    )  # fmt: skip
    assert isinstance(error, HostAuthenticationError)
    assert "setspn -S HTTP/win-01.corp.example" in str(error)
    assert "s3cret-Pa55" not in str(error)
    unreachable = classify_error(
        kerberos.KerberosFailure("KerberosKDCUnreachable", "Cannot contact any KDC"), CONN,
        action="facts", command_sent=False,
    )  # fmt: skip
    assert isinstance(unreachable, HostUnreachableError)
    assert unreachable.retryable


def test_a_missing_gssapi_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "gssapi" else real(name, *a)
    )
    auth = kerberos.KerberosAuth(kerberos.KerberosTarget("op@CORP.EXAMPLE", "win-01.corp.example"), "pw")
    with pytest.raises(kerberos.KerberosFailure) as info:
        auth._new_context()
    assert info.value.reason == "AuthMethodUnavailable"
    assert "winnode[kerberos]" in str(info.value)


def test_the_spn_uses_the_kerberos_hostname_in_lower_case() -> None:
    assert CONN.kerberos_principal_host == "win-01.corp.example"
    assert HostConnection(address="Win-02.corp.example", auth="kerberos").kerberos_principal_host == (
        "win-02.corp.example"
    )


def test_the_emulator_tells_kerberos_tokens_from_ntlm() -> None:
    # RFC 2743 framing: 0x60, a length, then the DER of OID 1.2.840.113554.1.2.2.
    krb = bytes([0x60, 0x82, 0x02, 0x00]) + bytes.fromhex("06092a864886f712010202") + b"\x01\x00"
    assert _is_kerberos_token(base64.b64encode(krb).decode())
    assert not _is_kerberos_token(base64.b64encode(b"NTLMSSP\x00\x01\x00\x00\x00").decode())
    # SPNEGO (OID 1.3.6.1.5.5.2) is not a raw Kerberos token.
    spnego = bytes([0x60, 0x20]) + bytes.fromhex("06062b0601050502") + b"\x00" * 8
    assert not _is_kerberos_token(base64.b64encode(spnego).decode())
