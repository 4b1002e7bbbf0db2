"""The producer process: wires exchanges, watch loops, the clock and the writer together.

`Producer` is usable in-process (tests, ``marketbus demo``); `run` is what
``marketbus produce`` calls: it adds signal handling and returns an exit code.
Every task it starts is supervised: a task that dies of an unexpected error is
logged with its traceback and makes `Producer.wait` raise it, so the process
exits non-zero instead of running on half-dead.

Start-up order: connect Redis, load and validate markets, take the exchanges' leases
(waiting as hot standby if another producer holds them), choose the run from the
streams, then write, each feed continuing from its stream's last entry (closed candles
and trades the previous producer did not write are fetched over REST). Losing a lease
stops the writer before its next batch and fails the producer with FencedError;
nothing is flushed or released then.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import io
import logging
import os
import signal
import time
from collections.abc import Coroutine, Iterable, Sequence
from types import TracebackType
from typing import Any, Final

import ccxt
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from marketbus.producer import watch
from marketbus.producer.config import ExchangeConfig, ProducerConfig
from marketbus.producer.feeds import FeedHandler, handler_for
from marketbus.producer.lease import LeaseKeeper
from marketbus.producer.lease_store import RedisLeaseStore
from marketbus.producer.metrics import MetricsServer, MetricsSource
from marketbus.producer.publisher import Publisher
from marketbus.producer.sequencing import ahead, choose_run, of_feed
from marketbus.producer.stats import FeedCounters, FeedStats, heartbeat_detail, snapshot
from marketbus.producer.transport import ClusterTransport, FastTransport, Tail, Transport
from marketbus.producer.units import SPOT, ContractTerms, contract_terms, conversion
from marketbus.shared.backoff import BackoffState
from marketbus.shared.cluster import connect_cluster, is_cluster
from marketbus.shared.codecs import decode, encode_feed_info
from marketbus.shared.connection import connect
from marketbus.shared.errors import ContractError, FencedError, MarketbusError
from marketbus.shared.names import (
    Feed,
    catalog_key,
    entry_id,
    exchange_prefix,
    parse_entry_id,
    status_name,
)
from marketbus.shared.schema import FeedInfo, MarketMessage, Status, StatusEvent

log = logging.getLogger(__name__)

CLOCK_S: Final = 0.2
"""How often forming candles are checked for close and held books released."""
LOAD_MARKETS_ATTEMPTS: Final = 3
CANCEL_TIMEOUT_S: Final = 2.0
"""How long a cancelled task may take to finish before stopping goes on without it."""


BAD_FRAME_LOG_EVERY_S: Final = 60.0
"""Bad frames are logged with a sample at most this often per exchange (all are counted)."""


class _ExchangeRun:
    """One configured exchange inside a producer: its ccxt client and feeds."""

    def __init__(self, config: ExchangeConfig, exchange: watch.Exchange) -> None:
        self.config = config
        self.exchange = exchange
        self.feeds: list[Feed] = []
        self.handlers: dict[str, FeedHandler] = {}  # by feed name
        self.terms: dict[str, ContractTerms] = {}  # by feed name: its market's contract
        self.bad_frames = 0
        self.bad_frame_logged_at: float | None = None


class Producer:
    """Streams the configured exchanges into Redis until `stop`.

    ``exchange_ids`` restricts the run to some of the config's exchanges. `start`
    returns once the producer writes; as hot standby (``on_conflict = "standby"``) that
    is when the other producer's lease expires or is released.
    """

    def __init__(self, config: ProducerConfig, exchange_ids: Sequence[str] | None = None) -> None:
        self.config = config
        ids = list(exchange_ids) if exchange_ids else [ex.id for ex in config.exchanges]
        self._exchange_configs = [config.exchange(i) for i in ids]
        self._ns = config.redis.namespace
        self._runs: list[_ExchangeRun] = []
        self._transport: Transport | None = None
        self._publisher: Publisher | None = None
        self._lease: LeaseKeeper | None = None
        self._metrics: MetricsServer | None = None
        self._counters: dict[str, FeedCounters] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._writer: asyncio.Task[None] | None = None
        self._keeper: asyncio.Task[None] | None = None
        self._failure: BaseException | None = None
        self._failed = asyncio.Event()
        self._started = False
        self._stopped = False
        self._catalog_failing = False
        self.unflushed = 0
        """Messages a `stop` could not write within ``shutdown_timeout_s`` (lost)."""

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
        """Per feed name: state, messages published, last publish time, errors,
        reconnects, drops."""
        return {name: snapshot(c) for name, c in self._counters.items()}

    @property
    def publisher(self) -> Publisher:
        """The writer (its outbox, sequencer and latency histogram), once started."""
        if self._publisher is None:
            raise RuntimeError("the producer is not started")
        return self._publisher

    @property
    def holder(self) -> str | None:
        """This producer's lease holder id (``host/pid/random``), once connected."""
        return None if self._lease is None else self._lease.holder

    @property
    def metrics_port(self) -> int | None:
        """The port the Prometheus endpoint listens on (``metrics_port = 0``: any)."""
        return None if self._metrics is None else self._metrics.port

    @property
    def failure(self) -> BaseException | None:
        """What a supervised task died of (FencedError when the lease was lost)."""
        return self._failure

    async def start(self) -> None:
        """Connect Redis, load and validate markets, take the leases (standing by if
        another producer holds them), backfill candles, start streaming.

        Raises RedisUnavailableError, ConfigError (unknown exchange, symbol, kind or
        timeframe), FencedError (``on_conflict = "exit"`` and the lease is held) or
        MarketbusError (markets cannot be loaded); cleans up on failure or cancellation.
        """
        if self._started:
            raise RuntimeError("a Producer can only be started once")
        self._started = True
        try:
            await self._start()
        except BaseException:
            self._stopped = True
            await self._close_resources()
            raise

    async def stop(self) -> None:
        """Stop watching, flush what is queued, publish ``stopped``, release the leases,
        close everything. After a lost lease nothing is written or released.

        Bounded by ``producer.shutdown_timeout_s``; safe to call more than once.
        """
        if not self._started or self._stopped:
            return
        self._stopped = True
        deadline = time.monotonic() + self.config.producer.shutdown_timeout_s
        await self._cancel(self._tasks)
        publisher = self._publisher
        if (
            publisher is not None
            and self._writer is not None
            and not self._writer.done()
            and not self.fenced
        ):
            for run in self._runs:
                self._status(run.config.id, "stopped", None, "producer stopping")
            if not await publisher.flush(max(0.0, deadline - time.monotonic())):
                self.unflushed = len(publisher.outbox)
                log.error(
                    "shutdown: %d message(s) not written within shutdown_timeout_s=%g; "
                    "they are lost",
                    self.unflushed,
                    self.config.producer.shutdown_timeout_s,
                )
        await self._close_resources(deadline)
        if self._writer is not None and self._writer.done() and not self._writer.cancelled():
            exc = self._writer.exception()
            if exc is not None and self._failure is None:
                self._failure = exc

    @property
    def fenced(self) -> bool:
        """Whether another producer took over (lease lost or stream IDs refused)."""
        return isinstance(self._failure, FencedError)

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
        # No retries hidden in redis-py: the writer retries itself and must know when a
        # pipeline may have been applied twice.
        transport: Transport
        if is_cluster(self.config.redis):
            cluster = await connect_cluster(self.config.redis)
            transport, leases = ClusterTransport(cluster), RedisLeaseStore(cluster)
        else:
            redis = await connect(self.config.redis, retry=Retry(NoBackoff(), 0))
            transport, leases = FastTransport(self.config.redis, redis), RedisLeaseStore(redis)
        self._transport = transport
        for cfg in self._exchange_configs:
            exchange = watch.create_exchange(cfg)
            run = _ExchangeRun(cfg, exchange)
            watch.guard_frames(exchange, functools.partial(self._bad_frame, run))
            self._runs.append(run)
        await _together(self._prepare(run) for run in self._runs)
        for feed in self.feeds:
            self._counter(feed.name)  # every feed shows in stats from the start

        self._lease = lease = LeaseKeeper(
            leases,
            self._ns,
            [run.config.id for run in self._runs],
            ttl_s=settings.lease_ttl_s,
            on_conflict=settings.on_conflict,
        )
        await lease.acquire()
        self._keeper = self._spawn(lease.keep(), "lease", track=False)

        streams = [f.name for f in self.feeds] + [
            status_name(self._ns, r.config.id) for r in self._runs
        ]
        last = await transport.last_entries(streams)
        last_ids = [_entry_ids(entry) for entry in last]
        now_ms = time.time_ns() // 1_000_000
        run_id = choose_run(now_ms, last_ids)
        last_by_stream = dict(zip(streams, last, strict=True))
        await lease.set_run(run_id)

        self._publisher = Publisher(
            transport,
            namespace=self._ns,
            run=run_id,
            encoding=self.config.redis.encoding,
            caps=self.config.streams,
            batch_size=settings.publish_batch,
            queue_max_messages=settings.queue_max_messages,
            backoff=BackoffState(settings.backoff_initial_s, settings.backoff_max_s),
            counters=self._counter,
            lease=lease,
        )
        self._writer = self._spawn(self._publisher.run(), "writer", track=False)
        log.info(
            "producer run %d: %d feed(s), lease holder %s", run_id, len(self.feeds), lease.holder
        )
        for run in self._runs:
            detail = f"run {run_id}, {len(run.feeds)} feeds, lease holder {lease.holder}"
            previous = lease.previous.get(run.config.id)
            if previous is not None:
                detail += f"; took over from {previous} (its lease expired or was released)"
            self._status(run.config.id, "started", None, detail)
        for stream, ids in zip(streams, last_ids, strict=True):
            if ids is not None and ahead(ids[0], now_ms):
                self._publisher.block(stream, entry_id(*ids))
        if settings.metrics_port is not None:
            self._metrics = MetricsServer(
                settings.metrics_port, self._metrics_source(), settings.metrics_host
            )
            log.info("Prometheus metrics on port %d (/metrics)", self._metrics.port)
        await self._write_catalog()
        await _together(self._backfill(run, last_by_stream) for run in self._runs)
        for run in self._runs:
            by_feed = run.handlers
            for sub in watch.subscriptions(run.exchange, run.feeds, run.config.batch_watch):
                loop = watch.WatchLoop(
                    run.exchange,
                    sub,
                    {f.symbol: by_feed[f.name] for f in sub.feeds},
                    settings,
                    submit=self._submit,
                    status=self._status,
                    counters=self._counters,
                    max_fill_candles=self.config.streams.ohlcv,
                )
                self._spawn(loop.run(), f"watch {sub.label}")
        self._spawn(self._clock(), "clock")
        self._spawn(self._heartbeat(), "heartbeat")

    async def _prepare(self, run: _ExchangeRun) -> None:
        settings = self.config.producer
        backoff = BackoffState(settings.backoff_initial_s, settings.backoff_max_s)
        await watch.load_markets(run.exchange, LOAD_MARKETS_ATTEMPTS, backoff)
        run.feeds = watch.plan_feeds(run.exchange, run.config, self._ns)
        for feed in run.feeds:
            # ccxt's market is checked here: a contract without contractSize stops the start.
            terms = contract_terms(feed.exchange, run.exchange.market(feed.symbol))
            run.terms[feed.name] = terms
            run.handlers[feed.name] = handler_for(
                feed,
                close_grace_ms=settings.close_grace_ms,
                book_depth=run.config.book_depth,
                book_interval_ms=run.config.book_interval_ms,
                reconcile=settings.reconcile_policy(),
                units=conversion(feed.exchange, feed.kind, feed.symbol, terms),
            )

    async def _backfill(self, run: _ExchangeRun, last: dict[str, Tail | None]) -> None:
        """Before watching: each handler sees its stream's newest message and does the
        REST work that brings the stream up to now (candles: the closed ones since;
        trades continue after the newest trade, fetched when the first live batch comes,
        so a restart or a takeover loses only what the exchange's REST window lost)."""
        cap = self.config.streams.ohlcv
        for name, handler in run.handlers.items():
            handler.on_start(_last_message(name, last.get(name)), time.time_ns() // 1_000_000)
            if handler.pending:
                served = await watch.serve(
                    run.exchange, handler, cap, self._counter(name), self._status
                )
                for message in served:
                    self._submit(name, message)

    # -- running -----------------------------------------------------------------

    def _counter(self, feed: str) -> FeedCounters:
        counters = self._counters.get(feed)
        if counters is None:
            counters = self._counters[feed] = FeedCounters()
        return counters

    def _submit(self, feed: str, message: MarketMessage | Status) -> None:
        assert self._publisher is not None
        self._publisher.submit(feed, message)

    def _status(
        self,
        exchange: str,
        event: StatusEvent,
        feed: str | None,
        detail: str,
        *,
        from_ms: int | None = None,
        to_ms: int | None = None,
    ) -> None:
        message = Status(
            exchange=exchange,
            ts_ms=None,
            recv_ns=time.time_ns(),
            event=event,
            feed=feed,
            detail=detail,
            from_ms=from_ms,
            to_ms=to_ms,
        )
        self._submit(status_name(self._ns, exchange), message)

    def _bad_frame(self, run: _ExchangeRun, url: str, frame: str, exc: BaseException) -> None:
        """ccxt could not handle a frame (the socket is failed and resubscribed): counted
        on the exchange's status feed; logged and published with a sample of the frame at
        most every `BAD_FRAME_LOG_EVERY_S` per exchange."""
        exchange = run.config.id
        run.bad_frames += 1
        self._counter(status_name(self._ns, exchange)).errors += 1
        now = time.monotonic()
        logged = run.bad_frame_logged_at
        if logged is None or now - logged >= BAD_FRAME_LOG_EVERY_S:
            run.bad_frame_logged_at = now
            what = f"ccxt could not handle a frame on {url} ({type(exc).__name__}: {exc})"
            log.error(
                "%s: %s; reconnecting that socket. Frame: %s (%d bad frame(s) so far; "
                "logged at most every %gs)",
                exchange,
                what,
                frame,
                run.bad_frames,
                BAD_FRAME_LOG_EVERY_S,
            )
            self._status(exchange, "error", None, f"{what}; frame: {frame}")

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
        """Every ``heartbeat_s``: a heartbeat per exchange with every feed's stats (JSON
        `Heartbeat` in ``detail``), and the catalog written again."""
        while True:
            await asyncio.sleep(self.config.producer.heartbeat_s)
            assert self._publisher is not None
            queued = len(self._publisher.outbox)
            now_ms = time.time_ns() // 1_000_000
            for run in self._runs:
                detail = heartbeat_detail(
                    self._counters,
                    prefix=exchange_prefix(self._ns, run.config.id),
                    queued=queued,
                    now_ms=now_ms,
                    lease=self.holder,
                )
                self._status(run.config.id, "heartbeat", None, detail)
            await self._write_catalog()

    async def _write_catalog(self) -> None:
        """HSET every feed's FeedInfo into ``{ns}:feeds`` (at start and each heartbeat)."""
        assert self._transport is not None and self._publisher is not None
        if self._lease is not None and not self._lease.valid():
            return  # not ours to write while the lease is unconfirmed
        now_ms = time.time_ns() // 1_000_000
        fields: dict[str, bytes] = {}
        for run in self._runs:
            for feed in run.feeds:
                terms = run.terms.get(feed.name, SPOT)
                fields[feed.name] = encode_feed_info(
                    FeedInfo(
                        exchange=feed.exchange,
                        symbol=feed.symbol,
                        kind=feed.kind,
                        timeframe=feed.timeframe,
                        run=self._publisher.run_id,
                        stream_maxlen=self.config.streams.for_kind(feed.kind),
                        updated_ms=now_ms,
                        contract_size=terms.contract_size,
                        inverse=terms.inverse,
                    )
                )
        try:
            await self._transport.set_fields(catalog_key(self._ns), fields)
        except (RedisError, OSError) as exc:
            if not self._catalog_failing:
                self._catalog_failing = True
                log.warning("catalog update failed (retried every heartbeat): %s", exc)
        else:
            self._catalog_failing = False

    def _metrics_source(self) -> MetricsSource:
        return MetricsSource(
            feeds=lambda: self._counters,
            queue_depth=lambda: 0 if self._publisher is None else len(self._publisher.outbox),
            latency=lambda: None if self._publisher is None else self._publisher.latency,
            lease_held=lambda: self._lease is not None and self._lease.valid(),
        )

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
        if isinstance(exc, FencedError) and self._writer is not None:
            self._writer.cancel()  # not one more batch once another producer owns the feeds
        self._failed.set()

    @staticmethod
    async def _cancel(tasks: set[asyncio.Task[None]], timeout_s: float = CANCEL_TIMEOUT_S) -> None:
        """Cancel *tasks* and wait for them, at most *timeout_s* (a task that ignores its
        cancellation is logged, not waited for: stopping stays bounded)."""
        for task in tasks:
            task.cancel()
        # Results (failures) were already taken by _supervise.
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=timeout_s)
            for task in pending:
                where = io.StringIO()
                task.print_stack(limit=8, file=where)
                log.error(
                    "%s did not stop within %gs of being cancelled; left behind at:\n%s",
                    task.get_name(),
                    timeout_s,
                    where.getvalue(),
                )
        tasks.clear()

    async def _close_resources(self, deadline: float | None = None) -> None:
        if deadline is None:
            deadline = time.monotonic() + self.config.producer.shutdown_timeout_s
        await self._cancel(self._tasks)
        if self._writer is not None:
            await self._cancel({self._writer})
        if self._keeper is not None:
            await self._cancel({self._keeper})
        if self._metrics is not None:
            await asyncio.to_thread(self._metrics.close)
            self._metrics = None
        if self._lease is not None and not self.fenced:
            try:
                async with asyncio.timeout(max(0.1, deadline - time.monotonic())):
                    await self._lease.release()
            except TimeoutError:
                log.warning("releasing the lease timed out; it expires by itself")
        for run in self._runs:
            try:
                async with asyncio.timeout(max(0.1, deadline - time.monotonic())):
                    await run.exchange.close()
            except (TimeoutError, ccxt.BaseError, OSError) as exc:
                log.warning("%s: closing the exchange client failed: %s", run.config.id, exc)
        if self._transport is not None:
            with contextlib.suppress(RedisError, OSError):
                await self._transport.close()


async def _together(work: Iterable[Coroutine[Any, Any, None]]) -> None:
    """Run *work* concurrently; the first failure cancels the rest, waits until they
    stopped (so no one still uses a client the caller then closes) and is raised as is."""
    try:
        async with asyncio.TaskGroup() as group:
            for coro in work:
                group.create_task(coro)
    except BaseExceptionGroup as failed:
        raise failed.exceptions[0] from None


def _entry_ids(entry: Tail | None) -> tuple[int, int] | None:
    """``(run, seq)`` of a stream's last entry; None if there is none (Redis only
    stores ``ms-seq`` IDs, so every entry parses; a guard for a misbehaving server)."""
    if entry is None:
        return None
    try:
        return parse_entry_id(entry[0])
    except ContractError as exc:
        log.warning("ignoring a stream's last entry: %s", exc)
        return None


def _last_message(feed: str, entry: Tail | None) -> MarketMessage | None:
    """The message in a stream's last entry, None if none, unreadable or foreign (not
    a message of *feed* at its own entry ID: junk, another feed's, a forged ID)."""
    if entry is None or entry[1] is None:
        return None
    try:
        message = decode(entry[1])
    except ContractError as exc:
        log.warning(
            "%s: the last stream entry does not decode, starting as if empty: %s", feed, exc
        )
        return None
    if isinstance(message, Status):
        return None
    if not of_feed(message, feed) or _entry_ids(entry) != (message.run, message.seq):
        log.warning(
            "%s: the last stream entry %s is not a message of this feed, starting as if empty",
            feed,
            entry[0].decode(errors="replace"),
        )
        return None
    return message


async def run(config: ProducerConfig, exchange_ids: Sequence[str] | None = None) -> int:
    """Run a producer until SIGINT/SIGTERM; flush and return 0, or 1 if it failed or
    could not write everything within ``shutdown_timeout_s``.

    A signal while standing by or starting stops at once (0). A second signal exits
    the process at once (exit code 130). Startup errors (ConfigError,
    RedisUnavailableError, MarketbusError) and FencedError (lease held in exit mode,
    or lost) propagate.
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
    stopper = asyncio.ensure_future(stop.wait())
    waiters: list[asyncio.Future[Any]] = [stopper]
    try:
        starting = asyncio.ensure_future(producer.start())
        waiters.append(starting)
        await asyncio.wait({stopper, starting}, return_when=asyncio.FIRST_COMPLETED)
        if not starting.done():
            log.info("stopping before the producer started (it was standing by or starting)")
            return 0
        starting.result()
        # What start-up built (markets, ccxt's tables) stays for good: out of the cyclic
        # collector, full collections stop walking it (docs/benchmarks.md has the pauses).
        gc.freeze()
        failure = asyncio.ensure_future(producer.wait())
        waiters.append(failure)
        await asyncio.wait({stopper, failure}, return_when=asyncio.FIRST_COMPLETED)
        await producer.stop()
        if producer.failure is not None:
            if isinstance(producer.failure, MarketbusError):
                raise producer.failure
            return 1
        return 1 if producer.unflushed else 0
    finally:
        for waiter in waiters:
            waiter.cancel()
        await asyncio.gather(*waiters, return_exceptions=True)
        await producer.stop()
        for signum in handled:
            loop.remove_signal_handler(signum)
