"""`SubscriberConnection`: a pub/sub connection that hands messages over in batches.

Every read from the socket becomes one batch: a list of ``(channel, pattern, payload)``
tuples (all bytes; ``pattern`` is None for SUBSCRIBE-d channels), in arrival order.
Batches go either to a callback, called synchronously from the protocol (fastest:
decode and apply right there, no task switch), or into a bounded queue read with
`get` / ``async for``.

Bounds and policies:
- Queue mode holds at most ``max_queued`` messages. Beyond that the connection stops
  reading (back-pressure): Redis buffers for us, and if its client-output-buffer-limit
  for pubsub is hit it drops the connection. Either way nothing is lost silently: the
  caller sees `ConnectionLostError` and resumes from the streams (SPEC consumer rule 4).
- Liveness: with no traffic for ``health_check_s`` a PING is sent; no bytes at all for
  two more periods means the connection is declared lost (half-open TCP, paused server).
- A callback that raises closes the connection; `wait_closed` re-raises its exception.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable
from typing import Any, TypeAlias

from marketbus.shared.config import RedisConfig
from marketbus.shared.errors import CommandError, ConnectionLostError, ReplyFailure
from marketbus.shared.resp import pack_command
from marketbus.shared.transport.connection import (
    DEFAULT_REPLY_TIMEOUT_S,
    ErrorReply,
    RespConnection,
    fed,
)
from marketbus.shared.transport.endpoint import Endpoint

PubSubMessage: TypeAlias = tuple[bytes, bytes | None, bytes]
"""``(channel, pattern, payload)``; pattern is None for a SUBSCRIBE-d channel."""

BatchHandler: TypeAlias = Callable[[list[PubSubMessage]], None]

DEFAULT_MAX_QUEUED = 100_000
DEFAULT_HEALTH_CHECK_S = 2.0

_MESSAGE = b"message"
_PMESSAGE = b"pmessage"
_CONFIRMS = {
    b"subscribe": "SUBSCRIBE",
    b"psubscribe": "PSUBSCRIBE",
    b"unsubscribe": "UNSUBSCRIBE",
    b"punsubscribe": "PUNSUBSCRIBE",
}
_PING = pack_command("PING")


def _name(value: str | bytes) -> bytes:
    return value.encode() if isinstance(value, str) else value


class SubscriberConnection(RespConnection):
    """A RESP2 pub/sub connection; open with `SubscriberConnection.open`."""

    def __init__(
        self,
        endpoint: Endpoint,
        *,
        on_batch: BatchHandler | None = None,
        max_queued: int = DEFAULT_MAX_QUEUED,
        health_check_s: float = DEFAULT_HEALTH_CHECK_S,
        reply_timeout_s: float = DEFAULT_REPLY_TIMEOUT_S,
    ) -> None:
        super().__init__(endpoint, reply_timeout_s=reply_timeout_s)
        if max_queued < 1 or health_check_s <= 0:
            raise ValueError("max_queued must be >= 1 and health_check_s > 0")
        self.max_queued = max_queued
        self.health_check_s = health_check_s
        self.received = 0
        """Messages delivered so far (excluding subscribe confirmations and PONGs)."""
        self._on_batch = on_batch
        self._queue: deque[list[PubSubMessage]] = deque()
        self._queued = 0
        self._reading_paused = False
        self._get_waiter: asyncio.Future[None] | None = None
        self._channels: set[bytes] = set()
        self._patterns: set[bytes] = set()
        self._confirm_waiters: dict[tuple[str, bytes], asyncio.Future[None]] = {}
        self._error: BaseException | None = None
        self._heard = True
        self._pinged = False
        self._health_timer: asyncio.TimerHandle | None = None

    @property
    def queued(self) -> int:
        """Messages read but not yet taken by `get` (queue mode)."""
        return self._queued

    @property
    def reading_paused(self) -> bool:
        """True while reading is paused because `max_queued` messages wait."""
        return self._reading_paused

    @property
    def pinged(self) -> bool:
        """True while a health-check PING is waiting for its PONG."""
        return self._pinged

    @classmethod
    async def open(cls, config: RedisConfig, **options: Any) -> SubscriberConnection:
        """Connect, AUTH and SELECT per *config*; RedisUnavailableError says why not.

        *options* are the constructor's keyword arguments (``on_batch`` for callback
        mode, else queue mode; bounds; deadlines).
        """
        self = await cls._connect(Endpoint.from_config(config), **options)
        self._health_timer = self._loop.call_later(self.health_check_s, self._health_check)
        return self

    # -- subscriptions -------------------------------------------------------------

    @property
    def channels(self) -> frozenset[bytes]:
        """Channels Redis confirmed as subscribed."""
        return frozenset(self._channels)

    @property
    def patterns(self) -> frozenset[bytes]:
        """Patterns Redis confirmed as subscribed."""
        return frozenset(self._patterns)

    async def subscribe(self, *channels: str | bytes) -> None:
        """SUBSCRIBE and wait for Redis to confirm every channel."""
        await self._command("SUBSCRIBE", channels)

    async def psubscribe(self, *patterns: str | bytes) -> None:
        """PSUBSCRIBE and wait for Redis to confirm every pattern."""
        await self._command("PSUBSCRIBE", patterns)

    async def unsubscribe(self, *channels: str | bytes) -> None:
        """UNSUBSCRIBE the given channels (all if none) and wait for confirmation."""
        await self._command("UNSUBSCRIBE", channels or tuple(self._channels))

    async def punsubscribe(self, *patterns: str | bytes) -> None:
        """PUNSUBSCRIBE the given patterns (all if none) and wait for confirmation."""
        await self._command("PUNSUBSCRIBE", patterns or tuple(self._patterns))

    async def _command(self, command: str, names: Iterable[str | bytes]) -> None:
        wanted = [_name(n) for n in names]
        if not wanted:
            return
        waiters = []
        for name in wanted:
            key = (command, name)
            waiter = self._confirm_waiters.get(key)
            if waiter is None:
                waiter = self._confirm_waiters[key] = self._loop.create_future()
            waiters.append(waiter)
        self._write(pack_command(command, *wanted))
        await self._wait(asyncio.gather(*waiters), command)

    # -- receiving -----------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        if not self._ready:
            self._setup_data_received(data)
            return
        self._heard = True
        reader = self._reader
        gets = reader.gets
        batch: list[PubSubMessage] = []
        append = batch.append
        for _ in fed(reader, data):
            while (reply := gets()) is not False:
                if type(reply) is list:
                    kind = reply[0]
                    if kind == _MESSAGE:
                        append((reply[1], None, reply[2]))
                        continue
                    if kind == _PMESSAGE:
                        append((reply[2], reply[1], reply[3]))
                        continue
                self._control(reply)
        if batch:
            self._deliver(batch)

    def _deliver(self, batch: list[PubSubMessage]) -> None:
        self.received += len(batch)
        if self._on_batch is not None:
            try:
                self._on_batch(batch)
            except Exception as exc:  # the user's callback: surface it, never swallow it
                self._error = exc
                self._fail(ConnectionLostError(f"on_batch callback raised {exc!r}"))
            return
        self._queue.append(batch)
        self._queued += len(batch)
        waiter = self._get_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
        if self._queued >= self.max_queued and not self._reading_paused:
            assert self._transport is not None
            self._transport.pause_reading()
            self._reading_paused = True

    def _control(self, reply: Any) -> None:
        """Subscription confirmations, PONGs and error replies."""
        if isinstance(reply, list) and reply:
            kind = reply[0]
            command = _CONFIRMS.get(kind)
            if command is not None:
                name = reply[1]
                if name is not None:
                    target = self._patterns if kind.startswith(b"p") else self._channels
                    if kind.endswith(b"unsubscribe"):
                        target.discard(name)
                    else:
                        target.add(name)
                    waiter = self._confirm_waiters.pop((command, name), None)
                    if waiter is not None and not waiter.done():
                        waiter.set_result(None)
                return
            if kind == b"pong":
                return
        if reply == b"PONG":
            return
        if isinstance(reply, ErrorReply):
            # Only a command of ours can cause this (e.g. one not allowed in pub/sub
            # mode); fail whoever waits, and the connection if nobody does.
            error = CommandError((ReplyFailure(None, 0, str(reply)),))
            waiters = list(self._confirm_waiters.values())
            self._confirm_waiters.clear()
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_exception(error)
            if waiters:
                return
            self._error = error
        self._fail(ConnectionLostError(f"unexpected reply from Redis: {reply!r:.200}"))

    # -- queue mode ----------------------------------------------------------------

    async def get(self) -> list[PubSubMessage]:
        """Every message queued so far, oldest first (waits for at least one).

        Raises ConnectionLostError once the connection is gone and the queue is empty,
        or the error that closed it. Waits as long as the market is quiet: liveness is
        the health check's job, which turns a dead connection into an error here.
        """
        if self._on_batch is not None:
            raise RuntimeError("get() is for queue mode; this connection has on_batch")
        while not self._queue:
            self._raise_if_closed()
            self._get_waiter = self._loop.create_future()
            try:
                await self._get_waiter
            finally:
                self._get_waiter = None
        if len(self._queue) == 1:
            batch = self._queue.popleft()
        else:
            batch = [message for part in self._queue for message in part]
            self._queue.clear()
        self._queued = 0
        if self._reading_paused and self._transport is not None:
            self._reading_paused = False
            self._transport.resume_reading()
        return batch

    async def __aiter__(self) -> AsyncIterator[list[PubSubMessage]]:
        """Batches until `aclose`; raises ConnectionLostError if the connection is lost."""
        while True:
            try:
                yield await self.get()
            except ConnectionLostError:
                if self._closing and self._error is None:
                    return
                raise

    async def wait_closed(self) -> None:
        """Wait until the connection ends: return after `aclose`, else raise why.

        In callback mode this is what a read loop awaits: `ConnectionLostError` means
        resume from the streams; any other exception came from the callback.
        """
        await asyncio.shield(self._closed)
        if not self._closing or self._error is not None:
            self._raise_if_closed()

    def _raise_if_closed(self) -> None:
        if self._error is not None:
            raise self._error
        if self._lost is not None:
            raise self._lost

    # -- liveness and loss -----------------------------------------------------------

    def _health_check(self) -> None:
        if self._lost is not None:
            return
        if self._heard:
            self._heard = False
            self._pinged = False
        elif not self._pinged:
            self._pinged = True
            self._write(_PING)
        else:
            self._fail(
                ConnectionLostError(
                    f"Redis at {self.endpoint.display} sent nothing, not even a PONG, for "
                    f"{2 * self.health_check_s:.1f}s; connection dropped"
                )
            )
            return
        self._health_timer = self._loop.call_later(self.health_check_s, self._health_check)

    def _on_lost(self, error: ConnectionLostError) -> None:
        if self._health_timer is not None:
            self._health_timer.cancel()
        for waiter in self._confirm_waiters.values():
            if not waiter.done():
                waiter.set_exception(error)
        self._confirm_waiters.clear()
        if self._get_waiter is not None and not self._get_waiter.done():
            self._get_waiter.set_result(None)  # get() re-checks and raises
