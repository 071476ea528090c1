"""A pinned WinRM listener certificate: only the certificate with this SHA-256 is accepted.

Pinning replaces CA verification (a self-signed listener certificate can be pinned), the way WMCO
pins a Windows host's SSH host key. The fingerprint is checked by urllib3 on the very connection
pywinrm then uses, right after the TLS handshake and before the first HTTP request is written, so
a host presenting any other certificate never receives a request, let alone an Authorization header.
"""

from __future__ import annotations

import hashlib
import ipaddress
import socket
import ssl
from typing import Any

from requests.adapters import HTTPAdapter

# What urllib3 says when the fingerprint differs (urllib3/util/ssl_.py assert_fingerprint).
MISMATCH_TEXT = "Fingerprints did not match"


class PinnedAdapter(HTTPAdapter):
    """An HTTPS adapter whose connections must present the certificate with SHA-256 `sha256`."""

    def __init__(self, sha256: str) -> None:
        self.sha256 = sha256.lower()
        super().__init__(max_retries=0)

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        kwargs["assert_fingerprint"] = self.sha256
        super().init_poolmanager(*args, **kwargs)


def pin_session(session: Any, sha256: str) -> None:
    """Make every https:// request of this requests.Session require the pinned certificate."""
    session.verify = False  # chain and name are not checked: the pin is the check
    session.mount("https://", PinnedAdapter(sha256))


def certificate_sha256(address: str, port: int, timeout_s: float) -> str:
    """The SHA-256 (hex) of the certificate the listener presents. Only a TLS handshake: no request."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # we only read the certificate, to pin it
    try:
        ipaddress.ip_address(address)
        server_name = None
    except ValueError:
        server_name = address
    with (
        socket.create_connection((address, port), timeout=timeout_s) as raw,
        context.wrap_socket(raw, server_hostname=server_name) as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    if not der:
        raise ssl.SSLError(f"the listener at {address}:{port} presented no certificate")
    return hashlib.sha256(der).hexdigest()
