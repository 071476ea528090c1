"""A thin async facade over the synchronous `kubernetes` client.

Every call runs in a worker thread (`asyncio.to_thread`) so the event loop, which kopf shares with
all handlers, never waits on the network. Two ways to call:

- `call(fn, ...)`: any generated API method (typed models in and out);
- `request(method, path, ...)`: plain JSON dicts in and out. The kube/ helpers use this one: it
  skips the pydantic models of the generated client, which cost time on every object, and whose
  validation errors and reprs would print Secret data verbatim.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, TypeVar, overload
from urllib.parse import quote

import kubernetes.client
import kubernetes.config
from kubernetes.client.exceptions import ApiException

from winnode import __version__, timeouts

T = TypeVar("T")

log = logging.getLogger(__name__)

JSON_MERGE_PATCH = "application/merge-patch+json"
STRATEGIC_MERGE_PATCH = "application/strategic-merge-patch+json"
USER_AGENT = f"winnode/{__version__}"

Method = Literal["GET", "POST", "PUT", "PATCH", "DELETE"]


class KubeConfigError(RuntimeError):
    """No usable kubeconfig or in-cluster service account."""


def status_of(exc: BaseException) -> int | None:
    """HTTP status of an ApiException, None for anything else."""
    return exc.status if isinstance(exc, ApiException) else None


def api_message(exc: ApiException) -> str:
    """The apiserver's own explanation (Status.message), falling back to the HTTP reason.

    Unlike str(exc), this leaves out response headers and the raw body.
    """
    try:
        body = json.loads(exc.body or "")
    except (TypeError, ValueError):
        body = None
    if isinstance(body, dict) and body.get("message"):
        return str(body["message"])
    return f"HTTP {exc.status} {exc.reason or ''}".strip()


def api_status(exc: ApiException) -> dict[str, Any]:
    """The Status object of an error response (empty when the body is not one)."""
    try:
        body = json.loads(exc.body or "")
    except (TypeError, ValueError):
        return {}
    return body if isinstance(body, dict) else {}


def path(*segments: str) -> str:
    """Join URL path segments, quoting each: names come from custom resources and users."""
    return "/" + "/".join(quote(s, safe="") for s in segments)


class Kube:
    """One connection to one apiserver. Thread-safe: urllib3's pool is shared by the workers."""

    api_client: kubernetes.client.ApiClient
    core: kubernetes.client.CoreV1Api
    certs: kubernetes.client.CertificatesV1Api
    custom: kubernetes.client.CustomObjectsApi
    policy: kubernetes.client.PolicyV1Api
    coordination: kubernetes.client.CoordinationV1Api

    def __init__(self, api_client: kubernetes.client.ApiClient) -> None:
        self.api_client = api_client
        api_client.user_agent = USER_AGENT
        self.core = kubernetes.client.CoreV1Api(api_client)
        self.certs = kubernetes.client.CertificatesV1Api(api_client)
        self.custom = kubernetes.client.CustomObjectsApi(api_client)
        self.policy = kubernetes.client.PolicyV1Api(api_client)
        self.coordination = kubernetes.client.CoordinationV1Api(api_client)

    def __repr__(self) -> str:
        return f"Kube(server={self.api_client.configuration.host!r})"

    @classmethod
    def from_kubeconfig(cls, path: str | Path | None = None) -> Kube:
        """Connect with `path`; without it $KUBECONFIG, else the in-cluster service account, else
        ~/.kube/config."""
        configuration = kubernetes.client.Configuration()
        source = str(path) if path is not None else os.environ.get("KUBECONFIG")
        try:
            if source:
                # A $KUBECONFIG list (a:b) is merged by the loader itself.
                kubernetes.config.load_kube_config(config_file=source, client_configuration=configuration)  # type: ignore[no-untyped-call]
            elif os.environ.get("KUBERNETES_SERVICE_HOST"):
                # Registers a hook that re-reads the projected token file as the kubelet rotates it.
                kubernetes.config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
            else:
                kubernetes.config.load_kube_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
        except (kubernetes.config.ConfigException, OSError) as exc:
            where = source or "the in-cluster service account or ~/.kube/config"
            raise KubeConfigError(
                f"cannot load Kubernetes credentials from {where}: {exc}; "
                "pass --kubeconfig, set KUBECONFIG, or run in a pod with a service account"
            ) from None
        return cls(kubernetes.client.ApiClient(configuration))

    @overload
    async def call(
        self, fn: Callable[..., T], *args: Any, missing_ok: Literal[False] = False, **kwargs: Any
    ) -> T: ...

    @overload
    async def call(
        self, fn: Callable[..., T], *args: Any, missing_ok: Literal[True], **kwargs: Any
    ) -> T | None: ...

    async def call(
        self, fn: Callable[..., T], *args: Any, missing_ok: bool = False, **kwargs: Any
    ) -> T | None:
        """Run a generated API method in a worker thread; with `missing_ok`, a 404 returns None."""
        try:
            return await asyncio.to_thread(fn, *args, **kwargs)
        except ApiException as exc:
            if missing_ok and exc.status == 404:
                return None
            raise

    @overload
    async def request(
        self,
        method: Method,
        path: str,
        *,
        body: Mapping[str, Any] | Sequence[Any] | None = None,
        query: Mapping[str, str | int | bool] | None = None,
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
        body: Mapping[str, Any] | Sequence[Any] | None = None,
        query: Mapping[str, str | int | bool] | None = None,
        content_type: str | None = None,
        missing_ok: Literal[True],
        request_timeout: float = timeouts.KUBE_REQUEST,
    ) -> dict[str, Any] | None: ...

    async def request(
        self,
        method: Method,
        path: str,
        *,
        body: Mapping[str, Any] | Sequence[Any] | None = None,
        query: Mapping[str, str | int | bool] | None = None,
        content_type: str | None = None,
        missing_ok: bool = False,
        request_timeout: float = timeouts.KUBE_REQUEST,
    ) -> dict[str, Any] | None:
        """One JSON request to `path` (e.g. "/api/v1/nodes/n1"); the decoded response object.

        Raises ApiException for non-2xx answers, except a 404 with `missing_ok` (returns None).
        """
        try:
            return await asyncio.to_thread(
                self._request_sync, method, path, body, query, content_type, request_timeout
            )
        except ApiException as exc:
            if missing_ok and exc.status == 404:
                return None
            raise

    def _request_sync(
        self,
        method: str,
        resource_path: str,
        body: Mapping[str, Any] | Sequence[Any] | None,
        query: Mapping[str, str | int | bool] | None,
        content_type: str | None,
        timeout: float,
    ) -> dict[str, Any]:
        headers = {"Accept": "application/json"}
        if body is not None:
            headers["Content-Type"] = content_type or "application/json"
        query_params = [(k, _query_value(v)) for k, v in (query or {}).items()]
        method_, url, header_params, body_, _ = self.api_client.param_serialize(
            method=method,
            resource_path=resource_path,
            query_params=query_params or None,
            header_params=headers,
            body=body,
            auth_settings=["BearerToken"],
        )
        response = self.api_client.call_api(
            method_, url, header_params=header_params, body=body_, _request_timeout=timeout
        )
        response.read()  # type: ignore[no-untyped-call]
        if not 200 <= response.status <= 299:
            raise ApiException.from_response(http_resp=response, body=None, data=None)
        if not response.data:
            return {}
        decoded = json.loads(response.data)
        return decoded if isinstance(decoded, dict) else {"items": decoded}

    def close(self) -> None:
        self.api_client.close()  # type: ignore[no-untyped-call]


def _query_value(value: str | int | bool) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)
