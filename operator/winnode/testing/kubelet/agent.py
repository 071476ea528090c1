"""The emulated kubelet itself: TLS bootstrap, registration, heartbeats, serving certificate and pods."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime
import logging
import os
import ssl
from pathlib import Path
from typing import Any, Literal

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from winnode import timeouts
from winnode.csr.parse import CLIENT_SIGNER, SERVING_SIGNER

from .api import (
    CSR_PATH,
    STRATEGIC_MERGE_PATCH,
    ApiClient,
    ApiError,
    CertificateRequestEnded,
    TransportError,
    WatchExpired,
    client_ssl_context,
    csr_outcome,
    retry_backoff,
)
from .certs import (
    certificate_problem,
    client_csr_name,
    client_usages,
    key_pem,
    load_bundle,
    make_client_csr,
    make_serving_csr,
    new_key,
    node_subject,
    serving_sans,
    serving_usages,
    spki,
    utc_now,
    write_private,
)
from .config import (
    ARCH,
    OS,
    ClusterAccess,
    KubeletConfig,
    KubeletFailedError,
    parse_kubeconfig,
    validate_config,
)
from .node import NodePresence, cancel_and_wait
from .objects import (
    PodNetwork,
    admission_rejection,
    node_identity,
    pod_status_differs,
    running_pod_status,
    terminated_pod_status,
)
from .server import KubeletServer

log = logging.getLogger(__name__)

KubeletState = Literal["stopped", "bootstrapping", "waiting-for-certificate", "registered", "ready", "failed"]
Json = dict[str, Any]


class EmulatedKubelet:
    """One kubelet. start() returns at once; the kubelet then runs as tasks of the caller's event loop."""

    state: KubeletState
    last_error: str | None

    def __init__(self, config: KubeletConfig) -> None:
        self.config = config
        self.state = "stopped"
        self.last_error = None
        # What happened, for tests and the emulator: the client CSR this start made (None when a stored
        # certificate was reused), the latest serving CSR, and whether a serving certificate is held.
        self.client_csr_name: str | None = None
        self.serving_csr_name: str | None = None
        self.serving_certificate_ready = False
        self.node_uid: str | None = None
        self._identity = node_identity(config.node_name)
        self._task: asyncio.Task[None] | None = None
        self._apis: list[ApiClient] = []
        self._access: ClusterAccess | None = None
        self._presence: NodePresence | None = None
        self._network = PodNetwork(config.node_name)
        self._pods: dict[str, Json] = {}
        self._dirty: set[str] = set()
        self._wake = asyncio.Event()

    def __repr__(self) -> str:
        return f"EmulatedKubelet(node={self.config.node_name!r}, state={self.state!r})"

    # -- paths -----------------------------------------------------------------------------------

    @property
    def pki_dir(self) -> Path:
        return self.config.state_dir / "pki"

    @property
    def client_cert_path(self) -> Path:
        return self.pki_dir / "kubelet-client-current.pem"

    @property
    def serving_cert_path(self) -> Path:
        return self.pki_dir / "kubelet-server-current.pem"

    @property
    def kubeconfig_path(self) -> Path:
        """A kubeconfig for the node identity (what kubelet writes to --kubeconfig)."""
        return self.config.state_dir / "kubelet.conf"

    @property
    def _pending_key_path(self) -> Path:
        return self.pki_dir / "kubelet-client.key.tmp"

    @property
    def _name(self) -> str:
        return self.config.node_name

    # -- lifecycle -------------------------------------------------------------------------------

    async def start(self) -> None:
        """Check the configuration (raising KubeletConfigError, as kubelet exits on bad flags) and start."""
        if self._task is not None and not self._task.done():
            return
        access = parse_kubeconfig(self.config.bootstrap_kubeconfig)
        taints = validate_config(self.config)
        self._access = access
        self.pki_dir.mkdir(parents=True, exist_ok=True)
        self.pki_dir.chmod(0o700)
        self.state = "bootstrapping"
        self._say(f'Kubelet version kubeletVersion="{self.config.kubelet_version}"')
        self.last_error = None
        self.client_csr_name = None
        self.serving_csr_name = None
        self.serving_certificate_ready = False
        self._presence = NodePresence(self.config, self._identity, taints, say=self._say, error=self._error)
        self._pods.clear()
        self._dirty.clear()
        self._wake = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(self._run(), name=f"kubelet {self._name}")

    async def stop(self) -> None:
        """Stop everything; the Node stays and kcm marks it NotReady when the Lease runs out."""
        task, self._task = self._task, None
        await cancel_and_wait(task)
        await self._close_apis()
        if self.state != "stopped":
            self._say("kubelet stopped")
        self.state = "stopped"

    async def wait(self) -> None:
        """Return once the kubelet no longer runs; raise KubeletFailedError when it ended on its own."""
        task = self._task
        if task is not None:
            await asyncio.wait({task})
        if self.state == "failed":
            raise KubeletFailedError(self.last_error or "kubelet failed")

    async def _close_apis(self) -> None:
        apis, self._apis = self._apis, []
        for api in apis:
            with contextlib.suppress(Exception):
                await api.close()

    def _user_agent(self) -> str:
        return f"kubelet.exe/{self.config.kubelet_version} ({OS}/{ARCH}) kubernetes/winnode"

    def _open_api(self, ctx: ssl.SSLContext, bearer: str | None = None) -> ApiClient:
        assert self._access is not None
        api = ApiClient(self._access, ctx, bearer=bearer, user_agent=self._user_agent())
        self._apis.append(api)
        return api

    def _error(self, message: str) -> None:
        self.last_error = message
        log.warning("%s: %s", self._name, message)
        self._print("E", message)

    def _say(self, message: str) -> None:
        log.info("%s: %s", self._name, message)
        self._print("I", message)

    def _print(self, severity: str, message: str) -> None:
        """What kubelet writes to its output, in klog's header format (k8s.io/klog/v2 formatHeader:
        Lmmdd hh:mm:ss.uuuuuu threadid file:line] msg)."""
        if self.config.log_line is None:
            return
        now = datetime.datetime.now(datetime.UTC)
        self.config.log_line(f"{severity}{now:%m%d %H:%M:%S.%f} {os.getpid():7d} kubelet.go:1] {message}")

    async def _run(self) -> None:
        try:
            await self._ensure_client_certificate()
            api = self._open_api(client_ssl_context(self._require_access(), self.client_cert_path))
            await self._register(api)
            self.state = "registered"
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self._heartbeat(api), name=f"kubelet {self._name} heartbeat")
                tg.create_task(self._watch_pods(api), name=f"kubelet {self._name} pod watch")
                tg.create_task(self._pod_worker(api), name=f"kubelet {self._name} pod worker")
                tg.create_task(
                    self._serving_certificate(api), name=f"kubelet {self._name} serving certificate"
                )
        except asyncio.CancelledError:
            raise
        except KubeletFailedError as exc:
            self.state = "failed"
            self.last_error = str(exc)
            log.error("%s: kubelet exits: %s", self._name, exc)
        except Exception as exc:
            self.state = "failed"
            self.last_error = f"unexpected {type(exc).__name__}: {exc}"
            log.exception("%s: kubelet crashed", self._name)
        finally:
            await self._close_apis()

    def _require_access(self) -> ClusterAccess:
        assert self._access is not None
        return self._access

    # -- TLS bootstrap -----------------------------------------------------------------------------

    async def _ensure_client_certificate(self) -> None:
        access = self._require_access()
        stored = load_bundle(self.client_cert_path)
        if stored is not None:
            problem = certificate_problem(*stored, self._name, ca_pem=access.ca_pem)
            if problem is None:
                log.info(
                    "%s: client certificate in %s is valid, no bootstrap needed", self._name, self.pki_dir
                )
                self._write_kubeconfig()
                return
            log.info("%s: stored client certificate not usable (%s); bootstrapping", self._name, problem)

        # Keep the key of a pending request on disk: a restarted kubelet makes the same request (same
        # digest name) and so finds the one it is already waiting for.
        key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey
        pending = self._load_pending_key()
        if pending is None:
            key = new_key()
            write_private(self._pending_key_path, key_pem(key))
        else:
            key = pending
        usages = client_usages(key)
        name = client_csr_name(key.public_key(), self._name, usages)
        request = make_client_csr(key, self._name)

        bootstrap_ctx = self._bootstrap_ssl_context(access)
        api = self._open_api(bootstrap_ctx, bearer=access.token)
        csr_obj: Json = {
            "apiVersion": "certificates.k8s.io/v1",
            "kind": "CertificateSigningRequest",
            "metadata": {"name": name},
            "spec": {
                "request": base64.b64encode(request).decode(),
                "signerName": CLIENT_SIGNER,
                "usages": usages,
            },
        }
        next_delay = retry_backoff(timeouts.KUBELET_RETRY_BACKOFF)
        while True:
            try:
                try:
                    created = await api.request("POST", CSR_PATH, body=csr_obj)
                except ApiError as exc:
                    if exc.status != 409:
                        raise
                    created = await self._reuse_client_csr(api, name, key)
                break
            except ApiError as exc:
                if exc.status in (401, 403):
                    raise KubeletFailedError(
                        f"cannot create certificate signing request: {exc} "
                        "(is the bootstrap token valid and bound to system:node-bootstrapper?)"
                    ) from None
                self._error(f"cannot create certificate signing request: {exc}")
            except TransportError as exc:
                self._error(f"cannot create certificate signing request: {exc}")
            await asyncio.sleep(next_delay())
        uid = str(created["metadata"]["uid"])
        self.client_csr_name = name
        self.state = "waiting-for-certificate"
        log.info("%s: waiting for client certificate request %s to be approved and issued", self._name, name)
        try:
            async with asyncio.timeout(timeouts.KUBELET_CLIENT_CSR_WAIT):
                cert_pem = await self._wait_for_certificate(api, name, uid)
        except TimeoutError:
            raise KubeletFailedError(
                f"client certificate request {name} was not issued within {timeouts.KUBELET_CLIENT_CSR_WAIT:.0f}s"
            ) from None
        except CertificateRequestEnded as exc:
            raise KubeletFailedError(str(exc)) from None
        write_private(self.client_cert_path, cert_pem + key_pem(key))
        with contextlib.suppress(FileNotFoundError):
            self._pending_key_path.unlink()
        self._write_kubeconfig()
        self._say("client certificate issued")
        self._apis.remove(api)
        await api.close()

    def _load_pending_key(self) -> ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey | None:
        try:
            key = serialization.load_pem_private_key(self._pending_key_path.read_bytes(), password=None)
        except (OSError, ValueError, TypeError):
            return None
        return key if isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) else None

    def _bootstrap_ssl_context(self, access: ClusterAccess) -> ssl.SSLContext:
        if access.client_cert_pem and access.client_key_pem:
            bundle = self.pki_dir / "bootstrap-client.pem"
            write_private(bundle, access.client_cert_pem.rstrip(b"\n") + b"\n" + access.client_key_pem)
            return client_ssl_context(access, bundle)
        return client_ssl_context(access, None)

    async def _reuse_client_csr(
        self, api: ApiClient, name: str, key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey
    ) -> Json:
        """A CSR of this name exists (an earlier run made it): use it if it is ours (client-go ensureCompatible)."""
        existing = await api.request("GET", f"{CSR_PATH}/{name}")
        spec = existing.get("spec") or {}
        try:
            theirs = x509.load_pem_x509_csr(base64.b64decode(spec.get("request", "")))
        except ValueError:
            raise KubeletFailedError(f"retrieved csr {name} is not compatible: unreadable request") from None
        same_key = spki(theirs.public_key()) == spki(key.public_key())
        if (
            theirs.subject != node_subject(self._name)
            or spec.get("signerName") != CLIENT_SIGNER
            or not same_key
        ):
            raise KubeletFailedError(f"retrieved csr {name} is not compatible with this node's request")
        log.info("%s: csr %s for this node already exists, reusing", self._name, name)
        return existing

    async def _wait_for_certificate(self, api: ApiClient, name: str, uid: str) -> bytes:
        """List-then-watch the CSR by name until it is issued (client-go WaitForCertificate)."""
        selector = {"fieldSelector": f"metadata.name={name}"}
        next_delay = retry_backoff(timeouts.KUBELET_RETRY_BACKOFF)
        issued: list[bytes] = []

        async def on_event(etype: str, obj: Json) -> bool:
            if etype == "DELETED":
                raise CertificateRequestEnded(f"certificate signing request {name} was deleted")
            if etype in ("ADDED", "MODIFIED"):
                cert = csr_outcome(obj, uid)
                if cert is not None:
                    issued.append(cert)
                    return True
            return False

        while True:
            try:
                listed = await api.request("GET", CSR_PATH, params=selector)
                items = listed.get("items") or []
                if not items:
                    raise CertificateRequestEnded(f"certificate signing request {name} was deleted")
                cert = csr_outcome(items[0], uid)
                if cert is not None:
                    return cert
                rv = str((listed.get("metadata") or {}).get("resourceVersion", ""))
                await api.watch(CSR_PATH, {**selector, "resourceVersion": rv}, on_event)
                if issued:
                    return issued[0]
                # The server ended the watch: list again.
            except WatchExpired:
                continue
            except (ApiError, TransportError) as exc:
                self._error(f"waiting for certificate signing request {name}: {exc}")
                await asyncio.sleep(next_delay())

    def _write_kubeconfig(self) -> None:
        access = self._require_access()
        cluster: Json = {"server": access.server}
        if access.ca_pem:
            cluster["certificate-authority-data"] = base64.b64encode(access.ca_pem).decode()
        if access.insecure:
            cluster["insecure-skip-tls-verify"] = True
        if access.tls_server_name:
            cluster["tls-server-name"] = access.tls_server_name
        pem = str(self.client_cert_path.resolve())
        doc = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "default-cluster", "cluster": cluster}],
            "users": [{"name": "default-auth", "user": {"client-certificate": pem, "client-key": pem}}],
            "contexts": [
                {"name": "default-context", "context": {"cluster": "default-cluster", "user": "default-auth"}}
            ],
            "current-context": "default-context",
        }
        write_private(self.kubeconfig_path, yaml.safe_dump(doc, sort_keys=False).encode())

    # -- registration and heartbeats ---------------------------------------------------------------

    async def _register(self, api: ApiClient) -> None:
        self._node_registered(await self._require_presence().register(api))

    def _node_registered(self, node: Json) -> None:
        self.node_uid = str((node.get("metadata") or {}).get("uid"))
        self._network = PodNetwork(self._name, (node.get("spec") or {}).get("podCIDR"))

    def _require_presence(self) -> NodePresence:
        assert self._presence is not None
        return self._presence

    async def _heartbeat(self, api: ApiClient) -> None:
        loop = asyncio.get_running_loop()
        next_status = loop.time() + timeouts.KUBELET_NODE_STATUS_UPDATE
        while True:
            try:
                await self._require_presence().renew_lease(api)
                if self.state == "registered":
                    self.state = "ready"
                    self.last_error = None
                    log.info(
                        "%s: node ready; lease renewed every %gs",
                        self._name,
                        self.config.heartbeat_interval_s,
                    )
            except (ApiError, TransportError) as exc:
                self._error(f"failed to update lease: {exc}")
            if loop.time() >= next_status:
                next_status = loop.time() + timeouts.KUBELET_NODE_STATUS_UPDATE
                try:
                    node = await api.request("GET", f"/api/v1/nodes/{self._name}")
                    await self._require_presence().report_status(api, node.get("status") or {})
                except (ApiError, TransportError) as exc:
                    # A deleted Node is not registered again until kubelet restarts, as with kubelet.
                    self._error(f"error updating node status: {exc}")
            await asyncio.sleep(self.config.heartbeat_interval_s)

    # -- serving certificate -----------------------------------------------------------------------

    async def _serving_certificate(self, api: ApiClient) -> None:
        dns_names, ips = serving_sans(self._name, self.config.addresses)
        if not ips:
            log.info("%s: no IP address to request a serving certificate for", self._name)
            return
        stored = load_bundle(self.serving_cert_path)
        if stored is not None:
            problem = certificate_problem(
                *stored, self._name, ca_pem=self._require_access().ca_pem, dns_names=dns_names, ips=ips
            )
            if problem is None:
                self.serving_certificate_ready = True
                await self._serve(api)
                return
            log.info("%s: stored serving certificate not usable (%s)", self._name, problem)
        next_delay = retry_backoff(timeouts.KUBELET_SERVING_CSR_BACKOFF)
        while True:
            key = new_key()
            usages = serving_usages(key)
            body = {
                "apiVersion": "certificates.k8s.io/v1",
                "kind": "CertificateSigningRequest",
                "metadata": {"generateName": "csr-"},
                "spec": {
                    "request": base64.b64encode(make_serving_csr(key, self._name, dns_names, ips)).decode(),
                    "signerName": SERVING_SIGNER,
                    "usages": usages,
                },
            }
            try:
                created = await api.request("POST", CSR_PATH, body=body)
                meta = created.get("metadata") or {}
                name, uid = str(meta.get("name")), str(meta.get("uid"))
                self.serving_csr_name = name
                log.info(
                    "%s: requested serving certificate (%s); running without it until it is approved",
                    self._name,
                    name,
                )
                async with asyncio.timeout(timeouts.KUBELET_SERVING_CSR_WAIT):
                    cert_pem = await self._poll_for_certificate(api, name, uid)
                write_private(self.serving_cert_path, cert_pem + key_pem(key))
                self.serving_certificate_ready = True
                self._say(f"serving certificate issued ({name})")
                break
            except TimeoutError:
                log.info("%s: serving certificate request still pending; asking again", self._name)
            except (ApiError, TransportError, CertificateRequestEnded) as exc:
                self._error(f"serving certificate not issued: {exc}")
            await asyncio.sleep(next_delay())
        await self._serve(api)

    async def _serve(self, api: ApiClient) -> None:
        """Serve the kubelet API (node log query) until stopped, when the host's files are given."""
        read_file = self.config.read_file
        access = self._require_access()
        if read_file is None or access.ca_pem is None:
            return

        async def authorize(user: str, groups: list[str], verb: str, subresource: str) -> bool:
            # pkg/kubelet/server/auth.go: a SubjectAccessReview for nodes/<subresource> of this node.
            review = {
                "apiVersion": "authorization.k8s.io/v1",
                "kind": "SubjectAccessReview",
                "spec": {
                    "user": user,
                    "groups": groups,
                    "resourceAttributes": {
                        "verb": verb,
                        "group": "",
                        "version": "v1",
                        "resource": "nodes",
                        "subresource": subresource,
                        "name": self._name,
                    },
                },
            }
            try:
                answer = await api.request(
                    "POST", "/apis/authorization.k8s.io/v1/subjectaccessreviews", body=review
                )
            except (ApiError, TransportError) as exc:
                self._error(f"authorization of {user} failed: {exc}")
                return False
            return bool((answer.get("status") or {}).get("allowed"))

        server = KubeletServer(
            node_name=self._name,
            address=self.config.addresses[0],
            port=self.config.port,
            listen=self.config.listen,
            serving_bundle=self.serving_cert_path,
            client_ca_pem=access.ca_pem,
            authorize=authorize,
            read_file=read_file,
        )
        await server.start()
        self._say(f"Starting to listen on {server.address}:{server.port}")
        try:
            await asyncio.Event().wait()
        finally:
            await server.stop()

    async def _poll_for_certificate(self, api: ApiClient, name: str, uid: str) -> bytes:
        """Poll one CSR until it is issued. Polled rather than watched: this wait may last for ever (nothing
        but the operator approves serving CSRs), and a watch would hold a connection all that time."""
        next_delay = retry_backoff(timeouts.KUBELET_SERVING_CSR_POLL)
        while True:
            await asyncio.sleep(next_delay())
            try:
                obj = await api.request("GET", f"{CSR_PATH}/{name}")
            except ApiError as exc:
                if exc.status == 404:
                    raise CertificateRequestEnded(f"certificate signing request {name} was deleted") from None
                self._error(f"checking certificate signing request {name}: {exc}")
                continue
            except TransportError as exc:
                self._error(f"checking certificate signing request {name}: {exc}")
                continue
            cert = csr_outcome(obj, uid)
            if cert is not None:
                return cert

    # -- pods ----------------------------------------------------------------------------------------

    async def _watch_pods(self, api: ApiClient) -> None:
        selector = {"fieldSelector": f"spec.nodeName={self._name}"}
        next_delay = retry_backoff(timeouts.KUBELET_RETRY_BACKOFF)
        rv = ""

        async def on_event(etype: str, obj: Json) -> bool:
            nonlocal rv
            meta = obj.get("metadata") or {}
            rv = str(meta.get("resourceVersion") or rv)
            if etype == "BOOKMARK":
                return False
            uid = str(meta.get("uid"))
            if etype == "DELETED":
                self._forget(uid)
            elif etype in ("ADDED", "MODIFIED"):
                self._pods[uid] = obj
                self._mark(uid)
            return False

        while True:
            try:
                listed = await api.request("GET", "/api/v1/pods", params=selector)
                rv = str((listed.get("metadata") or {}).get("resourceVersion", ""))
                items = {str((p.get("metadata") or {}).get("uid")): p for p in listed.get("items") or []}
                for uid in set(self._pods) - set(items):
                    self._forget(uid)
                for uid, pod in items.items():
                    self._pods[uid] = pod
                    ip = (pod.get("status") or {}).get("podIP")
                    if ip and not (pod.get("spec") or {}).get("hostNetwork"):
                        self._network.claim(uid, str(ip))
                    self._mark(uid)
                next_delay = retry_backoff(timeouts.KUBELET_RETRY_BACKOFF)
                while True:
                    await api.watch("/api/v1/pods", {**selector, "resourceVersion": rv}, on_event)
            except WatchExpired:
                continue
            except (ApiError, TransportError) as exc:
                self._error(f"pod watch failed: {exc}")
                await asyncio.sleep(next_delay())

    def _mark(self, uid: str) -> None:
        self._dirty.add(uid)
        self._wake.set()

    def _forget(self, uid: str) -> None:
        self._pods.pop(uid, None)
        self._dirty.discard(uid)
        self._network.release(uid)

    async def _pod_worker(self, api: ApiClient) -> None:
        next_delay = retry_backoff(timeouts.KUBELET_RETRY_BACKOFF)
        while True:
            await self._wake.wait()
            self._wake.clear()
            failed: set[str] = set()
            while self._dirty:
                uid = self._dirty.pop()
                pod = self._pods.get(uid)
                if pod is None:
                    continue
                try:
                    await self._sync_pod(api, pod)
                except (ApiError, TransportError) as exc:
                    meta = pod.get("metadata") or {}
                    self._error(f"syncing pod {meta.get('namespace')}/{meta.get('name')}: {exc}")
                    failed.add(uid)
            if failed:
                await asyncio.sleep(next_delay())
                for uid in failed:
                    if uid in self._pods:
                        self._mark(uid)
            else:
                next_delay = retry_backoff(timeouts.KUBELET_RETRY_BACKOFF)

    async def _sync_pod(self, api: ApiClient, pod: Json) -> None:
        meta = pod.get("metadata") or {}
        spec = pod.get("spec") or {}
        status = pod.get("status") or {}
        ns, name, uid = str(meta.get("namespace")), str(meta.get("name")), str(meta.get("uid"))
        path = f"/api/v1/namespaces/{ns}/pods/{name}"
        phase = status.get("phase")
        terminal = phase in ("Succeeded", "Failed")

        async def patch_status(new_status: Json) -> bool:
            # metadata.uid makes the patch fail if the pod was replaced by another of the same name.
            try:
                await api.request(
                    "PATCH",
                    f"{path}/status",
                    body={"metadata": {"uid": uid}, "status": new_status},
                    content_type=STRATEGIC_MERGE_PATCH,
                )
            except ApiError as exc:
                if exc.status in (404, 409):
                    return False
                raise
            return True

        if meta.get("deletionTimestamp"):
            if not terminal and not await patch_status(terminated_pod_status(pod, now=utc_now())):
                return
            try:
                await api.request(
                    "DELETE",
                    path,
                    body={
                        "apiVersion": "v1",
                        "kind": "DeleteOptions",
                        "gracePeriodSeconds": 0,
                        "preconditions": {"uid": uid},
                    },
                )
            except ApiError as exc:
                if exc.status not in (404, 409):
                    raise
            self._network.release(uid)
            log.debug("%s: pod %s/%s finished and deleted", self._name, ns, name)
            return
        if terminal:
            return
        if rejection := admission_rejection(pod):
            reason, message = rejection
            await patch_status(
                {"phase": "Failed", "reason": reason, "message": "Pod was rejected: " + message}
            )
            return
        if spec.get("hostNetwork"):
            pod_ip = self.config.addresses[0] if self.config.addresses else "127.0.0.1"
        else:
            pod_ip = str(status.get("podIP") or "") or self._network.allocate(uid)
        desired = running_pod_status(pod, host_ips=list(self.config.addresses), pod_ip=pod_ip, now=utc_now())
        if not pod_status_differs(desired, status):
            return
        if await patch_status(desired) and phase != "Running":
            log.debug("%s: pod %s/%s running", self._name, ns, name)
