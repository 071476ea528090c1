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
from typing import Any

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


async def sleep_or_wake(stopped: kopf.DaemonStopped, wakeup: asyncio.Event | None, delay: float) -> bool:
    """Wait `delay`, or less when the daemon stops or `wakeup` is set; True when woken.

    Never `stopped.wait(delay)`: kopf runs that wait as a task of its own which ends in TimeoutError
    when the delay passes, and on shutdown kopf re-raises the result of every task left from the
    operator's run (kopf/_core/reactor/running.py, run_tasks), so a daemon whose sleep ran out
    while the operator was stopping made `winnode run` exit 1. Waiting on the stopper without a
    limit and putting the limit on our own `asyncio.wait` leaves only cancelled tasks behind.
    """
    if stopped:
        return False
    stopping = asyncio.ensure_future(stopped.wait())
    waiting: set[asyncio.Future[Any]] = {stopping}
    if wakeup is not None:
        waiting.add(asyncio.ensure_future(wakeup.wait()))
    try:
        await asyncio.wait(waiting, timeout=delay, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in waiting:
            task.cancel()
        await asyncio.gather(*waiting, return_exceptions=True)
    return wakeup is not None and wakeup.is_set() and not stopped


async def sleep(stopped: kopf.DaemonStopped, delay: float) -> None:
    """A daemon's sleep that ends early when it is told to stop."""
    await sleep_or_wake(stopped, None, delay)
