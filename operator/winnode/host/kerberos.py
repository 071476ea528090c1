"""Kerberos for WinRM through GSSAPI (pyspnego over python-gssapi and MIT krb5), with message encryption.

pywinrm 0.5 reaches Kerberos through a vendored requests-kerberos that needs pykerberos and takes its
ticket from the process's default credential cache. winnode logs on with the username and password
of a Secret instead, so this module gives pywinrm's Transport a requests auth of its own:

- The initial ticket is acquired from the password (krb5_get_init_creds_password, through the krb5
  package) into a MEMORY credential cache of this process, one per principal: no file, no password
  on any command line, and one AS exchange per ticket lifetime rather than per operation (service
  tickets are kept there too). When the ticket has expired it is acquired again from the password,
  once; a ticket still refused as expired (the clocks differ) is KerberosTicketExpired. The realm
  and KDCs come from the process's krb5.conf (KRB5_CONFIG).
- The first request carries `Authorization: Negotiate <Kerberos AP-REQ>`, as pywinrm's own
  requests-kerberos sends it (winrm/vendor/requests_kerberos/kerberos_.py at pywinrm 0.5.0,
  `generate_request_header`, force_preemptive=True). The host's answer must carry the AP-REP
  (mutual authentication, REQUIRED there too) or nothing is trusted.
- Over http every message is sealed: pywinrm's winrm/encryption.py calls `wrap_winrm(host, data)` and
  `unwrap_winrm(host, data, header)` on the session's auth, which map to GSS_WrapEx/UnwrapEx with the
  IOV layout WinRM uses (pyspnego's GSSAPIProxy.wrap_winrm/unwrap_winrm).

The service principal is HTTP/<host name>. The host name is spec.winrm.kerberosHostname when given,
else the address (pywinrm's `kerberos_hostname_override` plays that role for its own client).
"""

from __future__ import annotations

import base64
import hashlib
import importlib.util
import re
import secrets
import threading
from dataclasses import dataclass
from typing import Any

import requests
from requests.auth import AuthBase

WINRM_SERVICE = "HTTP"
_NEGOTIATE = re.compile(r"(?:^|,)\s*(?:Negotiate|Kerberos)\s+([A-Za-z0-9+/=]+)", re.IGNORECASE)


class KerberosFailure(Exception):
    """A Kerberos step failed on our side or at the KDC. `reason` names it; the text never holds secrets."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class _Krb5Rule:
    pattern: re.Pattern[str]
    reason: str


# MIT krb5 error texts (lib/krb5/error_tables/krb5_err.et at krb5 1.20) and what they mean to an admin,
# first match wins: "Password has expired" must be read before the generic "expired".
_KRB5_ERRORS: tuple[_Krb5Rule, ...] = (
    _Krb5Rule(pattern=re.compile(r"Password has expired", re.I), reason="KerberosPasswordExpired"),
    _Krb5Rule(
        pattern=re.compile(r"Client '?[^ ]*'? not found in Kerberos database", re.I),
        reason="KerberosPrincipalUnknown",
    ),
    _Krb5Rule(
        pattern=re.compile(r"Server '?[^ ]*'? not found in Kerberos database", re.I),
        reason="KerberosServicePrincipalUnknown",
    ),
    _Krb5Rule(
        pattern=re.compile(
            r"Preauthentication failed|Decrypt integrity check failed|Password incorrect", re.I
        ),
        reason="KerberosPasswordRejected",
    ),
    _Krb5Rule(
        pattern=re.compile(
            r"Cannot contact any KDC|Cannot find KDC|Cannot resolve network address for KDC|"
            r"Configuration file does not specify default realm|Cannot find KDC for realm",
            re.I,
        ),
        reason="KerberosKDCUnreachable",
    ),
    _Krb5Rule(
        pattern=re.compile(r"Ticket expired|credential has expired", re.I), reason="KerberosTicketExpired"
    ),
    # KRB_AP_ERR_SKEW and KRB_AP_ERR_TKT_NYV: the clocks differ by more than the allowed skew (5 minutes).
    _Krb5Rule(
        pattern=re.compile(r"Clock skew too great|Ticket not yet valid", re.I), reason="KerberosClockSkew"
    ),
)


def classify_krb5(exc: BaseException) -> KerberosFailure:
    """The named failure for an error of krb5, GSSAPI or pyspnego (their text, never a secret)."""
    text = " ".join(str(exc).split())[:400]
    for rule in _KRB5_ERRORS:
        if rule.pattern.search(text):
            return KerberosFailure(rule.reason, text)
    return KerberosFailure(reason="KerberosFailed", detail=text)


@dataclass(frozen=True)
class KerberosTarget:
    username: str
    hostname: str
    service: str = WINRM_SERVICE

    @property
    def spn(self) -> str:
        return f"{self.service}/{self.hostname}"


# principal -> (digest of principal and password, MEMORY ccache name). One entry per principal: a new
# password re-initialises the same cache, so the table grows with the number of accounts only.
_TICKETS: dict[str, tuple[str, str]] = {}
_TICKETS_LOCK = threading.Lock()


def ticket_cache(principal: str, password: str, *, renew: bool = False) -> str:
    """The MEMORY ccache holding a TGT of `principal`, acquired from `password` when absent or `renew`."""
    digest = hashlib.sha256(f"{principal}\0{password}".encode()).hexdigest()
    with _TICKETS_LOCK:
        known = _TICKETS.get(principal)
        if known is not None and known[0] == digest and not renew:
            return known[1]
        name = known[1] if known is not None else f"MEMORY:winnode-{secrets.token_hex(12)}"
        import krb5

        try:
            ctx = krb5.init_context()
            client = krb5.parse_name_flags(ctx, principal.encode())
            options = krb5.get_init_creds_opt_alloc(ctx)
            krb5.get_init_creds_opt_set_canonicalize(options, True)
            cred = krb5.get_init_creds_password(ctx, client, options, password=password.encode())
            ccache = krb5.cc_resolve(ctx, name.encode())
            krb5.cc_initialize(ctx, ccache, cred.client)
            krb5.cc_store_cred(ctx, ccache, cred)
        except krb5.Krb5Error as exc:
            _TICKETS.pop(principal, None)
            raise classify_krb5(exc) from None
        _TICKETS[principal] = (digest, name)
        return name


class KerberosAuth(AuthBase):
    """requests auth for one pywinrm operation: one security context, sealed messages over http."""

    def __init__(self, target: KerberosTarget, password: str) -> None:
        self.target = target
        self._password = password
        self._context: Any = None
        self._sent = False
        self.winrm_encryption_available = True

    def _new_context(self, *, renew: bool = False) -> Any:
        missing = [m for m in ("gssapi", "krb5") if importlib.util.find_spec(m) is None]
        if missing:
            # pyspnego would fall back to its own NTLM-only code and fail obscurely.
            raise KerberosFailure(
                reason="AuthMethodUnavailable",
                detail=f"{' and '.join(missing)} not installed; install winnode with its kerberos extra "
                "(pip install 'winnode[kerberos]', which builds against MIT krb5)",
            )
        import spnego

        ccache = ticket_cache(self.target.username, self._password, renew=renew)
        try:
            return spnego.client(
                spnego.KerberosCCache(ccache=ccache, principal=self.target.username),
                hostname=self.target.hostname,
                service=self.target.service,
                protocol="kerberos",
                context_req=spnego.ContextReq.mutual_auth
                | spnego.ContextReq.sequence_detect
                | spnego.ContextReq.integrity
                | spnego.ContextReq.confidentiality,
                options=spnego.NegotiateOptions.wrapping_winrm,
            )
        except Exception as exc:  # krb5.Krb5Error, spnego's and gssapi's errors: all carry krb5's text
            raise classify_krb5(exc) from None

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        if not self._sent:
            token = self._first_token()
            request.headers["Authorization"] = "Negotiate " + base64.b64encode(token).decode()
            self._sent = True
            request.register_hook("response", self._on_response)  # type: ignore[no-untyped-call]
        return request

    def _first_token(self) -> bytes:
        try:
            return self._step_new_context(renew=False)
        except KerberosFailure as failure:
            if failure.reason != "KerberosTicketExpired":
                raise
        # The cached ticket has expired: acquire a new one from the password, once.
        return self._step_new_context(renew=True)

    def _step_new_context(self, *, renew: bool) -> bytes:
        self._context = self._new_context(renew=renew)
        try:
            token: bytes = self._context.step() or b""
        except Exception as exc:
            raise classify_krb5(exc) from None
        return token

    def _on_response(self, response: requests.Response, **_: Any) -> requests.Response:
        if self._context is None or self._context.complete:
            return response
        match = _NEGOTIATE.search(response.headers.get("WWW-Authenticate", ""))
        if response.status_code == 401:
            # The host refused the ticket or the principal. A refused AP-REQ that asked for mutual
            # authentication is answered with the acceptor's KRB-ERROR (RFC 4120 3.2.3: "Ticket
            # expired", "Clock skew too great" as the host judged them); stepping our context with it
            # turns it into krb5's own error. Without one, pywinrm raises InvalidCredentialsError.
            if match is not None:
                try:
                    self._context.step(base64.b64decode(match.group(1)))
                except Exception as exc:
                    raise classify_krb5(exc) from None
            return response
        if match is None:
            raise KerberosFailure(
                reason="KerberosMutualAuthFailed",
                detail=f"the answer of {self.target.hostname} carries no Kerberos reply: it did not prove it holds "
                f"the key of {self.target.spn}",
            )
        try:
            self._context.step(base64.b64decode(match.group(1)))
        except Exception as exc:
            raise classify_krb5(exc) from None
        if not self._context.complete:
            raise KerberosFailure(
                reason="KerberosMutualAuthFailed",
                detail=f"the Kerberos reply of {self.target.hostname} did not verify",
            )
        return response

    # --- pywinrm's winrm/encryption.py calls these with the URL's host name --------------------------

    def wrap_winrm(self, host: object, message: bytes) -> tuple[bytes, bytes]:
        result = self._context.wrap_winrm(message)
        return result.data, result.header

    def unwrap_winrm(self, host: object, message: bytes, header: bytes) -> bytes:
        data: bytes = self._context.unwrap_winrm(header, message)
        return data


def install(transport: Any, target: KerberosTarget, password: str) -> None:
    """Give pywinrm's Transport a session that logs on with Kerberos and seals messages over http.

    The session is built by pywinrm itself (proxies, certificate validation, headers) as for a
    password method, then its auth is replaced; encryption is set up the way `build_session` does it.
    """
    transport.auth_method = "plaintext"
    try:
        session = transport.build_session()
    finally:
        transport.auth_method = "kerberos"
    session.auth = KerberosAuth(target, password)
    if not str(transport.endpoint).lower().startswith("https"):
        transport.setup_encryption(session)
