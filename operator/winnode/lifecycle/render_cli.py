"""`winnode render -f windowsnode.yaml`: print every script configure would run on the host.

A dry-run for review: nothing is contacted. Secret values are shown as "<redacted>"; the bootstrap
token is never known here at all (the plan uses a placeholder), so the bootstrap kubeconfig is also
printed with its token redacted, for reading. What only a live cluster knows is replaced by visible
placeholders, listed at the top of the output.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any, TextIO


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-f",
        "--filename",
        action="append",
        required=True,
        metavar="FILE",
        help="YAML with the WindowsNode (and optionally its WindowsNetwork); repeatable, '-' for stdin",
    )
    parser.add_argument(
        "--node", default=None, help="which WindowsNode to render when the files hold several (by name)"
    )
    parser.add_argument(
        "--kubernetes-version",
        default=None,
        help="version to plan for when spec.kubernetesVersion is unset (e.g. v1.37.2)",
    )
    parser.add_argument("--api-server", default=None, help="apiserver URL the kubelet should use")
    parser.add_argument("--ca-file", type=Path, default=None, help="cluster CA certificate (PEM)")
    parser.add_argument(
        "--subnet", default=None, help="the node's pod subnet (default: first of clusterCIDR)"
    )
    parser.add_argument("--list", action="store_true", help="list the steps only, without their scripts")


def _load(sources: list[str]) -> list[dict[str, Any]]:
    import yaml

    docs: list[dict[str, Any]] = []
    for source in sources:
        text = sys.stdin.read() if source == "-" else Path(source).read_text(encoding="utf-8")
        for doc in yaml.safe_load_all(text):
            if isinstance(doc, dict):
                docs.append(doc)
    return docs


def _pick(docs: list[dict[str, Any]], kind: str, name: str | None) -> list[dict[str, Any]]:
    found = [d for d in docs if d.get("kind") == kind]
    if name is not None:
        found = [d for d in found if (d.get("metadata") or {}).get("name") == name]
    return found


def _comment(text: str) -> str:
    return "\n".join(f"#   {line}".rstrip() for line in text.rstrip("\n").split("\n"))


def run(args: argparse.Namespace) -> int:
    try:
        return _run(args)
    except BrokenPipeError:
        # Output piped into `head` and the like: the reader has all it wanted.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0


def _run(args: argparse.Namespace) -> int:
    import yaml

    from winnode.host.actions import WriteFileParams
    from winnode.host.scripts import REDACTED, render
    from winnode.kube.events import scrub
    from winnode.lifecycle.plan import PlanContext, PlanError, configure_plan

    out: TextIO = sys.stdout
    try:
        docs = _load(args.filename)
    except (OSError, yaml.YAMLError) as exc:
        print(f"winnode render: cannot read {', '.join(args.filename)}: {exc}", file=sys.stderr)
        return 1
    nodes = _pick(docs, "WindowsNode", args.node)
    if len(nodes) != 1:
        which = f" named {args.node!r}" if args.node else ""
        hint = " (choose one with --node)" if len(nodes) > 1 else ""
        print(f"winnode render: found {len(nodes)} WindowsNode{which} in the input{hint}", file=sys.stderr)
        return 1
    node = nodes[0]
    network_name = (node.get("spec") or {}).get("network")
    networks = _pick(docs, "WindowsNetwork", network_name)
    context = PlanContext(
        kubernetes_version=args.kubernetes_version,
        bootstrap_token=REDACTED,
        subnet=args.subnet,
        **({"api_server": args.api_server} if args.api_server else {}),
        **({"ca_pem": args.ca_file.read_text(encoding="utf-8")} if args.ca_file else {}),
    )
    try:
        plan = configure_plan(node, network=networks[0] if networks else None, context=context)
    except (PlanError, OSError) as exc:
        print(f"winnode render: {exc}", file=sys.stderr)
        return 1

    total = len(plan.steps)
    out.write(
        f"# winnode render: WindowsNode {plan.windows_node} -> Node {plan.node_name}, "
        f"Kubernetes {plan.version}: {total} scripts"
        + (", then one read per drift check" if plan.drift_check is not None else "")
        + "\n"
    )
    for note in plan.notes:
        out.write(f"# note: {note}\n")
    for index, step in enumerate(plan.steps, start=1):
        script = render(step.params)
        kind = "changes the host" if script.mutating else "read-only"
        if args.list:
            out.write(f"{index:3d}. {step.title} [{script.action}, {kind}]\n")
            continue
        out.write(f"\n# ===== step {index}/{total}: {step.title} [{script.action}, {kind}] =====\n")
        params = step.params
        if isinstance(params, WriteFileParams):
            # What an admin most wants to review (kubelet, kube-proxy and CNI configuration) in full;
            # a secret file (the bootstrap kubeconfig) with its secrets redacted.
            if params.secret:
                out.write(f"# content of {params.path} (secret values redacted):\n")
                out.write(_comment(scrub(params.content)) + "\n")
            else:
                out.write(f"# content of {params.path}:\n")
                out.write(_comment(params.content) + "\n")
        out.write(script.redacted())
    if plan.drift_check is not None:
        drift = render(plan.drift_check.params)
        if args.list:
            out.write(f"  then every drift check: {plan.drift_check.title} [{drift.action}, read-only]\n")
        else:
            out.write(
                f"\n# ===== then every drift check: {plan.drift_check.title} [{drift.action}, read-only] "
                "=====\n"
            )
            out.write(drift.redacted())
    return 0
