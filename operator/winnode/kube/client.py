"""The reconciler's Kubernetes client: `Kube`, credentials from a kubeconfig, and JSON requests on
the shared async client of kube/api.py (no worker threads; plain JSON dicts in and out, so no
generated models whose validation errors and reprs would print Secret data verbatim).

Credentials come from `kubernetes.config` (exec plugins, auth providers, merged $KUBECONFIG lists,
the in-cluster service account with its token re-read as the kubelet rotates it); only that part of
the `kubernetes` package is used, and only here.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import AsyncIterator, Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeVar, overload

from winnode import timeouts
from winnode.kube.api import (
    USER_AGENT,
    ApiClient,
    ApiError,
    Body,
    Credentials,
    Method,
    Query,
    api_message,
    api_status,
    path,
    status_of,
)

if TYPE_CHECKING:
    import kubernetes.client

__all__ = [
    "JSON_MERGE_PATCH",
    "LIST_PAGE_SIZE",
    "STRATEGIC_MERGE_PATCH",
    "USER_AGENT",
    "ApiError",
    "Kube",
    "KubeConfigError",
    "Method",
    "api_message",
    "api_status",
    "path",
    "status_of",
]

T = TypeVar("T")

JSON_MERGE_PATCH = "application/merge-patch+json"
STRATEGIC_MERGE_PATCH = "application/strategic-merge-patch+json"
# Objects per page of a list that reads the whole fleet (list_pages): a WindowsNode or a Node decodes
# to tens of KiB of Python objects, so a whole list of 1,000 held at once costs hundreds of MiB.
LIST_PAGE_SIZE = 100


class KubeConfigError(RuntimeError):
    """No usable kubeconfig or in-cluster service account."""


class Kube:
    """One apiserver, as the reconciler talks to it. Usable from several threads and event loops;
    each loop that used it awaits `aclose()` before it ends (see kube/api.py)."""

    def __init__(self, api: ApiClient) -> None:
        self.api = api

    def __repr__(self) -> str:
        return f"Kube(server={self.api.credentials.server!r})"

    @property
    def credentials(self) -> Credentials:
        return self.api.credentials

    @classmethod
    def from_kubeconfig(cls, kubeconfig: str | Path | None = None) -> Kube:
        """Connect with `kubeconfig`; without it $KUBECONFIG, else the in-cluster service account,
        else ~/.kube/config."""
        import kubernetes.client
        import kubernetes.config

        configuration = kubernetes.client.Configuration()
        source = str(kubeconfig) if kubeconfig is not None else os.environ.get("KUBECONFIG")
        try:
            if source:
                # A $KUBECONFIG list (a:b) is merged by the loader itself.
                kubernetes.config.load_kube_config(config_file=source, client_configuration=configuration)  # type: ignore[no-untyped-call]
            elif os.environ.get("KUBERNETES_SERVICE_HOST"):
                # Registers a hook that re-reads the projected token file as the kubelet rotates it.
                kubernetes.config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
            else:
                kubernetes.config.load_kube_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
            credentials = credentials_from_configuration(configuration)
        except (kubernetes.config.ConfigException, OSError) as exc:
            where = source or "the in-cluster service account or ~/.kube/config"
            raise KubeConfigError(
                f"cannot load Kubernetes credentials from {where}: {exc}; "
                "pass --kubeconfig, set KUBECONFIG, or run in a pod with a service account"
            ) from None
        return cls(ApiClient(credentials))

    @overload
    async def request(
        self,
        method: Method,
        path: str,
        *,
        body: Body | None = None,
        query: Query | None = None,
        content_type: str | None = None,
        missing_ok: Literal[False] = False,
        request_timeout: float = timeouts.KUBE_REQUEST,
    ) -> dict[str, Any]: ...

    @overload
    async def request(
        self,
        method: Method,
        path: str,
        *,
        body: Body | None = None,
        query: Query | None = None,
        content_type: str | None = None,
        missing_ok: Literal[True],
        request_timeout: float = timeouts.KUBE_REQUEST,
    ) -> dict[str, Any] | None: ...

    async def request(
        self,
        method: Method,
        path: str,
        *,
        body: Body | None = None,
        query: Query | None = None,
        content_type: str | None = None,
        missing_ok: bool = False,
        request_timeout: float = timeouts.KUBE_REQUEST,
    ) -> dict[str, Any] | None:
        """One JSON request to `path` (e.g. "/api/v1/nodes/n1"); the decoded response object.

        Raises ApiError for non-2xx answers, except a 404 with `missing_ok` (returns None).
        """
        if missing_ok:
            return await self.api.request(
                method,
                path,
                body=body,
                query=query,
                content_type=content_type,
                missing_ok=True,
                request_timeout=request_timeout,
            )
        return await self.api.request(
            method, path, body=body, query=query, content_type=content_type, request_timeout=request_timeout
        )

    async def list_pages(
        self, path: str, query: Query | None = None, *, page_size: int = LIST_PAGE_SIZE
    ) -> AsyncIterator[list[dict[str, Any]]]:
        """The items of the list at `path`, a page of at most `page_size` at a time (limit and
        continue), so a caller that keeps only what it reads of each item never holds the whole list.

        The pages form one consistent snapshot. A continue token the apiserver no longer accepts
        (410 Gone, after etcd compacted past it) is an ApiError: the caller's pass starts over."""
        token: str | None = None
        while True:
            page_query: dict[str, str | int | bool] = {**(query or {}), "limit": page_size}
            if token:
                page_query["continue"] = token
            listing = await self.request("GET", path, query=page_query)
            yield listing.get("items") or []
            token = (listing.get("metadata") or {}).get("continue")
            if not token:
                return

    def watch(
        self, path: str, query: Query, *, server_timeout_s: float
    ) -> AsyncIterator[tuple[str, dict[str, Any]]]:
        """(type, object) of each event of one watch of `path`; ends when the server closes it."""
        return self.api.watch(path, query, server_timeout_s=server_timeout_s)

    def run_blocking(self, work: Coroutine[Any, Any, T]) -> T:
        """Await `work` (which uses this client) from synchronous code, such as the start-up reads
        before the reconciler's loop runs: on a loop of its own in a short-lived thread (so it works
        whether or not the caller's thread runs a loop), whose session is closed with it."""
        outcome: dict[str, Any] = {}

        async def then_close() -> T:
            try:
                return await work
            finally:
                await self.api.aclose()

        def run() -> None:
            try:
                outcome["value"] = asyncio.run(then_close())
            except BaseException as exc:  # raised in the caller's thread below
                outcome["error"] = exc

        thread = threading.Thread(target=run, name="kube-blocking", daemon=True)
        thread.start()
        thread.join()
        if "error" in outcome:
            raise outcome["error"]
        value: T = outcome["value"]
        return value

    async def aclose(self) -> None:
        """Close the connections of the running loop."""
        await self.api.aclose()

    def close(self) -> None:
        """Close the connections of loops that are idle or run in other threads."""
        self.api.close()


def credentials_from_configuration(configuration: kubernetes.client.Configuration) -> Credentials:
    """What kubernetes.config loaded, as Credentials. Certificates are read now (the loader wrote
    inline data to files); the Authorization header is asked of the configuration before each
    request, which runs its refresh hook (token file re-read, exec plugin re-run when expired)."""

    def read(file: str | None) -> bytes | None:
        return Path(file).read_bytes() if file else None

    def authorization() -> str | None:
        value = configuration.get_api_key_with_prefix("BearerToken", alias="authorization")
        return str(value) if value else None

    return Credentials(
        server=str(configuration.host).rstrip("/"),
        ca_pem=read(configuration.ssl_ca_cert),
        insecure=not configuration.verify_ssl,
        client_cert_pem=read(configuration.cert_file),
        client_key_pem=read(configuration.key_file),
        authorization_source=authorization,
        tls_server_name=getattr(configuration, "tls_server_name", None) or None,
        proxy=configuration.proxy or None,
    )
