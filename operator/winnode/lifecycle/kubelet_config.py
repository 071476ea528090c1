"""Where winnode puts things on a Windows host, and the files and command lines it writes there.

All pure: text in, text out. The same functions feed the configure flow, drift repair and the
dry-run (`winnode render`), so what is checked is exactly what is written.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import yaml

from winnode.api.common import Taint
from winnode.api.windowsnetwork import NetworkMode, WindowsNetworkSpec
from winnode.api.windowsnode import KubeletConfig
from winnode.network.containerd import DEFAULT_LAYOUT
from winnode.network.hns import HNS_NETWORK_NAME, plan_subnet

# --- layout on the host ------------------------------------------------------------------------

K_DIR = "C:\\k"
KUBELET_EXE = f"{K_DIR}\\kubelet.exe"
KUBE_PROXY_EXE = f"{K_DIR}\\kube-proxy.exe"
# Runs kubelet and kube-proxy with their output in a size-rotated log file: the klog flags that did
# this (--log-file, --logtostderr) were removed in Kubernetes 1.26 and both components refuse them.
KUBE_LOG_RUNNER_EXE = f"{K_DIR}\\kube-log-runner.exe"
CA_CERT = f"{K_DIR}\\ca.crt"
BOOTSTRAP_KUBECONFIG = f"{K_DIR}\\bootstrap-kubelet.conf"
# Written by the kubelet itself once it holds its client certificate.
KUBELET_KUBECONFIG = f"{K_DIR}\\kubelet.conf"
KUBELET_CONFIG = f"{K_DIR}\\kubelet-config.yaml"
KUBE_PROXY_CONFIG = f"{K_DIR}\\kube-proxy-config.yaml"
# kube-proxy's own identity (kube/proxy_identity.py): a kubeconfig naming a token file, which client-go
# re-reads, so a renewed token needs no restart.
KUBE_PROXY_KUBECONFIG = f"{K_DIR}\\kube-proxy.conf"
KUBE_PROXY_TOKEN = f"{K_DIR}\\kube-proxy.token"
# Everything of ours lives under C:\k, so removing it leaves the host as it was.
KUBELET_ROOT = f"{K_DIR}\\kubelet"
KUBELET_CERT_DIR = f"{KUBELET_ROOT}\\pki"
# The logs live where the kubelet's node log query looks for a service without an event provider:
# `NAME\\NAME.log` under nodeLogDir, C:\\var\\log (pkg/kubelet/kubelet_server_journal.go,
# heuristicsCopyFileLogs, v1.37.2), so `kubectl get --raw /api/v1/nodes/<n>/proxy/logs/?query=kubelet`
# returns them. kube-log-runner writes them.
LOG_ROOT = "C:\\var\\log"
KUBELET_LOG_DIR = f"{LOG_ROOT}\\kubelet"
KUBE_PROXY_LOG_DIR = f"{LOG_ROOT}\\kube-proxy"
KUBELET_LOG = f"{KUBELET_LOG_DIR}\\kubelet.log"
KUBE_PROXY_LOG = f"{KUBE_PROXY_LOG_DIR}\\kube-proxy.log"
LOG_DIRS: tuple[str, ...] = (KUBELET_LOG_DIR, KUBE_PROXY_LOG_DIR)
# kube-log-runner rotates at this size (a resource.Quantity) and deletes rotated files older than the age.
LOG_FILE_SIZE = "100Mi"
LOG_FILE_AGE = "168h"
# containerd's defaults on Windows; a host's own containerd configuration decides (network.containerd).
CNI_CONF_DIR = DEFAULT_LAYOUT.conf_dir
CNI_BIN_DIR = DEFAULT_LAYOUT.bin_dir
CNI_CONF = DEFAULT_LAYOUT.conf_file

# Ours; the CNI directories (containerd's) are added per host.
BASE_DIRECTORIES: tuple[str, ...] = (K_DIR, KUBELET_ROOT, KUBELET_CERT_DIR, *LOG_DIRS)
DIRECTORIES: tuple[str, ...] = (*BASE_DIRECTORIES, CNI_CONF_DIR, CNI_BIN_DIR)
# What deconfigure removes (recursively); CNI directories belong to containerd and stay, and
# C:\\var\\log, which other software may share, goes only when empty (LOG_PARENTS).
OWNED_DIRECTORIES: tuple[str, ...] = (K_DIR, *LOG_DIRS)
# Created with the log directories when the host had none; deconfigure removes them only when
# nothing else is in them.
LOG_PARENTS: tuple[str, ...] = (LOG_ROOT, "C:\\var")
OWNED_FILES: tuple[str, ...] = (CNI_CONF,)

KUBELET_SERVICE = "kubelet"
KUBE_PROXY_SERVICE = "kube-proxy"
CONTAINERD_SERVICE = "containerd"
SERVICES: tuple[str, ...] = (KUBELET_SERVICE, KUBE_PROXY_SERVICE)
# Every service we register carries this in its description; we never touch a service without it.
SERVICE_MARKER = "Managed by winnode"

CONTAINERD_ENDPOINT = "npipe:////./pipe/containerd-containerd"
# Where containerd's Windows release installs it (its own install script and Microsoft's).
CONTAINERD_EXE = "C:\\Program Files\\containerd\\bin\\containerd.exe"
# Processes Microsoft Defender's real-time scanning leaves alone on a node (when Defender runs).
DEFENDER_EXCLUDED_PROCESSES: tuple[str, ...] = (CONTAINERD_EXE, KUBELET_EXE, KUBE_PROXY_EXE)
KUBELET_PORT = 10250
FIREWALL_KUBELET = "winnode-kubelet"
FIREWALL_VXLAN = "winnode-vxlan"

BINARIES: tuple[str, ...] = ("kubelet.exe", "kube-proxy.exe", "kube-log-runner.exe")
BINARY_PATHS: dict[str, str] = {
    "kubelet.exe": KUBELET_EXE,
    "kube-proxy.exe": KUBE_PROXY_EXE,
    "kube-log-runner.exe": KUBE_LOG_RUNNER_EXE,
}
# Which service to stop while a binary is replaced. kube-log-runner runs both services; stopping the
# kubelet stops kube-proxy first (it depends on the kubelet), so that frees it.
BINARY_SERVICE: dict[str, str] = {
    "kubelet.exe": KUBELET_SERVICE,
    "kube-proxy.exe": KUBE_PROXY_SERVICE,
    "kube-log-runner.exe": KUBELET_SERVICE,
}
DEFAULT_ARTIFACTS_URL = "https://dl.k8s.io"


def artifact_url(base_url: str, version: str, file: str) -> str:
    """`<baseURL>/<version>/bin/windows/amd64/<file>`, the layout of dl.k8s.io."""
    return f"{base_url.rstrip('/')}/{version}/bin/windows/amd64/{file}"


# --- command lines -----------------------------------------------------------------------------

_NEEDS_QUOTES = re.compile(r'[\s"]')


def quote_arg(arg: str) -> str:
    """Quote one argument the way the Microsoft C runtime splits a command line (CommandLineToArgvW)."""
    if arg and not _NEEDS_QUOTES.search(arg):
        return arg
    out = ['"']
    backslashes = 0
    for ch in arg:
        if ch == "\\":
            backslashes += 1
            continue
        if ch == '"':
            out.append("\\" * (backslashes * 2 + 1) + '"')
        else:
            out.append("\\" * backslashes + ch)
        backslashes = 0
    out.append("\\" * (backslashes * 2) + '"')
    return "".join(out)


def command_line(executable: str, args: Iterable[str]) -> str:
    return " ".join([quote_arg(executable), *(quote_arg(a) for a in args)])


def _log_runner(log_file: str, executable: str, args: Iterable[str]) -> str:
    """The service command line: kube-log-runner, its flags, then the component's own command line, as
    Kubernetes' Windows node setup registers its services (cluster/gce/windows/k8s-node-setup.psm1 at
    v1.37.2). Flags of kube-log-runner.go (k8s.io/component-base/logs/kube-log-runner, v0.37.2)."""
    return command_line(
        KUBE_LOG_RUNNER_EXE,
        [
            f"-log-file={log_file}",
            f"-log-file-size={LOG_FILE_SIZE}",
            f"-log-file-age={LOG_FILE_AGE}",
            executable,
            *args,
        ],
    )


def kubelet_command_line(node_name: str, kubelet: KubeletConfig, node_ip: str | None = None) -> str:
    args = [
        "--windows-service",
        f"--bootstrap-kubeconfig={BOOTSTRAP_KUBECONFIG}",
        f"--kubeconfig={KUBELET_KUBECONFIG}",
        f"--config={KUBELET_CONFIG}",
        f"--root-dir={KUBELET_ROOT}",
        f"--cert-dir={KUBELET_CERT_DIR}",
        f"--hostname-override={node_name}",
        # Above the pods it hosts, so a busy node still answers the apiserver (the kubelet's
        # Windows-only flag, cmd/kubelet/app/options/osflags_windows.go).
        "--windows-priorityclass=ABOVE_NORMAL_PRIORITY_CLASS",
    ]
    if node_ip:
        args.append(f"--node-ip={node_ip}")
    args.extend(f"--{name}={value}" for name, value in sorted(kubelet.extra_args.items()))
    names = [arg[2:].partition("=")[0] for arg in args]
    twice = sorted({name for name in names if names.count(name) > 1})
    if twice:
        # The schema refuses managed flags in extraArgs; reaching here means the two lists diverged.
        raise ValueError(
            f"kubelet flags emitted twice: {', '.join(twice)} (add them to MANAGED_KUBELET_FLAGS)"
        )
    return _log_runner(KUBELET_LOG, KUBELET_EXE, args)


def kube_proxy_command_line() -> str:
    return _log_runner(KUBE_PROXY_LOG, KUBE_PROXY_EXE, ["--windows-service", f"--config={KUBE_PROXY_CONFIG}"])


def service_description(windows_node: str, what: str) -> str:
    return f"{SERVICE_MARKER} (WindowsNode {windows_node}): {what}. Do not edit; winnode repairs changes."


def is_ours(description: str | None) -> bool:
    return bool(description) and SERVICE_MARKER in (description or "")


# --- files -------------------------------------------------------------------------------------


def _yaml(doc: Mapping[str, Any]) -> str:
    return yaml.safe_dump(dict(doc), sort_keys=False, default_flow_style=False)


def bootstrap_kubeconfig(server: str, ca_pem: str, token: str) -> str:
    """The kubeconfig a kubelet uses once, to ask for its client certificate with a bootstrap token."""
    ca_data = base64.b64encode(ca_pem.encode()).decode()
    return _yaml(
        {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {"name": "kubernetes", "cluster": {"server": server, "certificate-authority-data": ca_data}}
            ],
            "users": [{"name": "tls-bootstrap-token-user", "user": {"token": token}}],
            "contexts": [
                {
                    "name": "tls-bootstrap-token-user@kubernetes",
                    "context": {"cluster": "kubernetes", "user": "tls-bootstrap-token-user"},
                }
            ],
            "current-context": "tls-bootstrap-token-user@kubernetes",
        }
    )


def kube_proxy_kubeconfig(server: str, ca_pem: str) -> str:
    """kube-proxy's kubeconfig: its ServiceAccount token, read from KUBE_PROXY_TOKEN."""
    ca_data = base64.b64encode(ca_pem.encode()).decode()
    return _yaml(
        {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {"name": "kubernetes", "cluster": {"server": server, "certificate-authority-data": ca_data}}
            ],
            "users": [{"name": "kube-proxy", "user": {"tokenFile": KUBE_PROXY_TOKEN}}],
            "contexts": [
                {"name": "kube-proxy@kubernetes", "context": {"cluster": "kubernetes", "user": "kube-proxy"}}
            ],
            "current-context": "kube-proxy@kubernetes",
        }
    )


def _taint(t: Taint) -> dict[str, str]:
    out = {"key": t.key, "effect": str(t.effect)}
    if t.value:
        out["value"] = t.value
    return out


def kubelet_configuration(
    kubelet: KubeletConfig,
    taints: Sequence[Taint],
    network: WindowsNetworkSpec | None,
    cluster_dns: Sequence[str] | None = None,
) -> str:
    """KubeletConfiguration for Windows: no cgroups, no node-allocatable enforcement, no resolv.conf,
    containerd over its named pipe, taints present from the first registration, node log query on.
    `cluster_dns` (lifecycle/cluster_dns.py) wins over the network's dns.servers."""
    config: dict[str, Any] = {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        "authentication": {
            "anonymous": {"enabled": False},
            "webhook": {"enabled": True},
            "x509": {"clientCAFile": CA_CERT},
        },
        "authorization": {"mode": "Webhook"},
        "cgroupsPerQOS": False,
        "enforceNodeAllocatable": [],
        "resolvConf": "",
        "containerRuntimeEndpoint": CONTAINERD_ENDPOINT,
        "rotateCertificates": True,
        "serverTLSBootstrap": True,
        # No hairpinMode: the kubelet ignores it on Windows (hairpin is HNS's business).
        # `kubectl get --raw /api/v1/nodes/<node>/proxy/logs/?query=kubelet` (NodeLogQuery, GA in 1.36).
        "enableSystemLogHandler": True,
        "enableSystemLogQuery": True,
        "maxPods": kubelet.max_pods,
        "registerWithTaints": [_taint(t) for t in taints],
    }
    if kubelet.system_reserved:
        config["systemReserved"] = dict(sorted(kubelet.system_reserved.items()))
    servers = list(cluster_dns or ())
    if not servers and network is not None and network.dns is not None:
        servers = list(network.dns.servers)
    if servers:
        config["clusterDNS"] = servers
        config["clusterDomain"] = "cluster.local"
    return _yaml(config)


def kube_proxy_configuration(node_name: str, network: WindowsNetworkSpec, subnet: str) -> str:
    winkernel: dict[str, Any] = {"networkName": HNS_NETWORK_NAME, "enableDSR": False}
    if network.mode is NetworkMode.OVERLAY:
        winkernel["sourceVip"] = plan_subnet(subnet).source_vip
    return _yaml(
        {
            "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
            "kind": "KubeProxyConfiguration",
            "clientConnection": {"kubeconfig": KUBE_PROXY_KUBECONFIG},
            "hostnameOverride": node_name,
            "mode": "kernelspace",
            "clusterCIDR": network.cluster_cidr,
            "winkernel": winkernel,
        }
    )
