"""Certificate rotation under load: two webhook replicas sharing one Secret, serving certificates that live
6 s under a CA that lives 18 s. While pods flow through the apiserver to the webhook, serving certificates
and the CA rotate and the caBundle follows; no request may fail, and every certificate either replica
serves must verify against the caBundle the apiserver holds at that moment."""

from __future__ import annotations

import json
import ssl
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from cryptography import x509

from winnode.testing.admission import (
    AdmissionEnv,
    SyncApi,
    WebhookProcess,
    ca_context,
    free_port,
    wait_for,
    webhook_ca_bundle,
)
from winnode.testing.cluster import ControlPlane

SERVING_LIFETIME = 6.0
CA_LIFETIME = 18.0
# Long enough to see the CA renewed (at 12 s) and the old one leave the bundle (at 18 s).
DURATION = 22.0
SAMPLE_EVERY = 0.25


@pytest.fixture(scope="module")
def rotating(
    control_plane: ControlPlane, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[AdmissionEnv, WebhookProcess]]:
    api = SyncApi.from_kubeconfig(control_plane.kubeconfig)
    e = AdmissionEnv(api, uuid.uuid4().hex[:6], tmp_path_factory.mktemp("admission-certs"))
    args = [f"--cert-lifetime={SERVING_LIFETIME}", f"--ca-lifetime={CA_LIFETIME}"]
    second: WebhookProcess | None = None
    try:
        e.setup_namespaces()
        port = free_port()
        e.setup_webhook_config(port)
        e.webhook = e.start_webhook(control_plane.kubeconfig, args, port=port)
        # A second replica: not called by the apiserver, but it shares the Secret and must stay trusted.
        second = e.start_webhook(control_plane.kubeconfig, args)
        wait_for(
            lambda: e.dry_run_create(windows_pod(e.namespace))[0] == 201,
            "webhook answers through the apiserver",
        )
        yield e, second
    finally:
        for proc in (e.webhook, second):
            if proc is not None:
                proc.stop()
        e.teardown()
        api.close()


def windows_pod(namespace: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "rotating", "namespace": namespace},
        "spec": {"os": {"name": "windows"}, "containers": [{"name": "app", "image": "img"}]},
    }


def served_cert(port: int, context: ssl.SSLContext) -> x509.Certificate:
    import socket

    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as sock,
        context.wrap_socket(sock, server_hostname="127.0.0.1") as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der)


def test_rotation_while_requests_flow(
    control_plane: ControlPlane, rotating: tuple[AdmissionEnv, WebhookProcess]
) -> None:
    env, second = rotating
    assert env.webhook is not None
    failures: list[str] = []
    sent = 0
    stop = threading.Event()

    def traffic() -> None:
        nonlocal sent
        api = SyncApi.from_kubeconfig(control_plane.kubeconfig)
        try:
            while not stop.is_set():
                status, doc = api.request(
                    "POST", env.pods_path(), windows_pod(env.namespace), {"dryRun": "All"}
                )
                sent += 1
                if status != 201:
                    failures.append(f"{status}: {doc.get('message')}")
        finally:
            api.close()

    before = env.webhook.request_count(env.ca_context())
    worker = threading.Thread(target=traffic, name="admission-traffic")
    worker.start()
    bundles: list[bytes] = []
    serials: dict[str, set[int]] = {"first": set(), "second": set()}
    unverified: list[str] = []
    deadline = time.monotonic() + DURATION
    try:
        while time.monotonic() < deadline:
            bundle = webhook_ca_bundle(env.api, env.config_name)
            if not bundles or bundles[-1] != bundle:
                bundles.append(bundle)
            context = ca_context(bundle)
            for label, proc in (("first", env.webhook), ("second", second)):
                try:
                    serials[label].add(served_cert(proc.port, context).serial_number)
                except ssl.SSLCertVerificationError as exc:
                    # The certificate may have moved to a CA published after our bundle read: re-read once.
                    try:
                        serials[label].add(
                            served_cert(
                                proc.port, ca_context(webhook_ca_bundle(env.api, env.config_name))
                            ).serial_number
                        )
                    except ssl.SSLCertVerificationError:
                        unverified.append(f"{label}: {exc}")
            time.sleep(SAMPLE_EVERY)
    finally:
        stop.set()
        worker.join(timeouts_join := 15)
        assert not worker.is_alive(), f"traffic thread still running after {timeouts_join}s"

    assert sent > 50, f"only {sent} requests went through in {DURATION}s"
    assert not failures, f"{len(failures)} of {sent} requests failed during rotation, e.g. {failures[:3]}"
    assert not unverified, unverified
    # Serving certificates renew every ~4 s; the CA once, which changes the bundle at least twice
    # (new CA added, old CA dropped after it expires).
    assert len(serials["first"]) >= 3, serials
    assert serials["second"] & serials["first"], "replicas do not share the Secret's certificate"
    assert len(bundles) >= 3, [len(x509.load_pem_x509_certificates(b)) for b in bundles]
    cas_per_bundle = [len(x509.load_pem_x509_certificates(b)) for b in bundles]
    assert 2 in cas_per_bundle, cas_per_bundle
    assert env.webhook.request_count(env.ca_context()) - before >= sent
    samples = env.webhook.metrics(env.ca_context())
    assert samples["winnode_webhook_certificate_reloads_total"] >= 3
    secret = env.api.ok("GET", f"/api/v1/namespaces/{env.system_namespace}/secrets/winnode-webhook-tls")
    assert secret["type"] == "kubernetes.io/tls"
    assert json.dumps(sorted(secret["data"])) == json.dumps(["ca.crt", "ca.key", "tls.crt", "tls.key"])
