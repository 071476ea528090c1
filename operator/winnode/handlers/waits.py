"""Waiting is not failing: kopf logs every retry at ERROR, a normal wait included.

A handler that has to come back later (an upgrade waiting for its slot, a deletion waiting for a
PodDisruptionBudget) can only tell kopf so by raising kopf.TemporaryError, which kopf logs as
"Handler ... failed temporarily: <message>" at ERROR (kopf/_core/actions/execution.py). Messages
raised through `wait()` are remembered, and a filter on kopf's object logger turns exactly those
lines into INFO, so ERROR stays for what needs an admin's eye.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict

import kopf

KOPF_OBJECT_LOGGER = "kopf.objects"
_MARK = "failed temporarily: "
_LIMIT = 1024
_waits: OrderedDict[str, None] = OrderedDict()


def wait(message: str, delay: float) -> kopf.TemporaryError:
    """The TemporaryError for a wait; kopf's line about it is logged at INFO."""
    _waits[message] = None
    _waits.move_to_end(message)
    while len(_waits) > _LIMIT:
        _waits.popitem(last=False)
    return kopf.TemporaryError(message, delay=delay)


class WaitsAtInfo(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.ERROR:
            text = record.getMessage()
            _, found, message = text.partition(_MARK)
            if found and message in _waits:
                record.levelno = logging.INFO
                record.levelname = logging.getLevelName(logging.INFO)
        return True


def install() -> None:
    logger = logging.getLogger(KOPF_OBJECT_LOGGER)
    if not any(isinstance(f, WaitsAtInfo) for f in logger.filters):
        logger.addFilter(WaitsAtInfo())


async def sleep_or_wake(stopped: kopf.DaemonStopped, wakeup: asyncio.Event, delay: float) -> bool:
    """Wait `delay`, or less when the daemon stops or `wakeup` is set; True when woken."""
    sleeping = asyncio.ensure_future(stopped.wait(delay))
    woken = asyncio.ensure_future(wakeup.wait())
    try:
        await asyncio.wait({sleeping, woken}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (sleeping, woken):
            task.cancel()
        await asyncio.gather(sleeping, woken, return_exceptions=True)
    return wakeup.is_set() and not stopped
