"""Install winnode the way an admin does and run it with only what the manifests grant.

Against the real local control plane (RBAC on): `kubectl apply -f crds/` and `kubectl apply -k manifests/`
as admin; then `winnode run` and `winnode webhook` run as local processes, each authenticated as its own
ServiceAccount with a token from the TokenRequest API (the Deployments' pods are created but never run:
there is no kubelet for them). An emulated Windows host is configured to Ready, deleted again, and a
two-container pod bound to that Windows node is denied by the webhook. Neither process may log a single
Forbidden. Then `kubectl auth can-i`, asked by each ServiceAccount itself, answers no to everything they
must not do and yes to what they need.
"""

from __future__ import annotations

import base64
import json
import os
import ssl
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from winnode.admission import config
from winnode.deploy import manifests
from winnode.kube import rbac
from winnode.settings import OPERATOR_NAMESPACE_DEFAULT, Settings
from winnode.testing.admission import WebhookProcess, free_port
from winnode.testing.cluster import ControlPlane, free_ports
from winnode.testing.demo import World
from winnode.testing.emulator import HostSpec
from winnode.testing.processes import start_winnode_run, stop_process

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
NS = OPERATOR_NAMESPACE_DEFAULT
HOSTS_NS = "e2e-hosts"
APPS_NS = "e2e-apps"
NODE = "e2e-win"
READY_TIMEOUT = 180.0
TOKEN_DURATION = "1h"
RECONCILER_USER = f"system:serviceaccount:{NS}:{manifests.RECONCILER_SERVICE_ACCOUNT}"
WEBHOOK_USER = f"system:serviceaccount:{NS}:{config.SERVICE_ACCOUNT}"


@dataclass
class Installed:
    cp: ControlPlane
    world: World
    reconciler_kubeconfig: Path
    webhook_kubeconfig: Path
    reconciler: subprocess.Popen[bytes]
    reconciler_log: Path
    webhook: WebhookProcess
    metrics_port: int


def sa_kubeconfig(cp: ControlPlane, service_account: str) -> Path:
    """A kubeconfig with a bound token for `service_account` in our namespace (TokenRequest API)."""
    token = cp.kubectl("create", "token", service_account, "-n", NS, f"--duration={TOKEN_DURATION}").stdout
    return cp.token_kubeconfig(token.strip(), name=f"sa-{service_account}")


def start_reconciler(kubeconfig: Path, port: int, log: Path) -> subprocess.Popen[bytes]:
    # What the Deployment sets (manifests/reconciler-deployment.yaml), with a local pod name.
    env = {
        "POD_NAME": "winnode-e2e-local",
        "POD_NAMESPACE": NS,
        "WINNODE_NAMESPACE": NS,
        "WINNODE_LEADER_ELECTION": "true",
        # The documented opt-in for credentials Secrets outside the operator's namespace (with the
        # RoleBinding the fixture creates in that namespace).
        "WINNODE_CREDENTIALS_NAMESPACES": HOSTS_NS,
    }
    return start_winnode_run(kubeconfig, log, metrics_port=port, env=env)


def proc_usage(pid: int) -> dict[str, float]:
    """RSS and peak RSS (MiB) and user+system CPU seconds of a live process, from /proc."""
    status = dict(
        line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line
    )
    # Fields after the command name (which may hold spaces); utime and stime are fields 14 and 15.
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return {
        "rss_mib": round(int(status["VmRSS"].split()[0]) / 1024, 1),
        "peak_rss_mib": round(int(status["VmHWM"].split()[0]) / 1024, 1),
        "cpu_s": round((int(fields[11]) + int(fields[12])) / ticks, 2),
    }


def forbidden_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if "forbidden" in line.lower() or " 403" in line]


def uninstall(cp: ControlPlane) -> None:
    cp.kubectl("delete", "-k", str(REPO / "manifests"), "--ignore-not-found", "--wait=false", check=False)
    # Other tests on this control plane use the same namespace name: wait until it is really gone.
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if cp.kubectl("get", "namespace", NS, check=False).returncode != 0:
            return
        time.sleep(0.5)
    raise TimeoutError(f"namespace {NS} still terminating after 90s")


@pytest.fixture(scope="module")
def installed(control_plane: ControlPlane, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Installed]:
    cp = control_plane
    workdir = tmp_path_factory.mktemp("install")
    # World applies crds/ (the same text as the files; checked below) and runs the emulator and mirror.
    world = World(cp, settings=Settings(metrics_port=0), namespace=HOSTS_NS, run_operator=False)
    world.start()
    procs: list[subprocess.Popen[bytes]] = []
    webhook: WebhookProcess | None = None
    try:
        cp.kubectl("apply", "-f", str(REPO / "crds"))
        cp.kubectl("apply", "-k", str(REPO / "manifests"))
        cp.kubectl("create", "namespace", APPS_NS)
        # What an admin does to keep WinRM credentials in another namespace (README).
        cp.kubectl(
            "create", "rolebinding", "winnode-credentials", "-n", HOSTS_NS,
            f"--clusterrole={rbac.CREDENTIALS_READER_ROLE_NAME}",
            f"--serviceaccount={NS}:{manifests.RECONCILER_SERVICE_ACCOUNT}",
        )  # fmt: skip
        # The shipped configuration calls the Service, which has no endpoints here (no kubelet runs the
        # Deployment); point it at the local process instead. Everything else stays as shipped.
        port = free_port()
        vwc = world.must_get("validatingwebhookconfiguration", config.WEBHOOK_CONFIG_NAME)
        patch = [
            {
                "op": "replace",
                "path": f"/webhooks/{i}/clientConfig",
                "value": {"url": f"https://127.0.0.1:{port}{hook['clientConfig']['service']['path']}"},
            }
            for i, hook in enumerate(vwc["webhooks"])
        ]
        cp.kubectl(
            "patch",
            "validatingwebhookconfiguration",
            config.WEBHOOK_CONFIG_NAME,
            "--type=json",
            "-p",
            json.dumps(patch),
        )
        webhook_kubeconfig = sa_kubeconfig(cp, config.SERVICE_ACCOUNT)
        reconciler_kubeconfig = sa_kubeconfig(cp, manifests.RECONCILER_SERVICE_ACCOUNT)
        webhook = WebhookProcess(
            kubeconfig=webhook_kubeconfig,
            namespace=NS,
            webhook_config_name=config.WEBHOOK_CONFIG_NAME,
            log_path=workdir / "webhook.log",
            port=port,
        ).start()
        (metrics_port,) = free_ports(1)
        log = workdir / "reconciler.log"
        reconciler = start_reconciler(reconciler_kubeconfig, metrics_port, log)
        procs.append(reconciler)
        yield Installed(
            cp, world, reconciler_kubeconfig, webhook_kubeconfig, reconciler, log, webhook, metrics_port
        )
    finally:
        for proc in procs:
            stop_process(proc)
        if webhook is not None:
            webhook.stop()
        world.stop()
        cp.kubectl(
            "delete", "namespace", APPS_NS, HOSTS_NS, "--ignore-not-found", "--wait=false", check=False
        )
        uninstall(cp)


def test_installs_and_runs_as_its_service_accounts(installed: Installed) -> None:
    cp, world = installed.cp, installed.world
    # Restricted Pod Security is enforced in our namespace, and the shipped pods pass it: the
    # ReplicaSet controller creates every replica (a violation would be a FailedCreate instead).
    ns = world.must_get("namespace", NS)
    assert ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    expected_pods = manifests.RECONCILER_REPLICAS + config.REPLICAS

    def pods_created() -> bool:
        out = cp.kubectl("get", "pods", "-n", NS, "-o", "json").stdout
        return len(json.loads(out)["items"]) == expected_pods

    world.wait_for(f"{expected_pods} pods in {NS}", pods_created, timeout=60)

    host = world.add_host(HostSpec.server2022(hostname=NODE))
    world.apply(world.network(name="e2e", clusterCIDR="10.238.0.0/16"))
    world.apply(world.windows_node(host, NODE, network="e2e"))

    def ready() -> bool:
        if installed.reconciler.poll() is not None:
            raise AssertionError(f"winnode run exited:\n{installed.reconciler_log.read_text()[-4000:]}")
        return world.phase(NODE) == "Ready"

    try:
        world.wait_for(f"WindowsNode {NODE} Ready", ready, READY_TIMEOUT)
    except TimeoutError as exc:
        status = json.dumps((world.get("windowsnode", NODE) or {}).get("status"), indent=1)
        log = installed.reconciler_log.read_text()[-4000:]
        raise AssertionError(f"{exc}; status: {status}\nreconciler log:\n{log}") from None

    # The webhook (as its ServiceAccount) watches Nodes: a two-container pod bound to the Windows node
    # by nodeName is denied by it (the admission policy in the apiserver cannot see that case).
    bad: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "two", "namespace": APPS_NS},
        "spec": {
            "nodeName": NODE,
            "containers": [
                {"name": "app", "image": "mcr.microsoft.com/windows/nanoserver:ltsc2022"},
                {"name": "sidecar", "image": "mcr.microsoft.com/windows/nanoserver:ltsc2022"},
            ],
        },
    }

    def denied() -> str:
        result = cp.kubectl("create", "--dry-run=server", "-f", "-", input=json.dumps(bad), check=False)
        return result.stderr if result.returncode != 0 else ""

    message = world.wait_for("the webhook to deny the pod", denied, timeout=30)
    assert f'admission webhook "{config.NODE_NAMES_WEBHOOK_NAME}" denied the request' in message
    assert f"its nodeName {NODE} is a Windows node" in message
    good = {**bad, "spec": {**bad["spec"], "containers": bad["spec"]["containers"][:1]}}
    cp.kubectl("create", "--dry-run=server", "-f", "-", input=json.dumps(good))

    usage = {
        "winnode run": proc_usage(installed.reconciler.pid),
        "winnode webhook": proc_usage(installed.webhook.popen.pid),  # type: ignore[union-attr]
    }
    print("\nmeasured after one node Ready and a denial:", json.dumps(usage, indent=1))

    # Deletion as the ServiceAccount too: drain, deconfigure, delete the Node, revoke the token.
    cp.kubectl("delete", "windowsnode", NODE, "--wait=false")
    world.wait_for("the WindowsNode gone", lambda: world.get("windowsnode", NODE) is None, READY_TIMEOUT)
    assert world.get("node", NODE) is None

    for name, text in (
        ("winnode run", installed.reconciler_log.read_text()),
        ("winnode webhook", installed.webhook.log_path.read_text()),
    ):
        assert not forbidden_lines(text), f"{name} was refused something:\n" + "\n".join(
            forbidden_lines(text)
        )

    check_metrics_after_the_run(installed, vwc_ca_context(world))


def vwc_ca_context(world: World) -> ssl.SSLContext:
    """Trust what the apiserver trusts for the webhook: the caBundle the webhook patched in."""
    vwc = world.must_get("validatingwebhookconfiguration", config.WEBHOOK_CONFIG_NAME)
    bundle = base64.b64decode(vwc["webhooks"][0]["clientConfig"]["caBundle"]).decode()
    context = ssl.create_default_context(cadata=bundle)
    context.check_hostname = False  # the serving certificate names the Service, not 127.0.0.1
    return context


def scrape(url: str, context: ssl.SSLContext | None = None) -> dict[str, dict[str, float]]:
    """Samples by family: {family: {'name{k=v,...}': value}}."""
    text = urllib.request.urlopen(url, timeout=10, context=context).read().decode()
    out: dict[str, dict[str, float]] = {}
    for family in text_string_to_metric_families(text):
        samples = out.setdefault(family.name, {})
        for sample in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
            samples[f"{sample.name}{{{labels}}}"] = sample.value
    return out


def check_metrics_after_the_run(installed: Installed, webhook_ca: ssl.SSLContext) -> None:
    """After one node configured and deleted and one pod denied, both /metrics endpoints serve every
    series the dashboards and alerts read, with values that match what happened."""
    run = scrape(f"http://127.0.0.1:{installed.metrics_port}/metrics")
    for family in (
        "winnode_reconcile",
        "winnode_reconcile_duration_seconds",
        "winnode_windowsnodes",
        "winnode_winrm_operation_duration_seconds",
        "winnode_winrm_operation_errors",
        "winnode_upgrades_in_flight",
        "winnode_upgrades",
        "winnode_leader",
        "winnode_csr_approvals",
    ):
        assert family in run, f"winnode run /metrics lacks {family}"

    def total(family: str, sample: str, **labels: str) -> float:
        return sum(
            v
            for k, v in run[family].items()
            if k.startswith(sample + "{") and all(f"{lk}={lv}" in k for lk, lv in labels.items())
        )

    assert (
        total(
            "winnode_reconcile",
            "winnode_reconcile_total",
            kind="WindowsNode",
            operation="configure",
            outcome="success",
        )
        >= 1
    )
    assert (
        total(
            "winnode_reconcile",
            "winnode_reconcile_total",
            kind="WindowsNode",
            operation="deconfigure",
            outcome="success",
        )
        >= 1
    )
    configure_seconds = total(
        "winnode_reconcile_duration_seconds", "winnode_reconcile_duration_seconds_sum", operation="configure"
    )
    assert 0 < configure_seconds < READY_TIMEOUT
    # Every host action was timed; facts and service_ensure ran at least once each.
    for action in ("facts", "service_ensure"):
        timed = total(
            "winnode_winrm_operation_duration_seconds",
            "winnode_winrm_operation_duration_seconds_count",
            action=action,
        )
        assert timed >= 1, f"no WinRM timing for {action}"
    assert total("winnode_windowsnodes", "winnode_windowsnodes") == 0, "the deleted node left a phase"
    assert total("winnode_upgrades_in_flight", "winnode_upgrades_in_flight") == 0
    assert total("winnode_leader", "winnode_leader") == 1, "the only replica leads"
    assert total("winnode_csr_approvals", "winnode_csr_approvals_total") >= 2, "client and serving CSRs"

    hook = scrape(f"https://127.0.0.1:{installed.webhook.port}/metrics", webhook_ca)
    decisions = hook["winnode_webhook_decisions"]
    assert any("verdict=denied" in k and v >= 1 for k, v in decisions.items()), decisions
    assert any("verdict=allowed" in k and v >= 1 for k, v in decisions.items()), decisions
    latency = hook["winnode_webhook_review_duration_seconds"]
    count = sum(
        v for k, v in latency.items() if k.startswith("winnode_webhook_review_duration_seconds_count")
    )
    seconds = sum(
        v for k, v in latency.items() if k.startswith("winnode_webhook_review_duration_seconds_sum")
    )
    assert count >= 2, latency
    assert 0 < seconds / count < 1.0, latency


# --- kubectl auth can-i, asked by each ServiceAccount itself ---------------------------------------

SECRET = config.SECRET_NAME
SUBRESOURCES = ("eviction", "approval", "status", "exec", "token")
VWC = config.WEBHOOK_CONFIG_NAME
# (who, verb, resource, namespace or None for cluster-wide/-A, expected)
RECONCILER_CANNOT = [
    ("list", "secrets", "*"),
    ("watch", "secrets", "*"),
    ("get", "secrets", "*"),
    # Credentials Secrets in other namespaces only where an admin binds winnode:credentials-reader.
    ("get", "secrets", "default"),
    ("list", "secrets", "default"),
    ("create", "secrets", "default"),
    ("update", "secrets", "default"),
    ("delete", "secrets", "default"),
    ("create", "secrets", NS),
    ("update", "secrets", NS),
    ("delete", "secrets", NS),
    ("create", "secrets", HOSTS_NS),
    ("delete", "secrets", HOSTS_NS),
    ("delete", "namespaces", None),
    ("create", "clusterroles", None),
    ("create", "clusterrolebindings", None),
    ("create", "rolebindings", "kube-system"),
    ("bind", "clusterroles", None),
    ("escalate", "clusterroles", None),
    ("impersonate", "users", None),
    ("impersonate", "groups", None),
    ("impersonate", "serviceaccounts", "*"),
    ("create", "pods/exec", "default"),
    ("create", "pods", "default"),
    ("delete", "pods", "default"),
    ("create", "serviceaccounts/token", NS),
    ("delete", "customresourcedefinitions", None),
    ("patch", "customresourcedefinitions", None),
    ("patch", "deployments", NS),
    ("patch", "daemonsets", "kube-system"),
    ("create", "nodes", None),
    ("delete", "windowsnodes", None),
    ("update", "certificatesigningrequests/status", None),
    ("create", "certificatesigningrequests", None),
    ("patch", "validatingwebhookconfigurations", None),
    ("create", "leases", "kube-system"),
    ("create", "configmaps", "kube-system"),
]
RECONCILER_CAN = [
    # ... and in a namespace where the admin bound winnode:credentials-reader (the opt-in).
    ("get", "secrets", HOSTS_NS),
    ("watch", "secrets", HOSTS_NS),
    # WinRM credentials live in the operator's namespace, watched for changes.
    ("get", "secrets", NS),
    ("list", "secrets", NS),
    ("watch", "secrets", NS),
    ("list", "secrets", "kube-system"),
    ("create", "secrets", "kube-system"),
    ("delete", "secrets", "kube-system"),
    ("watch", "windowsnodes", None),
    ("patch", "windowsnodes/status", None),
    ("patch", "nodes", None),
    ("delete", "nodes", None),
    ("create", "pods/eviction", "default"),
    ("update", "certificatesigningrequests/approval", None),
    ("create", "leases", NS),
    ("create", "events", "default"),
]
WEBHOOK_CANNOT = [
    ("get", "secrets", "kube-system"),
    ("list", "secrets", NS),
    ("watch", "secrets", NS),
    ("get", "secrets/winnode", NS),
    ("delete", f"secrets/{SECRET}", NS),
    ("create", "secrets", "default"),
    ("get", "nodes", None),
    ("patch", "nodes", None),
    ("create", "pods", "default"),
    ("create", "pods/exec", "default"),
    ("list", "pods", "default"),
    ("update", "pods", "default"),
    ("delete", "namespaces", None),
    ("patch", "validatingwebhookconfigurations/other", None),
    ("delete", f"validatingwebhookconfigurations/{VWC}", None),
    ("create", "validatingwebhookconfigurations", None),
    ("delete", "validatingadmissionpolicies", None),
    ("create", "clusterrolebindings", None),
    ("bind", "clusterroles", None),
    ("escalate", "roles", NS),
    ("impersonate", "users", None),
    ("patch", "deployments", NS),
    ("get", "windowsnodes", None),
    ("create", "leases", NS),
]
WEBHOOK_CAN = [
    # A binding to a Windows node carries no pod spec: the webhook reads the pod it binds.
    ("get", "pods", "default"),
    ("get", f"secrets/{SECRET}", NS),
    ("update", f"secrets/{SECRET}", NS),
    ("create", "secrets", NS),
    ("list", "nodes", None),
    ("watch", "nodes", None),
    ("get", f"validatingwebhookconfigurations/{VWC}", None),
    ("patch", f"validatingwebhookconfigurations/{VWC}", None),
]


def _cases() -> list[Any]:
    out: list[Any] = []
    for who, table, expect in (
        ("reconciler", RECONCILER_CANNOT, False),
        ("reconciler", RECONCILER_CAN, True),
        ("webhook", WEBHOOK_CANNOT, False),
        ("webhook", WEBHOOK_CAN, True),
    ):
        for verb, resource, namespace in table:
            where = "all namespaces" if namespace == "*" else namespace or "cluster"
            answer = "yes" if expect else "no"
            out.append(
                pytest.param(
                    who, verb, resource, namespace, expect, id=f"{who}-{verb}-{resource}-{where}-{answer}"
                )
            )
    return out


@pytest.mark.parametrize(("who", "verb", "resource", "namespace", "expected"), _cases())
def test_can_i(
    installed: Installed, who: str, verb: str, resource: str, namespace: str | None, expected: bool
) -> None:
    kubeconfig = installed.reconciler_kubeconfig if who == "reconciler" else installed.webhook_kubeconfig
    scope = ["--all-namespaces"] if namespace == "*" else ["-n", namespace] if namespace else []
    # `kubectl auth can-i VERB TYPE/NAME` names an object; a subresource needs --subresource.
    base, _, rest = resource.partition("/")
    target = [base, f"--subresource={rest}"] if rest in SUBRESOURCES else [resource]
    result = installed.cp.kubectl("auth", "can-i", verb, *target, *scope, kubeconfig=kubeconfig, check=False)
    answer = result.stdout.strip()
    assert answer in ("yes", "no"), result.stderr
    assert (answer == "yes") is expected, f"{who} can-i {verb} {resource} {scope}: {answer} {result.stderr}"


def test_can_i_asks_as_the_service_accounts(installed: Installed) -> None:
    for kubeconfig, user in (
        (installed.reconciler_kubeconfig, RECONCILER_USER),
        (installed.webhook_kubeconfig, WEBHOOK_USER),
    ):
        whoami = json.loads(
            installed.cp.kubectl("auth", "whoami", "-o", "json", kubeconfig=kubeconfig).stdout
        )
        assert whoami["status"]["userInfo"]["username"] == user


def test_manifests_name_the_rbac_of_kube_rbac(installed: Installed) -> None:
    role = installed.world.must_get("clusterrole", rbac.CLUSTER_ROLE_NAME)
    assert role["rules"] == [r.to_dict() for r in rbac.CLUSTER_RULES]
    assert installed.world.must_get("role", rbac.KUBE_SYSTEM_ROLE_NAME, "kube-system")["rules"] == [
        r.to_dict() for r in rbac.KUBE_SYSTEM_RULES
    ]
