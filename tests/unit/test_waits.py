"""A daemon's sleep leaves nothing behind that kopf would re-raise when the operator stops."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Generator, Iterator
from contextlib import contextmanager
from typing import Any

import kopf
from kopf._core.intents.stoppers import DaemonStopper

from winnode.handlers.waits import sleep, sleep_or_wake


@contextmanager
def tasks_created() -> Iterator[list[asyncio.Task[Any]]]:
    loop = asyncio.get_running_loop()
    before = loop.get_task_factory()
    created: list[asyncio.Task[Any]] = []

    def factory(
        loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, Any] | Generator[Any, None, Any], **kw: Any
    ) -> asyncio.Task[Any]:
        task: asyncio.Task[Any] = asyncio.Task(coro, loop=loop, **kw)
        created.append(task)
        return task

    loop.set_task_factory(factory)  # type: ignore[arg-type]
    try:
        yield created
    finally:
        loop.set_task_factory(before)


def failures(tasks: list[asyncio.Task[Any]]) -> list[BaseException]:
    """What kopf's run_tasks would re-raise from these tasks at shutdown (aiotasks.reraise)."""
    return [t.exception() for t in tasks if t.done() and not t.cancelled() and t.exception() is not None]  # type: ignore[misc]


def stopper() -> tuple[DaemonStopper, kopf.DaemonStopped]:
    setter = DaemonStopper()
    return setter, setter.async_waiter


async def test_a_sleep_that_runs_out_leaves_no_failed_task() -> None:
    _, stopped = stopper()
    with tasks_created() as created:
        await sleep(stopped, 0.05)
        assert not await sleep_or_wake(stopped, asyncio.Event(), 0.05)
        await asyncio.sleep(0.05)
    assert created, "the sleep runs its waits as tasks"
    assert all(t.done() for t in created)
    assert not failures(created)


async def test_kopf_own_timed_wait_is_what_it_replaces() -> None:
    # The reason for the helper: kopf's own `stopped.wait(delay)` leaves a task that failed.
    _, stopped = stopper()
    with tasks_created() as created:
        await stopped.wait(0.05)
        await asyncio.sleep(0.05)
    assert [type(e) for e in failures(created)] == [TimeoutError]


async def test_a_stop_ends_the_sleep_at_once() -> None:
    setter, stopped = stopper()
    loop = asyncio.get_running_loop()
    loop.call_later(0.05, setter.set)
    started = loop.time()
    with tasks_created() as created:
        assert not await sleep_or_wake(stopped, asyncio.Event(), 30.0)
        await sleep(stopped, 30.0)
    assert loop.time() - started < 5
    assert not failures(created)


async def test_a_wakeup_ends_the_sleep_and_says_so() -> None:
    _, stopped = stopper()
    event = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.call_later(0.05, event.set)
    started = loop.time()
    assert await sleep_or_wake(stopped, event, 30.0)
    assert loop.time() - started < 5
