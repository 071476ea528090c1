"""containerd's CNI directories from its effective configuration, and the emulated containerd's
network readiness (what a real containerd's CRI plugin would report for the files on the host)."""

from __future__ import annotations

import json

import pytest

from winnode.network.containerd import DEFAULT_LAYOUT, ContainerdConfigError, layout_from_config_dump
from winnode.testing import containerd as emu
from winnode.testing.artifacts import fake_binary
from winnode.testing.hostmodel import new_host_model

# Each installer's layout as its containerd reports it, and where winnode must then put its files.
LAYOUTS = {
    "microsoft": ("C:\\Program Files\\containerd\\cni\\conf", "C:\\Program Files\\containerd\\cni\\bin"),
    "sig-windows-tools": ("c:\\etc\\cni\\net.d", "c:\\opt\\cni\\bin"),
    "openshift": ("C:\\k\\cni\\config", "C:\\k\\cni"),
}


@pytest.mark.parametrize("preset", sorted(LAYOUTS))
def test_each_installer_layout_is_read_from_the_dump(preset: str) -> None:
    layout = layout_from_config_dump(emu.PRESETS[preset].dump(), "win-01")
    assert (layout.conf_dir, layout.bin_dir) == LAYOUTS[preset]
    assert layout.conf_file == LAYOUTS[preset][0] + "\\10-winnode.conf"
    assert layout.runtime_type == "io.containerd.runhcs.v1"


def test_microsoft_defaults_are_containerds_own() -> None:
    assert layout_from_config_dump(emu.MICROSOFT.dump(), "h") == DEFAULT_LAYOUT


def test_containerd_2_0_bin_dir_and_1_7_grpc_section() -> None:
    v3 = """version = 3
[plugins.'io.containerd.cri.v1.runtime'.cni]
  bin_dir = 'D:\\cni\\bin'
  conf_dir = 'D:\\cni\\conf'
[plugins.'io.containerd.cri.v1.runtime'.containerd]
  default_runtime_name = 'runhcs-wcow-process'
[plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runhcs-wcow-process]
  runtime_type = 'io.containerd.runhcs.v1'
"""
    assert layout_from_config_dump(v3, "h").bin_dir == "D:\\cni\\bin"
    # A version 2 section in a version 3 file is not what containerd 2 reads.
    v2_keys_in_v3 = v3.replace("io.containerd.cri.v1.runtime", "io.containerd.grpc.v1.cri")
    with pytest.raises(ContainerdConfigError) as info:
        layout_from_config_dump(v2_keys_in_v3, "h")
    assert info.value.reason == "ContainerdCRIDisabled"


@pytest.mark.parametrize(
    ("preset", "reason", "says"),
    [
        ("broken", "ContainerdCNIDirsMissing", "set conf_dir"),
        ("unsupported-runtime", "ContainerdRuntimeUnsupported", "io.containerd.runc.v2"),
    ],
)
def test_broken_configurations_name_the_fix(preset: str, reason: str, says: str) -> None:
    with pytest.raises(ContainerdConfigError) as info:
        layout_from_config_dump(emu.PRESETS[preset].dump(), "win-07")
    assert info.value.reason == reason
    assert says in str(info.value)
    assert "win-07" in str(info.value)


def test_unreadable_dump() -> None:
    with pytest.raises(ContainerdConfigError) as info:
        layout_from_config_dump("version = [", "h")
    assert info.value.reason == "ContainerdConfigUnreadable"


def _conf(kind: str) -> bytes:
    return json.dumps(
        {"cniVersion": "0.3.0", "name": "n", "type": kind, "ipam": {"type": "host-local"}}
    ).encode()


@pytest.mark.parametrize("preset", sorted(LAYOUTS))
def test_emulated_containerd_is_ready_only_with_config_and_plugins(preset: str) -> None:
    model = new_host_model("win-01", containerd_layout=preset)
    conf_dir, bin_dir = LAYOUTS[preset]
    assert model.cni_network_error() == emu.NOT_INITIALIZED
    model.write_bytes(conf_dir + "\\10-winnode.conf", _conf("win-overlay"))
    assert (
        model.cni_network_error()
        == f'failed to find plugin "win-overlay" in path [{emu.PRESETS[preset].bin_dirs[0]}]'
    )
    model.write_bytes(bin_dir + "\\win-overlay.exe", fake_binary("win-overlay", "v1.7.1"))
    assert "host-local" in (model.cni_network_error() or "")
    model.write_bytes(bin_dir + "\\host-local.exe", fake_binary("host-local", "v1.7.1"))
    assert model.cni_network_error() is None


def test_emulated_containerd_loads_only_the_first_config_by_name() -> None:
    model = new_host_model("win-01")
    conf_dir, bin_dir = LAYOUTS["microsoft"]
    for exe in ("win-bridge.exe", "host-local.exe"):
        model.write_bytes(f"{bin_dir}\\{exe}", fake_binary(exe.removesuffix(".exe"), "v1.7.1"))
    model.write_bytes(conf_dir + "\\10-winnode.conf", _conf("win-bridge"))
    assert model.cni_network_error() is None
    # A file sorting first wins, even when it is one containerd cannot use.
    model.write_bytes(conf_dir + "\\05-other.json", b'{"name": "x"}')
    assert model.cni_network_error() == emu.NOT_INITIALIZED
    # Files of other extensions are never read.
    model.remove(conf_dir + "\\05-other.json")
    model.write_bytes(conf_dir + "\\01-notes.txt", b"hello")
    assert model.cni_network_error() is None


def test_a_stopped_containerd_has_no_network() -> None:
    model = new_host_model("win-01", containerd_running=False)
    assert model.cni_network_error() == "container runtime is down"
