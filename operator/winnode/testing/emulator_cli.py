"""`winnode emulator`: run emulated Windows hosts on loopback addresses until interrupted.

Prints one row per host (name, address, port, scheme, user, credentials Secret name). Passwords are
never printed: `--secrets-file` writes ready-to-apply Kubernetes Secrets (mode 0600) instead.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

DEFAULT_BASE_ADDRESS = "127.0.10.1"
DEFAULT_NAMESPACE = "winnode-system"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--hosts", type=int, default=3, help="how many hosts to run (default 3)")
    parser.add_argument(
        "--https", action="store_true", help="listen on HTTPS (certificate auth becomes usable)"
    )
    parser.add_argument(
        "--base-address",
        default=DEFAULT_BASE_ADDRESS,
        help=f"first loopback address to try (default {DEFAULT_BASE_ADDRESS}); busy ones are skipped",
    )
    parser.add_argument(
        "--port",
        type=int,
        default=None,
        help="port on every address (default 5985, or 5986 with --https; 0 = any)",
    )
    parser.add_argument(
        "--os", choices=("2019", "2022", "2025"), default="2022", help="Windows Server release"
    )
    parser.add_argument("--prefix", default="win-", help="host name prefix (default win-)")
    parser.add_argument("--username", default="Administrator")
    parser.add_argument(
        "--password", default=None, help="one password for all hosts (default: random per host)"
    )
    parser.add_argument(
        "--auth",
        default="basic,ntlm,certificate",
        help="comma-separated auth modes (basic, ntlm, certificate, kerberos)",
    )
    parser.add_argument(
        "--kerberos-keytab",
        type=Path,
        default=None,
        help="keytab of the listeners' HTTP/<name> principal (needed by --auth kerberos)",
    )
    parser.add_argument(
        "--kerberos-principal",
        action="append",
        default=[],
        metavar="USER@REALM",
        help="a Kerberos principal that logs on as the hosts' administrator (repeatable)",
    )
    parser.add_argument(
        "--namespace", default=DEFAULT_NAMESPACE, help="namespace of the Secrets in --secrets-file"
    )
    parser.add_argument(
        "--secrets-file", type=Path, default=None, help="write the credentials as Secret YAML here"
    )
    parser.add_argument("--ca-file", type=Path, default=None, help="write the CA certificate (PEM) here")
    parser.add_argument(
        "--permissive", action="store_true", help="accept unknown actions instead of failing them"
    )
    parser.add_argument(
        "--duration", type=float, default=None, help="stop after this many seconds (default: Ctrl-C)"
    )


def _secret(name: str, namespace: str, username: str, password: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": namespace, "labels": {"winnode.io/emulated": "true"}},
        "type": "kubernetes.io/basic-auth",
        "stringData": {"username": username, "password": password},
    }


def _write_private(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)


def format_table(rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip() for row in rows)


def run(args: argparse.Namespace) -> int:
    import yaml

    from winnode.testing.emulator import PRESETS, EmulatorServer

    if args.hosts < 1:
        print("winnode emulator: --hosts must be at least 1", file=sys.stderr)
        return 2
    modes = tuple(m.strip() for m in args.auth.split(",") if m.strip())
    if args.kerberos_keytab is not None and not args.kerberos_keytab.is_file():
        print(f"winnode emulator: --kerberos-keytab {args.kerberos_keytab} is not a file", file=sys.stderr)
        return 2
    port = args.port if args.port is not None else (5986 if args.https else 5985)
    try:
        spec = PRESETS[args.os](
            username=args.username,
            password=args.password,
            https=args.https,
            port=port,
            auth_modes=modes,
            kerberos_keytab=str(args.kerberos_keytab) if args.kerberos_keytab else None,
            kerberos_principals=tuple(args.kerberos_principal),
        )
    except ValueError as exc:
        print(f"winnode emulator: {exc}", file=sys.stderr)
        return 2
    server = EmulatorServer(strict=not args.permissive, base_address=args.base_address)
    stop = threading.Event()
    previous = signal.signal(signal.SIGTERM, lambda *_: stop.set())
    server.start()
    try:
        hosts = server.add_hosts(args.hosts, spec, prefix=args.prefix)
        rows = [("HOST", "ADDRESS", "PORT", "SCHEME", "USER", "CREDENTIALS-SECRET")]
        rows += [
            (h.hostname, h.address, str(h.port), h.scheme, h.username, h.credentials_secret_name)
            for h in hosts
        ]
        print(format_table(rows), flush=True)
        if args.secrets_file:
            docs = [_secret(h.credentials_secret_name, args.namespace, h.username, h.password) for h in hosts]
            _write_private(args.secrets_file, yaml.safe_dump_all(docs, sort_keys=False))
            print(f"credentials Secrets written to {args.secrets_file}", flush=True)
        if args.ca_file:
            args.ca_file.parent.mkdir(parents=True, exist_ok=True)
            args.ca_file.write_text(server.ca_pem)
            print(f"CA certificate written to {args.ca_file}", flush=True)
        print("emulated hosts are running; press Ctrl-C to stop", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            stop.wait(args.duration)
    finally:
        signal.signal(signal.SIGTERM, previous)
        server.stop()
    return 0
