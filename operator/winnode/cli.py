"""The `winnode` command line: one table of subcommands, each implemented in the module that owns it.

Every subcommand module is imported to build the parser, so each keeps its heavy imports (kopf, the
kubernetes client, pywinrm) inside `run()`. The test world's commands (demo, dev-cluster, emulator)
live in winnode.testing, which the production image does not hold: there they say so.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import ModuleType

from winnode.admission import server
from winnode.deploy import crdgen, docgen, manifests, monitoring
from winnode.lifecycle import checkhost, render_cli
from winnode.process import run

MISSING = "not available in this build"
testing: dict[str, ModuleType] = {}
try:
    from winnode.testing import cluster_cli, demo, emulator_cli
except ModuleNotFoundError as exc:  # the production image: no winnode.testing
    if exc.name is None or not exc.name.startswith("winnode.testing"):
        raise
else:
    testing = {"demo": demo, "dev-cluster": cluster_cli, "emulator": emulator_cli}


@dataclass(frozen=True)
class Command:
    name: str
    module: ModuleType | None  # None: not in this build
    help: str


# Each module exposes `add_arguments(parser: argparse.ArgumentParser) -> None` and
# `run(args: argparse.Namespace) -> int`.
COMMANDS: tuple[Command, ...] = (
    Command("run", run, "run the reconciler (cluster-wide)"),
    Command("demo", testing.get("demo"), "local cluster + emulated Windows hosts + operator"),
    Command("crds", crdgen, "print (or write) the CRD YAML generated from the models"),
    Command("dev-cluster", testing.get("dev-cluster"), "local etcd + kube-apiserver + kcm: up|down|env"),
    Command("render", render_cli, "dry-run: print every script a WindowsNode would run"),
    Command("webhook", server, "run the validating admission webhook"),
    Command("manifests", manifests, "print (or write) the install manifests (manifests/)"),
    Command("emulator", testing.get("emulator"), "run emulated Windows hosts on loopback addresses"),
    Command("monitoring", monitoring, "print (or write) the Grafana dashboard, alerts and PodMonitors"),
    Command("check-host", checkhost, "check a Windows host's prerequisites before creating its WindowsNode"),
    Command("docs", docgen, "print (or write) docs/reference.md, generated from the models"),
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="winnode", description=__doc__.splitlines()[0] if __doc__ else None)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for command in COMMANDS:
        if command.module is None:
            what = f"{command.help} ({MISSING})"
            sub.add_parser(command.name, help=what, description=what).set_defaults(_missing=True)
            continue
        p = sub.add_parser(command.name, help=command.help, description=command.help)
        p.set_defaults(_module=command.module.__name__, _run=command.module.run)
        command.module.add_arguments(p)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return 2
    if getattr(args, "_missing", False):
        print(f"winnode {args.command}: {MISSING}", file=sys.stderr)
        return 2
    entry: Callable[[argparse.Namespace], int] = args._run
    return entry(args)


if __name__ == "__main__":
    sys.exit(main())
