"""`PipelineWriter`: a write-mostly Redis connection for the publish hot path.

Callers queue commands with `send` (no await: the bytes are buffered and written in
large chunks) and `await drain()` once per batch. Replies are parsed by hiredis and
only counted, unless one is an error: then the next `drain`/`flush` raises
`CommandError` naming the failed commands by the caller's ``tag``.

A caller that keeps several batches in flight (the producer's writer) marks each one
with `sent` after sending it, writes it out with `push`, and later awaits
`confirm(mark)`: that waits for the replies up to the mark and returns the error
replies among them, so each batch learns exactly its own failures while the next one
is already on the wire.

Bounds and policies:
- Buffered bytes: `send` hands the buffer to the transport once it reaches
  ``write_chunk_bytes``; `drain` blocks while the transport is over its high-water mark.
- Replies in flight: `drain` blocks while more than ``max_pending_replies`` are unread,
  until half of them have arrived. Memory is then bounded by the caller's batch size.
- Every wait has a deadline (``reply_timeout_s``); a silent server gets the connection
  dropped with `ReplyTimeoutError`.
- Connection loss: every later call raises `ConnectionLostError`, whose ``unconfirmed``
  counts commands that may or may not have been applied.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Any

from marketbus.shared.config import RedisConfig
from marketbus.shared.errors import CommandError, ConnectionLostError, ReplyFailure
from marketbus.shared.resp import Arg, pack_command
from marketbus.shared.transport.connection import (
    DEFAULT_REPLY_TIMEOUT_S,
    ErrorReply,
    RespConnection,
    fed,
)
from marketbus.shared.transport.endpoint import Endpoint

DEFAULT_MAX_PENDING_REPLIES = 100_000
DEFAULT_WRITE_CHUNK_BYTES = 256 * 1024
MAX_FAILURES_KEPT = 100_000
"""Error replies kept until the next drain or confirm; later ones are counted, not kept."""


class _Expect:
    """Replies owed by one `send` (or several merged untagged sends)."""

    __slots__ = ("end", "future", "start", "tag", "values")

    def __init__(self, start: int, end: int, tag: object, future: asyncio.Future[Any] | None):
        self.start = start
        self.end = end
        self.tag = tag
        self.future = future
        self.values: list[Any] | None = [] if future is not None else None


class PipelineWriter(RespConnection):
    """Pipelined commands with counted replies; open with `PipelineWriter.open`."""

    def __init__(
        self,
        endpoint: Endpoint,
        *,
        max_pending_replies: int = DEFAULT_MAX_PENDING_REPLIES,
        write_chunk_bytes: int = DEFAULT_WRITE_CHUNK_BYTES,
        reply_timeout_s: float = DEFAULT_REPLY_TIMEOUT_S,
    ) -> None:
        super().__init__(endpoint, reply_timeout_s=reply_timeout_s)
        if max_pending_replies < 2 or write_chunk_bytes < 1:
            raise ValueError("max_pending_replies must be >= 2 and write_chunk_bytes >= 1")
        self.max_pending_replies = max_pending_replies
        self.write_chunk_bytes = write_chunk_bytes
        self._out: list[bytes] = []
        self._out_bytes = 0
        self._sent = 0  # replies owed for everything sent so far
        self._received = 0  # replies read so far
        self._expect: deque[_Expect] = deque()
        self._calls = 0  # entries in _expect that want reply values (execute)
        self._failures: list[tuple[int, ReplyFailure]] = []
        """Error replies not yet raised or confirmed, with their ordinal (in reply order)."""
        self._failures_dropped = 0
        self._reply_waiters: list[tuple[int, asyncio.Future[None]]] = []

    @classmethod
    async def open(cls, config: RedisConfig, **options: Any) -> PipelineWriter:
        """Connect, AUTH and SELECT per *config*; RedisUnavailableError says why not.

        *options* are the constructor's keyword arguments (bounds and deadline).
        """
        return await cls._connect(Endpoint.from_config(config), **options)

    # -- sending -------------------------------------------------------------------

    def send(self, data: bytes, replies: int = 1, tag: object = None) -> None:
        """Queue *data*, one or more packed commands owing *replies* replies.

        *tag* comes back in `ReplyFailure.tag` if one of them fails (with the reply's
        index within this send). Untagged sends are tracked together, cheaply.
        """
        if self._lost is not None:
            raise self._lost
        start = self._sent
        self._sent = end = start + replies
        expect = self._expect
        if tag is None and expect and (last := expect[-1]).tag is None and last.future is None:
            last.end = end
        else:
            expect.append(_Expect(start, end, tag, None))
        self._out.append(data)
        self._out_bytes += len(data)
        if self._out_bytes >= self.write_chunk_bytes:
            self._write_out()

    def send_parts(self, parts: list[bytes], replies: int, tag: object = None) -> None:
        """`send` of ``b"".join(parts)`` (as built by `FeedCommands.append_*`)."""
        self.send(b"".join(parts), replies, tag)

    def _write_out(self) -> None:
        if self._out:
            data = self._out[0] if len(self._out) == 1 else b"".join(self._out)
            self._out.clear()
            self._out_bytes = 0
            self._write(data)

    async def drain(self) -> None:
        """Write what is buffered; wait while the socket or the reply window is full.

        Raises CommandError for error replies read since the last drain or flush, and
        ConnectionLostError once the connection is gone.
        """
        if self._lost is not None:
            raise self._lost
        self._write_out()
        self._raise_failures()
        if self._write_paused:
            await self._wait_writable()
        if self._sent - self._received > self.max_pending_replies:
            await self._wait_received(self._sent - self.max_pending_replies // 2, "replies")
        self._raise_failures()

    async def push(self) -> None:
        """`drain` without raising error replies: they stay kept for `confirm`."""
        if self._lost is not None:
            raise self._lost
        self._write_out()
        if self._write_paused:
            await self._wait_writable()
        if self._sent - self._received > self.max_pending_replies:
            await self._wait_received(self._sent - self.max_pending_replies // 2, "replies")

    @property
    def sent(self) -> int:
        """Replies owed for everything sent so far: the mark `confirm` waits for."""
        return self._sent

    async def confirm(self, mark: int) -> tuple[ReplyFailure, ...]:
        """Wait for the replies of everything sent up to *mark* (a past `sent`); return,
        and forget, the error replies among them.

        Raises ConnectionLostError if the connection went before those replies came
        (the commands may or may not have been applied; replies that did come still
        count), and CommandError if more error replies came than are kept (they cannot
        be told apart by mark).
        """
        if self._received < mark:
            if self._lost is not None:
                raise self._lost
            self._write_out()
            await self._wait_received(mark, "confirm")
        if self._failures_dropped:
            self._raise_failures()
        failures = self._failures
        count = 0
        while count < len(failures) and failures[count][0] < mark:
            count += 1
        if not count:
            return ()
        taken = tuple(failure for _, failure in failures[:count])
        del failures[:count]
        return taken

    async def flush(self) -> None:
        """`drain`, then wait until every command sent so far has its reply."""
        if self._lost is not None:
            raise self._lost
        self._write_out()
        if self._received < self._sent:
            await self._wait_received(self._sent, "flush")
        self._raise_failures()

    async def execute(self, *args: Arg) -> Any:
        """Send one command and return its reply (after everything sent before it).

        For setup and tests, not the hot path. Raises CommandError on an error reply.
        """
        if self._lost is not None:
            raise self._lost
        future: asyncio.Future[Any] = self._loop.create_future()
        start = self._sent
        self._sent += 1
        self._expect.append(_Expect(start, self._sent, None, future))
        self._calls += 1
        self._out.append(pack_command(*args))
        self._write_out()
        return await self._wait(future, args[0] if isinstance(args[0], str) else "command")

    @property
    def pending_replies(self) -> int:
        """Replies owed by Redis for commands sent so far."""
        return self._sent - self._received

    # -- receiving -----------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        if not self._ready:
            self._setup_data_received(data)
            return
        reader = self._reader
        for _ in fed(reader, data):
            if self._calls:
                self._settle_each(reader.gets)
            else:
                self._count(reader.gets)
            if self._lost is not None:
                return
        if self._reply_waiters:
            self._wake_reply_waiters()

    def _count(self, gets: Any) -> None:
        """Fast path while no `execute` waits: count replies, keep the errors."""
        received = self._received
        errors: list[tuple[int, ErrorReply]] | None = None
        while (reply := gets()) is not False:
            if type(reply) is ErrorReply:
                if errors is None:
                    errors = []
                errors.append((received, reply))
            received += 1
        if received > self._sent:
            self._protocol_error(received)
            return
        if errors:
            self._record_errors(errors)
        self._received = received
        expect = self._expect
        while expect and expect[0].end <= received:
            expect.popleft()

    def _settle_each(self, gets: Any) -> None:
        """Slow path while an `execute` waits for its value: one reply at a time."""
        expect = self._expect
        while (reply := gets()) is not False:
            if not expect:
                self._protocol_error(self._received + 1)
                return
            head = expect[0]
            if head.values is not None:
                head.values.append(reply)
            elif type(reply) is ErrorReply:
                self._record_errors([(self._received, reply)])
            self._received += 1
            if self._received >= head.end:
                expect.popleft()
                if head.future is not None:
                    self._calls -= 1
                    self._resolve(head)

    def _resolve(self, entry: _Expect) -> None:
        assert entry.future is not None and entry.values is not None
        if entry.future.done():  # its caller gave up (timeout, cancel)
            return
        value = entry.values[0]
        if isinstance(value, ErrorReply):
            failure = ReplyFailure(entry.tag, 0, str(value))
            entry.future.set_exception(CommandError((failure,)))
        else:
            entry.future.set_result(value)

    def _record_errors(self, errors: list[tuple[int, ErrorReply]]) -> None:
        for ordinal, reply in errors:
            if len(self._failures) >= MAX_FAILURES_KEPT:
                self._failures_dropped += 1
                continue
            for entry in self._expect:
                if entry.start <= ordinal < entry.end:
                    failure = ReplyFailure(entry.tag, ordinal - entry.start, str(reply))
                    self._failures.append((ordinal, failure))
                    break

    def _raise_failures(self) -> None:
        if self._failures:
            failures = tuple(failure for _, failure in self._failures)
            dropped = self._failures_dropped
            self._failures.clear()
            self._failures_dropped = 0
            raise CommandError(failures, dropped)

    def _protocol_error(self, received: int) -> None:
        self._fail(
            ConnectionLostError(
                f"Redis at {self.endpoint.display} sent {received - self._sent} reply(ies) "
                "no command asked for; connection dropped",
                unconfirmed=self._unconfirmed(),
            )
        )

    async def _wait_received(self, target: int, what: str) -> None:
        if self._lost is not None:
            raise self._lost
        waiter: asyncio.Future[None] = self._loop.create_future()
        self._reply_waiters.append((target, waiter))
        try:
            await self._wait(waiter, what)
        finally:
            self._reply_waiters = [(t, w) for t, w in self._reply_waiters if w is not waiter]

    def _wake_reply_waiters(self) -> None:
        for target, waiter in self._reply_waiters:
            if self._received >= target and not waiter.done():
                waiter.set_result(None)

    # -- loss ----------------------------------------------------------------------

    def _unconfirmed(self) -> int:
        return self._sent - self._received

    def _on_lost(self, error: ConnectionLostError) -> None:
        for entry in self._expect:
            if entry.future is not None and not entry.future.done():
                entry.future.set_exception(error)
        self._expect.clear()
        self._calls = 0
        for _, waiter in self._reply_waiters:
            if not waiter.done():
                waiter.set_exception(error)
