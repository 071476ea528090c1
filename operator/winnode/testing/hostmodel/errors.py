"""What the host model refuses with, and the constants its answers share."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    pass


GIB = 1024**3
NOT_ENOUGH_SPACE = "There is not enough space on the disk."
REDACTED = "<redacted>"
CRLF = "\r\n"


class ActionFailed(Exception):
    """The action failed the way it would on a real host; the message is what the script reports."""


# --- Windows releases --------------------------------------------------------------------------
