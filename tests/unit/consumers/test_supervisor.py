"""The subscriber's task supervision: no task dies unnoticed, one shutdown, awaited."""

from __future__ import annotations

import asyncio

import pytest

from marketbus.consumers.supervisor import Supervisor
from marketbus.shared.errors import SubscriberClosedError
from tests.support.waiting import wait_until


class Shutdown:
    """A shutdown that waits for *release* and counts its runs."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.runs = 0
        self.finished = False

    async def __call__(self) -> None:
        self.runs += 1
        await self.release.wait()
        self.finished = True


async def test_a_failing_task_stops_everything_once_and_close_waits_for_that_shutdown() -> None:
    """A failure starts the shutdown in a task that is kept: `close` afterwards waits for
    that same shutdown instead of returning while it is still under way."""
    failures: list[BaseException] = []
    shutdown = Shutdown()
    supervisor = Supervisor("test", on_failure=failures.append, shutdown=shutdown)
    boom = ValueError("boom")

    async def broken() -> None:
        raise boom

    supervisor.spawn(broken(), "broken")
    await wait_until(lambda: supervisor.closing, what="the shutdown started")
    assert failures == [boom] and supervisor.failure is boom
    closing = asyncio.create_task(supervisor.close())
    await wait_until(lambda: shutdown.runs == 1, what="the shutdown running")
    assert not closing.done()  # still waiting for the shutdown the failure started
    shutdown.release.set()
    async with asyncio.timeout(2):
        await closing
    assert shutdown.finished and shutdown.runs == 1
    await supervisor.close()  # idempotent
    assert shutdown.runs == 1
    with pytest.raises(SubscriberClosedError) as info:
        supervisor.raise_if_failed()
    assert info.value.__cause__ is boom


async def test_only_the_first_failure_is_kept_and_none_once_closing() -> None:
    failures: list[BaseException] = []
    shutdown = Shutdown()
    shutdown.release.set()
    supervisor = Supervisor("test", on_failure=failures.append, shutdown=shutdown)
    await supervisor.close()
    supervisor.fail(ValueError("after close"))
    assert failures == [] and supervisor.failure is None and shutdown.runs == 1


async def test_cancel_all_ends_every_task() -> None:
    shutdown = Shutdown()
    supervisor = Supervisor("test", on_failure=lambda exc: None, shutdown=shutdown)
    never = asyncio.Event()
    for i in range(3):
        supervisor.spawn(never.wait(), f"waiter-{i}")
    assert supervisor.running == 3
    await supervisor.cancel_all()
    assert supervisor.running == 0 and supervisor.failure is None


async def test_check_open_says_why_not() -> None:
    shutdown = Shutdown()
    shutdown.release.set()
    supervisor = Supervisor("test", on_failure=lambda exc: None, shutdown=shutdown)
    with pytest.raises(SubscriberClosedError, match="not started"):
        supervisor.check_open(False)
    supervisor.check_open(True)
    await supervisor.close()
    with pytest.raises(SubscriberClosedError, match="closed"):
        supervisor.check_open(True)
