"""What can go wrong when talking to a Windows host, as typed errors the lifecycle code can act on.

Each error names the host, carries a `reason` (CamelCase, used as a condition reason and Event
reason) and a message that says what happened and what to do. None of them ever carries a script's
text, a password, a token or a key: only the host's own error message, scrubbed of secret values.

The classes say how a caller should react:

- HostAuthenticationError: terminal until the credentials (the Secret) or the TLS trust change.
- HostUnreachableError: back off and retry; `command_sent` tells whether the host may have run it.
- HostTimeoutError: the host did not finish in time; the script may still be running there.
- ScriptFailedError: the script ran and failed; its message says why (usually a host-side fix).
- HostProtocolError: the host answered something we do not understand (a bug or a foreign listener).
"""

from __future__ import annotations

from typing import ClassVar


class HostError(Exception):
    """Base class: something went wrong talking to `host` (an address, or address:port)."""

    default_reason: ClassVar[str] = "HostError"
    retryable: ClassVar[bool] = True

    def __init__(self, host: str, message: str, *, reason: str | None = None) -> None:
        super().__init__(message)
        self.host = host
        self.message = message
        self.reason = reason or self.default_reason

    def __str__(self) -> str:
        return self.message


class HostAuthenticationError(HostError):
    """The host refused our credentials (or we could not present them); retrying does not help."""

    default_reason = "AuthenticationFailed"
    retryable = False


class HostTLSError(HostAuthenticationError):
    """The host's TLS certificate could not be verified (or the TLS handshake failed)."""

    default_reason = "TLSVerificationFailed"


class HostUnreachableError(HostError):
    """No connection to the host's WinRM listener, or the connection dropped mid-operation."""

    default_reason = "HostUnreachable"

    def __init__(
        self, host: str, message: str, *, reason: str | None = None, command_sent: bool = False
    ) -> None:
        super().__init__(host, message, reason=reason or ("ConnectionLost" if command_sent else None))
        # True when the script had been handed to the host: it may have run, partly or wholly.
        self.command_sent = command_sent


class HostTimeoutError(HostError):
    """The host did not answer, or the script did not finish, within the deadline."""

    default_reason = "HostTimeout"

    def __init__(
        self, host: str, message: str, *, reason: str | None = None, timeout_s: float | None = None
    ) -> None:
        super().__init__(host, message, reason=reason)
        self.timeout_s = timeout_s


class ScriptFailedError(HostError):
    """The script ran on the host and failed: its own error message and exit code, never its text."""

    default_reason = "ScriptFailed"

    def __init__(
        self,
        host: str,
        action: str,
        error: str,
        exit_code: int,
        *,
        reason: str | None = None,
    ) -> None:
        self.action = action
        self.error = error
        self.exit_code = exit_code
        super().__init__(
            host,
            f"{action} failed on {host} (exit code {exit_code}): {error}",
            reason=reason,
        )


class HostProtocolError(HostError):
    """The host's answer does not follow WS-Management or the script result contract."""

    default_reason = "ProtocolError"
    retryable = False
