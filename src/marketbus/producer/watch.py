"""ccxt.pro side of the producer: build and validate exchanges, run one watch loop per
subscription (one ``watch_*`` call pattern covering one or many feeds).

This is the only module that calls ccxt. Each loop catches exactly what ccxt raises at
the boundary (`ccxt.NetworkError`, `ccxt.ExchangeError`, ccxt's other errors) and its
own staleness deadline, reports a status event once per state change, backs off with
jitter and calls again; ccxt re-subscribes the topic on the next call. One loop's
failure never stops another's.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import ccxt
import ccxt.pro

from marketbus.producer.backoff import Backoff
from marketbus.producer.feeds import FeedHandler, OhlcvHandler
from marketbus.producer.normalize import Row, ohlcv_rows
from marketbus.shared.config import ExchangeConfig, ProducerSettings
from marketbus.shared.errors import ConfigError, MarketbusError, NormalizeError
from marketbus.shared.names import Feed
from marketbus.shared.schema import MarketMessage, StatusEvent

log = logging.getLogger(__name__)

Exchange = Any
"""A ccxt.pro exchange instance (ccxt ships no type hints)."""

StatusSink = Callable[[str, StatusEvent, str | None, str], None]
"""``(exchange, event, feed name or None, detail)``."""
MessageSink = Callable[[str, MarketMessage], None]
"""``(feed name, message)``."""
Observer = Callable[[Sequence[Feed], Literal["error", "reconnect"]], None]

SINGLE = {"ticker": "watchTicker", "trades": "watchTrades", "book": "watchOrderBook"}
BATCH = {"ticker": "watchTickers", "trades": "watchTradesForSymbols",
         "book": "watchOrderBookForSymbols"}  # fmt: skip
OHLCV_SINGLE = "watchOHLCV"
OHLCV_BATCH = "watchOHLCVForSymbols"


def create_exchange(config: ExchangeConfig) -> Exchange:
    """``ccxt.pro.<id>(config.ccxt)``; ConfigError if ccxt.pro has no such exchange."""
    cls = getattr(ccxt.pro, config.id, None)
    if cls is None or config.id not in ccxt.pro.exchanges:
        raise ConfigError(
            f"exchanges[id={config.id!r}]: ccxt.pro has no exchange {config.id!r} "
            "(see ccxt.pro.exchanges for the ids)"
        )
    return cls(dict(config.ccxt))


def _method_for(kind: str, batch: bool) -> str:
    if kind.startswith("ohlcv."):
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
        timeframe = kind[len("ohlcv.") :] if kind.startswith("ohlcv.") else None
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
        if kind.startswith("ohlcv."):
            timeframe = kind[len("ohlcv.") :]
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


BATCHED_KINDS: frozenset[str] = frozenset({"ohlcv", "ticker"})
"""Kinds watched with ccxt's multi-symbol form when ``has`` offers it.

Trades and books stay single-symbol: ccxt's ``watch*ForSymbols`` resolves each call with
one symbol's data, and with frames arriving in a fixed order (okx, checked with ccxt
4.5.90) the later symbol was starved (4 of 60 results). Single-symbol calls share the
same socket anyway; each symbol then has its own future and none waits on another.
"""


def subscriptions(exchange: Exchange, feeds: Sequence[Feed]) -> list[Subscription]:
    """Group feeds by kind into batch subscriptions where ``exchange.has`` offers them
    (for `BATCHED_KINDS`), single-symbol subscriptions otherwise."""
    by_kind: dict[str, list[Feed]] = defaultdict(list)
    for feed in feeds:
        by_kind[feed.kind].append(feed)
    subs: list[Subscription] = []
    for kind, group in by_kind.items():
        exchange_id = group[0].exchange
        batchable = kind.split(".")[0] in BATCHED_KINDS
        if batchable and len(group) > 1 and exchange.has.get(_method_for(kind, batch=True)):
            subs.append(Subscription(exchange_id, kind, tuple(group), batch=True))
        else:
            subs.extend(Subscription(exchange_id, kind, (f,), batch=False) for f in group)
    return subs


class WatchLoop:
    """Runs one subscription forever: watch, normalize, submit; recover from failures."""

    def __init__(
        self,
        exchange: Exchange,
        subscription: Subscription,
        handlers: Mapping[str, FeedHandler],
        settings: ProducerSettings,
        *,
        submit: MessageSink,
        status: StatusSink,
        observe: Observer,
        max_fill_candles: int = 1000,
    ) -> None:
        self.exchange = exchange
        self.sub = subscription
        self.handlers = handlers  # by symbol
        self.settings = settings
        self._submit = submit
        self._status = status
        self._observe = observe
        self.state: StatusEvent | None = None
        self.backoff = Backoff(settings.backoff_initial_s, settings.backoff_max_s)
        self._bad_data: set[str] = set()
        self.max_fill_candles = max_fill_candles

    def _transition(self, event: StatusEvent, detail: str) -> None:
        """Report a state change once (not once per retry)."""
        if event == self.state:
            return
        self.state = event
        feed = self.sub.feeds[0].name if len(self.sub.feeds) == 1 else None
        text = detail if feed else f"{self.sub.label}: {detail}"
        if event == "connected":
            log.info("%s: receiving data", self.sub.label)
        else:
            log.warning("%s: %s: %s", self.sub.label, event, detail)
        self._status(self.sub.exchange_id, event, feed, text)

    async def run(self) -> None:
        stale_s = self.settings.stale_after_s
        while True:
            try:
                async with asyncio.timeout(stale_s):
                    results = await self.sub.watch(self.exchange)
            except TimeoutError:
                self._observe(self.sub.feeds, "reconnect")
                await self._stale(stale_s)
                continue
            except ccxt.NetworkError as exc:
                self._observe(self.sub.feeds, "reconnect")
                self._transition("disconnected", f"{type(exc).__name__}: {exc}")
                await asyncio.sleep(self.backoff.failure())
                continue
            except ccxt.BaseError as exc:  # ExchangeError and ccxt's other refusals
                self._observe(self.sub.feeds, "error")
                self._transition("error", f"{type(exc).__name__}: {exc}")
                await asyncio.sleep(self.backoff.failure())
                continue
            recv_ns = time.time_ns()
            self.backoff.success(time.monotonic())
            self._transition("connected", "receiving data")
            self._handle(results, recv_ns)
            await self._fill_holes()

    def _handle(self, results: list[tuple[str, Any]], recv_ns: int) -> None:
        now_ms = recv_ns // 1_000_000
        for symbol, data in results:
            handler = self.handlers.get(symbol)
            if handler is None:
                continue  # a batch call may report a symbol we did not ask for
            try:
                messages = handler.on_data(data, now_ms, recv_ns)
            except NormalizeError as exc:
                self._observe((handler.feed,), "error")
                if handler.feed.name not in self._bad_data:
                    self._bad_data.add(handler.feed.name)
                    log.error("%s: skipping malformed data: %s", handler.feed.name, exc)
                    self._status(self.sub.exchange_id, "error", handler.feed.name, str(exc))
                continue
            self._bad_data.discard(handler.feed.name)
            for message in messages:
                self._submit(handler.feed.name, message)

    async def _fill_holes(self) -> None:
        """Fetch candles the socket skipped (reconnect, startup race) over REST."""
        for handler in self.handlers.values():
            if not isinstance(handler, OhlcvHandler):
                continue
            for start, end in handler.take_holes():
                period = handler.tracker.period_ms
                try:
                    rows = await fetch_closed_candles(
                        self.exchange, handler.feed, start - period, end, self.max_fill_candles
                    )
                except (ccxt.BaseError, NormalizeError) as exc:
                    self._observe((handler.feed,), "error")
                    detail = f"candles {start}..{end - period} missed and not fetched: {exc}"
                    log.error("%s: %s", handler.feed.name, detail)
                    self._status(self.sub.exchange_id, "error", handler.feed.name, detail)
                    continue
                for message in handler.tracker.fill(rows, time.time_ns()):
                    self._submit(handler.feed.name, message)

    async def _stale(self, stale_s: float) -> None:
        """No data for *stale_s*: reconnect sockets that went silent, else keep waiting.

        ccxt has no staleness timeout, and a handler exception kills its receive loop
        while the socket stays open; both look like a silent client, which we close so
        the next watch call dials again. A live socket with a quiet feed (an illiquid
        symbol) is reported ``stale`` but not torn down.
        """
        now_ms = time.time_ns() // 1_000_000
        silent = [
            client
            for client in list(getattr(self.exchange, "clients", {}).values())
            if (client.last_message_at or 0) < now_ms - stale_s * 1000
        ]
        detail = f"no data for {stale_s:g}s"
        if silent:
            detail += f"; reconnecting {len(silent)} silent socket(s)"
        self._transition("stale", detail)
        for client in silent:
            try:
                await client.close()
            except (ccxt.BaseError, OSError) as exc:
                log.debug("%s: closing a silent socket failed: %s", self.sub.label, exc)
        if silent:
            await asyncio.sleep(self.backoff.failure())


async def load_markets(exchange: Exchange, attempts: int, backoff: Backoff) -> None:
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
    exchange: Exchange, feed: Feed, after_ms: int | None, now_ms: int, max_candles: int
) -> list[Row]:
    """Closed candles of *feed* opened after *after_ms* and ended by *now_ms*, over REST.

    Asks for the latest page first (no ``since``: every exchange answers that), then
    pages backwards until *after_ms* or *max_candles* is reached. With no *after_ms*
    (an empty stream) one page is enough.
    """
    timeframe = feed.timeframe
    assert timeframe is not None
    period = exchange.parse_timeframe(timeframe) * 1000
    where = f"{feed.name} fetch_ohlcv"
    collected = ohlcv_rows(await exchange.fetch_ohlcv(feed.symbol, timeframe, limit=1000), where)
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
