"""Windows Firewall rules."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    pass


@dataclass
class FirewallRule:
    name: str
    display_name: str
    protocol: str
    local_port: int
    direction: str = "Inbound"
    enabled: bool = True
