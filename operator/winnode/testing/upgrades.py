"""Upgrade scenarios on a `World` (tests and benchmarks): a fleet of WindowsNodes on an older release,
the version change, what "upgraded" means, and a watcher that counts Nodes unavailable at once
through the apiserver (the budget as the cluster sees it, not as the operator believes it)."""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING, Any

from winnode.kube.slots import SLOTS_LEASE, parse_holders
from winnode.lifecycle.versions import Version
from winnode.testing.artifacts import parse_fake_binary

if TYPE_CHECKING:
    from winnode.testing.cluster import ControlPlane
    from winnode.testing.demo import World
    from winnode.testing.emulator import EmulatedHost

# One WinRM round trip, a drain, a kubelet restart: the slowest upgrade step takes well under this.
UPGRADE_TIMEOUT_S = 180.0
WATCH_SERVER_TIMEOUT_S = 2
WATCH_REQUEST_TIMEOUT_S = 10.0
WATCH_RETRY_S = 0.2
WATCH_STOP_S = 15.0


def versions(world: World) -> tuple[str, str]:
    """An older release the skew policy allows (one minor back) and the apiserver's own."""
    api = Version.parse(world.version)
    return f"v{api.major}.{api.minor - 1}.0", str(api)


def fleet(
    world: World, prefix: str, count: int, version: str, *, network: str, timeout: float = UPGRADE_TIMEOUT_S
) -> list[tuple[str, EmulatedHost]]:
    """`count` WindowsNodes `<prefix>-<i>` on `version`, labelled test=<prefix>, all Ready."""
    from winnode.testing.emulator import HostSpec

    out = [
        (f"{prefix}-{i}", world.add_host(HostSpec.server2022(hostname=f"{prefix}-{i}"))) for i in range(count)
    ]
    world.apply(
        *(
            world.windows_node(h, n, network=network, kubernetesVersion=version, labels={"test": prefix})
            for n, h in out
        )
    )
    for name, _ in out:
        world.wait_phase(name, "Ready", timeout)
    return out


def set_version(world: World, name: str, version: str) -> None:
    world.cp.kubectl(
        "patch", "windowsnode", name, "--type=merge", "-p", f'{{"spec":{{"kubernetesVersion":"{version}"}}}}'
    )


def upgraded(world: World, name: str, version: str) -> bool:
    """WindowsNode Ready on `version` with no upgrade step left, its Node on it and schedulable."""
    status = (world.get("windowsnode", name) or {}).get("status") or {}
    node = world.get("node", name) or {}
    return (
        status.get("phase") == "Ready"
        and (status.get("installed") or {}).get("kubelet") == version
        and not (status.get("upgrade") or {}).get("step")
        and ((node.get("status") or {}).get("nodeInfo") or {}).get("kubeletVersion") == version
        and not (node.get("spec") or {}).get("unschedulable")
    )


def installed_binary(host: EmulatedHost, path: str) -> str | None:
    """The version of the fake binary at `path` on the host (None: missing or not one of ours)."""

    def read(model: Any) -> str | None:
        entry = model.file(path)
        info = parse_fake_binary(entry.content) if entry is not None else None
        return info.version if info else None

    result: str | None = host.call(read)
    return result


def slot_holders(world: World, namespace: str) -> list[str]:
    return sorted(parse_holders(world.get("lease", SLOTS_LEASE, namespace)))


def node_ready(node: dict[str, Any]) -> bool:
    return any(
        c.get("type") == "Ready" and c.get("status") == "True"
        for c in (node.get("status") or {}).get("conditions") or []
    )


class UnavailableWatcher:
    """Watches the Nodes labelled test=<prefix>; `most` is the largest number unschedulable or NotReady
    at one time, as seen in the apiserver's event stream."""

    def __init__(self, cp: ControlPlane, prefix: str) -> None:
        import kubernetes

        self._kubernetes = kubernetes
        self._api = kubernetes.client.CoreV1Api(cp.api_client())
        self._selector = f"test={prefix}"
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._resource_version = ""
        self.unavailable: dict[str, bool] = {}
        self.most = 0
        self.events = 0
        self.errors: list[str] = []
        self._thread = threading.Thread(target=self._run, name=f"watch-{prefix}", daemon=True)

    def __enter__(self) -> UnavailableWatcher:
        listing = self._api.list_node(label_selector=self._selector)
        for node in listing.items:
            self._see(self._api.api_client.sanitize_for_serialization(node))
        self._resource_version = str(listing.metadata.resource_version if listing.metadata else "")
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(WATCH_STOP_S)

    def now_unavailable(self) -> int:
        with self._lock:
            return sum(self.unavailable.values())

    def _see(self, node: dict[str, Any]) -> None:
        name = node["metadata"]["name"]
        with self._lock:
            self.unavailable[name] = bool((node.get("spec") or {}).get("unschedulable")) or not node_ready(
                node
            )
            self.most = max(self.most, sum(self.unavailable.values()))

    def _run(self) -> None:
        watch = self._kubernetes.watch.Watch()  # type: ignore[no-untyped-call]
        while not self._stop.is_set():
            try:
                for event in watch.stream(  # type: ignore[no-untyped-call]
                    self._api.list_node,
                    label_selector=self._selector,
                    resource_version=self._resource_version,
                    timeout_seconds=WATCH_SERVER_TIMEOUT_S,
                    _request_timeout=WATCH_REQUEST_TIMEOUT_S,
                ):
                    obj = self._api.api_client.sanitize_for_serialization(event["object"])
                    self._resource_version = obj["metadata"]["resourceVersion"]
                    self.events += 1
                    self._see(obj)
                    if self._stop.is_set():
                        break
            except Exception as exc:  # a dropped watch is resumed; a persistent problem shows in errors
                self.errors.append(repr(exc))
                time.sleep(WATCH_RETRY_S)
