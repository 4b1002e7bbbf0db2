"""`Supervisor`: the subscriber's tasks, none of which may die unnoticed.

Every task is named and kept until it ends. One that fails stops the whole subscriber:
the first failure is kept (the subscriber raises it, chained, from the next ``await``
on it) and the shutdown starts at once, as a task that is kept too, so whoever closes
the subscriber afterwards waits for that same shutdown instead of returning while it
is still under way.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, Final

from marketbus.shared.errors import SubscriberClosedError, SubscriberFailedError

log = logging.getLogger("marketbus.consumers")


CANCEL_DEADLINE_S: Final = 5.0
"""How long `Supervisor.cancel_all` waits for cancelled tasks to end."""


class Supervisor:
    """Spawns, watches and cancels the tasks of one subscriber.

    *on_failure* is called once, with the first error of a task (or of `fail`), before
    the shutdown starts; *shutdown* is the coroutine function that closes everything
    (it calls `cancel_all`).
    """

    def __init__(
        self,
        prefix: str,
        *,
        on_failure: Callable[[BaseException], None],
        shutdown: Callable[[], Coroutine[Any, Any, None]],
    ) -> None:
        self._prefix = prefix
        self._on_failure = on_failure
        self._shutdown = shutdown
        self._tasks: set[asyncio.Task[None]] = set()
        self._failure: BaseException | None = None
        self._closing: asyncio.Task[None] | None = None

    @property
    def failure(self) -> BaseException | None:
        """The error that stopped the subscriber, if one did."""
        return self._failure

    def raise_if_failed(self) -> None:
        """SubscriberFailedError, chained from the failure, if a task failed."""
        failure = self._failure
        if failure is not None:
            raise SubscriberFailedError(
                f"subscriber stopped: {type(failure).__name__}: {failure}"
            ) from failure

    def check_open(self, started: bool) -> None:
        """SubscriberClosedError unless *started* and not failed or closing."""
        self.raise_if_failed()
        if self._closing is not None:
            raise SubscriberClosedError("subscriber is closed")
        if not started:
            raise SubscriberClosedError("subscriber is not started: use 'async with' or start()")

    @property
    def closing(self) -> bool:
        """True once the shutdown has started (by `close` or by a failure)."""
        return self._closing is not None

    @property
    def running(self) -> int:
        """Tasks not ended yet (the shutdown not counted)."""
        return len(self._tasks)

    def spawn(self, coro: Awaitable[None], name: str) -> asyncio.Task[None]:
        """Run *coro* as a task named ``{prefix}-{name}``, kept until it ends."""
        task: asyncio.Task[None] = asyncio.ensure_future(coro)
        task.set_name(f"{self._prefix}-{name}")
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if task.cancelled() or self._closing is not None:
            return
        exc = task.exception()
        if exc is not None:
            log.error("subscriber task %s failed; stopping", task.get_name(), exc_info=exc)
            self.fail(exc)

    def fail(self, exc: BaseException) -> None:
        """Stop because of *exc*: the shutdown starts now, in a task `close` then waits
        for. Only the first failure is kept; once closing, errors are not failures."""
        if self._closing is not None:
            return
        self._failure = exc
        self._on_failure(exc)
        self._closing = asyncio.get_running_loop().create_task(self._shutdown())
        self._closing.set_name(f"{self._prefix}-shutdown")

    async def close(self) -> None:
        """Run the shutdown, or wait for the one under way; idempotent.

        Shielded: a caller cancelled while waiting does not cut the shutdown short.
        """
        if self._closing is None:
            self._closing = asyncio.ensure_future(self._shutdown())
            self._closing.set_name(f"{self._prefix}-shutdown")
        await asyncio.shield(self._closing)

    async def cancel_all(self) -> None:
        """Cancel every task and wait (at most `CANCEL_DEADLINE_S`) until they end."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=CANCEL_DEADLINE_S)
            for task in pending:
                log.error(
                    "task %s did not stop within %.0f s of being cancelled",
                    task.get_name(),
                    CANCEL_DEADLINE_S,
                )


def raise_if_cancelled() -> None:
    """Stop a task loop whose cancellation was swallowed: on Python 3.11,
    ``asyncio.wait_for`` (redis-py uses it) returns the result instead of raising when
    the result and the cancellation race (CPython gh-86296), and the loop would go on."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError
