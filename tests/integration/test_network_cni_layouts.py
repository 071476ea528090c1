"""CNI files land where each installer's containerd looks; a containerd that cannot load them keeps
the node from ever showing Ready, with a condition that says why.

Each emulated host's containerd is configured as one installer leaves it (testing.containerd
PRESETS) and reports its network ready only when the configuration it loads names plugins present
in its bin_dir; the emulated kubelet turns that into the Node's Ready condition.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from winnode.network.cni_plugins import CNI_PLUGINS
from winnode.settings import Settings
from winnode.testing.artifacts import ArtifactServer, kubernetes_release
from winnode.testing.cluster import ControlPlane
from winnode.testing.containerd import PRESETS, loaded_config
from winnode.testing.demo import World

TIMEOUT = 120.0
NETWORK = "cni-layouts"
# Where each installer's containerd looks (conf_dir, bin_dir), as the host shows the paths.
LAYOUTS = {
    "microsoft": ("C:\\Program Files\\containerd\\cni\\conf", "C:\\Program Files\\containerd\\cni\\bin"),
    "sig-windows-tools": ("c:\\etc\\cni\\net.d", "c:\\opt\\cni\\bin"),
    "openshift": ("C:\\k\\cni\\config", "C:\\k\\cni"),
}


@pytest.fixture(scope="module")
def world(control_plane: ControlPlane) -> Iterator[World]:
    with World(
        control_plane, settings=Settings(metrics_port=0, drift_interval_s=2.0), namespace="wn-cni"
    ) as w:
        w.apply(w.network(NETWORK, clusterCIDR="10.213.0.0/16", serviceCIDR="10.214.0.0/16"))
        yield w


def condition(world: World, name: str, type_: str) -> dict[str, Any] | None:
    obj = world.get("windowsnode", name) or {}
    found = [c for c in (obj.get("status") or {}).get("conditions") or [] if c["type"] == type_]
    return found[0] if found else None


def node_ready(world: World, name: str) -> dict[str, Any] | None:
    node = world.get("node", name)
    if node is None:
        return None
    return next((c for c in node["status"].get("conditions") or [] if c["type"] == "Ready"), None)


def test_cni_files_land_where_each_installers_containerd_looks(world: World) -> None:
    hosts = {preset: world.add_host(containerd_layout=preset) for preset in LAYOUTS}
    for preset, host in hosts.items():
        world.apply(world.windows_node(host, name=f"cni-{preset}", network=NETWORK))
    for preset, host in hosts.items():
        name = f"cni-{preset}"
        ready = world.wait_for(
            f"Node {name} Ready",
            lambda name=name: (node_ready(world, name) or {}).get("status") == "True",
            TIMEOUT,
        )
        assert ready
        conf_dir, bin_dir = LAYOUTS[preset]

        def look(m: Any, conf_dir: str = conf_dir, bin_dir: str = bin_dir) -> dict[str, Any]:
            return {
                "loaded": loaded_config(m.containerd_config, m._host_files()),
                "conf": m.file(conf_dir + "\\10-winnode.conf"),
                "plugins": [p for p in CNI_PLUGINS if m.file(f"{bin_dir}\\{p}") is not None],
                "default_conf": m.file("C:\\Program Files\\containerd\\cni\\conf\\10-winnode.conf"),
                "network": m.cni_network_error(),
            }

        seen = host.call(look)
        assert seen["conf"] is not None, f"{preset}: no CNI config in {conf_dir}"
        assert (seen["loaded"] or "").lower() == (conf_dir + "\\10-winnode.conf").lower(), preset
        assert seen["plugins"] == list(CNI_PLUGINS), preset
        assert seen["network"] is None
        if preset != "microsoft":
            assert seen["default_conf"] is None, f"{preset}: nothing goes to containerd's unused defaults"


@pytest.mark.parametrize(
    ("preset", "reason"),
    [("broken", "ContainerdCNIDirsMissing"), ("unsupported-runtime", "ContainerdRuntimeUnsupported")],
)
def test_containerd_without_cni_directories_or_runhcs_fails_preflight(
    world: World, preset: str, reason: str
) -> None:
    assert preset in PRESETS
    host = world.add_host(containerd_layout=preset)
    name = f"cni-{preset}"
    world.apply(world.windows_node(host, name=name, network=NETWORK))
    found = world.wait_for(
        f"{name} PrerequisitesMet=False",
        lambda: (
            (c := condition(world, name, "PrerequisitesMet")) is not None and c["status"] == "False" and c
        ),
        TIMEOUT,
    )
    assert found["reason"] == reason
    assert "config.toml" in found["message"]
    assert world.get("node", name) is None
    assert host.call(lambda m: m.service("kubelet")) is None, (
        "nothing installed on a host that cannot run pods"
    )


def test_without_plugins_on_the_mirror_the_node_is_never_ready(world: World) -> None:
    assert world.version is not None
    with ArtifactServer(kubernetes_release(world.version)) as bare:
        host = world.add_host()
        name = "cni-no-plugins"
        node = world.windows_node(host, name=name, network=NETWORK)
        node["spec"]["artifacts"] = {"baseURL": bare.url}
        world.apply(node)
        found = world.wait_for(
            f"{name} BinariesInstalled=False",
            lambda: (
                (c := condition(world, name, "BinariesInstalled")) is not None
                and c["status"] == "False"
                and c
            ),
            TIMEOUT,
        )
        assert "cni-plugins" in found["message"]
        assert "win-bridge.exe" in found["message"]
        assert world.get("node", name) is None
        assert host.call(lambda m: m.service("kubelet")) is None


def test_cni_files_removed_from_a_ready_host_turn_the_node_not_ready_until_repaired(world: World) -> None:
    host = world.add_host()
    name = "cni-drift"
    world.apply(world.windows_node(host, name=name, network=NETWORK))
    world.wait_for(
        f"Node {name} Ready", lambda: (node_ready(world, name) or {}).get("status") == "True", TIMEOUT
    )
    conf_dir, bin_dir = LAYOUTS["microsoft"]

    def break_it(m: Any) -> None:
        m.remove(f"{conf_dir}\\10-winnode.conf")
        for p in CNI_PLUGINS:
            m.remove(f"{bin_dir}\\{p}")

    # Pause repairs so the broken state is what the kubelet reports.
    world.cp.kubectl("patch", "windowsnode", name, "--type=merge", "-p", '{"spec":{"paused":true}}')
    world.wait_for(
        f"{name} paused",
        lambda: (c := condition(world, name, "Paused")) is not None and c["status"] == "True",
        TIMEOUT,
    )
    host.call(break_it)
    not_ready = world.wait_for(
        f"Node {name} NotReady",
        lambda: (c := node_ready(world, name)) is not None and c["status"] == "False" and c,
        TIMEOUT,
    )
    assert not_ready["reason"] == "KubeletNotReady"
    assert "cni plugin not initialized" in not_ready["message"]
    assert "NetworkReady=false" in not_ready["message"]
    world.cp.kubectl("patch", "windowsnode", name, "--type=merge", "-p", '{"spec":{"paused":false}}')
    world.wait_for(
        f"Node {name} Ready again", lambda: (node_ready(world, name) or {}).get("status") == "True", TIMEOUT
    )
    assert host.call(lambda m: m.cni_network_error()) is None
