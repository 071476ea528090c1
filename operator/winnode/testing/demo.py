"""`winnode demo` (`make demo`): a local cluster, emulated Windows hosts and the operator, ending in a
table of Ready Windows nodes.

It starts the local control plane (etcd + kube-apiserver + kcm), an artifact mirror serving fake
kubelet.exe / kube-proxy.exe of two releases with their .sha256 files, the admission webhook (as its
own process) and the operator's /metrics, three emulated Windows hosts (one Windows Server 2019, two
2022) that speak real WS-Management, applies the CRDs, a WindowsNetwork, the hosts' credential Secrets
and one WindowsNode per host on the older release, and runs the reconciler in-process. Each emulated
host's kubelet really bootstraps against the apiserver: the operator approves its CSRs, the Node
registers and turns Ready. Then it prints `kubectl get wn,nodes -o wide`, shows the webhook refusing
an overlapping WindowsNetwork and a second WindowsNode for a taken host, upgrades one node to the
newer release step by step (testing/demo_tour.py), prints where its kubectl is and stays up (or exits
with --exit).

`World` is the same set-up as a library: the integration tests build on it.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

if TYPE_CHECKING:
    from winnode.kube.client import Kube
    from winnode.lifecycle.context import Deps
    from winnode.process.operator import OperatorThread
    from winnode.settings import Settings
    from winnode.testing.artifacts import ArtifactServer
    from winnode.testing.cluster import ControlPlane
    from winnode.testing.emulator import EmulatedHost, EmulatorServer, HostSpec
    from winnode.testing.nodenet import NodeNetwork

DEMO_NAMESPACE = "winnode-system"
NETWORK_NAME = "pods"
CLUSTER_CIDR = "10.244.0.0/16"
# The local control plane's --service-cluster-ip-range.
SERVICE_CIDR = "10.0.0.0/24"
DEMO_TIMEOUT_S = 300.0
POLL_S = 1.0


def _docs(*docs: dict[str, Any]) -> str:
    return "---\n".join(yaml.safe_dump(d, sort_keys=False) for d in docs)


class World:
    """Control plane + artifact mirror + emulator + CRDs/RBAC + the operator in a thread."""

    def __init__(
        self,
        control_plane: ControlPlane,
        *,
        settings: Settings | None = None,
        namespace: str = DEMO_NAMESPACE,
        run_operator: bool = True,
        node_network: bool = False,
        kubelet_heartbeat_s: float | None = None,
        light_kubelets: bool = False,
    ) -> None:
        """`kubelet_heartbeat_s`: the emulated kubelets' Lease renewal (None: their test default).
        `light_kubelets`: hosts run light kubelets and no kube-proxy (testing.kubelet.light), which
        act as their nodes through the control plane's admin identity; for benchmarks of many hosts."""
        from winnode.kube.credentials import allowed_namespaces
        from winnode.settings import Settings

        self.cp = control_plane
        settings = settings or Settings(metrics_port=0)
        if namespace not in allowed_namespaces(settings):
            # The hosts' credentials Secrets live in `namespace`: the operator must be told it may read
            # them there (in-process it runs as cluster admin, so no RoleBinding is needed).
            extra = ",".join(n for n in (settings.credentials_namespaces, namespace) if n)
            settings = dataclasses.replace(settings, credentials_namespaces=extra)
        self.settings = settings
        self.namespace = namespace
        self.run_operator = run_operator
        # Hosts with a node address kube-apiserver can reach (testing.nodenet; needs root).
        self.use_node_network = node_network
        self.node_network: NodeNetwork | None = None
        self.kubelet_heartbeat_s = kubelet_heartbeat_s
        self.light_kubelets = light_kubelets
        self.version = ""
        self.artifacts: ArtifactServer | None = None
        self.emulator: EmulatorServer | None = None
        self.kube: Kube | None = None
        self.deps: Deps | None = None
        self.operator: OperatorThread | None = None

    # --- lifecycle ----------------------------------------------------------------------------

    def start(self) -> World:
        from winnode.deploy.crdgen import render_all
        from winnode.kube.proxy_identity import NAMESPACE as KUBE_PROXY_NAMESPACE
        from winnode.kube.rbac import BINDINGS
        from winnode.testing.artifacts import ArtifactServer, kubernetes_node_binaries, sha256_hex
        from winnode.testing.emulator import EmulatorServer
        from winnode.testing.nodenet import NodeNetwork

        try:
            self.version = self.server_version()
            files = kubernetes_node_binaries(self.version)
            files.update({f"{p}.sha256": (sha256_hex(c) + "\n").encode() for p, c in list(files.items())})
            self.artifacts = ArtifactServer(files).start()
            self.artifacts.publish_cni_plugins()
            if self.use_node_network:
                self.node_network = NodeNetwork().start()
            hub = None
            if self.light_kubelets:
                from winnode.testing.kubelet.light import LightKubelets

                kwargs = {"renew_s": self.kubelet_heartbeat_s} if self.kubelet_heartbeat_s else {}
                hub = LightKubelets(self.cp.kubeconfig.read_text(encoding="utf-8"), **kwargs)
            self.emulator = EmulatorServer(
                strict=True,
                node_network=self.node_network,
                kubelet_heartbeat_s=self.kubelet_heartbeat_s,
                light_kubelets=hub,
            ).start()
            self.cp.kubectl("apply", "-f", "-", input="---\n".join(render_all().values()))
            self.cp.kubectl(
                "wait", "--for=condition=established", "--timeout=60s",
                "crd/windowsnodes.winnode.io", "crd/windowsnetworks.winnode.io",
            )  # fmt: skip
            # Right after a CRD is established its storage may still be initializing (429).
            self.wait_for(
                "the WindowsNode and WindowsNetwork APIs to serve",
                lambda: self.cp.kubectl("get", "windowsnodes,windowsnetworks", check=False).returncode == 0,
                timeout=60.0,
            )
            namespace = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": self.namespace}}
            proxies = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": KUBE_PROXY_NAMESPACE}}
            self.cp.kubectl(
                "apply", "-f", "-", input=_docs(namespace, proxies, *(b.to_dict() for b in BINDINGS))
            )
            if self.run_operator:
                self.start_operator()
        except BaseException:
            self.stop()
            raise
        return self

    def start_operator(self) -> None:
        from winnode.kube.client import Kube
        from winnode.process.operator import OperatorThread, make_deps

        self.kube = Kube.from_kubeconfig(self.cp.kubeconfig)
        self.deps = make_deps(self.kube, self.settings)
        self.operator = OperatorThread(self.deps).start()

    def stop_operator(self) -> None:
        if self.operator is not None:
            self.operator.stop()
            self.operator = None
        if self.kube is not None:
            self.kube.close()
            self.kube = None

    def stop(self) -> None:
        self.stop_operator()
        if self.emulator is not None:
            self.emulator.stop()
            self.emulator = None
        if self.node_network is not None:
            self.node_network.stop()
            self.node_network = None
        if self.artifacts is not None:
            self.artifacts.stop()
            self.artifacts = None

    def __enter__(self) -> World:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- building blocks ------------------------------------------------------------------------

    def server_version(self) -> str:
        out = self.cp.kubectl("version", "-o", "json").stdout
        return str(json.loads(out)["serverVersion"]["gitVersion"])

    def apply(self, *docs: dict[str, Any]) -> None:
        self.cp.kubectl("apply", "-f", "-", input=_docs(*docs))

    def add_host(self, spec: HostSpec | None = None, **overrides: Any) -> EmulatedHost:
        assert self.emulator is not None
        host = self.emulator.add_host(spec, **overrides)
        self.apply(self.credentials_secret(host))
        return host

    def credentials_secret(self, host: EmulatedHost, password: str | None = None) -> dict[str, Any]:
        return {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": host.credentials_secret_name, "namespace": self.namespace},
            "type": "kubernetes.io/basic-auth",
            "stringData": {"username": host.username, "password": password or host.password},
        }

    def network(self, name: str = NETWORK_NAME, mode: str = "overlay", **spec: Any) -> dict[str, Any]:
        return {
            "apiVersion": "winnode.io/v1alpha1",
            "kind": "WindowsNetwork",
            "metadata": {"name": name},
            "spec": {
                "mode": mode,
                "clusterCIDR": CLUSTER_CIDR,
                "serviceCIDR": SERVICE_CIDR,
                "nodeSubnetPrefixLength": 24,
                "dns": {"servers": ["10.0.0.10"], "search": ["svc.cluster.local", "cluster.local"]},
                **spec,
            },
        }

    def windows_node(
        self, host: EmulatedHost, name: str | None = None, network: str = NETWORK_NAME, **spec: Any
    ) -> dict[str, Any]:
        assert self.artifacts is not None
        return {
            "apiVersion": "winnode.io/v1alpha1",
            "kind": "WindowsNode",
            "metadata": {"name": name or host.hostname.lower()},
            "spec": {
                "address": host.address,
                "network": network,
                "winrm": {
                    "scheme": host.scheme,
                    "port": host.port,
                    "auth": "ntlm",
                    "credentialsSecretRef": {
                        "namespace": self.namespace,
                        "name": host.credentials_secret_name,
                    },
                },
                "artifacts": {"baseURL": self.artifacts.url},
                "labels": {"winnode.io/demo": "true"},
                **spec,
            },
        }

    def get(self, kind: str, name: str, namespace: str | None = None) -> dict[str, Any] | None:
        args = ["get", kind, name, "-o", "json", "--ignore-not-found"]
        if namespace:
            args += ["-n", namespace]
        out = self.cp.kubectl(*args).stdout.strip()
        return json.loads(out) if out else None

    def wait_for(
        self, what: str, check: Callable[[], Any], timeout: float = DEMO_TIMEOUT_S, interval: float = 0.5
    ) -> Any:
        """Poll `check()` until it returns something truthy; that value. Raises TimeoutError."""
        deadline = time.monotonic() + timeout
        while True:
            value = check()
            if value:
                return value
            if time.monotonic() >= deadline:
                raise TimeoutError(f"{what}: not within {timeout:.0f}s")
            time.sleep(interval)

    def must_get(self, kind: str, name: str, namespace: str | None = None) -> dict[str, Any]:
        obj = self.get(kind, name, namespace)
        if obj is None:
            raise LookupError(f"{kind} {name} does not exist")
        return obj

    def events(self, name: str, reason: str | None = None) -> list[dict[str, Any]]:
        """Events about WindowsNode `name` (cluster-scoped objects' Events live in `default`)."""
        selector = f"involvedObject.kind=WindowsNode,involvedObject.name={name}"
        if reason:
            selector += f",reason={reason}"
        out = self.cp.kubectl(
            "get", "events", "-n", "default", "--field-selector", selector, "-o", "json"
        ).stdout
        items: list[dict[str, Any]] = json.loads(out)["items"]
        return items

    def condition(self, name: str, type_: str) -> dict[str, Any] | None:
        obj = self.get("windowsnode", name)
        for c in ((obj or {}).get("status") or {}).get("conditions") or []:
            if c.get("type") == type_:
                return dict(c)
        return None

    def phase(self, name: str) -> str | None:
        obj = self.get("windowsnode", name)
        return ((obj or {}).get("status") or {}).get("phase")

    def wait_phase(self, name: str, phase: str, timeout: float = DEMO_TIMEOUT_S) -> dict[str, Any]:
        def check() -> dict[str, Any] | None:
            obj = self.get("windowsnode", name)
            return obj if ((obj or {}).get("status") or {}).get("phase") == phase else None

        try:
            result: dict[str, Any] = self.wait_for(f"WindowsNode {name} phase {phase}", check, timeout)
        except TimeoutError:
            obj = self.get("windowsnode", name)
            raise TimeoutError(
                f"WindowsNode {name} did not reach phase {phase} within {timeout:.0f}s; status: "
                + json.dumps((obj or {}).get("status"), indent=1)
            ) from None
        return result


# --- the command ---------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--exit", action="store_true", help="stop everything after printing the table")
    parser.add_argument(
        "--workdir",
        type=Path,
        default=None,
        help="where the control plane keeps its files (default: a temporary directory)",
    )
    parser.add_argument("--verbose", "-v", action="store_true", help="show the operator's log")


def _print_progress(world: World, names: list[str], seen: dict[str, str]) -> bool:
    """Print phase changes; True when every node is Ready."""
    listing = json.loads(world.cp.kubectl("get", "windowsnodes", "-o", "json").stdout)
    phases = {
        i["metadata"]["name"]: (i.get("status") or {}).get("phase") or "Pending" for i in listing["items"]
    }
    for name in names:
        phase = phases.get(name, "Pending")
        if seen.get(name) != phase:
            seen[name] = phase
            status = next(
                (i.get("status") or {} for i in listing["items"] if i["metadata"]["name"] == name), {}
            )
            detail = f"  ({status.get('lastError')})" if status.get("lastError") and phase != "Ready" else ""
            print(f"  {time.strftime('%H:%M:%S')}  {name:<12} {phase}{detail}", flush=True)
    return all(phases.get(n) == "Ready" for n in names)


def run(args: argparse.Namespace) -> int:
    import logging

    from winnode.testing.cluster import ControlPlaneError, start_control_plane
    from winnode.testing.emulator import HostSpec

    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if not args.verbose:
        # kopf runs in a thread here and says so at WARNING; nothing for a demo user to act on.
        logging.getLogger("kopf._core.reactor.running").setLevel(logging.ERROR)
    stop = threading.Event()
    with contextlib.suppress(ValueError):
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
    print("starting the local control plane (etcd, kube-apiserver, kube-controller-manager)...", flush=True)
    try:
        cp = start_control_plane(args.workdir)
    except ControlPlaneError as exc:
        print(f"winnode demo: {exc}", file=sys.stderr)
        return 1
    from winnode.testing import demo_tour
    from winnode.testing.nodenet import NodeNetwork
    from winnode.testing.upgrades import versions

    # Node addresses kube-apiserver proxies to (for the node log query) need a network namespace.
    no_node_network = NodeNetwork.available()
    world = World(cp, node_network=no_node_network is None)
    webhook: demo_tour.Webhook | None = None
    metrics = None
    try:
        world.start()
        assert world.artifacts is not None
        old, new = versions(world)
        world.artifacts.publish_release(old)
        print(f"kubernetes {world.version} at {cp.server}")
        print(f"kubectl {world.version}: {cp.bin_dir / 'kubectl'} --kubeconfig {cp.kubeconfig}")
        print(f"artifact mirror at {world.artifacts.url}, serving kubelet and kube-proxy {old} and {new}")
        webhook = demo_tour.start_webhook(world)
        print(f"admission webhook (winnode webhook) at {webhook.url}")
        metrics = demo_tour.serve_metrics(world)
        print(f"operator metrics at http://127.0.0.1:{metrics.port}/metrics (and /healthz, /readyz)")
        hosts = [
            world.add_host(HostSpec.server2019(hostname="win-2019")),
            world.add_host(HostSpec.server2022(hostname="win-2022a")),
            world.add_host(HostSpec.server2022(hostname="win-2022b")),
        ]
        for host in hosts:
            print(f"emulated Windows host {host.hostname:<10} build {host.spec.os_build}  {host.endpoint}")
        world.apply(world.network())
        names = [h.hostname.lower() for h in hosts]
        world.apply(*(world.windows_node(h, kubernetesVersion=old) for h in hosts))
        print(f"WindowsNodes applied (kubernetesVersion {old}); phases:", flush=True)
        seen: dict[str, str] = {}
        deadline = time.monotonic() + DEMO_TIMEOUT_S
        while not _print_progress(world, names, seen):
            if stop.wait(POLL_S) or time.monotonic() > deadline:
                print("winnode demo: not all nodes became Ready in time", file=sys.stderr)
                return 1
        print()
        print(cp.kubectl("get", "wn,nodes", "-o", "wide").stdout, flush=True)
        if no_node_network is None:
            if not demo_tour.show_node_log(world, "win-2019"):
                print("winnode demo: the node log query was not served", file=sys.stderr)
                return 1
        else:
            print(f"\n(node log query not shown: {no_node_network})")
        demo_tour.show_refusals(world, hosts[1])
        if not demo_tour.show_upgrade(world, "win-2022a", new):
            print(f"winnode demo: win-2022a did not reach {new} in time", file=sys.stderr)
            return 1
        print()
        print(cp.kubectl("get", "wn,nodes", "-o", "wide").stdout, flush=True)
        if args.exit:
            return 0
        kubectl = cp.bin_dir / "kubectl"
        print(f"the cluster stays up until Ctrl-C; to use it from another shell (kubectl {world.version}):")
        print(f"  export KUBECONFIG={cp.kubeconfig} PATH={kubectl.parent}:$PATH")
        print("  kubectl get wn,nodes -o wide; kubectl describe wn win-2022a", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            while not stop.wait(1.0):
                pass
        return 0
    except KeyboardInterrupt:
        return 130
    finally:
        print("stopping...", flush=True)
        if metrics is not None:
            metrics.stop()
        if webhook is not None:
            # While the webhook still answers: the demo's objects go before its configuration.
            with contextlib.suppress(Exception):
                webhook.stop()
        world.stop()
        cp.stop()
