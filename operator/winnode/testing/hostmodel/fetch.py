"""Downloads (the `fetch_file` action) through a pluggable fetcher."""

from __future__ import annotations

import asyncio
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    pass


class FetchError(Exception):
    """A download failed; the message is what Invoke-WebRequest would say."""


Fetcher = Callable[[str, float], Awaitable[bytes]]


def _fetch_blocking(url: str, timeout: float) -> bytes:
    if not url.lower().startswith(("http://", "https://")):
        raise FetchError(f"The URI prefix is not recognized: {url}")
    try:
        # Only http(s) URLs reach this point (checked above).
        with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310
            data: bytes = response.read()
            return data
    except urllib.error.HTTPError as exc:
        raise FetchError(f"The remote server returned an error: ({exc.code}) {exc.reason}.") from None
    except TimeoutError:
        raise FetchError("The operation has timed out.") from None
    except (urllib.error.URLError, OSError):
        raise FetchError("Unable to connect to the remote server") from None


async def urllib_fetch(url: str, limit_s: float) -> bytes:
    """Default fetcher: urllib in a worker thread, bounded by `limit_s`."""
    return await asyncio.wait_for(asyncio.to_thread(_fetch_blocking, url, limit_s), limit_s + 1.0)


# --- faults ------------------------------------------------------------------------------------
