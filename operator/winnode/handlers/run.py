"""`winnode run`: the reconciler, cluster-wide, with Prometheus metrics."""

from __future__ import annotations

import argparse
import logging


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
        help="port of the /metrics endpoint (default: WINNODE_METRICS_PORT or 8080; 0 = off)",
    )
    parser.add_argument("--verbose", "-v", action="store_true", help="debug logging")


def run(args: argparse.Namespace) -> int:
    import asyncio

    from winnode.handlers.operator import make_deps, run_operator
    from winnode.kube.client import Kube, KubeConfigError
    from winnode.settings import Settings

    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    settings = Settings.from_env()
    try:
        kube = Kube.from_kubeconfig(args.kubeconfig)
        deps = make_deps(kube, settings)
    except (KubeConfigError, RuntimeError, OSError) as exc:
        print(f"winnode run: {exc}")
        return 2
    port = settings.metrics_port if args.metrics_port is None else args.metrics_port
    if port:
        deps.metrics.serve(port)
    try:
        asyncio.run(run_operator(deps))
    except KeyboardInterrupt:
        pass
    finally:
        kube.close()
    return 0
