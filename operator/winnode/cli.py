"""The `winnode` command line: one table of subcommands, each implemented in the module that owns it.

Every subcommand module is imported to build the parser, so each keeps its heavy imports (kopf, the
kubernetes client, pywinrm) inside `run()`.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Command:
    name: str
    module: str
    help: str


# Each module exposes `add_arguments(parser: argparse.ArgumentParser) -> None` and
# `run(args: argparse.Namespace) -> int`.
COMMANDS: tuple[Command, ...] = (
    Command("run", "winnode.handlers.run", "run the reconciler (cluster-wide)"),
    Command("demo", "winnode.testing.demo", "local cluster + emulated Windows hosts + operator"),
    Command("crds", "winnode.api.crdgen", "print (or write) the CRD YAML generated from the models"),
    Command("dev-cluster", "winnode.testing.cluster_cli", "local etcd + kube-apiserver + kcm: up|down|env"),
    Command("render", "winnode.host.render_cli", "dry-run: print every script a WindowsNode would run"),
    Command("webhook", "winnode.admission.server", "run the validating admission webhook"),
    Command("manifests", "winnode.deploy.manifests", "print (or write) the install manifests (manifests/)"),
    Command("emulator", "winnode.testing.emulator_cli", "run emulated Windows hosts on loopback addresses"),
    Command(
        "monitoring", "winnode.monitoring", "print (or write) the Grafana dashboard, alerts and PodMonitors"
    ),
    Command(
        "check-host",
        "winnode.checkhost",
        "check a Windows host's prerequisites before creating its WindowsNode",
    ),
    Command("docs", "winnode.api.docgen", "print (or write) docs/reference.md, generated from the models"),
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="winnode", description=__doc__.splitlines()[0] if __doc__ else None)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for command in COMMANDS:
        p = sub.add_parser(command.name, help=command.help, description=command.help)
        p.set_defaults(_module=command.module)
        try:
            importlib.import_module(command.module).add_arguments(p)
        except ModuleNotFoundError as exc:
            if exc.name != command.module:
                raise
            p.set_defaults(_missing=True)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return 2
    if getattr(args, "_missing", False):
        print(f"winnode {args.command}: not available in this build", file=sys.stderr)
        return 2
    result: int = importlib.import_module(args._module).run(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
