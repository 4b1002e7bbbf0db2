"""`Subscriber`: the asyncio shell around the `Engine`. It only moves bytes.

Tasks, each supervised (one that fails stops the subscriber, and the error is raised
from the next ``await`` on it, never lost):

- the read loop: keeps the pub/sub transport connected; on a connection error it
  retries with capped, jittered exponential backoff. The transport hands what it reads
  to the `Engine` (decode/apply, in batches; `_EngineSink`). It is
  `FastPubSubTransport` (SUBSCRIBE/PSUBSCRIBE on one server, messages applied straight
  from the socket handler), `PubSubTransport` with ``transport="redis-py"``, or, with
  ``RedisConfig.cluster``, `ShardedPubSubTransport` (SSUBSCRIBE on a Redis Cluster,
  whose `RedisCluster` client then serves the stream and catalog reads too);
- fetch workers: the stream reads the engine asks for (backfill, repair, resume);
- the health ticker: staleness of quiet feeds;
- one task per queued callback listener, each behind its own `Mailbox`. Listeners
  registered with ``delivery="inline"`` have no task: `InlineListener` calls them from
  the read path itself (lower latency; a slow callback holds up the socket).
"""

from __future__ import annotations

import asyncio
import contextlib
import fnmatch
import inspect
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from types import TracebackType
from typing import Any, Literal, TypeAlias, TypeVar, cast

import msgspec
import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import ResponseError

from marketbus.consumers.buffers import BookState, CandleBuffer, TickerState, TradeBuffer
from marketbus.consumers.delivery import InlineListener, Mailbox, check_inline
from marketbus.consumers.engine import (
    Buffer,
    BufferSizes,
    Engine,
    FeedState,
    Fetch,
    Live,
    parse_channel,
)
from marketbus.consumers.events import Event, Gap, Staleness, Stats, Update
from marketbus.consumers.sequencing import Position
from marketbus.consumers.transport import (
    TRANSIENT_ERRORS,
    FastPubSubTransport,
    PubSubTransport,
    ShardedPubSubTransport,
    Transport,
)
from marketbus.shared.backoff import Backoff
from marketbus.shared.cluster import connect_cluster, has_sharded_pubsub
from marketbus.shared.codecs import decode, decode_feed_info
from marketbus.shared.config import RedisConfig
from marketbus.shared.connection import connect
from marketbus.shared.errors import (
    ConfigError,
    ContractError,
    NotSubscribedError,
    SubscriberClosedError,
)
from marketbus.shared.names import (
    catalog_key,
    entry_id,
    feed_name,
    ohlcv_kind,
    parse_entry_id,
    status_name,
)
from marketbus.shared.schema import Status, Ticker
from marketbus.shared.urls import redact

log = logging.getLogger("marketbus.consumers")

T = TypeVar("T")
MessageCallback: TypeAlias = Callable[[Update], Awaitable[None] | None]
GapCallback: TypeAlias = Callable[[Gap], Awaitable[None] | None]
StaleCallback: TypeAlias = Callable[[Staleness], Awaitable[None] | None]

ErrorPolicy: TypeAlias = Literal["raise", "log"]
"""What an exception from a listener's callback does: ``raise`` stops the subscriber
(the error is raised from the next ``await`` on it); ``log`` logs it, counts it in
``stats.callback_errors`` and goes on with the next update."""
ERROR_POLICIES = ("raise", "log")

DeliveryMode: TypeAlias = Literal["queued", "inline"]
"""How a callback listener is called: ``queued`` (default) from its own task behind a
`Mailbox`, at its own pace, with conflation and read-back when it falls behind; or
``inline``, plain functions only, called from the read path as each update is applied
(no task switch: the lowest latency; a slow callback holds up the socket)."""
DELIVERY_MODES = ("queued", "inline")

TransportKind: TypeAlias = Literal["fast", "redis-py"]
"""Pub/sub on one server: ``fast`` (`FastPubSubTransport`, the default) or ``redis-py``
(`PubSubTransport`). Cluster mode always uses `ShardedPubSubTransport`."""
TRANSPORTS = ("fast", "redis-py")

_Listener: TypeAlias = tuple[
    MessageCallback | None,
    GapCallback | None,
    StaleCallback | None,
    frozenset[str] | None,
    ErrorPolicy,
    DeliveryMode,
]
_LOG_EVERY = 1000
"""Callback errors under ``on_error="log"`` are logged on the 1st, 1001st, ... one."""
PAGE = 1000
"""Stream entries per XRANGE round trip."""


class Subscriber:
    """Follows feeds on the bus and keeps their buffers warm and gap-free.

    ::

        async with Subscriber("redis://localhost:6379/0") as sub:
            await sub.subscribe(exchange="binance", symbol="BTC/USDT", kind="ohlcv.1m")
            candles = sub.candles("binance", "BTC/USDT", "1m")

    *redis* is a URL or a `RedisConfig` (whose namespace is used unless *namespace*
    is given). With ``RedisConfig(cluster=True)`` the URL is one node of a Redis
    Cluster: feeds are read with sharded pub/sub (SSUBSCRIBE, Redis 7+; ConfigError
    at `start` without it) and patterns are expanded against the catalog every
    *rescan_s* seconds. Buffer sizes come from *sizes*, with *candles*/*trades* as
    shortcuts. Callbacks may be plain functions or coroutine functions; with
    *on_error* ``"raise"`` (default) one that raises stops the subscriber (the error
    is raised, chained, from the next ``await`` on it), with ``"log"`` the error is
    logged and counted (``stats.callback_errors``) and the listener goes on.
    *transport* picks the pub/sub client on one server (`TransportKind`).
    *delivery* is how callbacks are called by default (`DeliveryMode`): ``"queued"``,
    or ``"inline"`` for the lowest latency with quick, plain-function callbacks.
    """

    def __init__(
        self,
        redis: str | RedisConfig = "redis://127.0.0.1:6379/0",
        *,
        namespace: str | None = None,
        sizes: BufferSizes | None = None,
        candles: int | None = None,
        trades: int | None = None,
        on_message: MessageCallback | None = None,
        on_gap: GapCallback | None = None,
        on_stale: StaleCallback | None = None,
        max_pending: int = 100_000,
        backoff: Backoff | None = None,
        fetch_workers: int = 4,
        ready_timeout_s: float = 30.0,
        poll_s: float = 1.0,
        on_error: ErrorPolicy = "raise",
        rescan_s: float = 5.0,
        transport: TransportKind = "fast",
        delivery: DeliveryMode = "queued",
    ) -> None:
        self._config = redis if isinstance(redis, RedisConfig) else RedisConfig(url=redis)
        _check_policy(on_error)
        self._delivery = _check_delivery(delivery)
        if rescan_s <= 0:
            raise ConfigError(f"rescan_s must be positive, not {rescan_s!r}")
        _one_of("transport", transport, TRANSPORTS)
        self._transport_kind: TransportKind = transport
        self.namespace = namespace or self._config.namespace
        base = sizes or BufferSizes()
        overrides: dict[str, Any] = {}
        if candles is not None:
            overrides["candles"] = candles
        if trades is not None:
            overrides["trades"] = trades
        try:
            self.sizes = msgspec.convert(msgspec.structs.asdict(base) | overrides, BufferSizes)
        except msgspec.ValidationError as exc:
            raise ConfigError(f"buffer sizes: {exc}") from None
        self._engine = Engine()
        self._sink = _EngineSink(self._engine, self._after_frames)
        self._max_pending = max_pending
        self._backoff = backoff or Backoff()
        self._fetch_workers = fetch_workers
        self._ready_timeout_s = ready_timeout_s
        self._poll_s = poll_s
        self._on_error: ErrorPolicy = on_error
        self._rescan_s = rescan_s
        self._redis: aioredis.Redis | RedisCluster | None = None
        self._transport: Transport | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._fetch_pending: dict[str, Fetch] = {}
        self._fetch_inflight: set[str] = set()
        self._fetch_wakeup = asyncio.Event()
        self._progress = asyncio.Event()
        self._mailboxes: list[Mailbox] = []
        self._inline: list[InlineListener] = []
        self._failure: BaseException | None = None
        self._closed = False
        self._started = False
        self.connected = False
        """True while the pub/sub connection is up."""
        self._pending_listeners: list[_Listener] = []
        if on_message or on_gap or on_stale:
            entry = (on_message, on_gap, on_stale, None, on_error, self._delivery)
            _check_callbacks(entry)
            self._pending_listeners.append(entry)

    # -- lifecycle ---------------------------------------------------------------------

    async def __aenter__(self) -> Subscriber:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()
        if exc is None:
            self._raise_if_failed()

    async def start(self) -> None:
        """Connect to Redis (RedisUnavailableError says why not) and start the tasks.

        In cluster mode, ConfigError if the servers lack sharded pub/sub (Redis < 7).
        """
        if self._started:
            return
        self._started = True
        try:
            if self._config.cluster:
                self._redis, self._transport = await self._connect_cluster()
            else:
                self._redis = await connect(self._config)
                if self._transport_kind == "redis-py":
                    self._transport = PubSubTransport(self._redis, self._sink)
                else:
                    fast = FastPubSubTransport(self._config, self._sink)
                    self._transport = fast
                    await fast.connect()
        except BaseException:
            self._started = False
            self._transport = None
            if self._redis is not None:
                with contextlib.suppress(*TRANSIENT_ERRORS):
                    await self._redis.aclose()
                self._redis = None
            raise
        self.connected = True
        self._spawn(self._read_loop(), "read-loop")
        for i in range(self._fetch_workers):
            self._spawn(self._fetch_worker(), f"fetch-{i}")
        self._spawn(self._health_loop(), "health")
        for listener in self._pending_listeners:
            self._add_listener(*listener)
        self._pending_listeners = []
        log.info(
            "subscriber connected to %s (namespace %s%s)",
            redact(self._config.url),
            self.namespace,
            ", cluster, sharded pub/sub"
            if self._config.cluster
            else f", {self._transport_kind} pub/sub",
        )

    async def _connect_cluster(self) -> tuple[RedisCluster, ShardedPubSubTransport]:
        cluster = await connect_cluster(self._config)
        if not has_sharded_pubsub(cluster):
            await cluster.aclose()
            raise ConfigError(
                f"redis.cluster is set but the cluster at {redact(self._config.url)} has no "
                "sharded pub/sub (SSUBSCRIBE needs Redis 7 or later)"
            )
        transport = ShardedPubSubTransport(
            self._config,
            cluster,
            namespace=self.namespace,
            sink=self._sink,
            rescan_s=self._rescan_s,
        )
        return cluster, transport

    async def close(self) -> None:
        """Stop every task and close the connections; idempotent."""
        if self._closed:
            return
        self._closed = True
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=5.0)
            for task in pending:
                log.error("task %s did not stop within 5 s of being cancelled", task.get_name())
        for mailbox in self._mailboxes:
            mailbox.close()
        for listener in self._inline:
            listener.close()
        if self._transport is not None:
            with contextlib.suppress(*TRANSIENT_ERRORS):
                await self._transport.close()
        if self._redis is not None:
            with contextlib.suppress(*TRANSIENT_ERRORS):
                await self._redis.aclose()
        self.connected = False

    def _spawn(self, coro: Awaitable[None], name: str) -> asyncio.Task[None]:
        task: asyncio.Task[None] = asyncio.ensure_future(coro)
        task.set_name(f"marketbus-subscriber-{name}")
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if task.cancelled() or self._closed:
            return
        exc = task.exception()
        if exc is None:
            return
        log.error("subscriber task %s failed; stopping", task.get_name(), exc_info=exc)
        self._fail(exc)

    def _fail(self, exc: BaseException) -> None:
        if self._failure is None:
            self._failure = exc
        self._progress.set()
        for mailbox in self._mailboxes:
            mailbox.close()
        for listener in self._inline:
            listener.close()
        asyncio.get_running_loop().create_task(self.close())

    def _raise_if_failed(self) -> None:
        if self._failure is not None:
            raise SubscriberClosedError(
                f"subscriber stopped: {type(self._failure).__name__}: {self._failure}"
            ) from self._failure

    def _check_open(self) -> None:
        self._raise_if_failed()
        if self._closed:
            raise SubscriberClosedError("subscriber is closed")
        if not self._started:
            raise SubscriberClosedError("subscriber is not started: use 'async with' or start()")

    # -- subscribing -------------------------------------------------------------------

    def _sizes(
        self, sizes: BufferSizes | None, candles: int | None, trades: int | None
    ) -> BufferSizes:
        base = sizes or self.sizes
        overrides = {k: v for k, v in (("candles", candles), ("trades", trades)) if v is not None}
        if not overrides:
            return base
        try:
            return msgspec.convert(msgspec.structs.asdict(base) | overrides, BufferSizes)
        except msgspec.ValidationError as exc:
            raise ConfigError(f"buffer sizes: {exc}") from None

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
        self._check_open()
        names = list(feeds)
        if exchange is not None or symbol is not None or kind is not None or timeframe:
            if timeframe is not None:
                kind = ohlcv_kind(timeframe)
            if exchange is None or symbol is None or kind is None:
                raise ConfigError("subscribe: give exchange, symbol and kind (or timeframe)")
            names.append(feed_name(self.namespace, exchange, kind, symbol))
        if not names:
            raise ConfigError("subscribe: no feed given")
        feed_sizes = self._sizes(sizes, candles, trades)
        channels: list[str] = []
        for name in names:
            exch, _, _ = parse_channel(name)
            status = status_name(name.split(":", 1)[0], exch)
            for channel in (status, name):
                if channel not in self._engine.feeds:
                    self._engine.track(channel, feed_sizes)
                    channels.append(channel)
        assert self._transport is not None
        await self._transport.subscribe(channels)
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
        self._check_open()
        engine = self._engine
        engine.add_pattern(pattern, self._sizes(sizes, candles, trades))
        assert self._transport is not None
        await self._transport.psubscribe([pattern])
        if discover:
            found = []
            for name in await self._catalog():
                fresh = fnmatch.fnmatchcase(name, pattern) and name not in engine.feeds
                if fresh and engine.discover(name) is not None:
                    engine.resync(name)
                    found.append(name)
            self._pump()
            await self._subscribe_requested()
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
        self._check_open()
        names = []
        for name in await self._catalog():
            exch, _, _ = parse_channel(name)
            feed_kind, feed_symbol = name.split(":", 3)[2:]
            if (
                (exchange is None or exch == exchange)
                and (kind is None or feed_kind == kind)
                and (symbol is None or feed_symbol == symbol)
            ):
                names.append(name)
        if names:
            await self.subscribe(*names, sizes=sizes, wait=wait)
        return names

    async def _catalog(self) -> list[str]:
        assert self._redis is not None
        raw = await self._redis.hgetall(catalog_key(self.namespace))
        names = []
        for field, value in raw.items():
            name = field.decode() if isinstance(field, bytes) else field
            try:
                decode_feed_info(value)
                parse_channel(name)
            except ContractError as exc:
                log.warning("catalog entry %r skipped: %s", name, exc)
                continue
            names.append(name)
        return sorted(names)

    async def unsubscribe(self, *feeds: str) -> None:
        """Stop following *feeds* and drop their buffers (a pattern of
        `subscribe_pattern` does not bring them back; `subscribe` does).

        The exchange's status channel is dropped with its last feed.
        """
        self._check_open()
        assert self._transport is not None
        await self._transport.unsubscribe(self._engine.drop(feeds))

    async def ready(
        self, feeds: Iterable[str] | None = None, timeout_s: float | None = None
    ) -> None:
        """Wait until *feeds* (default: all) have their first backfill applied."""
        names = list(self._engine.feeds) if feeds is None else list(feeds)
        deadline = time.monotonic() + (self._ready_timeout_s if timeout_s is None else timeout_s)
        while True:
            self._check_open()
            waiting = [n for n in names if not self._state(n).ready]
            if not waiting:
                return
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"feeds not backfilled in time: {', '.join(waiting[:5])}")
            self._progress.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._progress.wait(), remaining)

    # -- reading state -----------------------------------------------------------------

    def _state(self, name: str) -> FeedState:
        state = self._engine.feeds.get(name)
        if state is None:
            raise NotSubscribedError(f"not subscribed to {name!r}")
        return state

    def _typed(self, name: str, kind: type[T]) -> T:
        buffer = self._state(name).buffer
        assert isinstance(buffer, kind)
        return buffer

    def buffer(self, feed: str) -> Buffer:
        """The buffer of *feed* by name (None for a status channel)."""
        return self._state(feed).buffer

    def candles(self, exchange: str, symbol: str, timeframe: str = "1m") -> CandleBuffer:
        """The candle buffer of ``{ns}:{exchange}:ohlcv.{timeframe}:{symbol}``."""
        name = feed_name(self.namespace, exchange, ohlcv_kind(timeframe), symbol)
        return self._typed(name, CandleBuffer)

    def trades(self, exchange: str, symbol: str) -> TradeBuffer:
        return self._typed(feed_name(self.namespace, exchange, "trades", symbol), TradeBuffer)

    def book(self, exchange: str, symbol: str) -> BookState:
        return self._typed(feed_name(self.namespace, exchange, "book", symbol), BookState)

    def ticker(self, exchange: str, symbol: str) -> Ticker | None:
        """The latest ticker (None before the first one)."""
        name = feed_name(self.namespace, exchange, "ticker", symbol)
        return self._typed(name, TickerState).latest

    def ticker_state(self, exchange: str, symbol: str) -> TickerState:
        return self._typed(feed_name(self.namespace, exchange, "ticker", symbol), TickerState)

    def is_stale(self, feed: str) -> bool:
        """True when *feed* is quiet beyond its threshold or its producer reported trouble."""
        return self._state(feed).health.stale

    def stale_reason(self, feed: str) -> str:
        return self._state(feed).health.reason

    def position(self, feed: str) -> Position | None:
        """``(run, seq)`` of the last message applied to *feed*."""
        return self._state(feed).last

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
        policy = self._on_error if on_error is None else _check_policy(on_error)
        mode = self._delivery if delivery is None else _check_delivery(delivery)
        entry: _Listener = (
            callback,
            on_gap,
            on_stale,
            frozenset(feeds) if feeds is not None else None,
            policy,
            mode,
        )
        _check_callbacks(entry)
        if not self._started:
            self._pending_listeners.append(entry)
        else:
            self._check_open()
            self._add_listener(*entry)

    def on_gap(self, callback: GapCallback) -> None:
        self.on_message(None, on_gap=callback)

    def on_stale(self, callback: StaleCallback) -> None:
        self.on_message(None, on_stale=callback)

    def _new_mailbox(self, feeds: frozenset[str] | None) -> Mailbox:
        mailbox = Mailbox(
            self._read_back, self._engine.stats, max_pending=self._max_pending, feeds=feeds
        )
        self._mailboxes.append(mailbox)
        self._engine.sinks.append(mailbox)
        return mailbox

    def _drop_mailbox(self, mailbox: Mailbox) -> None:
        if mailbox in self._mailboxes:
            self._mailboxes.remove(mailbox)
            self._engine.sinks.remove(mailbox)

    def _add_listener(
        self,
        on_message: MessageCallback | None,
        on_gap: GapCallback | None,
        on_stale: StaleCallback | None,
        feeds: frozenset[str] | None,
        on_error: ErrorPolicy,
        delivery: DeliveryMode,
    ) -> None:
        if delivery == "inline":
            failed = self._callback_failed if on_error == "log" else self._callback_raised
            listener = InlineListener(on_message, on_gap, on_stale, failed=failed, feeds=feeds)
            self._inline.append(listener)
            self._engine.sinks.append(listener)
            return
        mailbox = self._new_mailbox(feeds)
        self._spawn(self._run_listener(mailbox, on_message, on_gap, on_stale, on_error), "listener")

    async def _run_listener(
        self,
        mailbox: Mailbox,
        on_message: MessageCallback | None,
        on_gap: GapCallback | None,
        on_stale: StaleCallback | None,
        on_error: ErrorPolicy,
    ) -> None:
        keep_going = on_error == "log"
        get_nowait = mailbox.get_nowait
        while True:
            item = get_nowait()  # what is in memory, without a coroutine per item
            if item is None:
                item = await mailbox.get()  # waits, or reads back from a stream
                if item is None:
                    return
            try:
                result: Awaitable[None] | None = None
                if isinstance(item, Gap):
                    if on_gap is not None:
                        result = on_gap(item)
                elif isinstance(item, Staleness):
                    if on_stale is not None:
                        result = on_stale(item)
                elif on_message is not None:
                    result = on_message(item)
                if result is not None and inspect.isawaitable(result):
                    await result
            except Exception as exc:  # the strategy's own code: its policy decides
                if not keep_going:
                    raise
                self._callback_failed(item, exc)

    def _callback_raised(self, item: Event, exc: Exception) -> None:
        """An inline callback raised under ``on_error="raise"``: stop, as a failed
        listener task does (the error is raised from the next ``await``)."""
        if self._failure is None and not self._closed:
            log.error(
                "inline callback failed on a %s; stopping (on_error='raise')",
                type(item).__name__,
                exc_info=exc,
            )
            self._fail(exc)

    def _callback_failed(self, item: Event, exc: Exception) -> None:
        stats = self._engine.stats
        stats.callback_errors += 1
        if stats.callback_errors % _LOG_EVERY == 1:
            if isinstance(item, Gap | Staleness):
                feed = item.feed
            else:
                feed = f"{item.exchange} {item.symbol}"
            log.error(
                "callback failed on a %s of %s (%d callback error(s) so far; on_error='log' "
                "keeps the subscriber running)",
                type(item).__name__,
                feed,
                stats.callback_errors,
                exc_info=exc,
            )

    async def events(self, feeds: Iterable[str] | None = None) -> AsyncIterator[Event]:
        """Updates and events from now on (of *feeds* only, if given).

        Ends when the subscriber closes; raises SubscriberClosedError if it failed.
        """
        self._check_open()
        mailbox = self._new_mailbox(frozenset(feeds) if feeds is not None else None)
        try:
            while True:
                item = await mailbox.get()
                if item is None:
                    self._raise_if_failed()
                    return
                yield item
        finally:
            self._drop_mailbox(mailbox)

    def __aiter__(self) -> AsyncIterator[Event]:
        return self.events()

    # -- the read loop -----------------------------------------------------------------

    async def _read_loop(self) -> None:
        """Keeps pub/sub connected while the transport hands frames to the engine.

        Outages are retried with backoff; the backoff starts over only once the
        connection has stayed up for ``backoff.maximum_s``, so a link that drops again
        right away (e.g. one cluster node refusing us) is retried less and less often
        instead of in a tight loop."""
        assert self._transport is not None
        transport = self._transport
        failures = 0
        up_since = 0.0
        while True:
            _raise_if_cancelled()
            try:
                await self._subscribe_requested()
                await transport.pump(self._poll_s)
            except TRANSIENT_ERRORS as exc:
                failures += 1
                if self.connected:
                    self._engine.stats.reconnects += 1
                    self.connected = False
                    log.warning(
                        "pub/sub connection lost (%s: %s); reconnecting", type(exc).__name__, exc
                    )
                await asyncio.sleep(self._backoff.delay(failures))
                continue
            if failures:
                now = time.monotonic()
                if not self.connected:
                    log.info("pub/sub connection back after %d attempt(s)", failures)
                    self.connected = True
                    up_since = now
                elif now - up_since >= self._backoff.maximum_s:
                    failures = 0

    def _after_frames(self) -> None:
        """After the engine took frames: start the I/O it asked for."""
        self._pump()
        if self._engine.subscriptions and self._transport is not None:
            self._transport.wake()  # the read loop subscribes them

    async def _subscribe_requested(self) -> None:
        """Subscribe to the channels the engine asked for (kept for a retry on error)."""
        requested = self._engine.subscriptions
        if not requested:
            return
        channels = list(dict.fromkeys(requested))
        requested.clear()
        assert self._transport is not None
        try:
            await self._transport.subscribe(channels)
        except TRANSIENT_ERRORS:
            requested.extend(channels)
            raise

    def _pump(self) -> None:
        """Queue the stream reads the engine asked for (newest request per feed wins)."""
        fetches = self._engine.fetches
        if fetches:
            for fetch in fetches:
                self._fetch_pending[fetch.feed] = fetch
            fetches.clear()
            self._fetch_wakeup.set()

    # -- stream reads ------------------------------------------------------------------

    def _next_fetch(self) -> Fetch | None:
        for feed, fetch in self._fetch_pending.items():
            if feed not in self._fetch_inflight:
                del self._fetch_pending[feed]
                return fetch
        return None

    async def _fetch_worker(self) -> None:
        while True:
            _raise_if_cancelled()
            fetch = self._next_fetch()
            if fetch is None:
                self._fetch_wakeup.clear()
                await self._fetch_wakeup.wait()
                continue
            self._fetch_inflight.add(fetch.feed)
            try:
                await self._fetch(fetch)
            finally:
                self._fetch_inflight.discard(fetch.feed)
                self._progress.set()
                if self._fetch_pending:
                    self._fetch_wakeup.set()

    async def _fetch(self, fetch: Fetch) -> None:
        failures = 0
        while True:
            try:
                await self._read_stream(fetch)
                return
            except TRANSIENT_ERRORS as exc:
                failures += 1
                if fetch.feed in self._fetch_pending or fetch.feed not in self._engine.feeds:
                    return  # superseded by a newer request (e.g. after the reconnect)
                if failures == 1:
                    log.warning("feed %s: stream read failed (%s); retrying", fetch.feed, exc)
                await asyncio.sleep(self._backoff.delay(failures))
            except ResponseError as exc:
                log.error(
                    "feed %s: cannot read its stream (%s); going live without it", fetch.feed, exc
                )
                self._engine.on_history(fetch, [], done=True, stream_first=None)
                self._pump()
                return

    async def _read_stream(self, fetch: Fetch) -> None:
        assert self._redis is not None
        redis, engine, feed = self._redis, self._engine, fetch.feed
        low: bytes | str = "-" if fetch.after is None else "(" + entry_id(*fetch.after)
        high: bytes | str = "+" if fetch.before is None else "(" + entry_id(*fetch.before)
        async with redis.pipeline(transaction=False) as pipe:
            pipe.xrange(feed, "-", "+", count=1)
            if fetch.count is not None:
                pipe.xrevrange(feed, high, low, count=fetch.count)
            else:
                pipe.xrange(feed, low, high, count=PAGE)
            first, page = await pipe.execute()
        stream_first = parse_entry_id(first[0][0]) if first else None
        if fetch.count is not None:
            page.reverse()
            engine.on_history(fetch, page, done=True, stream_first=stream_first)
            self._pump()
            return
        while True:
            done = len(page) < PAGE
            engine.on_history(fetch, page, done=done, stream_first=stream_first)
            self._pump()
            if done:
                return
            low = b"(" + page[-1][0]
            page = await redis.xrange(feed, low, high, count=PAGE)

    async def _read_back(
        self, feed: str, after: Position, upto: Position, count: int
    ) -> list[Update]:
        """A slow listener's read-back of must-deliver updates (see `Mailbox`)."""
        assert self._redis is not None
        failures = 0
        entries: Any
        while True:
            try:
                entries = await self._redis.xrange(
                    feed, "(" + entry_id(*after), entry_id(*upto), count=count
                )
                _raise_if_cancelled()
                break
            except TRANSIENT_ERRORS as exc:
                failures += 1
                if failures == 1:
                    log.warning("feed %s: read-back failed (%s); retrying", feed, exc)
                await asyncio.sleep(self._backoff.delay(failures))
        updates: list[Update] = []
        for _, fields in entries:
            try:
                message = decode(fields.get(b"d", b""))
            except ContractError:
                self._engine.stats.undecodable += 1
                continue
            if not isinstance(message, Status):
                updates.append(message)
        return updates

    # -- staleness ---------------------------------------------------------------------

    async def _health_loop(self) -> None:
        while True:
            thresholds = [
                s.sizes.stale_after_s
                for s in self._engine.feeds.values()
                if s.sizes.stale_after_s is not None
            ]
            period = min(1.0, max(0.02, min(thresholds, default=4.0) / 4))
            await asyncio.sleep(period)
            self._engine.check_health()


def _raise_if_cancelled() -> None:
    """Stop a task loop whose cancellation was swallowed: on Python 3.11,
    ``asyncio.wait_for`` (redis-py uses it) returns the result instead of raising when
    the result and the cancellation race (CPython gh-86296), and the loop would go on."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


class _EngineSink:
    """The transport's `FrameSink`: frames to the engine, then *after* (which queues the
    stream reads and subscriptions the engine asked for)."""

    __slots__ = ("_after", "_engine")

    def __init__(self, engine: Engine, after: Callable[[], None]) -> None:
        self._engine = engine
        self._after = after

    def on_live_batch(self, batch: Sequence[Live]) -> None:
        self._engine.on_live_batch(batch)
        self._after()

    def on_subscribed(self, channel: str) -> None:
        self._engine.on_subscribed(channel)
        self._after()

    def on_psubscribed(self, pattern: str) -> None:
        self._engine.on_psubscribed(pattern)
        self._after()


def _one_of(what: str, value: str, choices: tuple[str, ...]) -> str:
    """*value* if it is one of *choices*, else ConfigError naming them."""
    if value not in choices:
        options = " or ".join(repr(choice) for choice in choices)
        raise ConfigError(f"{what} must be {options}, not {value!r}")
    return value


def _check_delivery(delivery: str) -> DeliveryMode:
    return cast(DeliveryMode, _one_of("delivery", delivery, DELIVERY_MODES))


def _check_callbacks(listener: _Listener) -> None:
    """Refuse coroutine functions for inline delivery when they are registered, not
    when the subscriber starts."""
    if listener[5] == "inline":
        check_inline(*listener[:3])


def _check_policy(on_error: str) -> ErrorPolicy:
    return cast(ErrorPolicy, _one_of("on_error", on_error, ERROR_POLICIES))
