"""WinRM credentials from the Secret a WindowsNode names in spec.winrm.credentialsSecretRef.

Errors say which Secret, which key and how to fix it; they never carry a value, and neither does
the repr of `Credentials`.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass, field

from cryptography import x509
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from winnode.api.common import SecretReference
from winnode.kube.api import ApiError
from winnode.kube.client import Kube, api_message, path
from winnode.kube.events import remember_secret
from winnode.settings import Settings

PASSWORD_AUTHS = frozenset({"ntlm", "basic", "kerberos", "credssp"})
CERTIFICATE_AUTH = "certificate"
USERNAME_KEY = "username"
PASSWORD_KEY = "password"
CERT_KEY = "tls.crt"
KEY_KEY = "tls.key"


def allowed_namespaces(settings: Settings) -> frozenset[str]:
    """Where credentials Secrets may live: the operator's namespace, plus those the admin opted in."""
    extra = {n.strip() for n in settings.credentials_namespaces.split(",") if n.strip()}
    return frozenset({settings.namespace, *extra})


class CredentialsError(Exception):
    """The credentials Secret is missing, unreadable or incomplete.

    `reason` is a CamelCase word for a condition (SecretNotFound, SecretForbidden, SecretKeyMissing,
    SecretValueInvalid, AuthUnsupported); `secret` is "namespace/name"; `key` the Secret key at fault.
    """

    def __init__(self, reason: str, secret: str, message: str, key: str | None = None) -> None:
        super().__init__(message)
        self.reason = reason
        self.secret = secret
        self.key = key


@dataclass(frozen=True)
class Credentials:
    username: str | None
    password: str | None = field(repr=False)
    cert_pem: str | None = field(repr=False)
    key_pem: str | None = field(repr=False)
    resource_version: str


def _fix_hint(ref: SecretReference, auth: str) -> str:
    if auth == CERTIFICATE_AUTH:
        return (
            f"create it with `kubectl create secret tls {ref.name} -n {ref.namespace} "
            f"--cert=client.crt --key=client.key`"
        )
    return (
        f"create it with `kubectl create secret generic {ref.name} -n {ref.namespace} "
        f"--from-literal={USERNAME_KEY}=<user> --from-literal={PASSWORD_KEY}=<password>`"
    )


async def read_credentials(
    kube: Kube, ref: SecretReference, auth: str, allowed: frozenset[str] | None = None
) -> Credentials:
    """Read and check the Secret for WinRM authentication `auth` (a WinRMAuth value).

    ntlm, basic, kerberos and credssp need keys `username` and `password`; certificate needs
    `tls.crt` and `tls.key` (a kubernetes.io/tls Secret). `allowed` (allowed_namespaces) limits
    where the Secret may be; None: anywhere.
    """
    auth = str(auth)
    secret_name = f"{ref.namespace}/{ref.name}"
    if allowed is not None and ref.namespace not in allowed:
        home = sorted(allowed)
        raise CredentialsError(
            "SecretNamespaceNotAllowed",
            secret_name,
            f"credentials Secret {secret_name} is in namespace {ref.namespace}, where winnode does not read "
            f"Secrets (it reads {', '.join(home)}). Move the Secret there, or opt the namespace in: "
            f"`kubectl create rolebinding winnode-credentials -n {ref.namespace} "
            "--clusterrole=winnode:credentials-reader --serviceaccount=<operator namespace>:winnode` and add "
            f"{ref.namespace} to WINNODE_CREDENTIALS_NAMESPACES of the winnode Deployment",
        )
    if auth not in PASSWORD_AUTHS and auth != CERTIFICATE_AUTH:
        raise CredentialsError(
            "AuthUnsupported",
            secret_name,
            f"WinRM auth {auth!r} is not one of {sorted(PASSWORD_AUTHS | {CERTIFICATE_AUTH})}",
        )
    try:
        secret = await kube.request(
            "GET", path("api", "v1", "namespaces", ref.namespace, "secrets", ref.name)
        )
    except ApiError as exc:
        if exc.status == 404:
            raise CredentialsError(
                "SecretNotFound",
                secret_name,
                f"credentials Secret {secret_name} does not exist; {_fix_hint(ref, auth)}",
            ) from None
        if exc.status == 403:
            raise CredentialsError(
                "SecretForbidden",
                secret_name,
                f"the operator may not read Secret {secret_name}: {api_message(exc)}; "
                "grant its ServiceAccount `get` on secrets in that namespace",
            ) from None
        raise
    data: dict[str, str] = secret.get("data") or {}
    version = str((secret.get("metadata") or {}).get("resourceVersion", ""))

    def value(key: str) -> str:
        raw = data.get(key)
        if raw is None or raw == "":
            present = ", ".join(sorted(data)) or "none"
            raise CredentialsError(
                "SecretKeyMissing",
                secret_name,
                f"credentials Secret {secret_name} has no key {key!r} (needed for WinRM auth {auth}; "
                f"keys present: {present}); add it, e.g. `kubectl patch secret {ref.name} -n {ref.namespace} "
                f'--type merge -p \'{{"stringData":{{"{key}":"..."}}}}\'`',
                key,
            )
        try:
            text = base64.b64decode(raw, validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            raise CredentialsError(
                "SecretValueInvalid",
                secret_name,
                f"key {key!r} of Secret {secret_name} is not UTF-8 text",
                key,
            ) from None
        if not text.strip():
            raise CredentialsError(
                "SecretKeyMissing",
                secret_name,
                f"key {key!r} of credentials Secret {secret_name} is blank; put the value in it",
                key,
            )
        return text

    if auth == CERTIFICATE_AUTH:
        cert_pem, key_pem = value(CERT_KEY), value(KEY_KEY)
        _check_pem(secret_name, cert_pem, key_pem)
        return Credentials(
            username=None, password=None, cert_pem=cert_pem, key_pem=key_pem, resource_version=version
        )
    username = value(USERNAME_KEY).strip()
    password = value(PASSWORD_KEY)
    remember_secret(password)
    return Credentials(
        username=username, password=password, cert_pem=None, key_pem=None, resource_version=version
    )


def _check_pem(secret_name: str, cert_pem: str, key_pem: str) -> None:
    """Fail early, naming the key, rather than as an opaque TLS error at connect time."""
    try:
        x509.load_pem_x509_certificate(cert_pem.encode())
    except ValueError:
        raise CredentialsError(
            "SecretValueInvalid",
            secret_name,
            f"key {CERT_KEY!r} of Secret {secret_name} is not a PEM certificate",
            CERT_KEY,
        ) from None
    try:
        load_pem_private_key(key_pem.encode(), password=None)
    except (ValueError, TypeError):
        raise CredentialsError(
            "SecretValueInvalid",
            secret_name,
            f"key {KEY_KEY!r} of Secret {secret_name} is not an unencrypted PEM private key",
            KEY_KEY,
        ) from None
