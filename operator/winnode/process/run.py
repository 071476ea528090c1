"""`winnode run`: the reconciler, cluster-wide, with /metrics, /healthz and /readyz on the metrics port.

With leader election (`--leader-elect` or WINNODE_LEADER_ELECTION=true) several replicas run and one
reconciles: the holder of the Lease settings.leader_lease_name in the operator namespace
(process/leader.py). Exit codes: 0 after SIGTERM/SIGINT (the Lease released), 1 when the Lease was
lost or could not be renewed (the Deployment restarts the process as a clean standby), 2 for bad
configuration.
"""

from __future__ import annotations

import argparse
import logging
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from winnode.lifecycle.context import Deps
    from winnode.process.leader import Durations


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--kubeconfig",
        default=None,
        help="kubeconfig to use (default: $KUBECONFIG, the in-cluster service account, ~/.kube/config)",
    )
    parser.add_argument(
        "--metrics-port",
        type=int,
        default=None,
        help="port of /metrics, /healthz and /readyz (default: WINNODE_METRICS_PORT or 8080; 0 = off)",
    )
    parser.add_argument(
        "--leader-elect",
        action="store_true",
        default=None,
        help="run as one of several replicas: reconcile only while holding the leader Lease "
        "(default: WINNODE_LEADER_ELECTION, off)",
    )
    parser.add_argument(
        "--identity",
        default=None,
        help="leader-election identity (default: $POD_NAME, else hostname_pid)",
    )
    parser.add_argument("--verbose", "-v", action="store_true", help="debug logging")


def run(args: argparse.Namespace) -> int:
    import asyncio
    import sys

    from winnode.kube.client import Kube, KubeConfigError
    from winnode.process.leader import Durations
    from winnode.process.operator import make_deps
    from winnode.settings import Settings

    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        settings = Settings.from_env()
    except ValueError as exc:
        print(f"winnode run: {exc}", file=sys.stderr)
        return 2
    leader_elect = settings.leader_election if args.leader_elect is None else args.leader_elect
    try:
        durations = Durations.from_settings(settings) if leader_elect else None
    except ValueError as exc:
        print(f"winnode run: {exc}", file=sys.stderr)
        return 2
    try:
        kube = Kube.from_kubeconfig(args.kubeconfig)
        deps = make_deps(kube, settings)
    except (KubeConfigError, RuntimeError, OSError) as exc:
        print(f"winnode run: {exc}", file=sys.stderr)
        return 2
    try:
        code = asyncio.run(_main(args, deps, durations))
    except KeyboardInterrupt:
        code = 0
    kube.close()
    return code


async def _main(args: argparse.Namespace, deps: Deps, durations: Durations | None) -> int:
    """`_serve`, then leave at once with its exit code.

    kopf has stopped and the Lease is released (or lost): the process does not wait for tasks still
    unwinding (asyncio.run would cancel and await every one of them) nor for worker threads still
    talking to hosts (a cancelled Receive can wait 20 s more). The next process starts clean: its
    first contact deletes the shells this one left, and every step is idempotent.
    """
    import os
    import sys

    code = await _serve(args, deps, durations)
    await deps.kube.aclose()
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


async def _serve(args: argparse.Namespace, deps: Deps, durations: Durations | None) -> int:
    """Serve the probes, then reconcile: alone (`durations` None) or while holding the Lease."""
    import asyncio
    import contextlib
    import signal

    from winnode.process.health import HealthServer, OperatorHealth
    from winnode.process.leader import LeaderElector, Outcome, default_identity
    from winnode.process.operator import run_operator

    log = logging.getLogger("winnode.run")
    settings = deps.settings
    health = OperatorHealth(leader_election=durations is not None)
    port = settings.metrics_port if args.metrics_port is None else args.metrics_port
    server = HealthServer(deps.metrics.registry, health, port).start() if port else None
    monitor = asyncio.create_task(health.monitor(), name="health-monitor")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()

    def on_signals() -> None:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)

    on_signals()

    async def operate(stop_flag: asyncio.Event) -> None:
        ready = asyncio.Event()

        async def mark_ready() -> None:
            await ready.wait()
            # kopf replaced our signal handlers with its own on start; take them back, so a signal
            # reaches the elector (which stops kopf through `stop_flag`, then releases the Lease)
            # and kopf stops by its flag, without waiting on its own stop-flag task.
            on_signals()
            health.set_running(True)
            # Watch streams end on purpose once stopping: not a health problem.
            await stop_flag.wait()
            health.set_running(False)

        marker = asyncio.create_task(mark_ready())
        try:
            await run_operator(deps, stop_flag=stop_flag, ready_flag=ready)
        finally:
            marker.cancel()
            health.set_running(False)

    def leadership(leading: bool) -> None:
        deps.metrics.set_leader(leading)
        health.set_leading(leading)

    try:
        if durations is None:
            leadership(True)
            await operate(stop)
            return 0
        identity = args.identity or default_identity()
        elector = LeaderElector(
            deps.kube,
            namespace=settings.namespace,
            name=settings.leader_lease_name,
            identity=identity,
            durations=durations,
            on_leadership=leadership,
        )
        outcome = await elector.run(operate, stop)
        log.info("leader election ended: %s", outcome.value)
        return 0 if outcome is Outcome.STOPPED else 1
    finally:
        monitor.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await monitor
        if server is not None:
            server.stop()
