"""The producer process: wires exchanges, watch loops, the clock and the writer together.

`Producer` is usable in-process (tests, ``marketbus demo``); `run` is what
``marketbus produce`` calls: it adds signal handling and returns an exit code.
Every task it starts is supervised: a task that dies of an unexpected error is
logged with its traceback and makes `Producer.wait` raise it, so the process
exits non-zero instead of running on half-dead.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
from collections.abc import Coroutine, Sequence
from types import TracebackType
from typing import Any, Final

import ccxt
import msgspec
from redis.exceptions import RedisError

from marketbus.producer import watch
from marketbus.producer.backoff import Backoff
from marketbus.producer.feeds import FeedHandler, OhlcvHandler, handler_for
from marketbus.producer.publisher import FeedCounters, Publisher
from marketbus.producer.sequencing import choose_run, parse_entry_id
from marketbus.producer.transport import RedisTransport, Transport
from marketbus.shared.codecs import decode, encode_feed_info
from marketbus.shared.config import ExchangeConfig, ProducerConfig
from marketbus.shared.connection import connect
from marketbus.shared.errors import ContractError, MarketbusError
from marketbus.shared.names import Feed, catalog_key, status_name
from marketbus.shared.schema import OHLCV, FeedInfo, MarketMessage, Status, StatusEvent

log = logging.getLogger(__name__)

CLOCK_S: Final = 0.2
"""How often forming candles are checked for close and held books released."""
LOAD_MARKETS_ATTEMPTS: Final = 3


class FeedStats(msgspec.Struct, frozen=True, kw_only=True):
    """A snapshot of one feed's counters (`Producer.stats`)."""

    published: int
    last_message_ms: int | None
    errors: int
    reconnects: int
    dropped: int


class _ExchangeRun:
    """One configured exchange inside a producer: its ccxt client and feeds."""

    def __init__(self, config: ExchangeConfig, exchange: watch.Exchange) -> None:
        self.config = config
        self.exchange = exchange
        self.feeds: list[Feed] = []
        self.handlers: dict[str, FeedHandler] = {}  # by feed name


class Producer:
    """Streams the configured exchanges into Redis until `stop`.

    ``exchange_ids`` restricts the run to some of the config's exchanges.
    """

    def __init__(self, config: ProducerConfig, exchange_ids: Sequence[str] | None = None) -> None:
        self.config = config
        ids = list(exchange_ids) if exchange_ids else [ex.id for ex in config.exchanges]
        self._exchange_configs = [config.exchange(i) for i in ids]
        self._ns = config.redis.namespace
        self._runs: list[_ExchangeRun] = []
        self._transport: Transport | None = None
        self._publisher: Publisher | None = None
        self._counters: dict[str, FeedCounters] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._writer: asyncio.Task[None] | None = None
        self._failure: BaseException | None = None
        self._failed = asyncio.Event()
        self._started = False
        self._stopped = False

    # -- public API ----------------------------------------------------------------

    @property
    def run_id(self) -> int:
        """This run's id (epoch ms, larger than any run already in the streams)."""
        if self._publisher is None:
            raise RuntimeError("the producer is not started")
        return self._publisher.run_id

    @property
    def feeds(self) -> list[Feed]:
        """The feeds being produced (after validation skipped any)."""
        return [feed for run in self._runs for feed in run.feeds]

    @property
    def stats(self) -> dict[str, FeedStats]:
        """Per feed name: messages published, last publish time, errors, reconnects, drops."""
        return {
            name: FeedStats(
                published=c.published,
                last_message_ms=c.last_message_ms,
                errors=c.errors,
                reconnects=c.reconnects,
                dropped=c.dropped,
            )
            for name, c in self._counters.items()
        }

    async def start(self) -> None:
        """Connect Redis, load and validate markets, backfill candles, start streaming.

        Raises RedisUnavailableError, ConfigError (unknown exchange, symbol, kind or
        timeframe) or MarketbusError (markets cannot be loaded); cleans up on failure.
        """
        if self._started:
            raise RuntimeError("a Producer can only be started once")
        self._started = True
        try:
            await self._start()
        except BaseException:
            await self._close_resources()
            raise

    async def stop(self) -> None:
        """Stop watching, flush what is queued, publish ``stopped``, close everything.

        Bounded by ``producer.shutdown_timeout_s``; safe to call more than once.
        """
        if not self._started or self._stopped:
            return
        self._stopped = True
        deadline = time.monotonic() + self.config.producer.shutdown_timeout_s
        await self._cancel(self._tasks)
        publisher = self._publisher
        if publisher is not None and self._writer is not None and not self._writer.done():
            for run in self._runs:
                self._status(run.config.id, "stopped", None, "producer stopping")
            if not await publisher.flush(max(0.0, deadline - time.monotonic())):
                log.error(
                    "shutdown: %d message(s) not written within shutdown_timeout_s=%g",
                    len(publisher.outbox),
                    self.config.producer.shutdown_timeout_s,
                )
        await self._close_resources(deadline)
        if self._writer is not None and self._writer.done() and not self._writer.cancelled():
            exc = self._writer.exception()
            if exc is not None and self._failure is None:
                self._failure = exc

    async def wait(self) -> None:
        """Return when the producer failed, raising the error a supervised task died of."""
        await self._failed.wait()
        if self._failure is not None:
            raise self._failure

    async def __aenter__(self) -> Producer:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    # -- startup -----------------------------------------------------------------

    async def _start(self) -> None:
        settings = self.config.producer
        redis = await connect(self.config.redis)
        self._transport = transport = RedisTransport(redis)
        for cfg in self._exchange_configs:
            self._runs.append(_ExchangeRun(cfg, watch.create_exchange(cfg)))
        await asyncio.gather(*(self._prepare(run) for run in self._runs))

        for feed in self.feeds:
            self._counter(feed.name)  # every feed shows in stats from the start
        streams = [f.name for f in self.feeds] + [
            status_name(self._ns, r.config.id) for r in self._runs
        ]
        last = await asyncio.gather(*(transport.last_entry(s) for s in streams))
        last_ids = [parse_entry_id(entry[0]) if entry else None for entry in last]
        run_id = choose_run(time.time_ns() // 1_000_000, last_ids)
        last_by_stream = dict(zip(streams, last, strict=True))

        self._publisher = Publisher(
            transport,
            namespace=self._ns,
            run=run_id,
            encoding=self.config.redis.encoding,
            caps=self.config.streams,
            batch_size=settings.publish_batch,
            queue_max_messages=settings.queue_max_messages,
            backoff=Backoff(settings.backoff_initial_s, settings.backoff_max_s),
            counters=self._counter,
        )
        self._writer = self._spawn(self._publisher.run(), "writer", track=False)
        log.info("producer run %d: %d feed(s)", run_id, len(self.feeds))
        for run in self._runs:
            self._status(run.config.id, "started", None, f"run {run_id}, {len(run.feeds)} feeds")
        await self._write_catalog()
        await asyncio.gather(*(self._backfill(run, last_by_stream) for run in self._runs))
        for run in self._runs:
            by_feed = run.handlers
            for sub in watch.subscriptions(run.exchange, run.feeds):
                loop = watch.WatchLoop(
                    run.exchange,
                    sub,
                    {f.symbol: by_feed[f.name] for f in sub.feeds},
                    settings,
                    submit=self._submit,
                    status=self._status,
                    observe=self._observe,
                    max_fill_candles=self.config.streams.ohlcv,
                )
                self._spawn(loop.run(), f"watch {sub.label}")
        self._spawn(self._clock(), "clock")
        self._spawn(self._heartbeat(), "heartbeat")

    async def _prepare(self, run: _ExchangeRun) -> None:
        settings = self.config.producer
        backoff = Backoff(settings.backoff_initial_s, settings.backoff_max_s)
        await watch.load_markets(run.exchange, LOAD_MARKETS_ATTEMPTS, backoff)
        run.feeds = watch.plan_feeds(run.exchange, run.config, self._ns)
        for feed in run.feeds:
            run.handlers[feed.name] = handler_for(
                feed,
                close_grace_ms=settings.close_grace_ms,
                book_depth=run.config.book_depth,
                book_interval_ms=run.config.book_interval_ms,
            )

    async def _backfill(
        self, run: _ExchangeRun, last: dict[str, tuple[bytes, bytes | None] | None]
    ) -> None:
        """Fill each candle stream from its last closed candle up to now, over REST."""
        if not run.exchange.has.get("fetchOHLCV"):
            return
        cap = self.config.streams.ohlcv
        for name, handler in run.handlers.items():
            if not isinstance(handler, OhlcvHandler):
                continue
            after_ms = _last_candle_ms(last.get(name))
            now_ms = time.time_ns() // 1_000_000
            try:
                rows = await watch.fetch_closed_candles(
                    run.exchange, handler.feed, after_ms, now_ms, cap
                )
            except (ccxt.BaseError, ContractError) as exc:
                log.error("%s: candle backfill failed, history may have a hole: %s", name, exc)
                self._counter(name).errors += 1
                continue
            handler.tracker.seed_closed(rows)
            recv_ns = time.time_ns()
            for row in rows:
                ts, o, h, low, c, v = row
                self._submit(
                    name,
                    OHLCV(exchange=run.config.id, symbol=handler.feed.symbol, ts_ms=ts,
                          recv_ns=recv_ns, timeframe=handler.tracker.timeframe, open=o, high=h,
                          low=low, close=c, volume=v, closed=True),
                )  # fmt: skip
            if rows:
                log.info("%s: backfilled %d closed candle(s)", name, len(rows))

    # -- running -----------------------------------------------------------------

    def _counter(self, feed: str) -> FeedCounters:
        counters = self._counters.get(feed)
        if counters is None:
            counters = self._counters[feed] = FeedCounters()
        return counters

    def _submit(self, feed: str, message: MarketMessage | Status) -> None:
        assert self._publisher is not None
        self._publisher.submit(feed, message)

    def _status(self, exchange: str, event: StatusEvent, feed: str | None, detail: str) -> None:
        message = Status(
            exchange=exchange, ts_ms=None, recv_ns=time.time_ns(), event=event, feed=feed,
            detail=detail,
        )  # fmt: skip
        self._submit(status_name(self._ns, exchange), message)

    def _observe(self, feeds: Sequence[Feed], what: str) -> None:
        for feed in feeds:
            counters = self._counter(feed.name)
            if what == "reconnect":
                counters.reconnects += 1
            else:
                counters.errors += 1

    async def _clock(self) -> None:
        handlers = [h for run in self._runs for h in run.handlers.values()]
        while True:
            await asyncio.sleep(CLOCK_S)
            recv_ns = time.time_ns()
            now_ms = recv_ns // 1_000_000
            for handler in handlers:
                for message in handler.on_clock(now_ms, recv_ns):
                    self._submit(handler.feed.name, message)

    async def _heartbeat(self) -> None:
        while True:
            await asyncio.sleep(self.config.producer.heartbeat_s)
            assert self._publisher is not None
            queued = len(self._publisher.outbox)
            for run in self._runs:
                self._status(
                    run.config.id, "heartbeat", None, f"{len(run.feeds)} feeds, {queued} queued"
                )
            await self._write_catalog()

    async def _write_catalog(self) -> None:
        """HSET every feed's FeedInfo into ``{ns}:feeds`` (at start and each heartbeat)."""
        assert self._transport is not None and self._publisher is not None
        now_ms = time.time_ns() // 1_000_000
        fields = {
            feed.name: encode_feed_info(
                FeedInfo(
                    exchange=feed.exchange, symbol=feed.symbol, kind=feed.kind,
                    timeframe=feed.timeframe, run=self._publisher.run_id,
                    stream_maxlen=self.config.streams.for_kind(feed.kind), updated_ms=now_ms,
                )
            )
            for feed in self.feeds
        }  # fmt: skip
        try:
            await self._transport.set_fields(catalog_key(self._ns), fields)
        except (RedisError, OSError) as exc:
            log.warning("catalog update failed (will retry with the next heartbeat): %s", exc)

    # -- supervision and cleanup ----------------------------------------------------

    def _spawn(
        self, coro: Coroutine[Any, Any, None], name: str, *, track: bool = True
    ) -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(coro, name=name)
        if track:
            self._tasks.add(task)
        task.add_done_callback(self._supervise)
        return task

    def _supervise(self, task: asyncio.Task[None]) -> None:
        if task.cancelled():
            return
        exc = task.exception()
        if exc is None:
            return
        if isinstance(exc, MarketbusError):
            log.error("%s stopped: %s", task.get_name(), exc)
        else:
            log.error("%s died of an unexpected error", task.get_name(), exc_info=exc)
        if self._failure is None:
            self._failure = exc
        self._failed.set()

    @staticmethod
    async def _cancel(tasks: set[asyncio.Task[None]]) -> None:
        for task in tasks:
            task.cancel()
        # Results (failures) were already taken by _supervise.
        await asyncio.gather(*tasks, return_exceptions=True)
        tasks.clear()

    async def _close_resources(self, deadline: float | None = None) -> None:
        if deadline is None:
            deadline = time.monotonic() + self.config.producer.shutdown_timeout_s
        await self._cancel(self._tasks)
        if self._writer is not None:
            await self._cancel({self._writer})
        for run in self._runs:
            try:
                async with asyncio.timeout(max(0.1, deadline - time.monotonic())):
                    await run.exchange.close()
            except (TimeoutError, ccxt.BaseError, OSError) as exc:
                log.warning("%s: closing the exchange client failed: %s", run.config.id, exc)
        if self._transport is not None:
            with contextlib.suppress(RedisError, OSError):
                await self._transport.close()


def _last_candle_ms(entry: tuple[bytes, bytes | None] | None) -> int | None:
    """Open time of the candle in a stream's last entry, None if none or unreadable."""
    if entry is None or entry[1] is None:
        return None
    try:
        message = decode(entry[1])
    except ContractError as exc:
        log.warning("last stream entry does not decode, backfilling from scratch: %s", exc)
        return None
    return message.ts_ms if isinstance(message, OHLCV) else None


async def run(config: ProducerConfig, exchange_ids: Sequence[str] | None = None) -> int:
    """Run a producer until SIGINT/SIGTERM; flush and return 0, or 1 if it failed.

    A second signal exits the process at once (exit code 130). Startup errors
    (ConfigError, RedisUnavailableError, MarketbusError) and FencedError propagate.
    """
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    signals_seen = 0

    def on_signal(signum: int) -> None:
        nonlocal signals_seen
        signals_seen += 1
        if signals_seen > 1:
            log.error("second signal: exiting without flushing")
            os._exit(130)
        log.info("signal %s: stopping (send again to exit at once)", signal.Signals(signum).name)
        stop.set()

    handled = (signal.SIGINT, signal.SIGTERM)
    for signum in handled:
        loop.add_signal_handler(signum, on_signal, signum)
    producer = Producer(config, exchange_ids)
    try:
        await producer.start()
        stopper = asyncio.ensure_future(stop.wait())
        failure = asyncio.ensure_future(producer.wait())
        try:
            await asyncio.wait({stopper, failure}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopper.cancel()
            failure.cancel()
            await asyncio.gather(stopper, failure, return_exceptions=True)
        await producer.stop()
        if producer._failure is not None:
            if isinstance(producer._failure, MarketbusError):
                raise producer._failure
            return 1
        return 0
    finally:
        await producer.stop()
        for signum in handled:
            loop.remove_signal_handler(signum)
