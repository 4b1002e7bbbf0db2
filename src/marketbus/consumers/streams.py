"""`StreamReader`: the subscriber's stream reads over Redis (the I/O of `stream_reads`).

Fetch workers take the reads the engine asks for (backfill, repair, resume) from a
`FetchQueue`, page through them as `first_range`/`next_range` say and hand every page
to the engine; a slow listener's mailbox reads back through `StreamReader.read_back`.
Both follow one policy (`Attempts`): connection errors are retried with backoff up to
a bound, an error reply (e.g. NOPERM) is not; a read given up is counted, logged once
and reported for its feed (a `Gap`), and the subscriber goes on.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar, cast

import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import ResponseError

from marketbus.consumers.delivery import ReadBackError
from marketbus.consumers.engine import Engine, Entry, Fetch
from marketbus.consumers.events import Update
from marketbus.consumers.sequencing import Position
from marketbus.consumers.stream_reads import Attempts, FetchQueue, Range, first_range, next_range
from marketbus.consumers.supervisor import raise_if_cancelled
from marketbus.consumers.transport import TRANSIENT_ERRORS
from marketbus.shared.backoff import Backoff
from marketbus.shared.errors import EntryIdError, RedisUnavailableError
from marketbus.shared.names import entry_id, parse_entry_id

log = logging.getLogger("marketbus.consumers")

T = TypeVar("T")


class _GivenUp(Exception):
    """A stream read failed for good; the message says why (internal to this module)."""


class StreamReader:
    """Performs the engine's stream reads and the mailboxes' read-backs.

    *on_progress* is called after every read the engine asked for (a subscriber's
    `ready` waits on it). `attach` gives it the Redis client once connected.
    """

    def __init__(
        self, engine: Engine, backoff: Backoff, *, on_progress: Callable[[], None]
    ) -> None:
        self._engine = engine
        self._backoff = backoff
        self._on_progress = on_progress
        self._queue = FetchQueue()
        self._wakeup = asyncio.Event()
        self._redis: aioredis.Redis | RedisCluster | None = None

    def attach(self, redis: aioredis.Redis | RedisCluster) -> None:
        self._redis = redis

    def _client(self) -> aioredis.Redis | RedisCluster:
        if self._redis is None:
            raise RedisUnavailableError("the subscriber is not connected")
        return self._redis

    def pump(self) -> None:
        """Queue the reads the engine asked for (the newest request per feed wins)."""
        if self._queue.put(self._engine.take_fetches()):
            self._wakeup.set()

    async def worker(self) -> None:
        """One fetch worker: reads one feed at a time, until cancelled."""
        queue = self._queue
        while True:
            raise_if_cancelled()
            fetch = queue.take()
            if fetch is None:
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            try:
                await self._fetch(fetch)
            finally:
                queue.done(fetch)
                self._on_progress()
                if queue.waiting:
                    self._wakeup.set()

    async def _fetch(self, fetch: Fetch) -> None:
        def abandon() -> bool:  # superseded by a newer request (e.g. after the reconnect)
            return self._queue.superseded(fetch) or fetch.feed not in self._engine.feeds

        try:
            await self._retrying(fetch.feed, "stream read", lambda: self._read(fetch), abandon)
        except _GivenUp as exc:
            self._engine.on_fetch_failed(fetch, str(exc))
            self.pump()

    async def _read(self, fetch: Fetch) -> None:
        """Every page of *fetch*, each handed to the engine as it arrives."""
        redis, engine, feed = self._client(), self._engine, fetch.feed
        current = first_range(fetch)
        async with redis.pipeline(transaction=False) as pipe:
            pipe.xrange(feed, "-", "+", count=1)
            _queue_range(pipe, feed, current)
            first, page = await pipe.execute()
        stream_first = _first_position(feed, first)
        while True:
            if current.newest_first:
                page.reverse()
            following = next_range(current, page)
            engine.on_history(fetch, page, done=following is None, stream_first=stream_first)
            self.pump()
            if following is None:
                return
            current = following
            page = await redis.xrange(feed, current.low, current.high, count=current.count)

    async def read_back(
        self, feed: str, after: Position, upto: Position, count: int
    ) -> list[Update]:
        """A slow listener's read-back of must-deliver updates (see `Mailbox`);
        ReadBackError when the read is given up."""

        async def read() -> list[Entry]:
            entries: Any = await self._client().xrange(
                feed, "(" + entry_id(*after), entry_id(*upto), count=count
            )
            return cast(list[Entry], entries)

        try:
            entries = await self._retrying(feed, "read-back", read)
        except _GivenUp as exc:
            self._engine.on_read_back_failed(feed, str(exc))
            raise ReadBackError(str(exc)) from None
        raise_if_cancelled()
        return self._engine.read_back(entries or [])

    async def _retrying(
        self,
        feed: str,
        what: str,
        read: Callable[[], Awaitable[T]],
        abandon: Callable[[], bool] | None = None,
    ) -> T | None:
        """*read* under the retry policy (`Attempts`); `_GivenUp` once it gives up.

        After a connection error, *abandon* may say the read is not needed any more:
        it then ends with None instead of a retry.
        """
        attempts = Attempts(self._backoff)
        while True:
            try:
                return await read()
            except TRANSIENT_ERRORS as exc:
                if abandon is not None and abandon():
                    return None
                delay = attempts.failed()
                if delay is None:
                    log.error(
                        "feed %s: %s failed %d times (%s); giving up",
                        feed,
                        what,
                        attempts.failures,
                        exc,
                    )
                    raise _GivenUp(f"{type(exc).__name__}: {exc}") from None
                if attempts.failures == 1:
                    log.warning("feed %s: %s failed (%s); retrying", feed, what, exc)
                await asyncio.sleep(delay)
            except ResponseError as exc:  # refused (e.g. NOPERM): retrying will not help
                log.error("feed %s: Redis refused the %s: %s", feed, what, exc)
                raise _GivenUp(f"{type(exc).__name__}: {exc}") from None


def _first_position(feed: str, first: list[Entry]) -> Position | None:
    """Position of the oldest entry a stream holds (None if empty or foreign)."""
    if not first:
        return None
    try:
        return parse_entry_id(first[0][0])
    except EntryIdError as exc:
        log.warning("feed %s: %s; its holes are reported as missing", feed, exc)
        return None


def _queue_range(pipe: Any, feed: str, current: Range) -> None:
    if current.newest_first:
        pipe.xrevrange(feed, current.high, current.low, count=current.count)
    else:
        pipe.xrange(feed, current.low, current.high, count=current.count)
