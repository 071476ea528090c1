"""Files on the modelled disk."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    pass


SECRET_FILE_ACL = ("S-1-5-18", "S-1-5-32-544")  # NT AUTHORITY\SYSTEM, BUILTIN\Administrators


@dataclass
class FileEntry:
    path: str
    content: bytes
    secret: bool = False
    system: bool = False  # part of the OS image: not counted against free disk space

    @property
    def acl(self) -> tuple[str, ...] | None:
        """The SIDs of the file's explicit, protected DACL (write_file.ps1 sets it with icacls for a
        secret: SYSTEM and Administrators, full control); None: it inherits its directory's."""
        return SECRET_FILE_ACL if self.secret else None

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.content).hexdigest()

    @property
    def size(self) -> int:
        return len(self.content)

    @property
    def text(self) -> str:
        return self.content.decode("utf-8-sig", errors="replace")
