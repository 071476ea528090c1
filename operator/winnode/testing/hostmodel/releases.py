"""Windows Server releases by build number."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    pass


@dataclass(frozen=True)
class WindowsRelease:
    build: int
    ubr: int
    caption: str

    @property
    def product_name(self) -> str:
        """What the registry's ProductName (and a kubelet's osImage) says, without the vendor prefix."""
        return self.caption.removeprefix("Microsoft ")


WINDOWS_RELEASES: dict[int, WindowsRelease] = {
    17763: WindowsRelease(17763, 6414, "Microsoft Windows Server 2019 Datacenter"),
    20348: WindowsRelease(20348, 2700, "Microsoft Windows Server 2022 Datacenter"),
    26100: WindowsRelease(26100, 2894, "Microsoft Windows Server 2025 Datacenter"),
}


def release_for(build: int) -> WindowsRelease:
    return WINDOWS_RELEASES.get(build) or WindowsRelease(
        build, 0, f"Microsoft Windows Server (build {build})"
    )


# --- Windows paths and command lines -----------------------------------------------------------
