"""ccxt.pro side of the producer: build and validate exchanges, run one watch loop per
subscription (one ``watch_*`` call pattern covering one or many feeds).

This is the only module that calls ccxt. Each loop catches exactly what ccxt raises at
the boundary (`ccxt.NetworkError`, `ccxt.ExchangeError`, ccxt's other errors) and its
own staleness deadline, reports a status event once per state change (not once per
retry), backs off with jitter and calls again; ccxt re-subscribes the topic on the next
call. One loop's failure never stops another's. It also does the REST work feed
handlers ask for (`serve`: `FetchCandles` -> ``fetch_ohlcv``, `FetchTrades` ->
``fetch_trades`` the way `TRADES_REST` says), after a watch result and
at start-up, and reports their notices; the handlers themselves never call ccxt.

Two behaviours of ccxt 4.5.90 (the version pinned in pyproject.toml) are handled here,
and exercised against the simulator by ``tests/integration/producer/test_faults.py``:

- a frame that makes ccxt's message handler raise (bad JSON, a payload it cannot
  parse) kills that socket's receive loop while the socket stays open: every watch on
  it would wait forever. `guard_frames` catches it at that boundary, logs a sample of
  the frame, and fails the socket (`BadFrameError`) so every loop on it resubscribes;
- a silent socket (connected, nothing arriving) is failed with `StaleConnectionError`
  after ``stale_after_s``; closing a ccxt client *cancels* the futures of the other
  loops on it, so a loop treats a cancellation it did not ask for as a disconnect.

Books: ccxt notices a broken binance book (``ChecksumError``) and an okx seqId gap
(``InvalidNonce``) but never checks okx's `books` checksum nor a kucoin sequence gap;
`check_books` adds those two checks (`marketbus.producer.book_check`) and makes ccxt
resync as it does itself (`BookResyncError`). A loop whose book watch fails with
``InvalidNonce`` (all three) announces the resync and watches again at once
(``tests/integration/producer/test_books.py``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, Protocol

import ccxt
import ccxt.pro
from ccxt.async_support.base.ws.cache import ArrayCacheByTimestamp

from marketbus.producer import normalize
from marketbus.producer.book_check import OkxChecksums, sequence_gap
from marketbus.producer.config import ExchangeConfig, ProducerSettings
from marketbus.producer.feeds import (
    BookHandler,
    FeedHandler,
    FetchedTrades,
    FetchTrades,
    Notice,
    RestFailed,
    RestRequest,
    RestResult,
    exchange_order,
)
from marketbus.producer.normalize import Row, ohlcv_rows
from marketbus.producer.stats import FeedCounters, FeedState
from marketbus.shared.backoff import BackoffState
from marketbus.shared.errors import ConfigError, MarketbusError, NormalizeError
from marketbus.shared.names import Feed, timeframe_of
from marketbus.shared.schema import MarketMessage, StatusEvent, Trade

log = logging.getLogger(__name__)

Exchange = Any
"""A ccxt.pro exchange instance (ccxt ships no type hints)."""


class StatusSink(Protocol):
    """``(exchange, event, feed name or None, detail)``; a ``gap`` of exchange data adds
    ``from_ms``/``to_ms`` (exchange time around it)."""

    def __call__(
        self,
        exchange: str,
        event: StatusEvent,
        feed: str | None,
        detail: str,
        *,
        from_ms: int | None = None,
        to_ms: int | None = None,
    ) -> None: ...


MessageSink = Callable[[str, MarketMessage], None]
"""``(feed name, message)``."""
BadFrameSink = Callable[[str, str, BaseException], None]
"""``(socket url, sample of the frame, what ccxt raised)``."""

SINGLE = {"ticker": "watchTicker", "trades": "watchTrades", "book": "watchOrderBook"}
BATCH = {
    "ticker": "watchTickers",
    "trades": "watchTradesForSymbols",
    "book": "watchOrderBookForSymbols",
}
OHLCV_SINGLE = "watchOHLCV"
OHLCV_BATCH = "watchOHLCVForSymbols"
SAMPLE_CHARS = 200
"""How much of a bad frame or record is logged."""
STALE_ESCALATE = 3
"""Staleness deadlines in a row after which a quiet feed's live socket is failed too."""

_WATCH_URLS: ContextVar[dict[str, Any] | None] = ContextVar("marketbus_watch_urls", default=None)
"""The sockets the running watch loop's calls use, by URL (set per loop task)."""


class StaleConnectionError(ccxt.NetworkError):  # type: ignore[misc]
    """We failed a socket that delivered nothing for ``stale_after_s``."""


class BadFrameError(ccxt.NetworkError):  # type: ignore[misc]
    """ccxt's handler raised on a frame; we failed the socket to resubscribe cleanly."""


class BookResyncError(ccxt.InvalidNonce):  # type: ignore[misc]
    """We found a book ccxt kept broken (okx checksum, kucoin sequence gap) and made
    ccxt rebuild it from a fresh snapshot."""


def sample(data: object) -> str:
    """The start of *data* as text, for logs: at most `SAMPLE_CHARS` characters."""
    if isinstance(data, bytes):
        text = data[: SAMPLE_CHARS * 4].decode("utf-8", "backslashreplace")
    elif isinstance(data, str):
        text = data
    else:
        text = repr(data)
    return text if len(text) <= SAMPLE_CHARS else text[:SAMPLE_CHARS] + "..."


def create_exchange(config: ExchangeConfig) -> Exchange:
    """``ccxt.pro.<id>(config.ccxt)``; ConfigError if ccxt.pro has no such exchange."""
    cls = getattr(ccxt.pro, config.id, None)
    if cls is None or config.id not in ccxt.pro.exchanges:
        raise ConfigError(
            f"exchanges[id={config.id!r}]: ccxt.pro has no exchange {config.id!r} "
            "(see ccxt.pro.exchanges for the ids)"
        )
    exchange = cls(dict(config.ccxt))
    check_books(exchange)
    return exchange


def check_books(exchange: Exchange) -> None:
    """Add the book checks ccxt 4.5.90 lacks for *exchange*: okx's `books` checksum,
    kucoin's level2 sequence continuity. A broken book is dropped the way ccxt drops
    one it noticed itself, and the pending watch fails with `BookResyncError`."""
    if exchange.id == "okx":
        _check_okx_books(exchange)
    elif exchange.id in ("kucoin", "kucoinfutures"):
        _check_kucoin_books(exchange)


def _check_okx_books(exchange: Exchange) -> None:
    """Verify each `books` push's checksum before ccxt applies it; on a mismatch do what
    ccxt does on a seqId gap: mark the channel ``resync`` (the next watch unsubscribes
    and subscribes again, okx then sends a snapshot), drop the book, reject the watch."""
    checksums = OkxChecksums()
    handle = exchange.handle_order_book

    def checked(client: Any, message: Any) -> Any:
        arg = message.get("arg") or {}
        action = message.get("action")
        if arg.get("channel") != "books" or action not in ("snapshot", "update"):
            return handle(client, message)
        symbol = exchange.safe_market(arg.get("instId"))["symbol"]
        for push in message.get("data") or ():
            problem = checksums.on_push(symbol, action == "snapshot", push)
            if problem is not None:
                checksums.forget(symbol)
                message_hash = f"books:{symbol}"
                client.subscriptions[message_hash] = "resync"
                exchange.orderbooks.pop(symbol, None)
                client.reject(BookResyncError(f"{symbol}: {problem}"), message_hash)
                return message
        return handle(client, message)

    exchange.handle_order_book = checked


def _check_kucoin_books(exchange: Exchange) -> None:
    """Check each level2 delta starts right after the book's sequence; on a gap do what
    ccxt does for a new subscription: forget the nonce and start a cache with this
    delta (ccxt fetches a REST snapshot once ``snapshotDelay`` deltas are cached and
    applies those after it), and reject the watch."""
    handle = exchange.handle_order_book

    def checked(client: Any, message: Any) -> Any:
        data = message.get("data")
        topic = message.get("topic") or ""
        if "Depth" in topic or not isinstance(data, dict):
            return handle(client, message)
        symbol = exchange.safe_symbol(data.get("symbol") or topic.partition(":")[2], None, "-")
        book = exchange.orderbooks.get(symbol)
        first = exchange.safe_integer_2(data, "sequenceStart", "sequence")
        if book is None or not sequence_gap(book["nonce"], first):
            return handle(client, message)
        nonce = book["nonce"]
        book["nonce"] = None
        book.cache.clear()
        book.cache.append(data)
        error = BookResyncError(f"{symbol}: level2 sequence {first} after {nonce}: deltas lost")
        client.reject(error, f"orderbook:{symbol}")
        return None

    exchange.handle_order_book = checked


def guard_frames(exchange: Exchange, on_bad_frame: BadFrameSink) -> None:
    """Make every websocket client *exchange* creates survive a frame ccxt cannot handle.

    ccxt calls ``client.handle_message(frame)`` from a callback; if it raises, the
    receive loop is gone and the socket stays open, silent. The guard catches it there
    (the one place a catch-all is right: anything ccxt raises on wire data), reports
    ``(url, sample, error)``, and fails the client with `BadFrameError`: the pending
    watches fail, ccxt drops the client, and the loops dial and resubscribe.
    """
    make_client = exchange.client

    def client(url: str) -> Any:
        ws = make_client(url)
        if not getattr(ws, "_marketbus_guarded", False):
            guard_client(ws, on_bad_frame)
        urls = _WATCH_URLS.get()
        if urls is not None:
            previous = urls.get(url)
            urls[url] = ws  # the sockets the current watch loop's subscription is on
            ws._marketbus_guard.loops.add(id(urls))
            old: _Guard | None = getattr(previous, "_marketbus_guard", None)
            if old is not None and previous is not ws:
                missed = old.missed_by(id(urls))
                if missed is not None:
                    raise missed  # a bad frame failed our last socket while we were away
        return ws

    exchange.client = client


class _Guard:
    """What `guard_client` knows of one ccxt client: the watch loops on it (by the
    identity of their `_WATCH_URLS` dict), each loop's futures on it, and the loops
    whose watch was not waiting when a bad frame failed it. Lives as long as the
    client; bounded by loops times message hashes."""

    def __init__(self) -> None:
        self.loops: set[int] = set()
        self.futures: dict[tuple[int, str], Any] = {}
        self.missed: set[int] = set()
        self.error: BadFrameError | None = None

    def failed(self, error: BadFrameError) -> None:
        """The client fails with *error*: ccxt rejects only the futures pending now, so
        a loop busy elsewhere (delivering, backing off) would never hear of it and its
        next watch would dial a fresh client silently (no report, no `on_down`)."""
        waiting = {loop for (loop, _), future in self.futures.items() if not future.done()}
        self.missed = self.loops - waiting
        self.error = error

    def missed_by(self, loop: int) -> BadFrameError | None:
        """The failure *loop* did not hear of (once), to raise from its next watch."""
        if self.error is None or loop not in self.missed:
            return None
        self.missed.discard(loop)
        return BadFrameError(str(self.error))


def guard_client(ws: Any, on_bad_frame: BadFrameSink) -> None:
    """Wrap ccxt client *ws*'s frame handler: a frame that makes it raise is reported to
    *on_bad_frame* and fails the client, instead of killing its receive loop silently.
    Each watch loop on *ws* hears of the failure: a waiting watch is rejected by ccxt,
    any other loop's next watch raises it (see `guard_frames`)."""
    handle = ws.handle_message
    guard = _Guard()
    make_future = getattr(ws, "future", None)

    def future(message_hash: str) -> Any:
        assert make_future is not None
        made = make_future(message_hash)
        urls = _WATCH_URLS.get()
        if urls is not None:
            guard.futures[(id(urls), message_hash)] = made
        return made

    def guarded(message: Any) -> None:
        if isinstance(ws.error, BadFrameError):
            return  # already failed: drain what is left without handling it
        try:
            handle(message)
        except Exception as exc:  # ccxt's handler on wire data: see the docstring above
            frame = sample(getattr(message, "data", message))
            on_bad_frame(ws.url, frame, exc)
            error = BadFrameError(f"{type(exc).__name__}: {exc} in frame {frame}")
            guard.failed(error)
            ws.on_error(error)

    ws.handle_message = guarded
    if make_future is not None:
        ws.future = future
    ws._marketbus_guard = guard
    ws._marketbus_guarded = True


def _method_for(kind: str, batch: bool) -> str:
    if timeframe_of(kind) is not None:
        return OHLCV_BATCH if batch else OHLCV_SINGLE
    return (BATCH if batch else SINGLE)[kind]


def plan_feeds(exchange: Exchange, config: ExchangeConfig, namespace: str) -> list[Feed]:
    """The feeds of *config* this exchange can serve (after `load_markets`).

    An unknown symbol, an unsupported kind or timeframe is a ConfigError naming it when
    ``strict``; otherwise it is logged and skipped. No feed left is always an error.
    """
    feeds: list[Feed] = []
    problems: list[str] = []
    has: Mapping[str, Any] = exchange.has
    markets: Mapping[str, Any] = exchange.markets or {}
    timeframes: Mapping[str, Any] = getattr(exchange, "timeframes", None) or {}
    for kind in config.kinds:
        method = _method_for(kind, batch=False)
        if not has.get(method):
            problems.append(f"{config.id} does not support {kind} ({method} is not in has)")
            continue
        timeframe = timeframe_of(kind)
        if timeframe is not None and timeframe not in timeframes:
            problems.append(
                f"{config.id} has no timeframe {timeframe!r} (it has: {', '.join(timeframes)})"
            )
            continue
        for symbol in config.symbols:
            if symbol not in markets:
                problem = f"{config.id} does not list symbol {symbol!r}"
                if problem not in problems:
                    problems.append(problem)
                continue
            feeds.append(Feed(namespace, config.id, kind, symbol))
    if problems and (config.strict or not feeds):
        raise ConfigError(f"exchanges[id={config.id!r}]: " + "; ".join(problems))
    for problem in problems:
        log.error("skipping: %s (set strict = true to refuse to start instead)", problem)
    return feeds


@dataclass(frozen=True, slots=True)
class Subscription:
    """One watch call pattern: a kind and the symbols it covers on one exchange."""

    exchange_id: str
    kind: str
    feeds: tuple[Feed, ...]
    batch: bool

    @property
    def label(self) -> str:
        symbols = ",".join(f.symbol for f in self.feeds)
        return f"{self.exchange_id} {self.kind} [{symbols}]"

    @property
    def symbols(self) -> list[str]:
        return [f.symbol for f in self.feeds]

    async def watch(self, exchange: Exchange) -> list[tuple[str, Any]]:
        """One watch call; its result split as ``(symbol, data)`` pairs."""
        kind = self.kind
        timeframe = timeframe_of(kind)
        if timeframe is not None:
            if self.exchange_id == "bingx":
                for symbol in self.symbols:
                    keep_bingx_spot_candles(exchange, symbol, timeframe)
            if not self.batch:
                return [
                    (
                        self.feeds[0].symbol,
                        await exchange.watch_ohlcv(self.feeds[0].symbol, timeframe),
                    )
                ]
            result = await exchange.watch_ohlcv_for_symbols([[s, timeframe] for s in self.symbols])
            return [(s, by_tf[timeframe]) for s, by_tf in result.items() if timeframe in by_tf]
        if kind == "ticker":
            if not self.batch:
                return [(self.feeds[0].symbol, await exchange.watch_ticker(self.feeds[0].symbol))]
            tickers = await exchange.watch_tickers(self.symbols)
            return list(tickers.items())
        if kind == "trades":
            if not self.batch:
                return [(self.feeds[0].symbol, await exchange.watch_trades(self.feeds[0].symbol))]
            trades = await exchange.watch_trades_for_symbols(self.symbols)
            grouped: dict[str, list[Any]] = defaultdict(list)
            for trade in trades:
                grouped[trade.get("symbol") or self.feeds[0].symbol].append(trade)
            return list(grouped.items())
        if not self.batch:
            return [(self.feeds[0].symbol, await exchange.watch_order_book(self.feeds[0].symbol))]
        book = await exchange.watch_order_book_for_symbols(self.symbols)
        return [(book["symbol"], book)]


def keep_bingx_spot_candles(exchange: Exchange, symbol: str, timeframe: str) -> None:
    """Make ccxt 4.5.90's bingx spot keep one OHLCV cache per symbol and timeframe.

    Its ``handle_ohlcv`` looks the cache up under the raw interval (``1min``) but stores
    it under the unified one (``1m``), so every frame starts a new cache holding that
    frame's candle only: when a candle's final update and the next candle's first frame
    arrive before the next ``watch_ohlcv`` call, the final one is gone, and the candle
    would close with the values seen before. Storing the one cache under both names
    lets ccxt keep it (and return both rows). Called before each watch: ccxt empties
    ``ohlcvs`` when it cleans its websocket data.
    """
    market = exchange.market(symbol)
    raw = exchange.options.get("spot", {}).get("timeframes", {}).get(timeframe)
    if not market.get("spot") or raw is None or raw == timeframe:
        return
    by_timeframe = exchange.ohlcvs.setdefault(market["symbol"], {})
    cache = by_timeframe.get(timeframe)
    if cache is None:
        limit = exchange.safe_integer(exchange.options, "OHLCVLimit", 1000)
        cache = by_timeframe[timeframe] = ArrayCacheByTimestamp(limit)
    by_timeframe[raw] = cache


def subscriptions(exchange: Exchange, feeds: Sequence[Feed], batch: bool) -> list[Subscription]:
    """One single-symbol subscription per feed; with *batch* (``batch_watch``), one
    multi-symbol subscription per kind where ``exchange.has`` offers it.

    Single-symbol calls are the default because ccxt 4.5.90's multi-symbol calls starve
    symbols: each call races one future per symbol, the first symbol of a read always
    wins, and a symbol whose future is not pending when its frame arrives is never
    returned (ETH/USDT got one candle and no ticker in 6 s while BTC/USDT flowed).
    Single-symbol calls share the same socket per URL; each has its own future.
    """
    by_kind: dict[str, list[Feed]] = defaultdict(list)
    for feed in feeds:
        by_kind[feed.kind].append(feed)
    subs: list[Subscription] = []
    for kind, group in by_kind.items():
        exchange_id = group[0].exchange
        if batch and len(group) > 1 and exchange.has.get(_method_for(kind, batch=True)):
            subs.append(Subscription(exchange_id, kind, tuple(group), batch=True))
        else:
            subs.extend(Subscription(exchange_id, kind, (f,), batch=False) for f in group)
    return subs


class _Deadline:
    """The staleness deadline of one loop's watch calls, at a float store per call.

    ``asyncio.timeout`` schedules and cancels a timer per call, which costs about as
    much as the rest of the producer's per-message work in the loop (docs/benchmarks.md).
    This keeps one timer per loop: each call only moves the deadline; the timer, firing
    at an older deadline, re-arms itself for the current one, and only a call still
    waiting at its own deadline is cancelled, the way ``asyncio.timeout`` does it
    (`expired` then withdraws that cancellation and tells the loop).
    """

    __slots__ = (
        "_after_s",
        "_armed_for",
        "_expired",
        "_loop",
        "_task",
        "_timer",
        "_waiting",
        "_when",
    )

    def __init__(self, after_s: float) -> None:
        task = asyncio.current_task()
        if task is None:
            raise RuntimeError("a deadline needs a running task")
        self._task = task
        self._loop = asyncio.get_running_loop()
        self._after_s = after_s
        self._when = 0.0
        self._armed_for = 0.0
        self._waiting = False
        self._expired = False
        self._timer: asyncio.TimerHandle | None = None

    def start(self) -> None:
        """A watch call begins: it must return within *after_s*."""
        self._when = self._loop.time() + self._after_s
        self._waiting = True
        if self._timer is None:
            self._arm()

    def stop(self) -> None:
        """The call returned or raised: nothing to interrupt until the next `start`."""
        self._waiting = False

    def expired(self) -> bool:
        """After a CancelledError: whether this deadline caused it and nothing else asked
        the task to stop (the cancellation is then withdrawn, as ``asyncio.timeout``
        does before raising TimeoutError)."""
        if not self._expired:
            return False
        self._expired = False
        return self._task.uncancel() == 0

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _arm(self) -> None:
        self._armed_for = self._when
        self._timer = self._loop.call_at(self._when, self._fire)

    def _fire(self) -> None:
        self._timer = None
        if not self._waiting:
            return  # between calls: the next start arms the timer again
        if self._when > self._armed_for:
            self._arm()  # the deadline moved on since the timer was set
            return
        self._waiting = False
        self._expired = True
        self._task.cancel()


_STATE_OF: dict[str, FeedState] = {
    "stale": "stale",
    "disconnected": "disconnected",
    "error": "error",
    "connected": "connected",
}


class WatchLoop:
    """Runs one subscription forever: watch, normalize, submit; recover from failures.

    ``counters`` (by feed name) get this loop's state, errors and reconnects. A failure
    is logged and published once per outage and kind (a loop alternating between
    ``error`` and ``stale`` while a subscription is refused reports each once), and the
    recovery once, with how long it took.
    """

    def __init__(
        self,
        exchange: Exchange,
        subscription: Subscription,
        handlers: Mapping[str, FeedHandler],
        settings: ProducerSettings,
        *,
        submit: MessageSink,
        status: StatusSink,
        counters: Mapping[str, FeedCounters],
        max_fill_candles: int = 1000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.exchange = exchange
        self.sub = subscription
        self.handlers = handlers  # by symbol
        self.settings = settings
        self._submit = submit
        self._status = status
        self._counters = [counters[f.name] for f in subscription.feeds]
        self._clock = clock
        self.state: StatusEvent | None = None
        self.backoff = BackoffState(settings.backoff_initial_s, settings.backoff_max_s)
        self._bad_data: set[str] = set()
        self._reported: set[str] = set()
        self._failing_since: float | None = None
        self._retries = 0
        self._quiet = 0
        self._urls: dict[str, Any] = {}
        """The ccxt client this loop last watched on, by URL (recorded by `guard_frames`)."""
        self._seen: dict[str, Any] = {}
        """`_urls` as it was at the last result (see `_socket_replaced`)."""
        self.max_fill_candles = max_fill_candles
        self._routes = {symbol: (h, h.feed.name) for symbol, h in handlers.items()}
        """Each symbol's handler and feed name (the name is a property that formats)."""

    def _transition(self, event: StatusEvent, detail: str) -> None:
        """Enter *event*: log and publish it once per outage and kind, or the recovery."""
        for counters in self._counters:
            counters.state = _STATE_OF.get(event, counters.state)
        feed = self.sub.feeds[0].name if len(self.sub.feeds) == 1 else None
        if event == "connected":
            if self.state == "connected":
                return
            if self._failing_since is None:
                log.info("%s: receiving data", self.sub.label)
            else:
                took = self._clock() - self._failing_since
                detail = f"receiving data again after {took:.1f}s ({self._retries} retries)"
                log.warning("%s: %s", self.sub.label, detail)
            self.state = event
            self._failing_since = None
            self._retries = 0
            self._reported.clear()
        else:
            self.state = event
            if self._failing_since is None:
                self._failing_since = self._clock()
            self._retries += 1
            if event in self._reported:
                return
            self._reported.add(event)
            log.warning("%s: %s: %s", self.sub.label, event, detail)
        text = detail if feed else f"{self.sub.label}: {detail}"
        self._status(self.sub.exchange_id, event, feed, text)

    def _failed(self, event: StatusEvent, detail: str, *, error: bool, down: bool = True) -> float:
        """Count a failed attempt, report it, and return the backoff delay. *down*: the
        socket failed, so candles stop closing by the clock until data flows again."""
        for counters in self._counters:
            counters.reconnects += 1
            if error:
                counters.errors += 1
        if down:
            for handler in self.handlers.values():
                handler.on_down()
        self._transition(event, detail)
        return self.backoff.failure()

    async def run(self) -> None:
        stale_s = self.settings.stale_after_s
        _WATCH_URLS.set(self._urls)  # this task's context: guard_frames records our sockets
        deadline = _Deadline(stale_s)
        try:
            while True:
                deadline.start()
                try:
                    try:
                        results = await self.sub.watch(self.exchange)
                    finally:
                        deadline.stop()
                except TimeoutError:
                    await self._stale(stale_s)
                    continue
                except asyncio.CancelledError:
                    if deadline.expired():
                        await self._stale(stale_s)
                        continue
                    task = asyncio.current_task()
                    if task is None or task.cancelling():
                        raise  # we are being stopped
                    # ccxt cancelled the future we awaited: its client was closed under us.
                    delay = self._failed(
                        "disconnected", "socket closed (ccxt cancelled the watch)", error=False
                    )
                except StaleConnectionError as exc:
                    delay = self._failed("stale", str(exc), error=False)
                except BadFrameError as exc:
                    delay = self._failed("error", f"bad frame from the exchange: {exc}", error=True)
                except ccxt.InvalidNonce as exc:
                    if self.sub.kind == "book":
                        self._resync(exc)
                        continue
                    delay = self._failed(
                        "disconnected", f"{type(exc).__name__}: {exc}", error=False
                    )
                except ccxt.NetworkError as exc:
                    delay = self._failed(
                        "disconnected", f"{type(exc).__name__}: {exc}", error=False
                    )
                except ccxt.BaseError as exc:  # ExchangeError and ccxt's other refusals
                    delay = self._failed("error", f"{type(exc).__name__}: {exc}", error=True)
                else:
                    recv_ns = time.time_ns()
                    self._quiet = 0
                    self.backoff.success(self._clock())
                    if self.state != "connected":
                        self._transition("connected", "receiving data")
                    if self._socket_replaced():
                        for handler in self.handlers.values():
                            handler.on_down()
                    await self._deliver(results, recv_ns)
                    continue
                await asyncio.sleep(delay)
        finally:
            deadline.close()

    def _socket_replaced(self) -> bool:
        """True when a socket this loop had results from was replaced since: ccxt forgets
        a client the server closed, and a loop that was not waiting on it then (busy
        handing data on) dials a new one on its next call without hearing of the loss.
        What the old socket carried meanwhile (trades, a candle's final update) is lost,
        so the handlers are told as after a failed socket."""
        seen, self._seen = self._seen, dict(self._urls)
        return any(seen.get(url, ws) is not ws for url, ws in self._urls.items())

    def _resync(self, exc: BaseException) -> None:
        """A book broke (ccxt or `check_books` noticed) and ccxt rebuilds it from a fresh
        snapshot on the next call: announce ``error`` (``book resync: ...``) and drop any
        book held back, so that the first book after the ``connected`` event the next
        result brings is the fresh one. No backoff: the socket is fine."""
        for counters in self._counters:
            counters.errors += 1
        for handler in self.handlers.values():
            if isinstance(handler, BookHandler):
                handler.on_resync()
        self._transition(
            "error",
            f"book resync: {type(exc).__name__}: {exc}; the next book is rebuilt from a "
            "fresh snapshot",
        )

    async def _deliver(self, results: list[tuple[str, Any]], recv_ns: int) -> None:
        """Normalize each symbol's data and submit its messages, in order (after any REST
        work its handler asked for, whose results complete them)."""
        now_ms = recv_ns // 1_000_000
        submit = self._submit
        for symbol, data in results:
            route = self._routes.get(symbol)
            if route is None:
                continue  # a batch call may report a symbol we did not ask for
            handler, name = route
            try:
                messages = handler.on_data(data, now_ms, recv_ns)
            except NormalizeError as exc:
                self._counters_of(name).errors += 1
                if name not in self._bad_data:
                    self._bad_data.add(name)
                    log.error("%s: skipping malformed data: %s; data: %s", name, exc, sample(data))
                    self._status(self.sub.exchange_id, "error", name, f"malformed data: {exc}")
                continue
            if handler.pending:
                counters = self._counters_of(name)
                served = await serve(
                    self.exchange, handler, self.max_fill_candles, counters, self._status
                )
                messages = [*messages, *served]
            if self._bad_data:
                self._bad_data.discard(name)
            for message in messages:
                submit(name, message)

    def _counters_of(self, feed_name: str) -> FeedCounters:
        for feed, counters in zip(self.sub.feeds, self._counters, strict=True):
            if feed.name == feed_name:
                return counters
        raise KeyError(feed_name)

    async def _stale(self, stale_s: float) -> None:
        """No data for *stale_s*: fail sockets that went silent, else keep waiting.

        ccxt has no staleness timeout, so a stuck feed behind a live gateway looks like a
        silent client: we fail it (every loop on it sees `StaleConnectionError` and
        resubscribes). A live socket with a quiet feed (an illiquid symbol) is reported
        ``stale`` but not torn down, until it stayed quiet for `STALE_ESCALATE` deadlines
        in a row: then the subscription itself may be dead (a lost subscribe reply, while
        other topics keep the socket busy), and this feed's own sockets are failed.

        The feeds count as down (candles refetched, missed trades fetched over REST when
        data flows again) when a socket is failed here, and also when one this loop waited
        on is gone or replaced: another loop failed it first, and what it still carried
        for us (a candle's final update, trades) was lost with it. Otherwise the handlers
        hear `on_quiet`: a subscription stuck behind a live socket loses trades too.
        """
        now_ms = time.time_ns() // 1_000_000
        clients = dict(getattr(self.exchange, "clients", None) or {})
        silent = [
            client
            for client in clients.values()
            if (client.last_message_at or 0) < now_ms - stale_s * 1000
        ]
        self._quiet += 1
        targets = silent
        detail = f"no data for {stale_s * self._quiet:g}s"
        if silent:
            detail += f"; reconnecting {len(silent)} silent socket(s)"
        elif self._quiet >= STALE_ESCALATE:
            targets = [client for url, client in clients.items() if url in self._urls]
            if targets:
                detail += " on a live socket; resubscribing"
                self._quiet = 0
        replaced = any(clients.get(url) is not ws for url, ws in self._urls.items())
        down = bool(targets) or replaced
        delay = self._failed("stale", detail, error=False, down=down)
        if not down:
            for handler in self.handlers.values():
                handler.on_quiet()
        for client in targets:
            client.on_error(StaleConnectionError(f"{detail} ({client.url})"))
        if targets:
            await asyncio.sleep(delay)


async def load_markets(exchange: Exchange, attempts: int, backoff: BackoffState) -> None:
    """``load_markets`` with a few retries; MarketbusError naming the exchange if it fails."""
    for attempt in range(1, attempts + 1):
        try:
            await exchange.load_markets()
            return
        except ccxt.BaseError as exc:
            if attempt == attempts:
                raise MarketbusError(
                    f"{exchange.id}: cannot load markets after {attempts} attempts "
                    f"({type(exc).__name__}: {exc}); is the exchange reachable and are "
                    "exchanges[].ccxt urls right?"
                ) from None
            log.warning("%s: load_markets failed (%s), retrying", exchange.id, exc)
            await asyncio.sleep(backoff.failure())


async def fetch_closed_candles(
    exchange: Exchange,
    feed: Feed,
    after_ms: int | None,
    now_ms: int,
    max_candles: int,
    first_page: int | None = None,
) -> list[Row]:
    """Closed candles of *feed* opened after *after_ms* and ended by *now_ms*, over REST.

    Asks for the latest page first (no ``since``: every exchange answers that; its
    size *first_page*, else 1000), then pages backwards until *after_ms* or
    *max_candles* is reached. With no *after_ms* (an empty stream) one page is enough.
    """
    timeframe = feed.timeframe
    assert timeframe is not None
    period = exchange.parse_timeframe(timeframe) * 1000
    where = f"{feed.name} fetch_ohlcv"
    limit = first_page or 1000
    collected = ohlcv_rows(await exchange.fetch_ohlcv(feed.symbol, timeframe, limit=limit), where)
    page = len(collected)
    while (
        after_ms is not None
        and collected
        and collected[0][0] > after_ms + period
        and len(collected) < max_candles
    ):
        oldest = collected[0][0]
        since = max(after_ms + period, oldest - page * period)
        raw = await exchange.fetch_ohlcv(feed.symbol, timeframe, since=since, limit=page)
        older = [r for r in ohlcv_rows(raw, where) if since <= r[0] < oldest]
        if not older:
            break
        collected = sorted(older) + collected
    closed = [
        r for r in collected if (after_ms is None or r[0] > after_ms) and r[0] + period <= now_ms
    ]
    return closed[-max_candles:]


async def serve(
    exchange: Exchange,
    handler: FeedHandler,
    max_candles: int,
    counters: FeedCounters,
    status: StatusSink,
) -> list[MarketMessage]:
    """Do the REST work *handler* asks for, hand each answer back, and report its
    notices (logged, counted in *counters*, published through *status*): the messages
    the answers completed. One round: work asked for meanwhile waits for the next call."""
    out: list[MarketMessage] = []
    for request in handler.take_requests():
        if isinstance(request, FetchTrades):
            trades = await fetch_trades(exchange, handler.feed, request)
            out.extend(handler.on_trades(request, trades, time.time_ns()))
            continue
        result = await fetch(exchange, handler.feed, request, max_candles)
        answered = handler.on_rest(request, result, time.time_ns())
        if request.purpose == "reconcile":
            counters.corrections += len(answered)  # a candle check sends only corrections
        out.extend(answered)
    for notice in handler.take_notices():
        report(handler.feed, notice, counters, status)
    return out


async def fetch(
    exchange: Exchange, feed: Feed, request: RestRequest, max_candles: int
) -> RestResult:
    """The answer to *request*: what ccxt returned (copied, checked) or why not."""
    if not exchange.has.get("fetchOHLCV"):
        return RestFailed(f"{exchange.id} has no fetchOHLCV", unsupported=True)
    try:
        return await fetch_closed_candles(
            exchange, feed, request.after_ms, request.until_ms, max_candles, request.limit
        )
    except (ccxt.BaseError, NormalizeError) as exc:
        return RestFailed(str(exc))


@dataclass(frozen=True, slots=True)
class TradesRest:
    """How one exchange's recent trades are fetched so that their ids are the socket's.

    ``params`` go to ``fetch_trades``; ``limit`` is the page size; ``cursor`` is the
    request parameter that pages backwards by trade id (None: one page is the window);
    ``since``: whether the endpoint takes a start time (else it is not sent)."""

    params: Mapping[str, Any]
    limit: int | None
    cursor: str | None = None
    since: bool = False


TRADES_REST: Mapping[str, TradesRest] = {
    # fetch_trades defaults to /api/v3/aggTrades, whose ids are aggregate ids, not the
    # @trade stream's; /api/v3/trades (recent 1000, no start time) has the same ids.
    "binance": TradesRest({"fetchTradesMethod": "publicGetTrades"}, 1000),
    "binanceusdm": TradesRest({"fetchTradesMethod": "fapiPublicGetTrades"}, 1000),
    # /market/history-trades pages back by tradeId (after=) 100 at a time.
    "okx": TradesRest({"method": "publicGetMarketHistoryTrades"}, 100, cursor="after"),
    # /api/v1/trade/history: the 100 most recent, no paging.
    "kucoinfutures": TradesRest({}, None),
    # spot /market/trades: the 100 most recent (swap: 1000, with no trade ids).
    "bingx": TradesRest({}, 100),
}
"""Per exchange id; others use ``fetch_trades(symbol, since, 1000)`` once."""
TRADES_REST_DEFAULT = TradesRest({}, 1000, since=True)
MAX_TRADE_PAGES = 50
"""Pages at most per recovery (okx: 5,000 trades); the rest is announced as a gap."""


async def fetch_trades(
    exchange: Exchange, feed: Feed, request: FetchTrades
) -> FetchedTrades | RestFailed:
    """The trades of *feed* since ``request.since_ms`` the exchange still has, oldest
    first, fetched the way `TRADES_REST` says (ccxt's rate limiter paces the pages)."""
    if not exchange.has.get("fetchTrades"):
        return RestFailed(f"{exchange.id} has no fetchTrades", unsupported=True)
    how = TRADES_REST.get(exchange.id, TRADES_REST_DEFAULT)
    since = request.since_ms
    collected: dict[str, Trade] = {}
    anonymous: list[Trade] = []
    params = dict(how.params)
    try:
        for _ in range(MAX_TRADE_PAGES):
            raw = await exchange.fetch_trades(
                feed.symbol, since if how.since else None, how.limit, params
            )
            page = normalize.trades(feed.exchange, feed.symbol, raw, 0).trades if raw else ()
            new = [t for t in page if t.id is None or t.id not in collected]
            for trade in new:
                if trade.id is None:
                    anonymous.append(trade)
                else:
                    collected[trade.id] = trade
            oldest = min((t for t in page if t.ts_ms is not None), key=_ts, default=None)
            if (
                how.cursor is None
                or not new
                or oldest is None
                or oldest.id is None
                or since is None
                or _ts(oldest) < since
            ):
                break
            params[how.cursor] = oldest.id
    except (ccxt.BaseError, NormalizeError) as exc:
        return RestFailed(f"{type(exc).__name__}: {exc}")
    trades = sorted([*collected.values(), *anonymous], key=exchange_order)
    return FetchedTrades(tuple(trades))


def _ts(trade: Trade) -> int:
    return trade.ts_ms or 0


def report(feed: Feed, notice: Notice, counters: FeedCounters, status: StatusSink) -> None:
    """Log a handler's *notice* about *feed*, count it if an error, publish its event."""
    if notice.error:
        counters.errors += 1
        log.error("%s: %s", feed.name, notice.detail)
    elif notice.event is not None:
        log.warning("%s: %s", feed.name, notice.detail)
    else:
        log.info("%s: %s", feed.name, notice.detail)
    if notice.event is not None:
        if notice.from_ms is None and notice.to_ms is None:
            status(feed.exchange, notice.event, feed.name, notice.detail)
        else:
            status(
                feed.exchange,
                notice.event,
                feed.name,
                notice.detail,
                from_ms=notice.from_ms,
                to_ms=notice.to_ms,
            )
