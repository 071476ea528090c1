"""What `winnode demo` shows beyond Ready nodes, so the demo behaves like an install:

- the admission webhook runs (as its own process, with its shipped RBAC), so a WindowsNetwork
  overlapping another and a second WindowsNode for a host already taken are refused, as in a cluster;
- the operator's /metrics, /healthz and /readyz are served;
- the mirror offers two releases, the nodes start on the older one and one of them is upgraded
  (cordon, drain, swap, uncordon) while the demo prints each step.
"""

from __future__ import annotations

import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from winnode.process.health import HealthServer
    from winnode.testing.admission import AdmissionEnv, SyncApi
    from winnode.testing.demo import World

UPGRADE_TIMEOUT_S = 300.0
NODE_LOG_TIMEOUT_S = 90.0
SHOWN_LOG_LINES = 6


@dataclass
class Webhook:
    env: AdmissionEnv
    api: SyncApi
    url: str

    def stop(self) -> None:
        try:
            if self.env.webhook is not None:
                self.env.webhook.stop()
            self.env.teardown()
        finally:
            self.api.close()


def start_webhook(world: World) -> Webhook:
    """`winnode webhook` against the demo cluster, configured by the same code as the shipped manifests."""
    from winnode.testing.admission import AdmissionEnv, SyncApi, free_port

    api = SyncApi.from_kubeconfig(world.cp.kubeconfig)
    env = AdmissionEnv(api, uuid.uuid4().hex[:6], Path(tempfile.mkdtemp(prefix="winnode-demo-webhook-")))
    try:
        env.setup_namespaces()
        env.setup_rbac()
        port = free_port()
        env.setup_webhook_config(port)
        kubeconfig = world.cp.user_kubeconfig(env.service_account_user, ["system:serviceaccounts"])
        env.webhook = env.start_webhook(kubeconfig, port=port)
    except BaseException:
        api.close()
        raise
    return Webhook(env, api, env.webhook.url)


def serve_metrics(world: World) -> HealthServer:
    from winnode.process.health import HealthServer, OperatorHealth

    assert world.deps is not None
    return HealthServer(
        world.deps.metrics.registry, OperatorHealth(leader_election=False), 0, address="127.0.0.1"
    ).start()


def _refusal(world: World, obj: dict[str, Any]) -> str:
    """Create `obj` and return the apiserver's refusal (the webhook configuration takes a moment to apply)."""
    import yaml

    deadline = time.monotonic() + 30.0
    while True:
        result = world.cp.kubectl("create", "-f", "-", input=yaml.safe_dump(obj), check=False)
        out = (result.stdout + result.stderr).strip()
        if result.returncode != 0 and "denied the request" in out:
            return out
        if result.returncode == 0:
            kind = obj["kind"].lower()
            world.cp.kubectl("delete", kind, obj["metadata"]["name"], "--wait=false", check=False)
        if time.monotonic() > deadline:
            return f"(not refused: {out})"
        time.sleep(0.5)


def show_refusals(world: World, taken_host: Any) -> None:
    overlapping = world.network(name="pods-overlap", clusterCIDR="10.244.128.0/17")
    print("\n$ kubectl create -f windowsnetwork-overlapping.yaml   # clusterCIDR 10.244.128.0/17")
    print("  " + _refusal(world, overlapping))
    duplicate = world.windows_node(taken_host, "win-2022a-again")
    print(f"\n$ kubectl create -f windowsnode-same-host.yaml   # address {taken_host.address} again")
    print("  " + _refusal(world, duplicate), flush=True)


def show_node_log(world: World, node: str) -> bool:
    """`kubectl get --raw .../proxy/logs/?query=kubelet`: kube-apiserver asks the node's kubelet, which
    reads its log from the host. The kubelet serves once its serving certificate is issued."""
    # No tailLines: kubelet refuses options for a service whose log is a file (heuristicsCopyFileLogs).
    path = f"/api/v1/nodes/{node}/proxy/logs/?query=kubelet"
    print(f'\n$ kubectl get --raw "{path}"')
    deadline = time.monotonic() + NODE_LOG_TIMEOUT_S
    last = ""
    while time.monotonic() < deadline:
        got = world.cp.kubectl("get", "--raw", path, check=False)
        if got.returncode == 0 and got.stdout.strip():
            lines = got.stdout.strip().splitlines()
            print("\n".join("  " + line for line in lines[-SHOWN_LOG_LINES:]), flush=True)
            return True
        last = got.stderr.strip()
        time.sleep(1.0)
    print(f"  not served: {last}", flush=True)
    return False


def show_upgrade(world: World, name: str, to_version: str) -> bool:
    """Patch `name` to `to_version` and print its upgrade steps until it runs the new version."""
    import json

    world.cp.kubectl(
        "patch",
        "windowsnode",
        name,
        "--type=merge",
        "-p",
        json.dumps({"spec": {"kubernetesVersion": to_version}}),
    )
    print(
        f'\n$ kubectl patch wn {name} --type=merge -p \'{{"spec":{{"kubernetesVersion":"{to_version}"}}}}\''
    )
    seen = ""
    deadline = time.monotonic() + UPGRADE_TIMEOUT_S
    while time.monotonic() < deadline:
        obj = world.get("windowsnode", name) or {}
        status = obj.get("status") or {}
        step = (status.get("upgrade") or {}).get("step") or ""
        installed = (status.get("installed") or {}).get("kubelet") or ""
        line = f"{status.get('phase')} {step}".strip() + f"  (kubelet {installed})"
        if line != seen:
            seen = line
            print(f"  {time.strftime('%H:%M:%S')}  {name:<12} {line}", flush=True)
        if installed == to_version and status.get("phase") == "Ready" and not step:
            return True
        time.sleep(0.5)
    return False
