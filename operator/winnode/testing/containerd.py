"""An emulated containerd's CRI network side: its configuration, and whether its pod network is up.

The emulated host holds containerd's configuration as data (`ContainerdConfig`), renders what
`containerd config dump` prints from it (config version 3 for containerd 2.x, version 2 for 1.6/1.7,
the keys of the real dump), and judges network readiness from the files on the host, as the real
CRI plugin does:

- containerd v2.1 `internal/cri/server/service_windows.go` (initPlatform): one go-cni instance with
  the configured conf_dir and bin_dirs, minimum network count 1, loaded with WithDefaultConf;
- go-cni `opts.go` (loadFromConfDir): the files of conf_dir ending in .conf, .conflist or .json
  (libcni `ConfFiles`), sorted by name; the first one is the network; a file without a plugin
  `type` is refused; none loaded -> `Status()` answers ErrCNINotInitialized,
  "cni plugin not initialized" (go-cni `errors.go`);
- containerd `internal/cri/server/status.go`: that error becomes the runtime's NetworkReady=false
  (reason NetworkPluginNotReady), which kubelet turns into the Node's Ready=False
  ("container runtime network not ready ...", kubelet `pkg/kubelet/kubelet.go`);
- libcni `FindInPath` (invoked per sandbox): the plugin `<type>.exe` must be in one of bin_dirs,
  else "failed to find plugin". The real containerd only fails each sandbox then; this emulator
  also holds the Node NotReady with that message, so a host without plugins can never look Ready
  in a test (a real one is Ready but cannot start a single pod).

Nothing here reads winnode's own rendering: presets are the installers' layouts, and the checks
read the host's files.
"""

from __future__ import annotations

import ipaddress
import json
import ntpath
from collections.abc import Callable
from dataclasses import dataclass, field, replace

RUNHCS = "io.containerd.runhcs.v1"
CNI_CONFIG_EXTENSIONS = (".conf", ".conflist", ".json")
NOT_INITIALIZED = "cni plugin not initialized"


@dataclass(frozen=True)
class ContainerdConfig:
    """The parts of containerd's effective configuration the CRI network depends on."""

    config_version: int  # 3: containerd 2.x; 2: containerd 1.6/1.7
    conf_dir: str
    bin_dirs: tuple[str, ...]
    default_runtime: str = "runhcs-wcow-process"
    runtime_type: str = RUNHCS
    # Plugins the installer itself put in bin_dirs (not winnode's).
    installer_plugins: tuple[str, ...] = field(default=())

    def dump(self) -> str:
        """What `containerd config dump` prints (the CRI network parts and their neighbours)."""
        if self.config_version == 3:
            cri = "[plugins.'io.containerd.cri.v1.runtime']"
            # bin_dirs since containerd 2.1 (bin_dir before); the dump lists the one the binary knows.
            cni_lines = [f"bin_dirs = [{', '.join(_toml_str(d) for d in self.bin_dirs)}]"]
        else:
            cri = "[plugins.'io.containerd.grpc.v1.cri']"
            cni_lines = [f"bin_dir = {_toml_str(self.bin_dirs[0] if self.bin_dirs else '')}"]
        head = (
            "version = 3\nroot = 'C:\\ProgramData\\containerd\\root'\n"
            if self.config_version == 3
            else "version = 2\nroot = 'C:\\ProgramData\\containerd\\root'\n"
        )
        lines = [
            head,
            "[grpc]",
            "  address = '\\\\.\\pipe\\containerd-containerd'",
            "",
            "[plugins]",
            "",
            f"  {cri}",
            "    enable_selinux = false"
            if self.config_version == 2
            else "    device_ownership_from_security_context = false",
            "",
            f"    {cri[:-1]}.cni]",
            *(f"      {line}" for line in cni_lines),
            f"      conf_dir = {_toml_str(self.conf_dir)}",
            "      max_conf_num = 1",
            "",
            f"    {cri[:-1]}.containerd]",
            f"      default_runtime_name = {_toml_str(self.default_runtime)}",
            "",
            f"      {cri[:-1]}.containerd.runtimes]",
            "",
            f"        {cri[:-1]}.containerd.runtimes.{_toml_key(self.default_runtime)}]",
            f"          runtime_type = {_toml_str(self.runtime_type)}",
            "",
        ]
        return "\n".join(lines)


def _toml_str(value: str) -> str:
    # containerd's dump uses TOML literal strings (no escapes), so Windows paths print as they are.
    if "'" in value or "\n" in value:
        return json.dumps(value)
    return f"'{value}'"


def _toml_key(value: str) -> str:
    return value if value.replace("-", "").replace("_", "").isalnum() else _toml_str(value)


# The installers' layouts (see winnode.network.containerd for where each comes from).
MICROSOFT = ContainerdConfig(
    config_version=3,
    conf_dir="C:\\Program Files\\containerd\\cni\\conf",
    bin_dirs=("C:\\Program Files\\containerd\\cni\\bin",),
    installer_plugins=("nat.exe", "sdnbridge.exe", "sdnoverlay.exe"),
)
SIG_WINDOWS_TOOLS = ContainerdConfig(
    config_version=3, conf_dir="c:/etc/cni/net.d", bin_dirs=("c:/opt/cni/bin",)
)
OPENSHIFT = ContainerdConfig(config_version=2, conf_dir="C:\\k\\cni\\config", bin_dirs=("C:\\k\\cni",))
# Broken: the CNI directories emptied in config.toml; or a Linux-minded default runtime.
NO_CNI_DIRS = ContainerdConfig(config_version=3, conf_dir="", bin_dirs=())
UNSUPPORTED_RUNTIME = replace(MICROSOFT, default_runtime="runc", runtime_type="io.containerd.runc.v2")

PRESETS: dict[str, ContainerdConfig] = {
    "microsoft": MICROSOFT,
    "sig-windows-tools": SIG_WINDOWS_TOOLS,
    "openshift": OPENSHIFT,
    "broken": NO_CNI_DIRS,
    "unsupported-runtime": UNSUPPORTED_RUNTIME,
}


class HostFiles:
    """What the readiness check needs of a host: file names in a directory, a file's text, existence."""

    def __init__(
        self,
        list_dir: Callable[[str], list[str]],
        read_text: Callable[[str], str | None],
        exists: Callable[[str], bool],
    ) -> None:
        self.list_dir = list_dir
        self.read_text = read_text
        self.exists = exists


def _plugin_types(text: str) -> list[str] | None:
    """The plugin types a network configuration (or list) runs, its IPAM plugins included; None when
    libcni would refuse the file (not JSON, a plugin without `type`)."""
    try:
        doc = json.loads(text)
    except ValueError:
        return None
    if not isinstance(doc, dict):
        return None
    plugins = doc["plugins"] if isinstance(doc.get("plugins"), list) else [doc]
    types: list[str] = []
    for plugin in plugins:
        kind = plugin.get("type") if isinstance(plugin, dict) else None
        if not isinstance(kind, str) or not kind:
            return None
        types.append(kind)
        ipam = plugin.get("ipam")
        if isinstance(ipam, dict) and isinstance(ipam.get("type"), str) and ipam["type"]:
            types.append(str(ipam["type"]))
    return types or None


def _win(path: str) -> str:
    return path.replace("/", "\\")


def network_error(config: ContainerdConfig | None, files: HostFiles) -> str | None:
    """Why containerd's pod network is not ready on this host; None when it is."""
    if config is None:
        return "container runtime is down"
    if not config.conf_dir:
        return NOT_INITIALIZED
    names = sorted(
        n for n in files.list_dir(_win(config.conf_dir)) if n.lower().endswith(CNI_CONFIG_EXTENSIONS)
    )
    if not names:
        return NOT_INITIALIZED
    # WithDefaultConf: the first file by name is the network; the others are never read.
    types = _plugin_types(files.read_text(ntpath.join(_win(config.conf_dir), names[0])) or "")
    if types is None:
        return NOT_INITIALIZED
    for plugin in types:
        if not any(files.exists(ntpath.join(_win(d), plugin + ".exe")) for d in config.bin_dirs):
            return f'failed to find plugin "{plugin}" in path [{" ".join(config.bin_dirs)}]'
    return None


def loaded_config(config: ContainerdConfig | None, files: HostFiles) -> str | None:
    """The path of the network configuration containerd loads (the first by name), if any."""
    if config is None or not config.conf_dir:
        return None
    names = sorted(
        n for n in files.list_dir(_win(config.conf_dir)) if n.lower().endswith(CNI_CONFIG_EXTENSIONS)
    )
    return ntpath.join(_win(config.conf_dir), names[0]) if names else None


# --- sandboxes --------------------------------------------------------------------------------


@dataclass(frozen=True)
class SandboxNetwork:
    ip: str
    gateway: str
    plugin: str


class SandboxError(RuntimeError):
    """RunPodSandbox failed on the network; the message is what kubelet would show."""


def sandbox_network(
    config: ContainerdConfig | None, files: HostFiles, taken: Callable[[str], bool]
) -> SandboxNetwork:
    """The address and gateway a new pod gets from the loaded CNI configuration, by the plugins' rules:

    - host-local (plugins/ipam/host-local/backend/allocator/allocator.go): the first free address
      of the range from rangeStart to rangeEnd (the legacy top-level subnet/rangeStart/rangeEnd
      form; ipam.ranges likewise), skipping the range's gateway (default: network+1, range.go);
    - win-bridge (plugins/main/windows/win-bridge/win-bridge_windows.go, processEndpointArgs): the
      pod's gateway is network+2, whatever IPAM said;
    - win-overlay (plugins/main/windows/win-overlay/win-overlay_windows.go): network+1.
    """
    problem = network_error(config, files)
    if problem is not None or config is None:
        raise SandboxError(f"failed to setup network for sandbox: {problem}")
    loaded = loaded_config(config, files)
    doc = json.loads(files.read_text(loaded or "") or "{}")
    plugin = doc["plugins"][0] if isinstance(doc.get("plugins"), list) else doc
    ipam = plugin.get("ipam") or {}
    if ipam.get("type") != "host-local":
        raise SandboxError(f"emulated containerd: IPAM {ipam.get('type')!r} is not modelled")
    ranges = [r for group in ipam.get("ranges") or [] for r in group] or [ipam]
    for r in ranges:
        subnet = ipaddress.IPv4Network(r["subnet"])
        gateway = ipaddress.IPv4Address(r.get("gateway") or str(subnet.network_address + 1))
        start = ipaddress.IPv4Address(r.get("rangeStart") or str(subnet.network_address + 1))
        end = ipaddress.IPv4Address(r.get("rangeEnd") or str(subnet.broadcast_address - 1))
        candidate = start
        while candidate <= end:
            if candidate != gateway and not taken(str(candidate)):
                kind = str(plugin.get("type"))
                offset = 2 if kind == "win-bridge" else 1
                return SandboxNetwork(
                    ip=str(candidate), gateway=str(subnet.network_address + offset), plugin=kind
                )
            candidate += 1
    raise SandboxError("failed to allocate for range 0: no IP addresses available in range set")
