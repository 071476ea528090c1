"""Running `winnode webhook` on this machine against a local control plane: for the integration tests,
the benchmark and anyone trying the webhook by hand.

The apiserver reaches the process on loopback through a ValidatingWebhookConfiguration with a URL
clientConfig (config.webhook_configuration(url=...)), built by the same code as the shipped one.
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.parse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from prometheus_client.parser import text_string_to_metric_families

from winnode import timeouts
from winnode.admission import config, policy
from winnode.kube.api import Credentials, from_kubeconfig

LOOPBACK = "127.0.0.1"


def free_port() -> int:
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        port: int = s.getsockname()[1]
        return port


class SyncApi:
    """Blocking JSON calls to the apiserver over one kept-alive connection (tests and benchmarks)."""

    def __init__(self, credentials: Credentials, timeout: float = timeouts.WEBHOOK_API_REQUEST) -> None:
        self.credentials = credentials
        url = urllib.parse.urlsplit(credentials.server)
        self._host, self._port = url.hostname or LOOPBACK, url.port or 443
        self._ssl = credentials.ssl_context()
        self._timeout = timeout
        self._conn: http.client.HTTPSConnection | None = None

    @classmethod
    def from_kubeconfig(cls, path: Path) -> SyncApi:
        return cls(from_kubeconfig(path))

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        params: Mapping[str, str] | None = None,
        content_type: str = "application/json",
    ) -> tuple[int, dict[str, Any]]:
        """(HTTP status, decoded JSON body); never raises for an HTTP error status."""
        if params:
            path += "?" + urllib.parse.urlencode(params)
        headers = {"Accept": "application/json"}
        authorization = self.credentials.authorization()
        if authorization:
            headers["Authorization"] = authorization
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = content_type
        for attempt in (1, 2):
            if self._conn is None:
                self._conn = http.client.HTTPSConnection(
                    self._host, self._port, context=self._ssl, timeout=self._timeout
                )
            try:
                self._conn.request(method, path, body=data, headers=headers)
                resp = self._conn.getresponse()
                raw = resp.read()
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                # The server closed a kept-alive connection between calls: reconnect once.
                self.close()
                if attempt == 2:
                    raise
                continue
            try:
                doc = json.loads(raw) if raw else {}
            except json.JSONDecodeError:
                doc = {"message": raw.decode(errors="replace")}
            return resp.status, doc if isinstance(doc, dict) else {"items": doc}
        raise AssertionError("unreachable")

    def ok(
        self, method: str, path: str, body: Any = None, params: Mapping[str, str] | None = None
    ) -> dict[str, Any]:
        status, doc = self.request(method, path, body, params)
        if status >= 300:
            raise RuntimeError(f"{method} {path}: {status} {doc.get('message', doc)}")
        return doc

    def apply(self, obj: Mapping[str, Any]) -> dict[str, Any]:
        """Create `obj`, or replace it when it exists (resourceVersion carried over)."""
        path = collection_path(obj)
        status, doc = self.request("POST", path, obj)
        if status == 409:
            current = self.ok("GET", object_path(obj))
            updated = json.loads(json.dumps(obj))
            updated["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
            return self.ok("PUT", object_path(obj), updated)
        if status >= 300:
            raise RuntimeError(
                f"create {obj['kind']} {obj['metadata'].get('name')}: {status} {doc.get('message')}"
            )
        return doc

    def delete(self, obj: Mapping[str, Any]) -> None:
        status, doc = self.request("DELETE", object_path(obj), params={"propagationPolicy": "Background"})
        if status >= 300 and status != 404:
            raise RuntimeError(
                f"delete {obj['kind']} {obj['metadata'].get('name')}: {status} {doc.get('message')}"
            )


# kind -> (plural, namespaced) for what the webhook and its tests touch.
_RESOURCES: dict[str, tuple[str, bool]] = {
    "Namespace": ("namespaces", False),
    "Node": ("nodes", False),
    "Pod": ("pods", True),
    "Secret": ("secrets", True),
    "Service": ("services", True),
    "ServiceAccount": ("serviceaccounts", True),
    "ReplicationController": ("replicationcontrollers", True),
    "Deployment": ("deployments", True),
    "ReplicaSet": ("replicasets", True),
    "StatefulSet": ("statefulsets", True),
    "DaemonSet": ("daemonsets", True),
    "Job": ("jobs", True),
    "CronJob": ("cronjobs", True),
    "PodDisruptionBudget": ("poddisruptionbudgets", True),
    "Role": ("roles", True),
    "RoleBinding": ("rolebindings", True),
    "ClusterRole": ("clusterroles", False),
    "ClusterRoleBinding": ("clusterrolebindings", False),
    "ValidatingWebhookConfiguration": ("validatingwebhookconfigurations", False),
    "ValidatingAdmissionPolicy": ("validatingadmissionpolicies", False),
    "ValidatingAdmissionPolicyBinding": ("validatingadmissionpolicybindings", False),
}


def collection_path(obj: Mapping[str, Any], namespace: str | None = None) -> str:
    api_version = str(obj["apiVersion"])
    plural, namespaced = _RESOURCES[str(obj["kind"])]
    prefix = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
    if namespaced:
        ns = namespace or obj["metadata"]["namespace"]
        return f"{prefix}/namespaces/{ns}/{plural}"
    return f"{prefix}/{plural}"


def object_path(obj: Mapping[str, Any]) -> str:
    return f"{collection_path(obj)}/{obj['metadata']['name']}"


def denial_message(doc: Mapping[str, Any]) -> str:
    """The policy's own words inside an apiserver Status for a denied request."""
    message = str(doc.get("message", ""))
    for marker in ("denied request: ", "denied the request: "):
        if marker in message:
            return message.split(marker, 1)[1]
    return message


@dataclass
class WebhookProcess:
    """`python -m winnode webhook` on loopback. start() returns once /readyz answers 200."""

    kubeconfig: Path
    namespace: str
    webhook_config_name: str
    log_path: Path
    port: int = field(default_factory=free_port)
    extra_args: Sequence[str] = ()
    popen: subprocess.Popen[bytes] | None = None
    _log: IO[bytes] | None = None

    @property
    def url(self) -> str:
        return f"https://{LOOPBACK}:{self.port}/validate"

    def command(self) -> list[str]:
        return [
            sys.executable,
            "-m",
            "winnode",
            "webhook",
            f"--kubeconfig={self.kubeconfig}",
            f"--namespace={self.namespace}",
            f"--webhook-config-name={self.webhook_config_name}",
            f"--port={self.port}",
            f"--bind-address={LOOPBACK}",
            f"--tls-san={LOOPBACK}",
            "--shutdown-grace=0.2",
            *self.extra_args,
        ]

    def start(self) -> WebhookProcess:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = self.log_path.open("ab")
        env = {k: v for k, v in os.environ.items() if k != "KUBECONFIG"}
        self.popen = subprocess.Popen(self.command(), stdout=self._log, stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + timeouts.WEBHOOK_START.deadline
        insecure = ssl.create_default_context()
        insecure.check_hostname = False
        insecure.verify_mode = ssl.CERT_NONE  # only to ask "are you ready"; the CA is not known yet
        while time.monotonic() < deadline:
            if self.popen.poll() is not None:
                raise RuntimeError(f"winnode webhook exited with {self.popen.returncode}:\n{self.log_tail()}")
            try:
                status, _ = self.get("/readyz", insecure)
                if status == 200:
                    return self
            except OSError:
                pass
            time.sleep(timeouts.WEBHOOK_START.interval)
        self.stop()
        raise TimeoutError(
            f"winnode webhook not ready after {timeouts.WEBHOOK_START.deadline}s:\n{self.log_tail()}"
        )

    def stop(self, sig: signal.Signals = signal.SIGTERM) -> int | None:
        if self.popen is None:
            return None
        if self.popen.poll() is None:
            self.popen.send_signal(sig)
            try:
                self.popen.wait(timeouts.WEBHOOK_STOP_GRACE)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(timeouts.WEBHOOK_STOP_GRACE)
        if self._log is not None:
            self._log.close()
            self._log = None
        return self.popen.returncode

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def get(self, path: str, context: ssl.SSLContext) -> tuple[int, str]:
        conn = http.client.HTTPSConnection(LOOPBACK, self.port, context=context, timeout=5)
        try:
            conn.request("GET", path)
            resp = conn.getresponse()
            return resp.status, resp.read().decode(errors="replace")
        finally:
            conn.close()

    def post(
        self, path: str, body: bytes, context: ssl.SSLContext, headers: Mapping[str, str] | None = None
    ) -> tuple[int, str]:
        conn = http.client.HTTPSConnection(LOOPBACK, self.port, context=context, timeout=10)
        try:
            conn.request(
                "POST", path, body=body, headers={"Content-Type": "application/json", **(headers or {})}
            )
            resp = conn.getresponse()
            return resp.status, resp.read().decode(errors="replace")
        finally:
            conn.close()

    def metrics(self, context: ssl.SSLContext) -> dict[str, float]:
        """Samples by name with sorted labels, e.g. 'winnode_webhook_requests_total{code=200}'."""
        status, text = self.get("/metrics", context)
        if status != 200:
            raise RuntimeError(f"/metrics answered {status}")
        out: dict[str, float] = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
                out[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
        return out

    def request_count(self, context: ssl.SSLContext) -> float:
        return sum(
            v for k, v in self.metrics(context).items() if k.startswith("winnode_webhook_requests_total")
        )


def ca_context(bundle_pem: bytes) -> ssl.SSLContext:
    return ssl.create_default_context(cadata=bundle_pem.decode())


def webhook_ca_bundle(api: SyncApi, config_name: str) -> bytes:
    """The caBundle the apiserver trusts for our webhook right now."""
    vwc = api.ok(
        "GET", f"/apis/admissionregistration.k8s.io/v1/validatingwebhookconfigurations/{config_name}"
    )
    return base64.b64decode(vwc["webhooks"][0]["clientConfig"].get("caBundle", ""))


def wait_for(check: Any, what: str, poll: timeouts.Poll = timeouts.WEBHOOK_EFFECTIVE) -> Any:
    """Call `check()` until it returns something truthy; TimeoutError naming `what` after the deadline."""
    deadline = time.monotonic() + poll.deadline
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(poll.interval)
    raise TimeoutError(f"{what}: still not true after {poll.deadline}s (last: {last!r})")


TEST_LABEL = "winnode.io/admission-test"


@dataclass
class AdmissionEnv:
    """One isolated admission set-up on a shared cluster: a namespace for the webhook (excluded, holds
    its Secret), a labelled namespace for test objects, and our webhook configuration, policy and binding
    selecting only namespaces with that label, so other tests on the same cluster never meet them."""

    api: SyncApi
    suffix: str
    workdir: Path
    webhook: WebhookProcess | None = None
    mode: policy.Mode = policy.Mode.DENY
    created: list[dict[str, Any]] = field(default_factory=list)

    @property
    def system_namespace(self) -> str:
        return f"adm-sys-{self.suffix}"

    @property
    def namespace(self) -> str:
        return f"adm-{self.suffix}"

    @property
    def labels(self) -> dict[str, str]:
        return {TEST_LABEL: self.suffix}

    @property
    def config_name(self) -> str:
        return f"winnode-admission-{self.suffix}"

    @property
    def policy_name(self) -> str:
        return f"winnode-one-container-{self.suffix}"

    @property
    def rbac_name(self) -> str:
        return f"winnode-webhook-{self.suffix}"

    @property
    def service_account_user(self) -> str:
        return f"system:serviceaccount:{self.system_namespace}:{config.SERVICE_ACCOUNT}"

    def create(self, obj: dict[str, Any]) -> dict[str, Any]:
        out = self.api.apply(obj)
        self.created.append(obj)
        return out

    def setup_namespaces(self) -> None:
        for name, labels in ((self.system_namespace, {}), (self.namespace, self.labels)):
            self.create(
                {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels}}
            )

    def setup_rbac(self) -> None:
        """The webhook's shipped RBAC, bound to its service account in our system namespace."""
        for obj in config.webhook_rbac(
            self.system_namespace, name=self.rbac_name, webhook_config_name=self.config_name
        ):
            self.create(obj)

    def setup_policy(self) -> None:
        vap = config.admission_policy(self.policy_name)
        binding = config.admission_policy_binding(
            name=self.policy_name,
            policy_name=self.policy_name,
            namespace=self.system_namespace,
            namespace_match_labels=self.labels,
            mode=self.mode,
        )
        self.create(vap)
        self.create(binding)

    def setup_webhook_config(self, port: int) -> None:
        self.create(
            config.webhook_configuration(
                name=self.config_name,
                namespace=self.system_namespace,
                url=f"https://{LOOPBACK}:{port}{config.WEBHOOK_PATH}",
                namespace_match_labels=self.labels,
                mode=self.mode,
            )
        )

    def start_webhook(
        self, kubeconfig: Path, extra_args: Sequence[str] = (), port: int | None = None
    ) -> WebhookProcess:
        proc = WebhookProcess(
            kubeconfig=kubeconfig,
            namespace=self.system_namespace,
            webhook_config_name=self.config_name,
            log_path=self.workdir / f"webhook-{self.suffix}-{time.monotonic_ns()}.log",
            extra_args=(f"--mode={self.mode.value}", *extra_args),
        )
        if port is not None:
            proc.port = port
        return proc.start()

    def ca_context(self) -> ssl.SSLContext:
        return ca_context(webhook_ca_bundle(self.api, self.config_name))

    def pods_path(self) -> str:
        return f"/api/v1/namespaces/{self.namespace}/pods"

    def dry_run_create(self, obj: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        return self.api.request("POST", collection_path(obj, self.namespace), obj, {"dryRun": "All"})

    def teardown(self) -> None:
        errors = []
        # Pods bound to a node without a kubelet never finish a graceful delete; nothing runs them.
        self.api.request("DELETE", self.pods_path(), params={"gracePeriodSeconds": "0"})
        for obj in reversed(self.created):
            try:
                self.api.delete(obj)
            except (RuntimeError, OSError) as exc:
                errors.append(str(exc))
        self.created.clear()
        if errors:
            raise RuntimeError("admission test clean-up failed: " + "; ".join(errors))


API_VERSIONS = {
    "Pod": "v1",
    "ReplicationController": "v1",
    "Deployment": "apps/v1",
    "ReplicaSet": "apps/v1",
    "StatefulSet": "apps/v1",
    "DaemonSet": "apps/v1",
    "Job": "batch/v1",
    "CronJob": "batch/v1",
}


def pod_object(name: str, namespace: str, spec: Mapping[str, Any], **meta: Any) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, **meta},
        "spec": dict(spec),
    }


def workload_object(kind: str, name: str, namespace: str, spec: Mapping[str, Any]) -> dict[str, Any]:
    """A `kind` object whose pod template runs `spec` (a valid restartPolicy added for Jobs)."""
    if kind == "Pod":
        return pod_object(name, namespace, spec)
    labels = {"app": name}
    restart = "Never" if kind in ("Job", "CronJob") else "Always"
    template = {"metadata": {"labels": labels}, "spec": {**spec, "restartPolicy": restart}}
    body: dict[str, Any]
    if kind == "CronJob":
        body = {"schedule": "0 0 * * *", "jobTemplate": {"spec": {"template": template}}}
    elif kind == "Job":
        body = {"template": template}
    elif kind == "ReplicationController":
        body = {"selector": labels, "template": template}
    else:
        body = {"selector": {"matchLabels": labels}, "template": template}
        if kind == "StatefulSet":
            body["serviceName"] = name
    meta = {"name": name, "namespace": namespace}
    return {"apiVersion": API_VERSIONS[kind], "kind": kind, "metadata": meta, "spec": body}


def windows_node(name: str, *, hostname: str | None = None, build: str = "10.0.20348") -> dict[str, Any]:
    """A Node labelled as a Windows kubelet labels its own (kubelet_node_status*.go)."""
    labels = {
        "kubernetes.io/os": "windows",
        "beta.kubernetes.io/os": "windows",
        "kubernetes.io/hostname": hostname or name,
        "node.kubernetes.io/windows-build": build,
    }
    return {"apiVersion": "v1", "kind": "Node", "metadata": {"name": name, "labels": labels}}


def linux_node(name: str) -> dict[str, Any]:
    labels = {"kubernetes.io/os": "linux", "beta.kubernetes.io/os": "linux", "kubernetes.io/hostname": name}
    return {"apiVersion": "v1", "kind": "Node", "metadata": {"name": name, "labels": labels}}


def install(
    api: SyncApi,
    suffix: str,
    workdir: Path,
    webhook_kubeconfig: Path,
    *,
    mode: policy.Mode = policy.Mode.DENY,
    nodes: Sequence[Mapping[str, Any]] = (),
) -> AdmissionEnv:
    """Namespaces, the webhook's RBAC, policy and binding, webhook configuration, `nodes`, and the webhook
    process (as `webhook_kubeconfig`'s user); returns once the webhook knows every Windows node in
    `nodes` and both layers are in force. The caller tears it down."""
    env = AdmissionEnv(api, suffix, workdir, mode=mode)
    env.setup_namespaces()
    env.setup_rbac()
    env.setup_policy()
    port = free_port()
    env.setup_webhook_config(port)
    for node in nodes:
        env.create(dict(node))
    env.webhook = env.start_webhook(webhook_kubeconfig, port=port)
    ca = env.ca_context()
    windows = [
        n["metadata"]["name"] for n in nodes if n["metadata"]["labels"].get("kubernetes.io/os") == "windows"
    ]
    two = [{"name": "a", "image": "i"}, {"name": "b", "image": "i"}]

    def probe(spec: dict[str, Any]) -> dict[str, Any]:
        return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "probe"}, "spec": spec}

    def webhook_answers(spec: dict[str, Any]) -> bool:
        before = env.webhook.request_count(ca) if env.webhook else 0.0
        status, _ = env.dry_run_create(probe(spec))
        after = env.webhook.request_count(ca) if env.webhook else 0.0
        return after > before and (mode is not policy.Mode.DENY or status == 403)

    for name in windows:
        wait_for(
            lambda n=name: webhook_answers({"nodeName": n, "containers": two}), f"webhook judges node {name}"
        )
    if mode is policy.Mode.DENY:
        definite = probe({"os": {"name": "windows"}, "containers": two})
        wait_for(lambda: env.dry_run_create(definite)[0] == 403, "policy denies")
    return env
