"""The CNI plugins winnode installs where containerd looks for them.

containerd runs the plugin named by the `type` of the network configuration (win-bridge for
l2bridge, win-overlay for overlay) and that plugin runs its IPAM plugin (host-local). Windows hosts
carry none of them after a containerd install (Microsoft's script installs other plugins: nat,
sdnbridge, sdnoverlay), so winnode installs all three from one pinned containernetworking/plugins
release, checked by SHA-256 like kubelet.exe.

The release publishes the Windows plugins as one archive (cni-plugins-windows-amd64-<v>.tgz); the
artifact mirror serves them extracted, one file per plugin with its published `<file>.sha256`
beside it, at `<baseURL>/cni-plugins/<version>/windows/amd64/<plugin>.exe`.
"""

from __future__ import annotations

# Pinned containernetworking/plugins release (win-bridge, win-overlay and host-local). Changing it
# rolls the new plugins out to every node through the normal file repair (plugins are read by
# containerd per sandbox; nothing needs a restart).
CNI_PLUGINS_VERSION = "v1.7.1"
CNI_PLUGINS: tuple[str, ...] = ("win-bridge.exe", "win-overlay.exe", "host-local.exe")


def cni_plugin_url(base_url: str, version: str, exe: str) -> str:
    """`<baseURL>/cni-plugins/<version>/windows/amd64/<exe>` (the mirror's layout, see module doc)."""
    return f"{base_url.rstrip('/')}/cni-plugins/{version}/windows/amd64/{exe}"
