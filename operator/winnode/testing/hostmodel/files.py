"""Files on the modelled disk and the file actions (directories, downloads, writes, copies, stat, removal)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

from winnode.host import actions as A
from winnode.testing.hostmodel.errors import ActionFailed
from winnode.testing.hostmodel.fetch import FetchError
from winnode.testing.hostmodel.paths import normalize_path

if TYPE_CHECKING:
    from winnode.testing.hostmodel.model import HostModel


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


# --- the file actions --------------------------------------------------------------------------


async def ensure_directories(host: HostModel, p: A.EnsureDirectoriesParams) -> A.EnsureDirectoriesResult:
    created: list[str] = []
    for path in p.paths:
        if host.make_dirs(path):
            created.append(path)
    return A.EnsureDirectoriesResult(created=created)


def _file_result(entry: FileEntry, changed: bool) -> A.FileWriteResult:
    return A.FileWriteResult(changed=changed, sha256=entry.sha256, size=entry.size)


async def fetch_file(host: HostModel, p: A.FetchFileParams) -> A.FileWriteResult:
    existing = host.file(p.path)
    if existing is not None and p.sha256 is not None and existing.sha256 == p.sha256:
        return _file_result(existing, changed=False)
    try:
        data = await host.fetcher(p.url, host.fetch_timeout_s)
    except FetchError as exc:
        raise ActionFailed(f"Downloading {p.url} failed: {exc}") from None
    if host.faults.checksum_mismatch:
        data = _corrupt(data)
    actual = hashlib.sha256(data).hexdigest()
    if p.sha256 is not None and actual != p.sha256:
        raise ActionFailed(
            f"Checksum mismatch for {p.url} (-> {normalize_path(p.path)}): expected sha256 {p.sha256}, actual {actual}"
        )
    if existing is not None and existing.content == data:
        return _file_result(existing, changed=False)
    return _file_result(host.write_bytes(p.path, data), changed=True)


async def write_file(host: HostModel, p: A.WriteFileParams) -> A.FileWriteResult:
    content = p.content.encode("utf-8")
    existing = host.file(p.path)
    if existing is not None and existing.content == content and existing.secret == p.secret:
        return _file_result(existing, changed=False)
    return _file_result(host.write_bytes(p.path, content, secret=p.secret), changed=True)


async def copy_file(host: HostModel, p: A.CopyFileParams) -> A.FileWriteResult:
    source = host.file(p.source)
    if source is None:
        raise ActionFailed(f"Cannot copy {normalize_path(p.source)}: the file does not exist")
    if p.sha256 is not None and source.sha256 != p.sha256:
        raise ActionFailed(
            f"Checksum mismatch for {normalize_path(p.source)} (-> {normalize_path(p.path)}): "
            f"expected sha256 {p.sha256}, actual {source.sha256}"
        )
    existing = host.file(p.path)
    if existing is not None and existing.content == source.content:
        return _file_result(existing, changed=False)
    return _file_result(host.write_bytes(p.path, source.content), changed=True)


async def stat_files(host: HostModel, p: A.StatFilesParams) -> A.StatFilesResult:
    stats: dict[str, A.FileStat] = {}
    for path in p.paths:
        entry = host.file(path)
        stats[path] = (
            A.FileStat(exists=True, sha256=entry.sha256, size=entry.size)
            if entry
            else A.FileStat(exists=False)
        )
    return A.StatFilesResult(files=stats)


async def remove_path(host: HostModel, p: A.RemovePathParams) -> A.RemovedResult:
    return A.RemovedResult(removed=host.remove(p.path, recurse=p.recurse, if_empty=p.if_empty))


def _corrupt(data: bytes) -> bytes:
    if not data:
        return b"\x00"
    middle = len(data) // 2
    return data[:middle] + bytes([data[middle] ^ 0xFF]) + data[middle + 1 :]
