"""Where containerd looks for CNI configuration and plugins, read from its effective configuration.

`containerd config dump` prints the configuration containerd runs with: its config.toml merged over
its built-in defaults. Its CRI section names the directories the CRI plugin loads network
configurations from (`conf_dir`) and the directories it searches for plugin binaries (`bin_dir`,
or `bin_dirs` since containerd 2.1). Installers choose different places:

  - containerd's own defaults on Windows (Microsoft's install script keeps them):
    C:\\Program Files\\containerd\\cni\\conf and C:\\Program Files\\containerd\\cni\\bin
  - sig-windows-tools' Install-Containerd.ps1: c:/etc/cni/net.d and c:/opt/cni/bin
  - the OpenShift Windows Machine Config Operator: C:\\k\\cni\\config and C:\\k\\cni

so the CNI files go wherever this host's containerd looks, never to a fixed path. Pure: text in,
layout out.

Upstream (containerd v2.1): `internal/cri/config/config.go` (CniConfig: `bin_dir`, `bin_dirs`,
`conf_dir`; the `io.containerd.cri.v1.runtime` plugin of config version 3), and
`internal/cri/config/config_windows.go` (the Windows defaults above and the default runtime
`runhcs-wcow-process` of type `io.containerd.runhcs.v1`). containerd 1.6/1.7 (config version 2)
keep the same keys under the `io.containerd.grpc.v1.cri` plugin (`pkg/cri/config/config.go`).
"""

from __future__ import annotations

import ntpath
import tomllib
from dataclasses import dataclass
from typing import Any

# The runtime every Windows container of a Kubernetes node runs under (process isolation through
# the runhcs shim). Another default runtime (runc from a Linux-minded config, a Hyper-V-only
# handler without process isolation) is not one winnode configures nodes for.
SUPPORTED_RUNTIME_TYPES = ("io.containerd.runhcs.v1",)
# containerd 2.x (config version 3) and 1.6/1.7 (config version 2).
_CRI_RUNTIME_PLUGIN_V3 = "io.containerd.cri.v1.runtime"
_CRI_PLUGIN_V2 = "io.containerd.grpc.v1.cri"
CNI_CONF_NAME = "10-winnode.conf"


class ContainerdConfigError(ValueError):
    """containerd's configuration does not let winnode wire pods; `reason` is a condition reason."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class CniLayout:
    """The directories containerd's CRI plugin uses on one host."""

    conf_dir: str
    bin_dir: str  # the first of containerd's plugin directories: where winnode installs plugins
    runtime_type: str = SUPPORTED_RUNTIME_TYPES[0]

    @property
    def conf_file(self) -> str:
        return ntpath.join(self.conf_dir, CNI_CONF_NAME)

    def plugin_path(self, exe: str) -> str:
        return ntpath.join(self.bin_dir, exe)


# containerd's defaults on Windows (internal/cri/config/config_windows.go, with %ProgramFiles%
# expanded to its usual value): what a host whose containerd runs without CNI settings uses.
DEFAULT_LAYOUT = CniLayout(
    conf_dir="C:\\Program Files\\containerd\\cni\\conf",
    bin_dir="C:\\Program Files\\containerd\\cni\\bin",
)


def _windows_path(path: str) -> str:
    """containerd accepts forward slashes on Windows; HNS, PowerShell and our paths use backslashes."""
    return ntpath.normpath(path.replace("/", "\\")) if path else path


def _table(doc: dict[str, Any], *keys: str) -> dict[str, Any] | None:
    node: Any = doc
    for key in keys:
        if not isinstance(node, dict) or not isinstance(node.get(key), dict):
            return None
        node = node[key]
    return node if isinstance(node, dict) else None


def _cri_sections(doc: dict[str, Any]) -> tuple[str, dict[str, Any] | None, dict[str, Any] | None]:
    """(section name, cni table, containerd runtime table) of the CRI plugin of either config version."""
    version = doc.get("version", 1)
    if version == 3:
        base = _table(doc, "plugins", _CRI_RUNTIME_PLUGIN_V3)
        name = f"[plugins.'{_CRI_RUNTIME_PLUGIN_V3}']"
    else:
        base = _table(doc, "plugins", _CRI_PLUGIN_V2)
        name = f'[plugins."{_CRI_PLUGIN_V2}"]'
    if base is None:
        return name, None, None
    return name, _table(base, "cni"), _table(base, "containerd")


def layout_from_config_dump(text: str, host: str) -> CniLayout:
    """The CNI layout of the containerd whose `containerd config dump` printed `text`.

    Raises ContainerdConfigError naming what to change in config.toml.
    """
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ContainerdConfigError(
            "ContainerdConfigUnreadable",
            f"`containerd config dump` on {host} did not print valid TOML ({exc}); check "
            "C:\\Program Files\\containerd\\config.toml and restart containerd",
        ) from None
    section, cni, runtime = _cri_sections(doc)
    if cni is None:
        raise ContainerdConfigError(
            "ContainerdCRIDisabled",
            f"containerd on {host} has no CRI plugin section {section} with a cni table: the CRI "
            "plugin is disabled or missing (remove it from disabled_plugins in config.toml), so "
            "kubelet cannot run pods; restart containerd after the change",
        )
    conf_dir = str(cni.get("conf_dir") or "")
    bin_dirs_value = cni.get("bin_dirs")
    bin_dirs = [str(d) for d in bin_dirs_value if d] if isinstance(bin_dirs_value, list) else []
    if not bin_dirs and cni.get("bin_dir"):
        bin_dirs = [str(cni["bin_dir"])]
    missing = [key for key, value in (("conf_dir", conf_dir), ("bin_dir(s)", bin_dirs)) if not value]
    if missing:
        raise ContainerdConfigError(
            "ContainerdCNIDirsMissing",
            f"containerd on {host} has no CNI {' and no '.join(missing)} in {section[:-1]}.cni] of its "
            "configuration, so it cannot load a pod network; set conf_dir (e.g. 'C:\\Program "
            "Files\\containerd\\cni\\conf') and bin_dirs (e.g. ['C:\\Program Files\\containerd\\cni\\bin']; "
            "bin_dir before containerd 2.1) in config.toml and restart containerd",
        )
    runtime_type = _default_runtime_type(runtime)
    if runtime_type not in SUPPORTED_RUNTIME_TYPES:
        raise ContainerdConfigError(
            "ContainerdRuntimeUnsupported",
            f"containerd on {host} runs pods with runtime type {runtime_type or '(none)'} "
            f"({section[:-1]}.containerd] default_runtime_name); Windows nodes need "
            f"{' or '.join(SUPPORTED_RUNTIME_TYPES)}: set default_runtime_name back to runhcs-wcow-process "
            "in config.toml (`containerd config default` prints that runtime) and restart containerd",
        )
    return CniLayout(
        conf_dir=_windows_path(conf_dir), bin_dir=_windows_path(bin_dirs[0]), runtime_type=runtime_type
    )


def _default_runtime_type(runtime: dict[str, Any] | None) -> str:
    if runtime is None:
        return ""
    name = str(runtime.get("default_runtime_name") or "")
    runtimes = runtime.get("runtimes")
    if not name or not isinstance(runtimes, dict) or not isinstance(runtimes.get(name), dict):
        return ""
    return str(runtimes[name].get("runtime_type") or "")
