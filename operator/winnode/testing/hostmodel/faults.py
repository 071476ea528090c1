"""Failures injected into one host."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    pass


@dataclass
class Faults:
    """Failures injected into one host; change any field at runtime (from any thread)."""

    auth_failure: bool = False  # every request answers 401
    refuse_connections: bool = False  # the listener is closed: connections are refused
    latency_s: float = 0.0  # added before answering every request
    stall: bool = False  # commands never finish until cleared (transport timeouts)
    exit_code: int | None = None  # commands exit with this code (see exit_code_count)
    exit_code_count: int = 0  # how many more commands fail with exit_code; 0 = every one until cleared
    reboot_mid_step: bool = False  # the next mutating command reboots the host and drops the connection
    checksum_mismatch: bool = False  # fetched content arrives corrupted
    disk_full: bool = False  # writes fail with "There is not enough space on the disk."
    # The next HNS network creation drops every connection before its answer is sent, as a real
    # host does while its address moves to the new vEthernet adapter; the network is created.
    hns_network_blip: bool = False
    # The next command runs to its end on the host, then every TCP connection is cut before its
    # answer is sent: a connection lost mid-command, whose action did happen.
    drop_mid_command: bool = False
    _listeners: list[Callable[[str], None]] = field(default_factory=list, repr=False, compare=False)

    def __setattr__(self, name: str, value: Any) -> None:
        super().__setattr__(name, value)
        if not name.startswith("_"):
            for listener in list(getattr(self, "_listeners", ())):
                listener(name)

    def subscribe(self, listener: Callable[[str], None]) -> None:
        self._listeners.append(listener)

    def fail_next(self, count: int = 1, exit_code: int = 1) -> None:
        """The next `count` commands exit with `exit_code` without doing anything."""
        if count < 1:
            raise ValueError("count must be at least 1")
        self.exit_code_count = count
        self.exit_code = exit_code

    def take_exit_code(self) -> int | None:
        """The exit code the next command must fail with, consuming one of `exit_code_count`."""
        code = self.exit_code
        if code is None:
            return None
        if self.exit_code_count > 0:
            remaining = self.exit_code_count - 1
            self.exit_code_count = remaining
            if remaining == 0:
                self.exit_code = None
        return code

    def clear(self) -> None:
        for f in dataclasses.fields(self):
            if not f.name.startswith("_"):
                setattr(self, f.name, f.default)


# --- scripts -----------------------------------------------------------------------------------
