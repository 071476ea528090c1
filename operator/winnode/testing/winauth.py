"""How the emulated WinRM listener authenticates: Basic, NTLM (with WinRM message encryption), client certificates.

NTLM authenticates a TCP connection, not a request: after the three-leg handshake the client sends
further requests on the same connection without an Authorization header, each body sealed with the
session key ("multipart/encrypted" with the application/HTTP-SPNEGO-session-encrypted protocol, as
pywinrm's winrm/encryption.py writes it). So the state lives in `ConnectionAuth`, one per connection.

Certificates (the CA, each host's serving certificate, client certificates for certificate auth) are
generated here with `cryptography`.
"""

from __future__ import annotations

import base64
import binascii
import contextvars
import datetime as dt
import re
import struct
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import spnego
import spnego._ntlm as _spnego_ntlm
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from spnego._ntlm_raw.crypto import lmowfv1, ntowfv1
from spnego.channel_bindings import GssChannelBindings
from spnego.exceptions import ErrorCode, SpnegoError

from winnode.testing import pki

AuthMode = Literal["basic", "ntlm", "certificate", "kerberos"]
AUTH_MODES: tuple[AuthMode, ...] = ("basic", "ntlm", "certificate", "kerberos")
# Kerberos needs a realm (testing/kdc.py): a host offers it only when given a keytab.
DEFAULT_AUTH_MODES: tuple[AuthMode, ...] = ("basic", "ntlm", "certificate")

SECPROFILE_MUTUAL = "http://schemas.dmtf.org/wbem/wsman/1/wsman/secprofile/https/mutual"
ENCRYPTED_PROTOCOL = "application/HTTP-SPNEGO-session-encrypted"
# MS-WSMV 2.2.9.1.2: the protocol string of a Kerberos-authenticated connection. pywinrm 0.5.0 labels its
# Kerberos-sealed parts with the SPNEGO string (winrm/encryption.py), so both are accepted for Kerberos.
KERBEROS_ENCRYPTED_PROTOCOL = "application/HTTP-Kerberos-session-encrypted"
# The DER of the Kerberos v5 mechanism OID 1.2.840.113554.1.2.2, which opens a raw GSS-API Kerberos token.
_KRB5_MECH_DER = bytes.fromhex("06092a864886f712010202")
ENCRYPTED_CONTENT_TYPE = f'multipart/encrypted;protocol="{ENCRYPTED_PROTOCOL}";boundary="Encrypted Boundary"'
MIME_BOUNDARY = b"--Encrypted Boundary"
UPN_OID = x509.ObjectIdentifier("1.3.6.1.4.1.311.20.2.3")
BASIC_CHALLENGE = 'Basic realm="WSMAN"'
NO_CREDENTIALS = "no credentials"
NEGOTIATE_CHALLENGE = "Negotiate"


_NTLM_TYPE_NEGOTIATE = 1


class EncryptionError(Exception):
    """An encrypted body could not be unwrapped."""


# --- NTLM accounts -----------------------------------------------------------------------------
#
# pyspnego's NTLM acceptor looks accounts up in one process-wide file (NTLM_USER_FILE). Every
# emulated host has its own accounts, so the lookup is routed through a context variable that
# each acceptor sets for the duration of its own calls; with it unset, pyspnego behaves as shipped.

_ACCOUNTS: contextvars.ContextVar[_NtlmAccounts | None] = contextvars.ContextVar(
    "winnode_ntlm_accounts", default=None
)
_STORE_MARKER = "<winnode-emulated-host-accounts>"
_patch_lock = threading.Lock()


@dataclass(frozen=True)
class _NtlmAccounts:
    hostname: str
    passwords: Mapping[str, str]  # casefolded username -> password


def _install_account_lookup() -> None:
    with _patch_lock:
        if getattr(_spnego_ntlm, "_winnode_account_lookup", False):
            return
        original_file = _spnego_ntlm._get_credential_file
        original_get = _spnego_ntlm._get_credential

        def credential_file() -> str | None:
            return _STORE_MARKER if _ACCOUNTS.get() is not None else original_file()

        def get_credential(
            store: str | None, domain: str | None = None, username: str | None = None
        ) -> tuple[str | None, str | None, bytes, bytes]:
            accounts = _ACCOUNTS.get()
            if accounts is None or store != _STORE_MARKER:
                return original_get(store, domain, username)
            # A local account may be named bare, as ".\user" or as "HOSTNAME\user".
            if (domain or "").casefold() not in ("", ".", accounts.hostname.casefold()):
                raise SpnegoError(ErrorCode.failure, context_msg="unknown domain for a local account")
            password = accounts.passwords.get((username or "").casefold())
            if password is None:
                raise SpnegoError(ErrorCode.failure, context_msg="unknown local account")
            return domain, username, lmowfv1(password), ntowfv1(password)

        _spnego_ntlm._get_credential_file = credential_file
        _spnego_ntlm._get_credential = get_credential
        _spnego_ntlm._winnode_account_lookup = True  # type: ignore[attr-defined]


@contextmanager
def _accounts(accounts: _NtlmAccounts) -> Iterator[None]:
    token = _ACCOUNTS.set(accounts)
    try:
        yield
    finally:
        _ACCOUNTS.reset(token)


# --- certificates ------------------------------------------------------------------------------


@dataclass(frozen=True)
class IssuedCert:
    cert_pem: str
    key_pem: str

    @property
    def der(self) -> bytes:
        return x509.load_pem_x509_certificate(self.cert_pem.encode()).public_bytes(serialization.Encoding.DER)

    def write(self, directory: Path, stem: str) -> tuple[Path, Path]:
        """Write `<stem>.pem` and `<stem>.key` (mode 0600) and return their paths."""
        directory.mkdir(parents=True, exist_ok=True)
        cert_path, key_path = directory / f"{stem}.pem", directory / f"{stem}.key"
        cert_path.write_text(self.cert_pem)
        key_path.touch(mode=0o600)
        key_path.write_text(self.key_pem)
        return cert_path, key_path


def _der_utf8string(value: str) -> bytes:
    raw = value.encode("utf-8")
    if len(raw) < 0x80:
        length = bytes([len(raw)])
    else:
        size = (len(raw).bit_length() + 7) // 8
        length = bytes([0x80 | size]) + len(raw).to_bytes(size, "big")
    return b"\x0c" + length + raw


def _parse_der_string(data: bytes) -> str | None:
    if len(data) < 2 or data[0] not in (0x0C, 0x16, 0x13):  # UTF8String, IA5String, PrintableString
        return None
    length, offset = data[1], 2
    if length & 0x80:
        size = length & 0x7F
        length, offset = int.from_bytes(data[2 : 2 + size], "big"), 2 + size
    return data[offset : offset + length].decode("utf-8", errors="replace")


class CertificateAuthority:
    """A throwaway CA (from winnode.testing.pki): signs each host's serving certificate and client certificates."""

    def __init__(self, common_name: str = "winnode emulator CA") -> None:
        self.keypair = pki.make_ca(common_name)
        self.cert_pem = self.keypair.cert_pem.decode()

    def issue_server_cert(self, hostnames: Sequence[str], addresses: Sequence[str]) -> IssuedCert:
        common_name = hostnames[0] if hostnames else (addresses[0] if addresses else "winrm")
        pair = pki.issue_serving_cert(self.keypair, common_name, dns_names=hostnames, ips=addresses)
        return IssuedCert(pair.cert_pem.decode(), pair.key_pem.decode())

    def issue_client_cert(self, upn: str, common_name: str | None = None) -> IssuedCert:
        """A certificate WinRM maps to a local account by its UPN (subjectAltName otherName), like `user@localhost`."""
        key = pki.new_key()
        now = dt.datetime.now(dt.UTC)
        ca = self.keypair
        cert = (
            x509.CertificateBuilder()
            .subject_name(
                x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name or upn.split("@", 1)[0])])
            )
            .issuer_name(ca.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - pki.BACKDATE)
            .not_valid_after(now + pki.VALIDITY)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
            .add_extension(
                x509.SubjectAlternativeName([x509.OtherName(UPN_OID, _der_utf8string(upn))]), critical=False
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()), critical=False
            )
            .sign(ca.key, hashes.SHA256())
        )
        return IssuedCert(
            cert.public_bytes(serialization.Encoding.PEM).decode(), pki.private_key_pem(key).decode()
        )


@dataclass(frozen=True)
class CertIdentity:
    upn: str | None
    common_name: str | None
    client_auth: bool


def certificate_identity(der: bytes) -> CertIdentity:
    cert = x509.load_der_x509_certificate(der)
    upn: str | None = None
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        for other in san.get_values_for_type(x509.OtherName):
            if other.type_id == UPN_OID:
                upn = _parse_der_string(other.value)
                break
    except x509.ExtensionNotFound:
        pass
    cns = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    common_name = str(cns[0].value) if cns else None
    try:
        ekus = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        client_auth = ExtendedKeyUsageOID.CLIENT_AUTH in ekus
    except x509.ExtensionNotFound:
        client_auth = False
    return CertIdentity(upn=upn, common_name=common_name, client_auth=client_auth)


def tls_channel_bindings(server_cert_der: bytes) -> GssChannelBindings:
    """RFC 5929 tls-server-end-point bindings, as an NTLM client over HTTPS computes them."""
    cert = x509.load_der_x509_certificate(server_cert_der)
    algorithm = cert.signature_hash_algorithm
    chosen: hashes.HashAlgorithm = (
        hashes.SHA256() if algorithm is None or algorithm.name in ("md5", "sha1") else algorithm
    )
    digest = hashes.Hash(chosen)
    digest.update(server_cert_der)
    return GssChannelBindings(application_data=b"tls-server-end-point:" + digest.finalize())


# --- per-host configuration and per-connection state -------------------------------------------


@dataclass(frozen=True)
class AuthConfig:
    hostname: str
    modes: frozenset[str]
    passwords: Mapping[str, str]  # casefolded local username -> password
    cert_users: Mapping[str, str] = field(default_factory=dict)  # casefolded UPN or subject CN -> username
    server_cert_der: bytes | None = None
    names: Mapping[str, str] = field(
        default_factory=dict
    )  # casefolded username -> the account's own spelling
    keytab: str | None = None  # the listener's key (HTTP/<host name>) for Kerberos
    # casefolded Kerberos principal (user@REALM) -> the local account it logs on as (an administrator)
    kerberos_users: Mapping[str, str] = field(default_factory=dict)

    def challenges(self) -> list[str]:
        """WWW-Authenticate values of a 401, in the order WinRM lists them."""
        values: list[str] = []
        if "ntlm" in self.modes or "kerberos" in self.modes:
            values.append(NEGOTIATE_CHALLENGE)
        if "kerberos" in self.modes:
            values.append("Kerberos")
        if "basic" in self.modes:
            values.append(BASIC_CHALLENGE)
        return values

    def local_user(self, name: str) -> str | None:
        """The local account `name` refers to (bare, `.\\user` or `HOST\\user`), if it exists."""
        domain, sep, user = name.rpartition("\\")
        if sep and domain.casefold() not in (".", self.hostname.casefold()):
            return None
        if "@" in user:
            user, _, suffix = user.partition("@")
            if suffix.casefold() not in ("localhost", self.hostname.casefold()):
                return None
        key = user.casefold()
        return self.names.get(key, key) if key in self.passwords else None


@dataclass(frozen=True)
class AuthDecision:
    user: str | None  # set when authenticated
    challenges: tuple[str, ...] = ()  # WWW-Authenticate values to send with a 401
    reason: str = ""
    handshake: bool = False  # a 401 that carries the next leg of an NTLM handshake, not a refusal
    final: str | None = None  # WWW-Authenticate of the response that completes a SPNEGO handshake

    @property
    def ok(self) -> bool:
        return self.user is not None


class ConnectionAuth:
    """Authentication state of one TCP connection to an emulated host."""

    def __init__(self, config: AuthConfig, *, tls: bool, peer_cert_der: bytes | None) -> None:
        _install_account_lookup()
        self.config = config
        self.tls = tls
        self.peer_cert_der = peer_cert_der
        self.user: str | None = None  # set once NTLM authenticated the connection
        self._context: Any = None  # pyspnego acceptor, pending or established
        self._established = False
        self._accounts = _NtlmAccounts(config.hostname, config.passwords)
        self._kerberos = False  # the established context is a GSSAPI Kerberos one
        self._protocol_string = ENCRYPTED_PROTOCOL

    def revoke(self) -> None:
        """Forget the connection's authentication (the host rejected its credentials)."""
        self.user = None
        self._context = None
        self._established = False
        self._kerberos = False

    @property
    def can_seal(self) -> bool:
        return self._established and self._context is not None

    def _reject(self, reason: str) -> AuthDecision:
        return AuthDecision(user=None, challenges=tuple(self.config.challenges()), reason=reason)

    def authenticate(self, authorization: str | None) -> AuthDecision:
        if not authorization:
            if self.user is not None:
                return AuthDecision(user=self.user)
            return self._reject(NO_CREDENTIALS)
        scheme, _, value = authorization.strip().partition(" ")
        folded = scheme.casefold()
        if folded == "basic":
            return self._basic(value.strip())
        if folded in ("negotiate", "kerberos") and _is_kerberos_token(value.strip()):
            return self._kerberos_logon(scheme, value.strip())
        if folded in ("negotiate", "ntlm"):
            return self._ntlm(scheme, value.strip())
        if authorization.strip() == SECPROFILE_MUTUAL:
            return self._certificate()
        return self._reject(f"unsupported authorization scheme {scheme!r}")

    def _basic(self, value: str) -> AuthDecision:
        if "basic" not in self.config.modes:
            return self._reject("basic authentication is disabled")
        try:
            decoded = base64.b64decode(value, validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return self._reject("malformed basic credentials")
        name, sep, password = decoded.partition(":")
        user = self.config.local_user(name) if sep else None
        if user is None or self.config.passwords[user.casefold()] != password:
            return self._reject("bad user name or password")
        return AuthDecision(user=user)

    def _ntlm(self, scheme: str, value: str) -> AuthDecision:
        if "ntlm" not in self.config.modes:
            return self._reject("negotiate authentication is disabled")
        try:
            token = base64.b64decode(value, validate=True)
        except binascii.Error:
            return self._reject("malformed negotiate token")
        fresh = (
            token.startswith(b"NTLMSSP\x00")
            and len(token) >= 12
            and struct.unpack("<I", token[8:12])[0] == _NTLM_TYPE_NEGOTIATE
        )
        with _accounts(self._accounts):
            try:
                if fresh or self._context is None or self._established:
                    bindings = (
                        tls_channel_bindings(self.config.server_cert_der)
                        if self.tls and self.config.server_cert_der
                        else None
                    )
                    # pywinrm sends raw NTLM tokens; SPNEGO-wrapped ones come from other clients. Either
                    # way pyspnego's own implementation runs (never a system GSSAPI), so the
                    # per-host account lookup above applies.
                    raw_ntlm = token.startswith(b"NTLMSSP\x00")
                    self._context = spnego.server(
                        hostname=self.config.hostname,
                        service="http",
                        protocol="ntlm" if raw_ntlm else "negotiate",
                        options=spnego.NegotiateOptions.use_ntlm
                        if raw_ntlm
                        else spnego.NegotiateOptions.use_negotiate,
                        channel_bindings=bindings,
                    )
                    self._established = False
                    self.user = None
                out = self._context.step(token)
            except SpnegoError as exc:
                self._context = None
                return self._reject(f"negotiate authentication failed: {exc}")
        if not self._context.complete:
            token_b64 = base64.b64encode(out or b"").decode()
            return AuthDecision(user=None, challenges=(f"{scheme} {token_b64}",), handshake=True)
        principal = str(self._context.client_principal or "")
        user = self.config.local_user(principal)
        if user is None:
            self._context = None
            return self._reject("authenticated principal is not a local account")
        self._established = True
        self.user = user
        final = f"{scheme} {base64.b64encode(out).decode()}" if out else None
        return AuthDecision(user=user, final=final)

    def _kerberos_logon(self, scheme: str, value: str) -> AuthDecision:
        """Accept a Kerberos AP-REQ with the listener's keytab (MIT krb5 through python-gssapi)."""
        if "kerberos" not in self.config.modes or not self.config.keytab:
            return self._reject("kerberos authentication is disabled")
        import gssapi
        from gssapi.raw.misc import GSSError

        try:
            creds = gssapi.Credentials(usage="accept", store={"keytab": self.config.keytab})
            context = gssapi.SecurityContext(creds=creds, usage="accept")
            out = context.step(base64.b64decode(value))
            # python-gssapi returns the error token of a failed step and raises the error on the next
            # use of the context (gssapi/_utils.py, check_last_err): this is that next use.
            complete = context.complete
        except GSSError as exc:
            self.revoke()
            reason = f"kerberos authentication failed: {exc.gen_message()}"
            if exc.token:
                # The acceptor's KRB-ERROR (RFC 4120 5.9.1: KRB_AP_ERR_TKT_EXPIRED, KRB_AP_ERR_SKEW...),
                # which MIT's gss_accept_sec_context returns as the output token when the AP-REQ asked for
                # mutual authentication (src/lib/gssapi/krb5/accept_sec_context.c at krb5 1.20, `fail:`).
                # It goes back in the 401's WWW-Authenticate, as HTTP.sys sends SSPI's error token, so the
                # client learns why its ticket was refused.
                token = base64.b64encode(exc.token).decode()
                return AuthDecision(user=None, challenges=(f"{scheme} {token}",), reason=reason)
            return self._reject(reason)
        if not complete:
            self.revoke()
            return self._reject("kerberos authentication needs one leg; the token did not complete it")
        principal = str(context.initiator_name).rstrip("\x00")
        user = self.config.kerberos_users.get(principal.casefold())
        if user is None or self.config.local_user(user) is None:
            # Windows logs the principal on, then WinRM refuses a user outside Administrators.
            self.revoke()
            return self._reject(f"kerberos principal {principal} is not an administrator of this host")
        self._context = context
        self._kerberos = True
        self._established = True
        self.user = self.config.local_user(user)
        final = f"{scheme} {base64.b64encode(out).decode()}" if out else None
        return AuthDecision(user=self.user, final=final)

    def _certificate(self) -> AuthDecision:
        if "certificate" not in self.config.modes:
            return self._reject("certificate authentication is disabled")
        if not self.tls or not self.peer_cert_der:
            return self._reject("certificate authentication needs HTTPS with a client certificate")
        identity = certificate_identity(self.peer_cert_der)
        if not identity.client_auth:
            return self._reject("client certificate lacks the Client Authentication usage")
        for key in (identity.upn, identity.common_name):
            if key and key.casefold() in self.config.cert_users:
                user = self.config.local_user(self.config.cert_users[key.casefold()])
                if user is not None:
                    return AuthDecision(user=user)
        return self._reject("client certificate is not mapped to a local account")

    # --- message encryption ---------------------------------------------------------------

    def unwrap(self, body: bytes) -> bytes:
        """The SOAP envelope inside a multipart/encrypted body, verifying every signature."""
        if not self.can_seal:
            raise EncryptionError("encrypted message on a connection without an NTLM session")
        message = b""
        rest = body
        while rest.startswith(MIME_BOUNDARY + b"\r\n"):
            rest = rest[len(MIME_BOUNDARY) + 2 :]
            header, sep, rest = rest.partition(MIME_BOUNDARY + b"\r\n")
            match = re.search(rb"Length=(\d+)", header)
            protocols = (
                (ENCRYPTED_PROTOCOL, KERBEROS_ENCRYPTED_PROTOCOL) if self._kerberos else (ENCRYPTED_PROTOCOL,)
            )
            named = [p for p in protocols if p.encode() in header]
            if not sep or not match or not named:
                raise EncryptionError("malformed encrypted part header")
            self._protocol_string = named[0]
            length = int(match.group(1))
            marker = b"\tContent-Type: application/octet-stream\r\n"
            if not rest.startswith(marker):
                raise EncryptionError("encrypted part has no octet-stream header")
            rest = rest[len(marker) :]
            if len(rest) < 4:
                raise EncryptionError("encrypted part is truncated")
            sig_len = struct.unpack("<i", rest[:4])[0]
            end = 4 + sig_len + length
            if sig_len < 0 or len(rest) < end:
                raise EncryptionError("encrypted part is truncated")
            signature, sealed = rest[4 : 4 + sig_len], rest[4 + sig_len : end]
            rest = rest[end:]
            if self._kerberos:
                plain = _kerberos_unwrap(self._context, signature, sealed)
            else:
                try:
                    with _accounts(self._accounts):
                        plain = self._context.unwrap(signature + sealed).data
                except SpnegoError as exc:
                    raise EncryptionError(f"message signature check failed: {exc}") from None
            if len(plain) != length:
                raise EncryptionError("decrypted length differs from OriginalContent")
            message += plain
        if rest not in (MIME_BOUNDARY + b"--\r\n", MIME_BOUNDARY + b"--"):
            raise EncryptionError("encrypted body does not end with its closing boundary")
        return message

    def wrap(self, payload: bytes) -> bytes:
        """Seal a response the way the client's pywinrm expects to unwrap it."""
        if self._kerberos:
            signature, sealed = _kerberos_wrap(self._context, payload)
        else:
            with _accounts(self._accounts):
                wrapped: bytes = self._context.wrap(payload, encrypt=True).data
            signature, sealed = wrapped[:16], wrapped[16:]
        return (
            MIME_BOUNDARY + b"\r\n"
            b"\tContent-Type: " + self._protocol_string.encode() + b"\r\n"
            b"\tOriginalContent: type=application/soap+xml;charset=UTF-8;Length="
            + str(len(payload)).encode()
            + b"\r\n"
            + MIME_BOUNDARY
            + b"\r\n"
            b"\tContent-Type: application/octet-stream\r\n"
            + struct.pack("<i", len(signature))
            + signature
            + sealed
            + MIME_BOUNDARY
            + b"--\r\n"
        )

    @property
    def content_type(self) -> str:
        """The Content-Type of a sealed response: the protocol string the client used."""
        return f'multipart/encrypted;protocol="{self._protocol_string}";boundary="Encrypted Boundary"'


def _is_kerberos_token(value: str) -> bool:
    """A raw GSS-API Kerberos token (RFC 2743 3.1 framing: 0x60, length, the krb5 mechanism OID)."""
    try:
        token = base64.b64decode(value, validate=True)
    except binascii.Error:
        return False
    if len(token) < 2 or token[0] != 0x60:
        return False
    offset = 2 + (token[1] & 0x7F if token[1] & 0x80 else 0)
    return token[offset : offset + len(_KRB5_MECH_DER)] == _KRB5_MECH_DER


def _kerberos_unwrap(context: Any, header: bytes, sealed: bytes) -> bytes:
    """GSS_UnwrapEx over WinRM's layout: the token header apart, then the sealed data.

    The buffer layout (header, data, and an empty data buffer MIT krb5 uses for the rotated trailer)
    is the one pyspnego reads in spnego/_gss.py GSSAPIProxy.unwrap_winrm at pyspnego 0.12.
    """
    from gssapi.raw import IOV, IOVBufferType, unwrap_iov
    from gssapi.raw.misc import GSSError

    iov = IOV((IOVBufferType.header, False, header), sealed, IOVBufferType.data, std_layout=False)
    try:
        unwrap_iov(context, iov)
    except GSSError as exc:
        raise EncryptionError(f"message signature check failed: {exc.gen_message()}") from None
    return bytes(iov[1].value or b"")


def _kerberos_wrap(context: Any, payload: bytes) -> tuple[bytes, bytes]:
    """GSS_WrapEx with confidentiality: (token header, sealed data and padding), as WinRM frames them."""
    from gssapi.raw import IOV, IOVBufferType, wrap_iov

    iov = IOV(IOVBufferType.header, payload, IOVBufferType.padding, std_layout=False)
    wrap_iov(context, iov, confidential=True)
    return bytes(iov[0].value or b""), bytes(iov[1].value or b"") + bytes(iov[2].value or b"")


def is_encrypted(content_type: str | None) -> bool:
    return bool(content_type) and "multipart/encrypted" in (content_type or "").lower()
