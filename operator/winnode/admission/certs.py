"""The webhook's serving certificate: made, shared, published and rotated by the webhook replicas themselves,
or read from files that cert-manager keeps fresh.

Self-managed (the default). A CA and a serving certificate it signs live in one Secret
(type kubernetes.io/tls: tls.crt, tls.key, ca.crt, ca.key) shared by all replicas; ca.crt is the
caBundle, newest CA first. Every replica, every check interval:
1. reads the Secret (creates it when missing; a lost create/update race means adopting the winner's);
2. drops expired CAs from the bundle; makes a new CA once a third of the current one's lifetime is left,
   keeping the old one in the bundle so certificates it signed stay trusted;
3. patches the bundle into every webhook of our ValidatingWebhookConfiguration (JSON patch guarded by
   resourceVersion) and notes when it first saw each CA there;
4. re-issues the serving certificate once a third of its lifetime is left, its names changed, or a newer
   CA has sat in the published bundle for the propagation delay (the apiserver must trust a CA before
   we serve certificates it signs);
5. loads the serving certificate into the live TLS context (new handshakes use it, open ones go on).
So rotation never has a moment where the apiserver and the webhook disagree on what to trust.

cert-manager (`--cert-dir`): tls.crt and tls.key are re-read when they change; its CA injector keeps
the caBundle (annotate the configuration with cert-manager.io/inject-ca-from); nothing is written.
"""

from __future__ import annotations

import asyncio
import base64
import datetime
import hashlib
import ipaddress
import logging
import ssl
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from winnode import timeouts
from winnode.admission.metrics import WebhookMetrics
from winnode.certificates import KeyPair, key_usage, new_key, private_key_pem
from winnode.kube.api import ApiClient, ApiError, load_cert_chain_from_memory, path

log = logging.getLogger(__name__)

# Clocks of writer and verifier differ a little; a certificate valid from a minute ago is valid now.
BACKDATE = datetime.timedelta(seconds=60)
RENEW_FRACTION = 1 / 3
CA_COMMON_NAME = "winnode-webhook-ca"
SECRET_TYPE = "kubernetes.io/tls"

Clock = Callable[[], datetime.datetime]


def utcnow() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


# --- certificates ---------------------------------------------------------------------------------


def fingerprint(cert: x509.Certificate) -> str:
    return hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()


def new_ca(now: datetime.datetime, lifetime: datetime.timedelta) -> KeyPair:
    key = new_key()
    serial = x509.random_serial_number()
    # A distinct name per CA: while two sit in the bundle, a verifier picks the issuer by name.
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "winnode"),
            x509.NameAttribute(NameOID.COMMON_NAME, f"{CA_COMMON_NAME}-{serial:x}"[:64]),
        ]
    )
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(serial)
        .not_valid_before(now - BACKDATE)
        .not_valid_after(now + lifetime)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(key_usage(ca=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return KeyPair(cert, key)


def _general_names(sans: Sequence[str]) -> list[x509.GeneralName]:
    out: list[x509.GeneralName] = []
    for san in sans:
        try:
            out.append(x509.IPAddress(ipaddress.ip_address(san)))
        except ValueError:
            out.append(x509.DNSName(san))
    return out


def issue_serving(
    ca: KeyPair, sans: Sequence[str], now: datetime.datetime, lifetime: datetime.timedelta
) -> KeyPair:
    """A serving certificate for `sans` (DNS names or IPs), never outliving its CA."""
    if not sans:
        raise ValueError("a serving certificate needs at least one DNS name or IP address")
    key = new_key()
    not_after = min(now + lifetime, ca.cert.not_valid_after_utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, sans[0][:64])]))
        .issuer_name(ca.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(key_usage(ca=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName(_general_names(sans)), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()), critical=False
        )
        .sign(ca.key, hashes.SHA256())
    )
    return KeyPair(cert, key)


def signed_by(cert: x509.Certificate, ca: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def cert_sans(cert: x509.Certificate) -> frozenset[str]:
    try:
        ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return frozenset()
    return frozenset(
        [*ext.get_values_for_type(x509.DNSName), *map(str, ext.get_values_for_type(x509.IPAddress))]
    )


def _normalize_sans(sans: Sequence[str]) -> frozenset[str]:
    out = set()
    for san in sans:
        try:
            out.add(str(ipaddress.ip_address(san)))
        except ValueError:
            out.add(san)
    return frozenset(out)


def load_pem_bundle(pem: bytes) -> list[x509.Certificate]:
    if not pem.strip():
        return []
    return x509.load_pem_x509_certificates(pem)


def bundle_pem(certs: Sequence[x509.Certificate]) -> bytes:
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs)


# --- what the Secret holds ------------------------------------------------------------------------


@dataclass(frozen=True)
class TlsMaterial:
    cas: tuple[x509.Certificate, ...]  # the caBundle, newest (signing) CA first
    ca_key: ec.EllipticCurvePrivateKey
    serving: KeyPair

    @property
    def signing_ca(self) -> KeyPair:
        return KeyPair(self.cas[0], self.ca_key)

    @property
    def ca_bundle(self) -> bytes:
        return bundle_pem(self.cas)

    def to_secret_data(self) -> dict[str, str]:
        def b64(data: bytes) -> str:
            return base64.b64encode(data).decode()

        return {
            "tls.crt": b64(self.serving.cert_pem),
            "tls.key": b64(self.serving.key_pem),
            "ca.crt": b64(self.ca_bundle),
            "ca.key": b64(private_key_pem(self.ca_key)),
        }

    @classmethod
    def from_secret_data(cls, data: dict[str, str]) -> TlsMaterial | None:
        """The material in a Secret's data, or None when any part is missing or unreadable (start over)."""
        try:
            raw = {k: base64.b64decode(data[k]) for k in ("tls.crt", "tls.key", "ca.crt", "ca.key")}
            cas = tuple(load_pem_bundle(raw["ca.crt"]))
            ca_key = serialization.load_pem_private_key(raw["ca.key"], password=None)
            serving_key = serialization.load_pem_private_key(raw["tls.key"], password=None)
            serving_cert = x509.load_pem_x509_certificate(raw["tls.crt"])
        except (KeyError, ValueError, TypeError):
            return None
        if not cas or not isinstance(ca_key, ec.EllipticCurvePrivateKey):
            return None
        if not isinstance(serving_key, ec.EllipticCurvePrivateKey):
            return None
        if cas[0].public_key() != ca_key.public_key():
            return None
        if serving_cert.public_key() != serving_key.public_key():
            return None
        return cls(cas, ca_key, KeyPair(serving_cert, serving_key))


@dataclass(frozen=True)
class CertPolicy:
    sans: tuple[str, ...]
    serving_lifetime: datetime.timedelta
    ca_lifetime: datetime.timedelta
    renew_fraction: float = RENEW_FRACTION

    @property
    def check_interval(self) -> float:
        return min(timeouts.WEBHOOK_CERT_CHECK, self.serving_lifetime.total_seconds() / 20)

    @property
    def propagation(self) -> float:
        return min(timeouts.WEBHOOK_CA_PROPAGATION, self.ca_lifetime.total_seconds() / 20)

    def due(self, cert: x509.Certificate, lifetime: datetime.timedelta, now: datetime.datetime) -> bool:
        return cert.not_valid_after_utc - now < lifetime * self.renew_fraction


@dataclass
class Plan:
    material: TlsMaterial
    changed: bool
    issued: list[str] = field(default_factory=list)  # "ca", "serving"
    waiting: str = ""  # why a wanted serving certificate was not issued yet


def plan(
    current: TlsMaterial | None,
    policy: CertPolicy,
    now: datetime.datetime,
    published_for: Callable[[x509.Certificate], float],
) -> Plan:
    """The material to hold next. `published_for(ca)` is how many seconds the apiserver has trusted `ca`
    (0 when not yet)."""
    if current is None or current.cas[0].not_valid_after_utc <= now:
        ca = new_ca(now, policy.ca_lifetime)
        serving = issue_serving(ca, policy.sans, now, policy.serving_lifetime)
        return Plan(TlsMaterial((ca.cert,), ca.key, serving), True, ["ca", "serving"])
    issued: list[str] = []
    cas = tuple(c for c in current.cas if c.not_valid_after_utc > now)
    ca_key = current.ca_key
    if policy.due(cas[0], policy.ca_lifetime, now):
        ca = new_ca(now, policy.ca_lifetime)
        cas, ca_key = (ca.cert, *cas), ca.key
        issued.append("ca")
    signing = KeyPair(cas[0], ca_key)
    serving = current.serving
    trusted = any(signed_by(serving.cert, c) for c in cas) and serving.cert.not_valid_after_utc > now
    wanted = (
        not trusted
        or policy.due(serving.cert, policy.serving_lifetime, now)
        or cert_sans(serving.cert) != _normalize_sans(policy.sans)
        or not signed_by(serving.cert, signing.cert)
    )
    waiting = ""
    if wanted:
        # A certificate from a CA the apiserver does not trust yet would be refused; unless the current
        # one is already useless, wait for the bundle to propagate.
        if not trusted or published_for(signing.cert) >= policy.propagation:
            serving = issue_serving(signing, policy.sans, now, policy.serving_lifetime)
            issued.append("serving")
        else:
            waiting = f"serving certificate waits for CA {signing.cert.subject.rfc4514_string()} to propagate"
    changed = bool(issued) or cas != current.cas
    return Plan(TlsMaterial(cas, ca_key, serving), changed, issued, waiting)


# --- the live TLS listener ------------------------------------------------------------------------


class ServingTls:
    """One SSLContext for the listener whose certificate is swapped in place: OpenSSL uses the newly
    loaded chain for every handshake after the load."""

    def __init__(self, metrics: WebhookMetrics | None = None) -> None:
        self.context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.context.minimum_version = ssl.TLSVersion.TLSv1_2
        self._metrics = metrics
        self._loaded: str | None = None
        self.not_after: datetime.datetime | None = None
        self.serial: int | None = None

    @property
    def loaded(self) -> bool:
        return self._loaded is not None

    def load(self, cert_pem: bytes, key_pem_bytes: bytes) -> bool:
        """Serve this certificate from now on; False when it already is."""
        digest = hashlib.sha256(cert_pem + key_pem_bytes).hexdigest()
        if digest == self._loaded:
            return False
        cert = x509.load_pem_x509_certificates(cert_pem)[0]
        key = serialization.load_pem_private_key(key_pem_bytes, password=None)
        # OpenSSL drops the loaded certificate when the new key does not match it, which would leave the
        # live listener without one: refuse a mismatched pair (a renewal caught half-written) up front.
        if cert.public_key() != key.public_key():
            raise ValueError("certificate and key do not belong together")
        load_cert_chain_from_memory(self.context, cert_pem, key_pem_bytes)
        self._loaded = digest
        self.not_after = cert.not_valid_after_utc
        self.serial = cert.serial_number
        if self._metrics is not None:
            self._metrics.cert_reloads.inc()
            self._metrics.cert_not_after.set(cert.not_valid_after_utc.timestamp())
        log.info("serving certificate %x loaded (expires %s)", cert.serial_number, cert.not_valid_after_utc)
        return True


# --- sources --------------------------------------------------------------------------------------


class CertFiles:
    """tls.crt + tls.key in a directory (cert-manager, or anything else that renews them in place)."""

    def __init__(
        self, directory: Path, tls: ServingTls, poll: float = timeouts.WEBHOOK_CERT_FILE_POLL
    ) -> None:
        self.directory = directory
        self.tls = tls
        self.poll = poll

    def load_once(self) -> bool:
        cert = (self.directory / "tls.crt").read_bytes()
        key = (self.directory / "tls.key").read_bytes()
        return self.tls.load(cert, key)

    async def run(self) -> None:
        while True:
            try:
                self.load_once()
            except (OSError, ssl.SSLError, ValueError) as exc:
                # A renewal writes two files: a half-written pair is picked up on the next poll.
                log.warning(
                    "cannot load certificate from %s (keeping the current one): %s", self.directory, exc
                )
            await asyncio.sleep(self.poll)


class SecretCerts:
    """The self-managed cycle described in the module docstring, one `tick()` at a time."""

    def __init__(
        self,
        client: ApiClient,
        tls: ServingTls,
        *,
        namespace: str,
        secret_name: str,
        webhook_config_name: str | None,
        policy: CertPolicy,
        metrics: WebhookMetrics | None = None,
        clock: Clock = utcnow,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.client = client
        self.tls = tls
        self.namespace = namespace
        self.secret_name = secret_name
        self.webhook_config_name = webhook_config_name
        self.policy = policy
        self.metrics = metrics
        self.clock = clock
        self.monotonic = monotonic
        self._first_seen: dict[str, float] = {}
        self._config_missing = False
        self.material: TlsMaterial | None = None

    @property
    def _secret_path(self) -> str:
        return path("api", "v1", "namespaces", self.namespace, "secrets", self.secret_name)

    def published_for(self, ca: x509.Certificate) -> float:
        if self.webhook_config_name is None or self._config_missing:
            # Nobody calls a webhook that has no configuration: nothing to wait for.
            return float("inf")
        seen = self._first_seen.get(fingerprint(ca))
        return 0.0 if seen is None else self.monotonic() - seen

    async def _read(self) -> tuple[TlsMaterial | None, str | None]:
        """The Secret's material and resourceVersion; (None, None) when there is no Secret."""
        try:
            secret = await self.client.get(self._secret_path)
        except ApiError as exc:
            if exc.status == 404:
                return None, None
            raise
        rv = str(secret["metadata"]["resourceVersion"])
        material = TlsMaterial.from_secret_data(secret.get("data") or {})
        if material is None:
            log.warning(
                "secret %s/%s does not hold usable TLS material: replacing it",
                self.namespace,
                self.secret_name,
            )
        return material, rv

    async def _write(self, material: TlsMaterial, rv: str | None) -> bool:
        """Store `material`; False when another replica wrote first (read again and adopt theirs)."""
        body: dict[str, Any] = {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {
                "name": self.secret_name,
                "namespace": self.namespace,
                "labels": {"app.kubernetes.io/name": "winnode", "app.kubernetes.io/component": "webhook"},
            },
            "type": SECRET_TYPE,
            "data": material.to_secret_data(),
        }
        try:
            if rv is None:
                await self.client.request(
                    "POST", path("api", "v1", "namespaces", self.namespace, "secrets"), body=body
                )
            else:
                body["metadata"]["resourceVersion"] = rv
                await self.client.request("PUT", self._secret_path, body=body)
        except ApiError as exc:
            if exc.status == 409:
                return False
            raise
        return True

    async def _sync_bundle(self, bundle: bytes) -> None:
        """Make every webhook of our configuration trust `bundle`; note when each CA was first trusted."""
        if self.webhook_config_name is None:
            return
        config_path = path(
            "apis",
            "admissionregistration.k8s.io",
            "v1",
            "validatingwebhookconfigurations",
            self.webhook_config_name,
        )
        try:
            config = await self.client.get(config_path)
        except ApiError as exc:
            if exc.status == 404:
                if not self._config_missing:
                    log.warning(
                        "ValidatingWebhookConfiguration %s does not exist yet", self.webhook_config_name
                    )
                self._config_missing = True
                return
            raise
        self._config_missing = False
        webhooks = config.get("webhooks") or []
        want = base64.b64encode(bundle).decode()
        have = [str((w.get("clientConfig") or {}).get("caBundle") or "") for w in webhooks]
        self._note_trusted(have)
        if all(h == want for h in have):
            return
        ops: list[dict[str, Any]] = [
            {
                "op": "test",
                "path": "/metadata/resourceVersion",
                "value": config["metadata"]["resourceVersion"],
            }
        ]
        ops += [
            {"op": "add", "path": f"/webhooks/{i}/clientConfig/caBundle", "value": want}
            for i in range(len(webhooks))
        ]
        try:
            await self.client.request(
                "PATCH", config_path, body=ops, content_type="application/json-patch+json"
            )
        except ApiError as exc:
            if exc.status in (409, 422):  # changed under us: the next tick looks again
                log.info("webhook configuration changed while patching caBundle; retrying next round")
                return
            raise
        log.info("caBundle of %s updated (%d CAs)", self.webhook_config_name, len(load_pem_bundle(bundle)))
        self._note_trusted([want] * len(webhooks))

    def _note_trusted(self, bundles_b64: list[str]) -> None:
        if not bundles_b64:
            return
        trusted: set[str] | None = None
        for b in bundles_b64:
            try:
                prints = {fingerprint(c) for c in load_pem_bundle(base64.b64decode(b))}
            except ValueError:
                prints = set()
            trusted = prints if trusted is None else trusted & prints
        now = self.monotonic()
        for fp in trusted or ():
            self._first_seen.setdefault(fp, now)

    async def tick(self) -> Plan:
        """One round; returns what was decided (tests look at it)."""
        result: Plan | None = None
        for _ in range(3):  # lose a write race at most twice, then adopt what is stored
            current, rv = await self._read()
            result = plan(current, self.policy, self.clock(), self.published_for)
            if not result.changed:
                break
            if await self._write(result.material, rv):
                for kind in result.issued:
                    if self.metrics is not None:
                        self.metrics.cert_issued.labels(kind).inc()
                log.info("webhook TLS material written (%s)", ", ".join(result.issued) or "bundle pruned")
                break
            result = None
        if result is None:
            raise RuntimeError(f"secret {self.namespace}/{self.secret_name} keeps changing under us")
        if result.waiting:
            log.info("%s", result.waiting)
        self.material = result.material
        await self._sync_bundle(result.material.ca_bundle)
        self.tls.load(result.material.serving.cert_pem, result.material.serving.key_pem)
        return result

    async def run(self) -> None:
        while True:
            try:
                await self.tick()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # keep serving the last good certificate and try again
                log.warning(
                    "certificate round failed (retrying in %.1fs): %s", self.policy.check_interval, exc
                )
            await asyncio.sleep(self.policy.check_interval)
