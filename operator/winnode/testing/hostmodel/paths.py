"""NTFS path rules and the Windows command-line parser the host model applies."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from winnode.testing.hostmodel.errors import ActionFailed

if TYPE_CHECKING:
    pass


_DRIVE = re.compile(r"^([A-Za-z]):(\\|$)")


def normalize_path(path: str) -> str:
    """Canonical display form of an absolute Windows path: backslashes, no `.`/`..`, no trailing slash."""
    p = path.strip().replace("/", "\\")
    if p.startswith("\\\\?\\"):
        p = p[4:]
    match = _DRIVE.match(p)
    if not match:
        raise ActionFailed(
            f"Cannot find path '{path}': the emulated host only knows absolute paths like C:\\dir."
        )
    drive = match.group(1).upper() + ":"
    parts: list[str] = []
    for segment in p[2:].split("\\"):
        if segment in ("", "."):
            continue
        if segment == "..":
            if parts:
                parts.pop()
            continue
        if any(c in segment for c in '<>:"|?*') or segment != segment.rstrip(" ."):
            raise ActionFailed(
                f"The filename, directory name, or volume label syntax is incorrect. : '{path}'"
            )
        parts.append(segment)
    return drive + "\\" + "\\".join(parts)


def path_key(path: str) -> str:
    """NTFS compares names case-insensitively: one key for every spelling of the same path."""
    return normalize_path(path).casefold()


def parent_path(path: str) -> str | None:
    norm = normalize_path(path)
    if len(norm) <= 3:
        return None
    head, _, _ = norm.rpartition("\\")
    return head if len(head) > 2 else head + "\\"


def split_command_line(command_line: str) -> list[str]:
    """Split a Windows command line the way CommandLineToArgvW does (the program name has no escapes)."""
    args: list[str] = []
    i, n = 0, len(command_line)
    while i < n and command_line[i] in " \t":
        i += 1
    if i >= n:
        return args
    # The program name: quotes group, backslashes are literal.
    if command_line[i] == '"':
        end = command_line.find('"', i + 1)
        end = n if end < 0 else end
        args.append(command_line[i + 1 : end])
        i = end + 1
    else:
        start = i
        while i < n and command_line[i] not in " \t":
            i += 1
        args.append(command_line[start:i])
    current: list[str] = []
    in_quotes = False
    has_token = False
    while i < n:
        c = command_line[i]
        if c in " \t" and not in_quotes:
            if has_token:
                args.append("".join(current))
                current, has_token = [], False
            i += 1
            continue
        if c == "\\":
            start = i
            while i < n and command_line[i] == "\\":
                i += 1
            count = i - start
            if i < n and command_line[i] == '"':
                current.append("\\" * (count // 2))
                if count % 2:
                    current.append('"')
                    i += 1
            else:
                current.append("\\" * count)
            has_token = True
            continue
        if c == '"':
            if in_quotes and i + 1 < n and command_line[i + 1] == '"':
                current.append('"')
                i += 2
            else:
                in_quotes = not in_quotes
                i += 1
            has_token = True
            continue
        current.append(c)
        has_token = True
        i += 1
    if has_token:
        args.append("".join(current))
    return args


# --- host objects ------------------------------------------------------------------------------
