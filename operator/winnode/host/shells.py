"""Shells winnode opens on a host carry its name, so the ones it leaves behind can be found and deleted.

A WinRM shell outlives the process that opened it until WinRM's idle timeout (two hours by
default). An operator killed in the middle of a command (OOM, node drain, SIGKILL) leaves one shell
per host it was talking to, and after MaxShellsPerUser of them (30 by default) the host refuses
every new shell of that user. So:

- every shell winnode creates has the Name `winnode-<process id>` (the optional Name attribute of
  rsp:Shell, MS-WSMV 2.2.4.37), unique per operator process;
- on first contact with a host, again every SWEEP_INTERVAL, and at once when Create hits the quota,
  the operator lists the user's shells (WS-Enumeration on the shell resource URI, as
  `winrm enumerate windows/shell` does) and deletes those a previous winnode process left, and its
  own that have been idle far longer than any command runs. Shells without a winnode name (an
  admin's session) are never touched.
"""

from __future__ import annotations

import logging
import re
import uuid
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from typing import Any

import xmltodict  # type: ignore[import-untyped]  # pywinrm builds its envelopes with it
from winrm.protocol import Protocol

log = logging.getLogger(__name__)

SHELL_NAME_PREFIX = "winnode-"
# One per operator process: shells of any other winnode process are stale by definition (one
# reconciler is active at a time; a standby never talks to hosts).
SHELL_NAME = SHELL_NAME_PREFIX + uuid.uuid4().hex[:12]
CMD_SHELL_URI = "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/cmd"
SHELL_URI = "http://schemas.microsoft.com/wbem/wsman/1/windows/shell"
ENUMERATION_NS = "http://schemas.xmlsoap.org/ws/2004/09/enumeration"
_NS = {
    "n": ENUMERATION_NS,
    "w": "http://schemas.dmtf.org/wbem/wsman/1/wsman.xsd",
    "rsp": "http://schemas.microsoft.com/wbem/wsman/1/windows/shell",
}
# Our own shells count as left behind once idle this long (a command's Receive loop touches its
# shell every few seconds).
OWN_SHELL_IDLE_S = 600.0
ENUMERATE_BATCH = 100
MAX_PULLS = 20
_DURATION = re.compile(r"^P(?:(\d+)D)?(?:T(?:(\d+)H)?(?:(\d+)M)?(?:(\d+(?:\.\d+)?)S)?)?$")


@dataclass(frozen=True)
class ShellInfo:
    shell_id: str
    name: str | None
    inactivity_s: float


def _seconds(value: str) -> float:
    match = _DURATION.match(value.strip())
    if not match:
        return 0.0
    d, h, m, s = match.groups()
    return int(d or 0) * 86400 + int(h or 0) * 3600 + int(m or 0) * 60 + float(s or 0)


class NamedShellProtocol(Protocol):
    """pywinrm's Protocol, whose shells carry winnode's Name and which can list the user's shells."""

    shell_name: str = SHELL_NAME

    # The keyword-only form winnode's transport calls; pywinrm's own parameters do not apply here.
    def open_shell(  # type: ignore[override]
        self, *, noprofile: bool = False, codepage: int = 437, **_: Any
    ) -> str:
        req = {"env:Envelope": self.build_wsman_header(resource_uri=CMD_SHELL_URI, action=_TRANSFER_CREATE)}
        header = req["env:Envelope"]["env:Header"]
        header["w:OptionSet"] = {
            "w:Option": [
                {"@Name": "WINRS_NOPROFILE", "#text": "TRUE" if noprofile else "FALSE"},
                {"@Name": "WINRS_CODEPAGE", "#text": str(codepage)},
            ]
        }
        req["env:Envelope"]["env:Body"] = {
            "rsp:Shell": {
                "@Name": self.shell_name,
                "rsp:InputStreams": "stdin",
                "rsp:OutputStreams": "stdout stderr",
            }
        }
        root = ET.fromstring(self.send_message(xmltodict.unparse(req)))  # noqa: S314 (our host's answer)
        for node in root.iter():
            if node.get("Name") == "ShellId" and node.text:
                return node.text
        raise ValueError("the Create response names no ShellId")

    def enumerate_shells(self) -> list[ShellInfo]:
        """The user's shells on the host (bounded: at most MAX_PULLS pulls of ENUMERATE_BATCH)."""
        req = {
            "env:Envelope": self.build_wsman_header(
                resource_uri=SHELL_URI, action=f"{ENUMERATION_NS}/Enumerate"
            )
        }
        req["env:Envelope"]["env:Body"] = {
            "n:Enumerate": {
                "w:OptimizeEnumeration": None,
                "w:MaxElements": str(ENUMERATE_BATCH),
            }
        }
        shells: list[ShellInfo] = []
        root = ET.fromstring(self.send_message(xmltodict.unparse(req)))  # noqa: S314
        for _ in range(MAX_PULLS):
            shells += _items(root)
            context = root.find(".//n:EnumerationContext", _NS)
            if context is None or root.find(".//w:EndOfSequence", _NS) is not None:
                return shells
            if root.find(".//n:EndOfSequence", _NS) is not None:
                return shells
            pull = {
                "env:Envelope": self.build_wsman_header(
                    resource_uri=SHELL_URI, action=f"{ENUMERATION_NS}/Pull"
                )
            }
            pull["env:Envelope"]["env:Body"] = {
                "n:Pull": {
                    "n:EnumerationContext": context.text or "",
                    "n:MaxElements": str(ENUMERATE_BATCH),
                }
            }
            root = ET.fromstring(self.send_message(xmltodict.unparse(pull)))  # noqa: S314
        return shells


_TRANSFER_CREATE = "http://schemas.xmlsoap.org/ws/2004/09/transfer/Create"


def _items(root: ET.Element) -> list[ShellInfo]:
    out: list[ShellInfo] = []
    for shell in root.iter(f"{{{_NS['rsp']}}}Shell"):
        shell_id = (shell.findtext("rsp:ShellId", default="", namespaces=_NS) or "").strip()
        if not shell_id:
            continue
        name = shell.findtext("rsp:Name", default=None, namespaces=_NS)
        inactivity = _seconds(shell.findtext("rsp:ShellInactivity", default="", namespaces=_NS) or "")
        out.append(ShellInfo(shell_id, name.strip() if name else None, inactivity))
    return out


def stale(shells: list[ShellInfo], own_name: str = SHELL_NAME) -> list[ShellInfo]:
    """The shells winnode left behind: another winnode process's, or our own long idle ones."""
    return [
        s
        for s in shells
        if s.name is not None
        and s.name.startswith(SHELL_NAME_PREFIX)
        and (s.name != own_name or s.inactivity_s >= OWN_SHELL_IDLE_S)
    ]


def reclaim(protocol: Any, label: str) -> int:
    """Delete the stale winnode shells on the host of `protocol`; how many went. Never raises."""
    enumerate_shells = getattr(protocol, "enumerate_shells", None)
    if enumerate_shells is None:
        return 0
    try:
        found = stale(enumerate_shells(), getattr(protocol, "shell_name", SHELL_NAME))
    except Exception as exc:
        log.warning("listing the shells on %s failed: %s", label, type(exc).__name__, extra={"host": label})
        return 0
    deleted = 0
    for shell in found:
        try:
            protocol.close_shell(shell.shell_id, close_session=False)
            deleted += 1
        except Exception as exc:
            log.info("deleting stale shell %s on %s failed: %s", shell.shell_id, label, type(exc).__name__)
    if deleted:
        log.info(
            "%s: deleted %d shell(s) a previous winnode process left", label, deleted, extra={"host": label}
        )
    return deleted
