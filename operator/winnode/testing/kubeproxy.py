"""An emulated kube-proxy (winkernel mode): a real client of the apiserver, programming the host model's HNS.

It starts from exactly what the operator wrote on the emulated host: the KubeProxyConfiguration named
by the service's --config, the kubeconfig its clientConnection.kubeconfig names, and the token file
that kubeconfig's tokenFile names (re-read at every relist, as client-go re-reads token files).

Like kube-proxy's informers it lists Services and EndpointSlices cluster-wide and then watches them;
from both it computes the load balancers kube-proxy's winkernel proxier programs
(pkg/proxy/winkernel/proxier.go at v1.37.2: one HNS load balancer per Service port and cluster IP,
with the ready endpoints as backends) and records them in `HostModel.hns_load_balancers`, once the
HNS network named by winkernel.networkName exists.

A 401 or 403 ends it: the emulated service process exits, so the service shows stopped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import yaml

from winnode import timeouts
from winnode.host.actions import ServiceState

if TYPE_CHECKING:
    from winnode.testing.hostmodel import HostModel, ServiceRecord
    from winnode.testing.kubelet.api import ApiClient


def _kl() -> Any:
    """The emulated kubelet's HTTP client, imported when a kube-proxy starts (tests may swap the kubelet
    package for a stand-in; only a real kube-proxy start needs the real one)."""
    from winnode.testing.kubelet import api

    return api


log = logging.getLogger(__name__)

Json = dict[str, Any]
SERVICES = "/api/v1/services"
SLICES = "/apis/discovery.k8s.io/v1/endpointslices"
SERVICE_NAME_LABEL = "kubernetes.io/service-name"
USER_AGENT = "kube-proxy.exe/emulated (windows/amd64) kubernetes/winnode"


class KubeProxyExited(RuntimeError):
    """The process would exit: its config is unusable or the apiserver refused its identity."""


@dataclass(frozen=True)
class HnsLoadBalancer:
    """One HNS load balancer as kube-proxy (winkernel) programs it for a Service port."""

    service: str  # namespace/name
    port_name: str
    vip: str
    protocol: str
    frontend_port: int
    backends: tuple[str, ...]  # "ip:port" of ready endpoints, sorted

    @property
    def key(self) -> str:
        return f"{self.vip}:{self.frontend_port}/{self.protocol}"


def load_balancers(services: Mapping[str, Json], slices: Mapping[str, Json]) -> dict[str, HnsLoadBalancer]:
    """The load balancers for `services` (by namespace/name) with the endpoints of `slices`."""
    by_service: dict[str, list[Json]] = {}
    for s in slices.values():
        meta = s.get("metadata") or {}
        svc = (meta.get("labels") or {}).get(SERVICE_NAME_LABEL)
        if svc:
            by_service.setdefault(f"{meta.get('namespace')}/{svc}", []).append(s)
    out: dict[str, HnsLoadBalancer] = {}
    for key, svc in services.items():
        spec = svc.get("spec") or {}
        vip = spec.get("clusterIP")
        if not vip or vip == "None":
            continue
        for port in spec.get("ports") or []:
            name = str(port.get("name") or "")
            protocol = str(port.get("protocol") or "TCP")
            backends: set[str] = set()
            for s in by_service.get(key, []):
                target = next(
                    (p for p in s.get("ports") or [] if str(p.get("name") or "") == name and p.get("port")),
                    None,
                )
                if target is None:
                    continue
                for ep in s.get("endpoints") or []:
                    if (ep.get("conditions") or {}).get("ready") is False:
                        continue
                    backends.update(f"{a}:{target['port']}" for a in ep.get("addresses") or [])
            lb = HnsLoadBalancer(
                key, name, str(vip), protocol, int(port.get("port") or 0), tuple(sorted(backends))
            )
            out[lb.key] = lb
    return out


def _file_text(model: HostModel, path: str, what: str) -> str:
    entry = model.file(path)
    if entry is None:
        raise KubeProxyExited(f"{what} {path}: The system cannot find the file specified.")
    return entry.text


class EmulatedKubeProxy:
    def __init__(self, model: HostModel, service: ServiceRecord) -> None:
        self.model = model
        self.service_name = service.name
        argv = service.program
        config_path = next((a.split("=", 1)[1] for a in argv if a.startswith("--config=")), None)
        if not config_path:
            raise KubeProxyExited("kube-proxy has no --config")
        config = yaml.safe_load(_file_text(model, config_path, "kube-proxy configuration")) or {}
        self.network_name = str((config.get("winkernel") or {}).get("networkName") or "")
        kubeconfig_path = str((config.get("clientConnection") or {}).get("kubeconfig") or "")
        if not kubeconfig_path:
            raise KubeProxyExited("kube-proxy configuration names no clientConnection.kubeconfig")
        self.kubeconfig_path = kubeconfig_path
        self.services: dict[str, Json] = {}
        self.slices: dict[str, Json] = {}
        self.exit_reason: str | None = None
        self._api: ApiClient | None = None
        self._tasks: list[asyncio.Task[None]] = []

    # --- credentials, exactly as written on the host -------------------------------------------

    def _connect(self) -> ApiClient:
        doc = yaml.safe_load(_file_text(self.model, self.kubeconfig_path, "kubeconfig")) or {}
        # The token file lives on the Windows host: read it from the host model, as kube-proxy would.
        for user in doc.get("users") or []:
            entry = (user or {}).get("user") or {}
            if token_file := entry.pop("tokenFile", None):
                entry["token"] = _file_text(self.model, str(token_file), "token file").strip()
        from winnode.testing.kubelet.config import parse_kubeconfig

        kl = _kl()
        access = parse_kubeconfig(yaml.safe_dump(doc))
        ctx: ssl.SSLContext = kl.client_ssl_context(access, None)
        api: ApiClient = kl.ApiClient(access, ctx, bearer=access.token, user_agent=USER_AGENT)
        return api

    async def _reconnect(self) -> ApiClient:
        if self._api is not None:
            await self._api.close()
        self._api = self._connect()
        return self._api

    # --- informers -----------------------------------------------------------------------------

    async def _list(self, path: str, into: dict[str, Json]) -> str:
        api = await self._reconnect()
        listing = await api.request("GET", path)
        into.clear()
        for item in listing.get("items") or []:
            meta = item.get("metadata") or {}
            into[f"{meta.get('namespace')}/{meta.get('name')}"] = item
        self._program()
        return str((listing.get("metadata") or {}).get("resourceVersion") or "")

    async def _informer(self, path: str, into: dict[str, Json], rv: str) -> None:
        kl = _kl()
        while True:
            assert self._api is not None

            async def handle(etype: str, obj: Json) -> bool:
                nonlocal rv
                meta = obj.get("metadata") or {}
                rv = str(meta.get("resourceVersion") or rv)
                if etype == "BOOKMARK":
                    return False
                key = f"{meta.get('namespace')}/{meta.get('name')}"
                if etype == "DELETED":
                    into.pop(key, None)
                else:
                    into[key] = obj
                self._program()
                return False

            try:
                await self._api.watch(path, {"resourceVersion": rv}, handle)
            except kl.WatchExpired:
                rv = await self._list(path, into)
            except kl.ApiError as exc:
                if exc.status in (401, 403):
                    self._exit(f"{path}: {exc}")
                    return
                await asyncio.sleep(timeouts.KUBE_PROXY_RETRY)
                rv = await self._relist(path, into, rv)
            except kl.TransportError:
                await asyncio.sleep(timeouts.KUBE_PROXY_RETRY)
                rv = await self._relist(path, into, rv)

    async def _relist(self, path: str, into: dict[str, Json], rv: str) -> str:
        kl = _kl()
        try:
            return await self._list(path, into)
        except kl.ApiError as exc:
            if exc.status in (401, 403):
                self._exit(f"{path}: {exc}")
            return rv
        except (kl.TransportError, KubeProxyExited):
            return rv

    def _program(self) -> None:
        if self.network_name and self.network_name not in {n.name for n in self.model.hns_networks.values()}:
            return  # winkernel waits for its HNS network
        self.model.hns_load_balancers = load_balancers(self.services, self.slices)

    def _exit(self, reason: str) -> None:
        """The process exits: the SCM shows the service stopped; its load balancers stay in HNS."""
        log.warning("%s: emulated kube-proxy exits: %s", self.model.hostname, reason)
        self.exit_reason = reason
        record = self.model.service(self.service_name)
        if record is not None and record.state == ServiceState.RUNNING:
            record.state = ServiceState.STOPPED
        for task in self._tasks:
            if task is not asyncio.current_task():
                task.cancel()

    # --- process -------------------------------------------------------------------------------

    async def start(self) -> None:
        """List both kinds (a refusal ends the process at once), then watch them."""
        kl = _kl()
        try:
            services_rv = await self._list(SERVICES, self.services)
            slices_rv = await self._list(SLICES, self.slices)
        except kl.ApiError as exc:
            await self.stop()
            raise KubeProxyExited(f"kube-proxy cannot list with its credentials: {exc}") from None
        except kl.TransportError as exc:
            await self.stop()
            raise KubeProxyExited(f"kube-proxy cannot reach the apiserver: {exc}") from None
        self._tasks = [
            asyncio.ensure_future(self._informer(SERVICES, self.services, services_rv)),
            asyncio.ensure_future(self._informer(SLICES, self.slices, slices_rv)),
        ]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(BaseException):
                await task
        self._tasks = []
        if self._api is not None:
            await self._api.close()
            self._api = None


class KubeProxyHook:
    """Runs an EmulatedKubeProxy while the host's kube-proxy service runs."""

    def __init__(self) -> None:
        self.proxy: EmulatedKubeProxy | None = None

    async def on_start(self, model: HostModel, service: ServiceRecord) -> None:
        proxy = EmulatedKubeProxy(model, service)
        await proxy.start()
        self.proxy = proxy

    async def on_stop(self, model: HostModel, service: ServiceRecord) -> None:
        proxy, self.proxy = self.proxy, None
        if proxy is not None:
            await proxy.stop()
