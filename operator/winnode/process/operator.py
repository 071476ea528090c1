"""The reconciler as a kopf operator: registry, settings, login, and ways to run it.

- `build_registry()`: every handler of winnode, in a registry of its own (nothing global).
- `apply_settings()`: kopf's progress and diff-base under our prefix (winnode.io), finalizer
  winnode.io/finalizer, kopf's own Events limited to critical ones (ours are posted by lifecycle/).
- `run_operator()`: the coroutine `winnode run` executes, cluster-wide.
- `OperatorThread`: the same in a background thread, for tests and `winnode demo`.

kopf runs standalone (its peering is not leader election): `winnode run --leader-elect` wraps
`run_operator(stop_flag=...)` in process/leader.py, which runs it only while this process holds the
coordination.k8s.io Lease and sets `stop_flag` when it loses it.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from typing import Any

import kopf

from winnode.api import WindowsNode
from winnode.handlers import credentials, csr, routes, waits, windowsnetwork, windowsnode
from winnode.kube.client import Kube
from winnode.kube.credentials import Credentials
from winnode.lifecycle import apiserver
from winnode.lifecycle.context import (
    Deps,
    HostApi,
    HostFactory,
    cluster_info_from,
    default_host_factory,
    default_host_pass,
    no_host_pass,
)
from winnode.metrics import OperatorMetrics
from winnode.settings import FIELD_PREFIX, Settings

log = logging.getLogger(__name__)

FINALIZER = f"{FIELD_PREFIX}/finalizer"
DIFFBASE_KEY = "last-handled-configuration"
READY_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 30.0


def make_deps(
    kube: Kube,
    settings: Settings,
    *,
    host_factory: HostFactory | None = None,
    metrics: OperatorMetrics | None = None,
) -> Deps:
    metrics = metrics or OperatorMetrics()
    connect = host_factory or default_host_factory(settings)

    def measured(node: WindowsNode, credentials: Credentials) -> HostApi:
        # Every host action is timed and its failures counted by class, whatever the transport.
        return metrics.measure(connect(node, credentials))

    return Deps(
        kube=kube,
        settings=settings,
        host_factory=measured,
        cluster=apiserver.resolve(kube, settings, cluster_info_from(kube)).cluster,
        metrics=metrics,
        host_pass=no_host_pass if host_factory is not None else default_host_pass(settings),
    )


def apply_settings(settings: kopf.OperatorSettings) -> None:
    waits.install()
    settings.persistence.finalizer = FINALIZER
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=FIELD_PREFIX)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=FIELD_PREFIX, key=DIFFBASE_KEY
    )
    settings.posting.level = logging.CRITICAL
    settings.posting.reporting_component = "winnode"
    # Reconnect watches regularly: a silently dead connection must not stall reconciling.
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.watching.connect_timeout = 30
    settings.networking.request_timeout = 60
    settings.background.cancellation_polling = 5


def _login(kube: Kube) -> Callable[..., kopf.ConnectionInfo]:
    """kopf logs in with exactly the credentials of our own client (same kubeconfig, same identity)."""

    def login(**_: Any) -> kopf.ConnectionInfo:
        c = kube.credentials
        token = c.authorization()
        scheme = None
        if token and " " in token:
            scheme, token = token.split(" ", 1)
        return kopf.ConnectionInfo(
            server=c.server,
            ca_data=c.ca_pem,
            insecure=c.insecure,
            scheme=scheme,
            token=token or None,
            certificate_data=c.client_cert_pem,
            private_key_data=c.client_key_pem,
            proxy_url=c.proxy,
            default_namespace="default",
        )

    return login


def build_registry(kube: Kube) -> kopf.OperatorRegistry:
    registry = kopf.OperatorRegistry()
    windowsnode.register(registry)
    windowsnetwork.register(registry)
    csr.register(registry)
    credentials.register(registry)
    routes.register(registry)
    kopf.on.login(id="login", registry=registry)(_login(kube))
    return registry


async def run_operator(
    deps: Deps,
    *,
    stop_flag: asyncio.Event | threading.Event | None = None,
    ready_flag: asyncio.Event | threading.Event | None = None,
) -> None:
    """Run the reconciler until `stop_flag` is set (or SIGINT/SIGTERM when on the main thread)."""
    settings = kopf.OperatorSettings()
    apply_settings(settings)
    await kopf.operator(
        registry=build_registry(deps.kube),
        settings=settings,
        clusterwide=True,
        standalone=True,
        memo=kopf.Memo(deps=deps),
        stop_flag=stop_flag,
        ready_flag=ready_flag,
    )


class OperatorThread:
    """The reconciler in a background thread with its own event loop."""

    def __init__(self, deps: Deps) -> None:
        self.deps = deps
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._thread: threading.Thread | None = None
        self.error: BaseException | None = None

    def _main(self) -> None:
        async def run() -> None:
            try:
                await run_operator(self.deps, stop_flag=self._stop, ready_flag=self._ready)
            finally:
                await self.deps.kube.aclose()

        try:
            asyncio.run(run())
        except BaseException as exc:
            self.error = exc
            log.exception("the operator thread failed")
            self._ready.set()

    def start(self) -> OperatorThread:
        self._thread = threading.Thread(target=self._main, name="winnode-operator", daemon=True)
        self._thread.start()
        if not self._ready.wait(READY_TIMEOUT_S) or self.error is not None:
            self.stop()
            raise RuntimeError(f"the operator did not start: {self.error!r}")
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(STOP_TIMEOUT_S)
            if self._thread.is_alive():
                log.warning("the operator thread did not stop within %.0fs", STOP_TIMEOUT_S)
            self._thread = None

    def __enter__(self) -> OperatorThread:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
