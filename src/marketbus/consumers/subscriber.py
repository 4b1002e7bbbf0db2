"""`Subscriber`: the asyncio shell around the `Engine`: it wires the parts, runs their
tasks under a `Supervisor` (one that fails stops the subscriber, and the error is
raised from the next ``await`` on it) and holds the public API. The tasks: `ReadLoop`
(pub/sub to the engine) and its health ticker, the `StreamReader` fetch workers, the
`ArchiveReader` worker, one task per queued listener (`Listeners`)."""

from __future__ import annotations

import asyncio
import contextlib
import fnmatch
import logging
import time
from collections.abc import AsyncIterator, Iterable
from typing import Unpack

import msgspec

from marketbus.consumers.buffers import BookState, Candle, CandleBuffer, TickerState, TradeBuffer
from marketbus.consumers.catalog import read_catalog, requested, select
from marketbus.consumers.engine import B, Buffer, BufferSizes, Engine
from marketbus.consumers.events import Event, Gap, Stats
from marketbus.consumers.history import ArchiveReader, check_archive
from marketbus.consumers.listeners import (
    GapCallback,
    Listener,
    Listeners,
    MessageCallback,
    StaleCallback,
)
from marketbus.consumers.options import (
    DeliveryMode,
    ErrorPolicy,
    OptionKeywords,
    SubscriberOptions,
    resolve_options,
    with_sizes,
)
from marketbus.consumers.read_loop import ReadLoop, Redis, open_connections
from marketbus.consumers.sequencing import Position
from marketbus.consumers.stop_notice import StopNotice
from marketbus.consumers.streams import StreamReader
from marketbus.consumers.supervisor import Supervisor
from marketbus.consumers.transport import TRANSIENT_ERRORS, Transport
from marketbus.shared.cluster import has_sharded_pubsub
from marketbus.shared.config import RedisConfig
from marketbus.shared.names import feed_name, ohlcv_kind
from marketbus.shared.schema import Ticker, Trade
from marketbus.shared.urls import redact

log = logging.getLogger("marketbus.consumers")


class Subscriber:
    """Follows feeds on the bus and keeps their buffers warm and gap-free.

    ::

        async with Subscriber("redis://localhost:6379/0") as sub:
            await sub.subscribe(exchange="binance", symbol="BTC/USDT", kind="ohlcv.1m")
            candles = sub.candles("binance", "BTC/USDT", "1m")

    *redis* is a URL or a `RedisConfig` (whose namespace is used unless *namespace*
    is given). With ``RedisConfig(cluster=True)`` the URL is one node of a Redis
    Cluster, read with sharded pub/sub (SSUBSCRIBE, Redis 7+; ConfigError at `start`
    without it). How it runs is a `SubscriberOptions`, given as *options* and/or as
    keyword arguments of the same names, which win (*candles*/*trades* are shortcuts
    into *sizes*); a bad option is a ConfigError naming it. *on_message*, *on_gap*
    and *on_stale* register a listener as `on_message` does, with the subscriber's
    *on_error* and *delivery*.
    """

    def __init__(
        self,
        redis: str | RedisConfig = "redis://127.0.0.1:6379/0",
        *,
        options: SubscriberOptions | None = None,
        on_message: MessageCallback | None = None,
        on_gap: GapCallback | None = None,
        on_stale: StaleCallback | None = None,
        **keywords: Unpack[OptionKeywords],
    ) -> None:
        self._config = redis if isinstance(redis, RedisConfig) else RedisConfig(url=redis)
        self._options = opts = resolve_options(options, keywords)
        self.namespace = opts.namespace or self._config.namespace
        self.sizes = opts.sizes
        self._engine = engine = Engine(
            max_run_ahead_s=opts.max_run_ahead_s,
            max_pattern_feeds=opts.max_pattern_feeds,
            fill_older=opts.archive is not None,
        )
        self._progress = asyncio.Event()
        self._archive = ArchiveReader(engine, opts.archive, on_progress=self._progress.set)
        progress = self._archive.on_stream_read  # queues archive reads, then sets _progress
        self._streams = StreamReader(engine, opts.backoff, on_progress=progress)
        self._reader = ReadLoop(engine, self._streams, backoff=opts.backoff, poll_s=opts.poll_s)
        self._supervisor = Supervisor(
            "marketbus-subscriber", on_failure=self._failed, shutdown=self._shutdown
        )
        self._listeners = Listeners(
            engine, max_pending=opts.max_pending, stop=self._supervisor.fail
        )
        self._redis: Redis | None = None
        self._transport: Transport | None = None
        self._started = False
        self._stop_notice = StopNotice()
        if on_message or on_gap or on_stale:
            self._add_listener(Listener.make(on_message, on_gap, on_stale, defaults=opts))

    @property
    def options(self) -> SubscriberOptions:
        """The options this subscriber runs with (validated)."""
        return self._options

    @property
    def connected(self) -> bool:
        """True while the pub/sub connection is up."""
        return self._reader.connected

    # -- lifecycle ---------------------------------------------------------------------

    async def __aenter__(self) -> Subscriber:
        await self.start()
        return self

    async def __aexit__(self, kind: object, exc: BaseException | None, tb: object) -> None:
        await self.close()
        if exc is None:
            self._supervisor.raise_if_failed()

    async def start(self) -> None:
        """Connect to Redis (RedisUnavailableError says why not) and start the tasks.

        In cluster mode, ConfigError if the servers lack sharded pub/sub (Redis < 7).
        """
        if self._started:
            return
        self._started = True
        try:
            self._redis, self._transport = await open_connections(
                self._config,
                self._options,
                self.namespace,
                self._reader,
                has_sharded_pubsub=has_sharded_pubsub,  # looked up here: tests stand in
            )
        except BaseException:
            self._started = False
            raise
        self._reader.attach(self._transport)
        self._streams.attach(self._redis)
        spawn = self._supervisor.spawn
        spawn(self._reader.run(), "read-loop")
        for i in range(self._options.fetch_workers):
            spawn(self._streams.worker(), f"fetch-{i}")
        spawn(self._reader.tick_health(), "health")
        if self._archive.enabled:
            spawn(self._archive.worker(), "archive")
        self._listeners.start(self._streams.read_back, spawn)
        mode = "cluster, sharded" if self._config.cluster else self._options.transport
        url = redact(self._config.url)
        log.info("subscriber connected to %s (ns %s, %s pub/sub)", url, self.namespace, mode)

    async def close(self) -> None:
        """Stop every task and close the connections; idempotent (waits for a shutdown
        under way, e.g. the one a failure started)."""
        await self._supervisor.close()

    async def _shutdown(self) -> None:
        await self._supervisor.cancel_all()
        self._listeners.close()
        if self._supervisor.failure is None:
            self._engine.on_stopped("subscriber closed")
        else:
            await self._stop_notice.deliver()
        await self._reader.close()
        if self._redis is not None:
            with contextlib.suppress(*TRANSIENT_ERRORS):
                await self._redis.aclose()

    def _failed(self, exc: BaseException) -> None:
        self._progress.set()  # whoever waits wakes up and raises it
        reason = f"subscriber stopped: {type(exc).__name__}: {exc}"
        self._stop_notice.record(self._engine.on_stopped(reason))  # inline: told now
        self._listeners.close()

    def _add_listener(self, listener: Listener) -> None:
        self._stop_notice.add(listener)
        self._listeners.add(listener)

    def _open(self) -> tuple[Transport, Redis]:
        """The pub/sub transport and the command client; SubscriberClosedError if not
        started, failed or closed."""
        self._supervisor.check_open(self._started)
        assert self._transport is not None and self._redis is not None
        return self._transport, self._redis

    # -- subscribing -------------------------------------------------------------------

    async def subscribe(
        self,
        *feeds: str,
        exchange: str | None = None,
        symbol: str | None = None,
        kind: str | None = None,
        timeframe: str | None = None,
        sizes: BufferSizes | None = None,
        candles: int | None = None,
        trades: int | None = None,
        wait: bool = True,
    ) -> list[str]:
        """Follow feeds given by name and/or by ``exchange``, ``symbol`` and ``kind``
        (``kind="ohlcv.1m"``, or ``timeframe="1m"``). Returns the feed names.

        With *wait* (default) returns once their buffers are backfilled; TimeoutError
        after ``ready_timeout_s``. Raises FeedNameError for a malformed name.
        """
        transport, _ = self._open()
        names = requested(
            self.namespace, feeds, exchange=exchange, symbol=symbol, kind=kind, timeframe=timeframe
        )
        feed_sizes = with_sizes(sizes or self.sizes, candles=candles, trades=trades)
        await transport.subscribe(self._engine.follow(names, feed_sizes))
        if wait:
            await self.ready(names)
        return names

    async def subscribe_pattern(
        self,
        pattern: str,
        *,
        sizes: BufferSizes | None = None,
        candles: int | None = None,
        trades: int | None = None,
        discover: bool = True,
        wait: bool = True,
    ) -> list[str]:
        """Follow every feed whose name matches the glob *pattern* (``md:binance:*``).

        Feeds are discovered as their first message arrives, and each is backfilled
        then. With *discover*, feeds listed in the catalog ``{ns}:feeds`` that match
        are backfilled right away; with *wait* (default) this returns once they are,
        so what arrives afterwards reaches listeners as live data, not as history.
        Returns the feeds known so far.
        """
        transport, redis = self._open()
        engine = self._engine
        engine.add_pattern(pattern, with_sizes(sizes or self.sizes, candles=candles, trades=trades))
        await transport.psubscribe([pattern])
        if discover:
            found = engine.adopt(await read_catalog(redis, self.namespace), pattern)
            self._streams.pump()
            await self._reader.subscribe_requested()
            if wait and found:
                await self.ready(found)
        return [n for n in engine.feeds if fnmatch.fnmatchcase(n, pattern)]

    async def discover(
        self,
        *,
        exchange: str | None = None,
        kind: str | None = None,
        symbol: str | None = None,
        sizes: BufferSizes | None = None,
        wait: bool = True,
    ) -> list[str]:
        """Subscribe to the feeds the catalog ``{ns}:feeds`` lists, optionally filtered."""
        _, redis = self._open()
        listed = await read_catalog(redis, self.namespace)
        names = select(listed, exchange=exchange, kind=kind, symbol=symbol)
        if names:
            await self.subscribe(*names, sizes=sizes, wait=wait)
        return names

    async def unsubscribe(self, *feeds: str) -> None:
        """Stop following *feeds* and drop their buffers (a pattern of
        `subscribe_pattern` does not bring them back; `subscribe` does).

        The exchange's status channel is dropped with its last feed.
        """
        transport, _ = self._open()
        await transport.unsubscribe(self._engine.drop(feeds))

    async def ready(
        self, feeds: Iterable[str] | None = None, timeout_s: float | None = None
    ) -> None:
        """Wait until *feeds* (default: all) have their first backfill applied."""
        names = list(self._engine.feeds) if feeds is None else list(feeds)
        limit = self._options.ready_timeout_s if timeout_s is None else timeout_s
        deadline = time.monotonic() + limit
        while True:
            self._open()
            waiting = [n for n in names if not self._engine.state_of(n).ready]
            if not waiting:
                return
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"feeds not backfilled in time: {', '.join(waiting[:5])}")
            self._progress.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._progress.wait(), remaining)

    async def history(self, feed: str, start_ms: int, end_ms: int) -> list[Candle] | list[Trade]:
        """Closed candles (the last value per open time) or trades of *feed* with time in
        ``[start_ms, end_ms)`` (candles by open time), from the archive then the stream,
        each once, in time order. ConfigError without ``archive`` or pyarrow."""
        check_archive(self._options.archive)
        _, redis = self._open()
        return await self._archive.history(redis, feed, start_ms, end_ms)

    # -- reading state -----------------------------------------------------------------

    def buffer(self, feed: str) -> Buffer:
        """The buffer of *feed* by name (None for a status channel). This and every data
        accessor raise SubscriberFailedError (from the error) once the subscriber failed."""
        self._supervisor.raise_if_failed()
        return self._engine.state_of(feed).buffer

    def candles(self, exchange: str, symbol: str, timeframe: str = "1m") -> CandleBuffer:
        """The candle buffer of ``{ns}:{exchange}:ohlcv.{timeframe}:{symbol}``."""
        return self._buffer(exchange, ohlcv_kind(timeframe), symbol, CandleBuffer)

    def trades(self, exchange: str, symbol: str) -> TradeBuffer:
        return self._buffer(exchange, "trades", symbol, TradeBuffer)

    def book(self, exchange: str, symbol: str) -> BookState:
        return self._buffer(exchange, "book", symbol, BookState)

    def ticker(self, exchange: str, symbol: str) -> Ticker | None:
        """The latest ticker (None before the first one)."""
        return self.ticker_state(exchange, symbol).latest

    def ticker_state(self, exchange: str, symbol: str) -> TickerState:
        return self._buffer(exchange, "ticker", symbol, TickerState)

    def _buffer(self, exchange: str, kind: str, symbol: str, of: type[B]) -> B:
        self._supervisor.raise_if_failed()
        return self._engine.buffer_of(feed_name(self.namespace, exchange, kind, symbol), of)

    def is_stale(self, feed: str) -> bool:
        """True when *feed* is quiet (evaluated now), its producer reported trouble, or
        this subscriber is disconnected (until the feed resynced), failed or closed."""
        return self._engine.is_stale(feed)

    def stale_reason(self, feed: str) -> str:
        """Why *feed* is stale ('' when fresh); see docs/consumer.md "Staleness"."""
        self._engine.is_stale(feed)
        return self._engine.state_of(feed).health.reason

    def position(self, feed: str) -> Position | None:
        """``(run, seq)`` of the last message applied to *feed*."""
        self._supervisor.raise_if_failed()
        return self._engine.state_of(feed).last

    @property
    def feeds(self) -> list[str]:
        """Feeds followed (status channels excluded)."""
        return [n for n, s in self._engine.feeds.items() if s.kind != "status"]

    @property
    def stats(self) -> Stats:
        """A copy of the counters."""
        return msgspec.structs.replace(self._engine.stats)

    @property
    def gaps(self) -> list[Gap]:
        """The most recent gap events (up to 1000), oldest first."""
        return list(self._engine.recent_gaps)

    # -- listeners ---------------------------------------------------------------------

    def on_message(
        self,
        callback: MessageCallback | None = None,
        *,
        on_gap: GapCallback | None = None,
        on_stale: StaleCallback | None = None,
        feeds: Iterable[str] | None = None,
        on_error: ErrorPolicy | None = None,
        delivery: DeliveryMode | None = None,
    ) -> None:
        """Call *callback* for every applied update (optionally of *feeds* only), and
        *on_gap* / *on_stale* for events.

        *on_error* (default: the subscriber's) says what an exception from these
        callbacks does: ``"raise"`` stops the subscriber, ``"log"`` logs and counts it.
        *delivery* (default: the subscriber's, see `DeliveryMode`): ``"queued"`` runs
        them in their own task at their own pace; ``"inline"`` calls them, plain
        functions only, from the read path as each update is applied (ConfigError for
        a coroutine function).
        """
        listener = Listener.make(
            callback,
            on_gap,
            on_stale,
            defaults=self._options,
            feeds=feeds,
            on_error=on_error,
            delivery=delivery,
        )
        if self._started:
            self._open()
        self._add_listener(listener)

    def on_gap(self, callback: GapCallback) -> None:
        self.on_message(None, on_gap=callback)

    def on_stale(self, callback: StaleCallback) -> None:
        self.on_message(None, on_stale=callback)

    async def events(self, feeds: Iterable[str] | None = None) -> AsyncIterator[Event]:
        """Updates and events from now on (of *feeds* only, if given).

        Ends when the subscriber closes; raises SubscriberClosedError if it failed.
        """
        self._open()
        mailbox = self._listeners.open_mailbox(frozenset(feeds) if feeds is not None else None)
        try:
            while True:
                item = await mailbox.get()
                if item is None:
                    self._supervisor.raise_if_failed()
                    return
                yield item
        finally:
            self._listeners.close_mailbox(mailbox)

    def __aiter__(self) -> AsyncIterator[Event]:
        return self.events()
