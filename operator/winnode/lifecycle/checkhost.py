"""`winnode check-host`: is this Windows host ready to become a node? Asked from an admin's machine,
before any WindowsNode exists, over the same WinRM path the operator will use.

Each preflight item is PASS, WARN, FAIL (with the fix) or SKIP (an earlier item failed):

  WinRM listener          TCP to address:port
  WinRM certificate       the HTTPS listener's certificate verifies (CA bundle, name, expiry)
  Authentication          the credentials log in with the chosen auth
  OS build                Windows Server 2022 or 2025 (2019: deprecated, still configured)
  Containers feature      installed
  containerd              service installed and running
  CNI plugins             containerd's CNI directories, with the plugins the network mode needs
  Disk                    free space on the system drive
  Clock                   close to this machine's
  Pending reboot          none
  Apiserver from host     the host reaches the apiserver URL its kubelet will use (TCP)
  Mirror from host        the host downloads <mirror>/<version>/bin/windows/amd64/kubelet.exe.sha256

The host-side rules are the operator's own (lifecycle/preflight.py): a host that passes here passes
there. Nothing on the host is changed (facts and probe are read-only actions).
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import os
import socket
import ssl
import sys
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from urllib.parse import urlsplit

from winnode.api.common import parse_ip

PASSWORD_ENV = "WINNODE_HOST_PASSWORD"
CERT_WARN_DAYS = 30
CONNECT_TIMEOUT_S = 5.0
# Plugins containerd runs for a WindowsNetwork (network/cni.py): the mode's plugin and host-local IPAM.
CNI_PLUGINS = {
    "overlay": ("win-overlay.exe", "host-local.exe"),
    "l2bridge": ("win-bridge.exe", "host-local.exe"),
}


class Status(StrEnum):
    PASS = "PASS"
    WARN = "WARN"
    FAIL = "FAIL"
    SKIP = "SKIP"


@dataclass(frozen=True)
class Item:
    name: str
    status: Status
    detail: str
    fix: str = ""


@dataclass(frozen=True)
class Target:
    address: str
    port: int = 5986
    scheme: str = "https"
    auth: str = "ntlm"
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    cert_pem: str | None = None
    key_pem: str | None = field(default=None, repr=False)
    ca_bundle: str | None = None
    insecure_skip_verify: bool = False
    apiserver_url: str | None = None
    mirror_url: str | None = None
    kubernetes_version: str | None = None
    network_mode: str = "overlay"

    @property
    def endpoint(self) -> str:
        host = f"[{self.address}]" if ":" in self.address else self.address
        return f"{self.scheme}://{host}:{self.port}"


def _listener_fix(t: Target) -> str:
    return (
        "on the host, in an elevated PowerShell: create an HTTPS listener with a certificate for "
        f"{t.address} (`New-Item -Path WSMan:\\localhost\\Listener -Transport HTTPS -Address * "
        "-CertificateThumbPrint <thumbprint> -Force`) and open the port "
        f"(`New-NetFirewallRule -Name WinRM-HTTPS -DisplayName 'WinRM HTTPS' -Protocol TCP -LocalPort {t.port} "
        "-Action Allow`); see README, Preparing a Windows host"
    )


def check_listener(t: Target) -> list[Item]:
    """TCP and, for https, the certificate; blocking (run in a thread)."""
    try:
        sock = socket.create_connection((t.address, t.port), timeout=CONNECT_TIMEOUT_S)
    except OSError as exc:
        return [
            Item(
                "WinRM listener",
                Status.FAIL,
                f"no TCP connection to {t.address}:{t.port}: {exc}",
                _listener_fix(t),
            ),
            Item("WinRM certificate", Status.SKIP, "not checked: no listener"),
        ]
    items = [Item("WinRM listener", Status.PASS, f"{t.address}:{t.port} accepts TCP connections")]
    if t.scheme != "https":
        sock.close()
        items.append(
            Item(
                "WinRM certificate",
                Status.WARN,
                f"scheme http: no certificate; only {t.auth} message encryption protects the session"
                if t.auth in ("ntlm", "kerberos", "credssp")
                else f"scheme http with auth {t.auth} sends credentials in the clear",
                "use an HTTPS listener (port 5986) with a certificate for the host's name or address",
            )
        )
        return items
    context = ssl.create_default_context()
    if t.insecure_skip_verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    elif t.ca_bundle:
        context = ssl.create_default_context(cadata=t.ca_bundle)
    try:
        with context.wrap_socket(sock, server_hostname=t.address) as tls:
            cert = tls.getpeercert()
    except ssl.SSLCertVerificationError as exc:
        items.append(
            Item(
                "WinRM certificate",
                Status.FAIL,
                f"the listener's certificate does not verify: {exc.verify_message}",
                "give the CA that signed it (--ca-bundle here, spec.winrm.caBundle in the WindowsNode), or "
                f"replace the listener's certificate with one issued to {t.address}",
            )
        )
        return items
    except (ssl.SSLError, OSError) as exc:
        items.append(
            Item(
                "WinRM certificate",
                Status.FAIL,
                f"no TLS handshake with {t.address}:{t.port}: {exc}",
                "check that the port is the HTTPS listener (`winrm enumerate winrm/config/listener`)",
            )
        )
        return items
    if t.insecure_skip_verify:
        items.append(
            Item(
                "WinRM certificate",
                Status.WARN,
                "not verified (--insecure-skip-verify)",
                "pass --ca-bundle with the CA that signed the listener's certificate",
            )
        )
        return items
    not_after = datetime.fromtimestamp(ssl.cert_time_to_seconds(str((cert or {}).get("notAfter"))), UTC)
    days = (not_after - datetime.now(UTC)).days
    status = Status.PASS if days > CERT_WARN_DAYS else Status.WARN
    items.append(
        Item(
            "WinRM certificate",
            status,
            f"verified for {t.address}; valid until {not_after:%Y-%m-%d} ({days} days)",
            "" if status is Status.PASS else "renew the listener's certificate before it expires",
        )
    )
    return items


def _host_items(facts: object, probe: object, t: Target, now: datetime) -> list[Item]:
    from winnode.host.actions import FactsResult, ProbeResult
    from winnode.lifecycle import kubelet_config as kc
    from winnode.lifecycle.preflight import os_deprecation, preflight

    assert isinstance(facts, FactsResult)
    assert isinstance(probe, ProbeResult)
    problems = {p.reason: p.message for p in preflight(facts, now=now)}
    items: list[Item] = []

    def from_preflight(name: str, reasons: tuple[str, ...], ok: str) -> None:
        found = [problems[r] for r in reasons if r in problems]
        if found:
            # The operator's message says what is wrong and what to run; split off the fix.
            items.append(Item(name, Status.FAIL, "; ".join(found)))
        else:
            items.append(Item(name, Status.PASS, ok))

    from_preflight(
        "OS build", ("UnsupportedOSBuild",), f"{facts.os_caption} (build {facts.os_build}.{facts.os_ubr})"
    )
    deprecated = os_deprecation(facts)
    if deprecated is not None:
        items[-1] = Item("OS build", Status.WARN, deprecated.message)
    from_preflight("Containers feature", ("ContainersFeatureMissing",), "installed")
    from_preflight(
        "containerd",
        ("ContainerdMissing", "ContainerdNotRunning"),
        f"containerd {facts.containerd.version or ''} running".replace("  ", " "),
    )
    plugins = CNI_PLUGINS.get(t.network_mode, CNI_PLUGINS["overlay"])
    missing = [d for d in (kc.CNI_BIN_DIR, kc.CNI_CONF_DIR) if not probe.paths.get(d, False)]
    missing += [
        f"{kc.CNI_BIN_DIR}\\{p}" for p in plugins if not probe.paths.get(f"{kc.CNI_BIN_DIR}\\{p}", False)
    ]
    if missing:
        items.append(
            Item(
                "CNI plugins",
                Status.FAIL,
                "missing on the host: " + ", ".join(missing),
                f"put the CNI plugins for Windows ({', '.join(plugins)}, from the containernetworking/plugins "
                f"release) into {kc.CNI_BIN_DIR} and create {kc.CNI_CONF_DIR}",
            )
        )
    else:
        items.append(Item("CNI plugins", Status.PASS, f"{', '.join(plugins)} in {kc.CNI_BIN_DIR}"))
    from_preflight("Disk", ("InsufficientDisk",), f"{facts.system_drive_free_bytes / 1024**3:.0f} GiB free")
    from_preflight("Clock", ("ClockSkew", "ClockUnreadable"), "in sync with this machine")
    from_preflight("Pending reboot", ("RebootPending",), "none")
    items.append(_apiserver_item(probe, t))
    items.append(_mirror_item(probe, t))
    return items


def _apiserver_endpoint(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    return parts.hostname or "", parts.port or (443 if parts.scheme == "https" else 80)


def _tcp_key(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _apiserver_item(probe: object, t: Target) -> Item:
    from winnode.host.actions import ProbeResult

    assert isinstance(probe, ProbeResult)
    if not t.apiserver_url:
        return Item(
            "Apiserver from host",
            Status.SKIP,
            "no --apiserver-url given",
            "pass the URL kubelets will use (WINNODE_APISERVER_URL, or the server in kube-public/cluster-info)",
        )
    host, port = _apiserver_endpoint(t.apiserver_url)
    result = probe.tcp.get(_tcp_key(host, port))
    if result is not None and result.ok:
        return Item("Apiserver from host", Status.PASS, f"the host connects to {host}:{port}")
    return Item(
        "Apiserver from host",
        Status.FAIL,
        f"the host cannot connect to {host}:{port}: {result.error if result else 'not probed'}",
        f"open the path from the host to {host}:{port} (firewalls, routes), or set WINNODE_APISERVER_URL to an "
        "address the hosts reach (a load balancer in front of the control plane)",
    )


def mirror_probe_url(t: Target) -> str | None:
    from winnode.lifecycle import kubelet_config as kc

    if not t.mirror_url or not t.kubernetes_version:
        return None
    return kc.artifact_url(t.mirror_url, t.kubernetes_version, "kubelet.exe") + ".sha256"


def _mirror_item(probe: object, t: Target) -> Item:
    from winnode.host.actions import ProbeResult

    assert isinstance(probe, ProbeResult)
    url = mirror_probe_url(t)
    if url is None:
        return Item(
            "Mirror from host", Status.SKIP, "no --mirror given", "pass spec.artifacts.baseURL as --mirror"
        )
    result = probe.http.get(url)
    if result is not None and result.status == 200:
        return Item("Mirror from host", Status.PASS, f"the host downloads {url}")
    why = f"HTTP {result.status}" if result and result.status else (result.error if result else "not probed")
    return Item(
        "Mirror from host",
        Status.FAIL,
        f"the host cannot download {url}: {why}",
        "publish <version>/bin/windows/amd64/{kubelet,kube-proxy}.exe and their .sha256 under the mirror (the "
        "layout of dl.k8s.io), and let the host reach it",
    )


async def check(t: Target) -> list[Item]:
    """Every item, in order; the host is only read."""
    from winnode.host.actions import FactsParams, FactsResult, ProbeParams, ProbeResult
    from winnode.host.client import HostClient, HostConnection, shared_transport
    from winnode.host.errors import HostAuthenticationError, HostError
    from winnode.lifecycle import kubelet_config as kc

    items = await asyncio.to_thread(check_listener, t)
    later = (
        "Authentication", "OS build", "Containers feature", "containerd", "CNI plugins", "Disk", "Clock",
        "Pending reboot", "Apiserver from host", "Mirror from host",
    )  # fmt: skip
    if any(i.status is Status.FAIL for i in items):
        return items + [Item(name, Status.SKIP, "not checked: the listener is not usable") for name in later]
    client = HostClient(
        HostConnection(
            address=t.address,
            port=t.port,
            scheme=t.scheme,
            auth=t.auth,
            username=t.username,
            password=t.password,
            cert_pem=t.cert_pem,
            key_pem=t.key_pem,
            ca_bundle=t.ca_bundle,
            insecure_skip_verify=t.insecure_skip_verify,
            name=f"host {t.address}",
        ),
        shared_transport(),
    )
    try:
        facts = await client.run(FactsParams())
    except HostAuthenticationError as exc:
        fail = Item(
            "Authentication",
            Status.FAIL,
            exc.message,
            "check the user name and password (a local account: .\\Administrator; a domain one: DOMAIN\\user), "
            "and that the listener allows the auth method (`winrm get winrm/config/service/auth`)",
        )
        return [*items, fail, *(Item(n, Status.SKIP, "not checked: not logged in") for n in later[1:])]
    except HostError as exc:
        fail = Item("Authentication", Status.FAIL, exc.message, "see the message; check WinRM on the host")
        return [*items, fail, *(Item(n, Status.SKIP, "not checked: not logged in") for n in later[1:])]
    assert isinstance(facts, FactsResult)
    items.append(
        Item("Authentication", Status.PASS, f"logged in as {t.username or 'certificate user'} with {t.auth}")
    )
    plugins = CNI_PLUGINS.get(t.network_mode, CNI_PLUGINS["overlay"])
    tcp = []
    if t.apiserver_url:
        host, port = _apiserver_endpoint(t.apiserver_url)
        tcp.append(_tcp_key(host, port))
    url = mirror_probe_url(t)
    probe = await client.run(
        ProbeParams(
            paths=[kc.CNI_BIN_DIR, kc.CNI_CONF_DIR, *(f"{kc.CNI_BIN_DIR}\\{p}" for p in plugins)],
            tcp=tcp,
            http=[url] if url else [],
        )
    )
    assert isinstance(probe, ProbeResult)
    return items + _host_items(facts, probe, t, datetime.now(UTC))


def report(items: list[Item]) -> str:
    width = max(len(i.name) for i in items)
    lines = []
    for item in items:
        lines.append(f"{item.status.value:4}  {item.name:<{width}}  {item.detail}")
        if item.fix and item.status is not Status.PASS:
            lines.append(f"{'':4}  {'':<{width}}  fix: {item.fix}")
    failed = sum(i.status is Status.FAIL for i in items)
    lines.append("")
    lines.append("host is ready to become a node" if not failed else f"{failed} item(s) failed")
    return "\n".join(lines) + "\n"


# --- command line --------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("address", help="the host's DNS name or IP address (spec.address)")
    parser.add_argument(
        "--port", type=int, default=None, help="WinRM port (default 5986 for https, 5985 for http)"
    )
    parser.add_argument("--scheme", choices=("https", "http"), default="https")
    parser.add_argument(
        "--auth", choices=("ntlm", "kerberos", "credssp", "basic", "certificate"), default="ntlm"
    )
    parser.add_argument(
        "--username", default=None, help="account on the host (e.g. Administrator or DOMAIN\\user)"
    )
    parser.add_argument(
        "--password-env",
        default=PASSWORD_ENV,
        help=f"environment variable holding the password (default {PASSWORD_ENV}; asked for when unset)",
    )
    parser.add_argument(
        "--client-cert", type=Path, default=None, help="client certificate (PEM), auth certificate"
    )
    parser.add_argument("--client-key", type=Path, default=None, help="its private key (PEM)")
    parser.add_argument(
        "--ca-bundle", type=Path, default=None, help="CA that signed the listener's certificate"
    )
    parser.add_argument("--insecure-skip-verify", action="store_true", help="do not verify the certificate")
    parser.add_argument("--apiserver-url", default=None, help="the apiserver URL kubelets will use")
    parser.add_argument("--mirror", default=None, help="artifacts base URL (spec.artifacts.baseURL)")
    parser.add_argument(
        "--kubernetes-version",
        default=None,
        help="version to look for on the mirror (default: the newest known)",
    )
    parser.add_argument("--network-mode", choices=tuple(CNI_PLUGINS), default="overlay")


def target_from(args: argparse.Namespace) -> Target:
    from winnode.lifecycle.versions import newest_known_version

    password = None
    if args.auth != "certificate":
        password = os.environ.get(args.password_env)
        if password is None and sys.stdin.isatty():
            password = getpass.getpass(f"password for {args.username or 'the account'} on {args.address}: ")
    default_port = 5986 if args.scheme == "https" else 5985
    return Target(
        address=args.address,
        port=args.port or default_port,
        scheme=args.scheme,
        auth=args.auth,
        username=args.username,
        password=password,
        cert_pem=args.client_cert.read_text() if args.client_cert else None,
        key_pem=args.client_key.read_text() if args.client_key else None,
        ca_bundle=args.ca_bundle.read_text() if args.ca_bundle else None,
        insecure_skip_verify=args.insecure_skip_verify,
        apiserver_url=args.apiserver_url,
        mirror_url=args.mirror,
        kubernetes_version=args.kubernetes_version or newest_known_version(),
        network_mode=args.network_mode,
    )


def run(args: argparse.Namespace) -> int:
    if parse_ip(args.address) is None and not args.address.replace("-", "").replace(".", "").isalnum():
        print(f"winnode check-host: {args.address!r} is not a host name or IP address", file=sys.stderr)
        return 2
    try:
        target = target_from(args)
    except OSError as exc:
        print(f"winnode check-host: {exc}", file=sys.stderr)
        return 2
    if target.auth != "certificate" and not target.password:
        print(
            f"winnode check-host: no password: set {args.password_env} or run it in a terminal",
            file=sys.stderr,
        )
        return 2
    items = asyncio.run(check(target))
    sys.stdout.write(f"winnode check-host {target.endpoint}\n\n" + report(items))
    return 1 if any(i.status is Status.FAIL for i in items) else 0
