"""`winnode webhook`: the validating admission webhook, its own process (a Deployment of two or more).

HTTPS endpoints (app.py):
  POST /validate   AdmissionReview v1 in, AdmissionReview out (policy.judge); no API call on this path
  GET  /healthz    the process answers, its background tasks run, and the Windows-node watch has
                   listed or received something within timeouts.NODE_WATCH_STALE
  GET  /readyz     a serving certificate is loaded and the Windows-node watch has synced
  GET  /metrics    Prometheus text format (metrics.py)

Heavy imports (aiohttp, cryptography, prometheus_client) happen in run(): `winnode` imports this module
to build its parser. Background tasks: the Windows-node watch (nodes.py) and the certificate cycle (certs.py).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import logging
import signal
import sys
from pathlib import Path
from typing import Any

from winnode import timeouts
from winnode.admission import config
from winnode.settings import ADMISSION_MODES, Settings

log = logging.getLogger(__name__)


# --- the command ----------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    # Defaults that come from settings (WINNODE_* environment) are resolved in run(), so a bad variable
    # is reported by this command, not by every `winnode` invocation that builds the parser.
    d = Settings()
    parser.add_argument(
        "--port", type=int, help=f"HTTPS port (default $WINNODE_WEBHOOK_PORT or {d.webhook_port})"
    )
    parser.add_argument(
        "--bind-address", default="0.0.0.0", help="address to listen on (default %(default)s)"
    )
    parser.add_argument("--kubeconfig", help="kubeconfig to use (default: $KUBECONFIG, else in-cluster)")
    parser.add_argument("--namespace", help=f"namespace of our Secret and Service (default {d.namespace})")
    parser.add_argument(
        "--cert-dir",
        type=Path,
        help="read tls.crt/tls.key from here (cert-manager) and re-read them on change, instead of managing "
        "our own CA and Secret",
    )
    parser.add_argument("--secret-name", default=config.SECRET_NAME, help="Secret holding the TLS material")
    parser.add_argument(
        "--webhook-config-name",
        default=config.WEBHOOK_CONFIG_NAME,
        help="ValidatingWebhookConfiguration whose caBundle we keep; '' to leave caBundles alone",
    )
    parser.add_argument("--service-name", default=config.SERVICE_NAME, help="Service in front of the webhook")
    parser.add_argument(
        "--tls-san",
        action="append",
        default=[],
        metavar="NAME_OR_IP",
        help="extra DNS name or IP for the serving certificate (repeatable); the Service names are always in",
    )
    parser.add_argument(
        "--cert-lifetime",
        type=float,
        help=f"serving certificate lifetime, seconds (default {d.webhook_cert_lifetime_s:.0f})",
    )
    parser.add_argument(
        "--ca-lifetime", type=float, help=f"CA lifetime, seconds (default {d.webhook_ca_lifetime_s:.0f})"
    )
    parser.add_argument(
        "--max-body-bytes", type=int, help=f"larger requests get 413 (default {d.webhook_max_body_bytes})"
    )
    parser.add_argument(
        "--shutdown-grace",
        type=float,
        default=timeouts.WEBHOOK_SHUTDOWN_GRACE,
        help="seconds to keep answering, unready, after SIGTERM (default %(default)s)",
    )
    parser.add_argument(
        "--mode",
        choices=list(ADMISSION_MODES),
        help="how the one-container rule is enforced: Deny refuses, Warn admits with a warning, Audit admits "
        f"with an audit annotation (default $WINNODE_ADMISSION_MODE or {d.admission_mode}); with "
        "--write-manifests, the mode written into the webhook configuration and the policy binding",
    )
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    parser.add_argument(
        "--write-manifests",
        type=Path,
        metavar="DIR",
        help="write the admission manifests (webhook configuration, policy, Deployment, RBAC) to DIR and exit",
    )


def service_sans(service: str, namespace: str) -> list[str]:
    return [
        f"{service}.{namespace}.svc",
        f"{service}.{namespace}.svc.cluster.local",
        f"{service}.{namespace}",
    ]


def run(args: argparse.Namespace) -> int:
    from winnode.admission.policy import Mode

    if args.write_manifests is not None:
        for path in config.write_manifests(args.write_manifests, Mode(args.mode or "Deny")):
            print(path)
        return 0
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        settings = Settings.from_env()
    except ValueError as exc:
        print(f"winnode webhook: {exc}", file=sys.stderr)
        return 2
    for arg, value in (
        ("port", settings.webhook_port),
        ("namespace", settings.namespace),
        ("cert_lifetime", settings.webhook_cert_lifetime_s),
        ("ca_lifetime", settings.webhook_ca_lifetime_s),
        ("max_body_bytes", settings.webhook_max_body_bytes),
        ("mode", settings.admission_mode),
    ):
        if getattr(args, arg) is None:
            setattr(args, arg, value)
    if args.cert_lifetime <= 0 or args.ca_lifetime < args.cert_lifetime:
        print("winnode webhook: need 0 < --cert-lifetime <= --ca-lifetime", file=sys.stderr)
        return 2
    try:
        return asyncio.run(serve(args))
    except KeyboardInterrupt:
        return 130


async def serve(args: argparse.Namespace) -> int:
    from aiohttp import web

    from winnode.admission.app import Webhook
    from winnode.admission.certs import CertFiles, CertPolicy, SecretCerts, ServingTls
    from winnode.admission.metrics import WebhookMetrics
    from winnode.admission.networks import NetworkAdmission
    from winnode.admission.nodes import WindowsNodes
    from winnode.admission.policy import Mode
    from winnode.admission.windowsnodes import WindowsNodeAdmission
    from winnode.kube.api import ApiClient, ConfigError, load_credentials, path

    try:
        credentials = load_credentials(args.kubeconfig)
    except ConfigError as exc:
        print(f"winnode webhook: {exc}", file=sys.stderr)
        return 2
    metrics = WebhookMetrics()
    tls = ServingTls(metrics)
    nodes = WindowsNodes()
    client = ApiClient(credentials, request_timeout=timeouts.WEBHOOK_API_REQUEST)
    tasks: list[asyncio.Task[None]] = []
    runner: web.AppRunner | None = None
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    def ready() -> tuple[bool, str]:
        if not tls.loaded:
            return False, "no serving certificate loaded yet"
        if not nodes.synced:
            return False, "Windows node list not synced yet"
        return True, ""

    def live() -> tuple[bool, str]:
        # A background task that ended is a bug or a lost fight with the API: restart the replica.
        ended = [t.get_name() for t in tasks if t.done()]
        if ended:
            return False, "background task ended: " + ", ".join(ended)
        stale = nodes.stale_for()
        if stale > timeouts.NODE_WATCH_STALE:
            return False, f"Windows node watch stale for {stale:.0f}s"
        return True, ""

    async def read_pod(namespace: str, name: str) -> dict[str, Any] | None:
        return await client.request(
            "GET", path("api", "v1", "namespaces", namespace, "pods", name), missing_ok=True
        )

    webhook = Webhook(
        nodes,
        metrics,
        ready=ready,
        max_body_bytes=args.max_body_bytes,
        networks=NetworkAdmission(client),
        live=live,
        mode=Mode(args.mode),
        pods=read_pod,
        windows_nodes=WindowsNodeAdmission(client),
    )
    try:
        tasks.append(asyncio.create_task(nodes.run(client), name="node-watch"))
        certs: CertFiles | SecretCerts
        if args.cert_dir is not None:
            certs = CertFiles(args.cert_dir, tls)
        else:
            cert_policy = CertPolicy(
                sans=tuple(dict.fromkeys([*service_sans(args.service_name, args.namespace), *args.tls_san])),
                serving_lifetime=datetime.timedelta(seconds=args.cert_lifetime),
                ca_lifetime=datetime.timedelta(seconds=args.ca_lifetime),
            )
            certs = SecretCerts(
                client,
                tls,
                namespace=args.namespace,
                secret_name=args.secret_name,
                webhook_config_name=args.webhook_config_name or None,
                policy=cert_policy,
                metrics=metrics,
            )
        tasks.append(asyncio.create_task(certs.run(), name="certificates"))
        # Listen only with a certificate: a TLS listener without one fails every handshake.
        while not tls.loaded:
            if stop.is_set():
                return 0
            if any(t.done() for t in tasks):
                break
            await asyncio.sleep(0.05)
        for t in tasks:
            if t.done() and t.exception() is not None:
                raise RuntimeError(f"{t.get_name()} stopped") from t.exception()
        runner = web.AppRunner(
            webhook.app(), access_log=None, shutdown_timeout=timeouts.WEBHOOK_SHUTDOWN_GRACE
        )
        await runner.setup()
        site = web.TCPSite(runner, args.bind_address, args.port, ssl_context=tls.context, backlog=512)
        await site.start()
        log.info(
            "winnode webhook listening on https://%s:%d%s", args.bind_address, args.port, config.WEBHOOK_PATH
        )
        await stop.wait()
        # Stop looking ready at once; keep answering while Service endpoints drop this replica.
        webhook.shutting_down = True
        log.info("shutting down in %.1fs", args.shutdown_grace)
        await asyncio.sleep(args.shutdown_grace)
        return 0
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if runner is not None:
            await runner.cleanup()
        await client.aclose()
