"""The typed way to run host actions: `await host.run(FetchFileParams(...))` returns a FileWriteResult.

`Host` is the interface lifecycle code depends on; `HostClient` implements it over WinRM (render
the script, run it through the transport, parse and validate the result line). Unit tests of the
lifecycle implement `Host.execute` in a fake instead.
"""

from __future__ import annotations

import abc
import logging
import re
import threading
from typing import overload

from pydantic import ValidationError

from winnode import timeouts
from winnode.host.actions import (
    ACTIONS,
    ChangedResult,
    DefenderExclusionsEnsureParams,
    DefenderExclusionsResult,
    EnsureDirectoriesParams,
    EnsureDirectoriesResult,
    FactsParams,
    FactsResult,
    FetchFileParams,
    FileWriteResult,
    FirewallRuleEnsureParams,
    FirewallRuleRemoveParams,
    HnsNetworkEnsureParams,
    HnsNetworkEnsureResult,
    HnsNetworkQueryParams,
    HnsNetworkQueryResult,
    HnsNetworkRemoveParams,
    Params,
    RebootParams,
    RebootResult,
    RemovedResult,
    RemovePathParams,
    Result,
    ServiceControlParams,
    ServiceEnsureParams,
    ServiceEnsureResult,
    ServiceQueryParams,
    ServiceQueryResult,
    ServiceRemoveParams,
    ServiceStartParams,
    ServiceStateResult,
    ServiceStopParams,
    StatFilesParams,
    StatFilesResult,
    WriteFileParams,
)
from winnode.host.errors import HostProtocolError, ScriptFailedError
from winnode.host.protocol import HEADER_PREFIX, PARAMS_VARIABLE, ProtocolError, parse_result
from winnode.host.scripts import REDACTED, RenderedScript, render
from winnode.host.transport import ExecResult, HostConnection, WinRMTransport
from winnode.settings import Settings

__all__ = ["Host", "HostClient", "HostConnection", "interpret_output", "result_model", "shared_transport"]

log = logging.getLogger(__name__)

_MAX_MESSAGE = 1000
_MIN_SECRET_WORD = 8
# Runs of base64 long enough to be an encoded parameter, wherever a host echoes one.
_BASE64_RUN = re.compile(r"[A-Za-z0-9+/]{40,}={0,2}")
# PowerShell error context (it quotes the failing script line) and CLIXML noise.
_CONTEXT_LINE = re.compile(r"^\s*(\+|At line:|At char:|CategoryInfo|FullyQualifiedErrorId|#< CLIXML)")
_CLIXML_ERROR = re.compile(r'<S S="Error">(.*?)</S>', re.DOTALL)


def result_model(params: Params) -> type[Result]:
    """The Result model an action answers with."""
    return ACTIONS[params.action][1]


class Host(abc.ABC):
    """One Windows host that runs actions. Implement `execute`; callers use the typed `run`."""

    @property
    @abc.abstractmethod
    def name(self) -> str:
        """How messages name this host."""

    @abc.abstractmethod
    async def execute(self, params: Params) -> Result:
        """Run one action and return its result, an instance of `result_model(params)`.

        Raises the errors of `winnode.host.errors`.
        """

    @overload
    async def run(self, params: FactsParams) -> FactsResult: ...
    @overload
    async def run(self, params: EnsureDirectoriesParams) -> EnsureDirectoriesResult: ...
    @overload
    async def run(self, params: FetchFileParams | WriteFileParams) -> FileWriteResult: ...
    @overload
    async def run(self, params: StatFilesParams) -> StatFilesResult: ...
    @overload
    async def run(
        self,
        params: RemovePathParams | ServiceRemoveParams | HnsNetworkRemoveParams | FirewallRuleRemoveParams,
    ) -> RemovedResult: ...
    @overload
    async def run(self, params: ServiceEnsureParams) -> ServiceEnsureResult: ...
    @overload
    async def run(self, params: ServiceStartParams | ServiceStopParams) -> ServiceStateResult: ...
    @overload
    async def run(self, params: ServiceQueryParams) -> ServiceQueryResult: ...
    @overload
    async def run(self, params: HnsNetworkEnsureParams) -> HnsNetworkEnsureResult: ...
    @overload
    async def run(self, params: HnsNetworkQueryParams) -> HnsNetworkQueryResult: ...
    @overload
    async def run(self, params: FirewallRuleEnsureParams) -> ChangedResult: ...
    @overload
    async def run(self, params: DefenderExclusionsEnsureParams) -> DefenderExclusionsResult: ...
    @overload
    async def run(self, params: RebootParams) -> RebootResult: ...
    @overload
    async def run(self, params: Params) -> Result: ...

    async def run(self, params: Params) -> Result:
        """Run one action; the result type follows from the parameter type."""
        result = await self.execute(params)
        expected = result_model(params)
        if not isinstance(result, expected):
            raise TypeError(
                f"{type(self).__name__}.execute answered {params.action} with {type(result).__name__}, "
                f"not {expected.__name__}"
            )
        return result


_shared: WinRMTransport | None = None
_shared_lock = threading.Lock()


def shared_transport(settings: Settings | None = None) -> WinRMTransport:
    """The process-wide transport, so the global WinRM limit covers every HostClient.

    Created on first use from `settings` (or the environment); later calls return the same one.
    """
    global _shared
    with _shared_lock:
        if _shared is None:
            _shared = WinRMTransport(settings or Settings.from_env())
        return _shared


class HostClient(Host):
    """A Windows host reached over WinRM."""

    def __init__(
        self,
        connection: HostConnection,
        transport: WinRMTransport | None = None,
        *,
        timeout_s: float | None = None,
    ) -> None:
        self.connection = connection
        self.transport = transport or shared_transport()
        self.timeout_s = timeout_s

    def __repr__(self) -> str:
        return f"HostClient({self.connection!r})"

    @property
    def name(self) -> str:
        return self.connection.label

    def timeout_for(self, params: Params) -> float:
        """The deadline of one action: the configured bound, stretched for actions that wait on purpose."""
        base = (
            self.timeout_s
            if self.timeout_s is not None
            else self.transport.settings.winrm_operation_timeout_s
        )
        if isinstance(params, ServiceControlParams):
            return max(base, params.timeout_s + timeouts.WINRM_SCRIPT_MARGIN)
        if isinstance(params, ServiceRemoveParams):
            # service_remove waits up to 120 s for the service to stop.
            return max(base, 120 + timeouts.WINRM_SCRIPT_MARGIN)
        return base

    async def execute(self, params: Params) -> Result:
        script = render(params)
        output = await self.transport.execute(
            self.connection,
            script.text,
            mutating=script.mutating,
            timeout_s=self.timeout_for(params),
            action=script.action,
            secrets=script.secrets,
        )
        return interpret_output(script, output, host=self.name)


def interpret_output(script: RenderedScript, output: ExecResult, *, host: str) -> Result:
    """The validated result of a script run, or the error it amounts to."""
    action = script.action
    secrets = script.secret_values
    try:
        raw = parse_result(output.stdout)
    except ProtocolError as exc:
        if output.exit_code != 0:
            summary = _stderr_summary(output.stderr, secrets) or "no error message"
            raise ScriptFailedError(
                host, action, f"exited without a result line: {summary}", output.exit_code
            ) from None
        raise HostProtocolError(
            host,
            f"{action} on {host} finished but its output is not a winnode result ({exc}); is the "
            "listener a Windows PowerShell host?",
        ) from None
    if not raw["ok"]:
        error = scrub(str(raw.get("error") or "the script reported a failure without a message"), secrets)
        raise ScriptFailedError(host, action, error, output.exit_code if output.exit_code != 0 else 1)
    if output.exit_code != 0:
        summary = _stderr_summary(output.stderr, secrets)
        raise ScriptFailedError(
            host,
            action,
            "reported success but exited with a non-zero code" + (f": {summary}" if summary else ""),
            output.exit_code,
        )
    payload = {key: value for key, value in raw.items() if key != "ok"}
    try:
        result = result_model(script.params).model_validate(payload)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in error['loc']) or '(result)'}: {error['msg']}"
            for error in exc.errors()[:5]
        )
        raise HostProtocolError(
            host, f"the result of {action} on {host} does not match its contract: {problems}"
        ) from None
    log.debug(
        "%s on %s done in %.2fs",
        action,
        host,
        output.elapsed_s,
        extra={"host": host, "action": action, "elapsed_s": round(output.elapsed_s, 3)},
    )
    return result


def scrub(text: str, secrets: tuple[str, ...]) -> str:
    """`text` without secret values, encoded parameters or the script header, shortened."""
    # A message may quote part of a secret (a line of a kubeconfig, the token in it): besides each
    # whole value, every longer word of it is removed too, at the price of over-redacting.
    pieces = {secret for secret in secrets if len(secret) >= 4}
    pieces.update(word for secret in secrets for word in secret.split() if len(word) >= _MIN_SECRET_WORD)
    for piece in sorted(pieces, key=len, reverse=True):
        text = text.replace(piece, REDACTED)
    if HEADER_PREFIX.strip() in text or PARAMS_VARIABLE in text:
        text = "\n".join(
            line
            for line in text.splitlines()
            if HEADER_PREFIX.strip() not in line and PARAMS_VARIABLE not in line
        )
    text = _BASE64_RUN.sub("<data>", text)
    text = " ".join(text.split())
    return text if len(text) <= _MAX_MESSAGE else text[: _MAX_MESSAGE - 3] + "..."


def _stderr_summary(stderr: str, secrets: tuple[str, ...]) -> str:
    """The error lines of a script's stderr without PowerShell's quoting of the failing source line."""
    text = stderr
    if "#< CLIXML" in text:
        # powershell.exe writes its error stream as CLIXML when stdout is not a console.
        parts = _CLIXML_ERROR.findall(text)
        text = "".join(parts).replace("_x000D_", "").replace("_x000A_", "\n")
        text = text.replace("&lt;", "<").replace("&gt;", ">").replace("&quot;", '"').replace("&amp;", "&")
    lines = [line.strip() for line in text.splitlines() if line.strip() and not _CONTEXT_LINE.match(line)]
    return scrub(" ".join(lines[:3]), secrets)
