"""The base of the fast RESP transport: one asyncio.Protocol socket parsed by hiredis.

`RespConnection` dials an `Endpoint` (TCP, TLS or unix socket), runs the setup
handshake (AUTH, SELECT, PING) and keeps what every connection needs: write flow
control (`pause_writing`/`resume_writing`), loss detection and deadlines on waits.
Subclasses (`PipelineWriter`, `SubscriberConnection`) handle replies once ready.

Errors: failing to connect or log in raises `RedisUnavailableError` (as
`marketbus.shared.connection.connect` does); losing an open connection raises
`ConnectionLostError` (a redis-py ``ConnectionError``) from every later call.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator
from typing import Any, TypeVar, cast

import hiredis

from marketbus.shared.errors import ConnectionLostError, RedisUnavailableError, ReplyTimeoutError
from marketbus.shared.transport.endpoint import Endpoint

DEFAULT_REPLY_TIMEOUT_S = 10.0
FEED_SLICE_BYTES = 8192
"""hiredis moves its unread bytes to the front of its buffer each time it has consumed
1 KB, so one 256 KB socket read fed at once costs a quadratic amount of copying (0.7 us
per 300 B message, more than parsing it). Fed 8 KB at a time, each move is small: 0.27
us per message (measured; 4-16 KB all do as well)."""
_AUTH_ERRORS = ("WRONGPASS", "NOAUTH", "NOPERM", "ERR invalid password", "ERR AUTH")

C = TypeVar("C", bound="RespConnection")


def fed(reader: hiredis.Reader, data: bytes) -> Iterator[None]:
    """Feed *data* to *reader* a slice at a time (`FEED_SLICE_BYTES`): the caller reads
    the replies (``reader.gets()``) after each slice, i.e. in each iteration."""
    size = len(data)
    for offset in range(0, size, FEED_SLICE_BYTES):
        reader.feed(data, offset, min(FEED_SLICE_BYTES, size - offset))
        yield


class ErrorReply(Exception):
    """An error reply ("-ERR ...") as parsed by hiredis: returned as a value, never raised."""


class RespConnection(asyncio.Protocol):
    """One Redis connection owned by one asyncio loop. Not thread-safe."""

    def __init__(self, endpoint: Endpoint, *, reply_timeout_s: float = DEFAULT_REPLY_TIMEOUT_S):
        if reply_timeout_s <= 0:
            raise ValueError("reply_timeout_s must be positive")
        self.endpoint = endpoint
        self.reply_timeout_s = reply_timeout_s
        self._loop = asyncio.get_running_loop()
        self._reader = hiredis.Reader(replyError=ErrorReply)
        self._transport: asyncio.Transport | None = None
        self._ready = False
        self._closing = False
        self._lost: ConnectionLostError | None = None
        self._closed: asyncio.Future[None] = self._loop.create_future()
        self._write_paused = False
        self._writable: asyncio.Future[None] | None = None
        self._setup_expected = 0
        self._setup_replies: list[Any] = []
        self._setup_done: asyncio.Future[list[Any]] | None = None

    # -- opening -------------------------------------------------------------------

    @classmethod
    async def _connect(cls: type[C], endpoint: Endpoint, **options: Any) -> C:
        """Dial, log in and select the db within ``endpoint.connect_timeout_s``."""
        self = cls(endpoint, **options)
        commands = endpoint.handshake()
        try:
            async with asyncio.timeout(endpoint.connect_timeout_s):
                if endpoint.path is not None:
                    await self._loop.create_unix_connection(
                        lambda: self, endpoint.path, ssl=endpoint.ssl_context
                    )
                else:
                    assert endpoint.host is not None
                    await self._loop.create_connection(
                        lambda: self,
                        endpoint.host,
                        endpoint.port,
                        ssl=endpoint.ssl_context,
                        server_hostname=endpoint.host if endpoint.ssl_context else None,
                    )
                replies = await self._setup(endpoint.handshake_bytes(), len(commands))
        except TimeoutError:
            self._abort()
            raise RedisUnavailableError(
                f"cannot reach Redis at {endpoint.display}: no answer within "
                f"{endpoint.connect_timeout_s}s"
            ) from None
        except (OSError, ConnectionLostError) as exc:
            self._abort()
            raise RedisUnavailableError(
                f"cannot reach Redis at {endpoint.display}: {exc}. Is redis-server running "
                "and is redis.url (or --redis) right?"
            ) from None
        for command, reply in zip(commands, replies, strict=True):
            if isinstance(reply, ErrorReply):
                self._abort()
                text = str(reply)
                if text.startswith(_AUTH_ERRORS):
                    raise RedisUnavailableError(
                        f"Redis at {endpoint.display} refused the credentials: {text}"
                    )
                raise RedisUnavailableError(
                    f"Redis at {endpoint.display} refused {command[0]}: {text}"
                )
        self._ready = True
        return self

    async def _setup(self, request: bytes, expected: int) -> list[Any]:
        self._setup_expected = expected
        self._setup_done = self._loop.create_future()
        self._write(request)
        return await self._setup_done

    def _setup_data_received(self, data: bytes) -> None:
        for _ in fed(self._reader, data):
            while (reply := self._reader.gets()) is not False:
                self._setup_replies.append(reply)
        done = self._setup_done
        if len(self._setup_replies) >= self._setup_expected and done and not done.done():
            done.set_result(self._setup_replies)

    # -- asyncio.Protocol ----------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self._transport = cast(asyncio.Transport, transport)
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            # Detects a peer that vanished without FIN/RST on idle connections.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)

    def data_received(self, data: bytes) -> None:
        self._setup_data_received(data)

    def eof_received(self) -> bool | None:
        return None  # close the transport: Redis never half-closes on purpose

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        waiter, self._writable = self._writable, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._lost is None:
            reason = f": {exc}" if exc else ""
            what = "closed" if self._closing else "lost"
            self._lost = ConnectionLostError(
                f"connection to Redis at {self.endpoint.display} {what}{reason}",
                unconfirmed=self._unconfirmed(),
            )
        self._transport = None
        self._on_lost(self._lost)
        for waiter in (self._writable, self._setup_done):
            if waiter is not None and not waiter.done():
                waiter.set_exception(self._lost)
        if not self._closed.done():
            self._closed.set_result(None)

    # -- for subclasses ------------------------------------------------------------

    def _unconfirmed(self) -> int:
        """How many written commands had no reply yet (reported on loss)."""
        return 0

    def _on_lost(self, error: ConnectionLostError) -> None:
        """Fail whatever the subclass has waiting; called once, from connection_lost."""

    def _write(self, data: bytes) -> None:
        if self._lost is not None:
            raise self._lost
        assert self._transport is not None
        self._transport.write(data)

    async def _wait(self, waiter: asyncio.Future[Any], what: str) -> Any:
        """Await *waiter* for at most ``reply_timeout_s``; on timeout drop the connection.

        A server that stops answering would otherwise hold every caller forever.
        """
        try:
            async with asyncio.timeout(self.reply_timeout_s):
                return await waiter
        except TimeoutError:
            self._fail(
                ReplyTimeoutError(
                    f"Redis at {self.endpoint.display} did not answer ({what}) within "
                    f"{self.reply_timeout_s}s; connection dropped",
                    unconfirmed=self._unconfirmed(),
                )
            )
            assert self._lost is not None
            raise self._lost from None

    async def _wait_writable(self) -> None:
        """Block while the socket buffer is over asyncio's high-water mark."""
        if not self._write_paused:
            return
        if self._writable is None:
            self._writable = self._loop.create_future()
        await self._wait(self._writable, "socket not writable")

    def _fail(self, error: ConnectionLostError) -> None:
        """Record *error* as the reason and drop the connection."""
        if self._lost is None:
            self._lost = error
        self._abort()

    def _abort(self) -> None:
        if self._transport is not None:
            self._transport.abort()
        elif not self._closed.done():
            # Never connected: nothing will call connection_lost.
            self._closed.set_result(None)

    # -- public --------------------------------------------------------------------

    @property
    def is_connected(self) -> bool:
        """True until the connection is closed or lost."""
        return self._lost is None and self._transport is not None

    @property
    def write_paused(self) -> bool:
        """True while the socket's send buffer is above its high-water mark (writes wait)."""
        return self._write_paused

    @property
    def socket_transport(self) -> asyncio.Transport | None:
        """The asyncio transport under this connection (None before it is made)."""
        return self._transport

    async def aclose(self) -> None:
        """Close the connection (unsent data is flushed by the transport) and wait."""
        self._closing = True
        if self._transport is not None:
            self._transport.close()
        try:
            async with asyncio.timeout(self.reply_timeout_s):
                await asyncio.shield(self._closed)
        except TimeoutError:
            self._abort()
