"""Per-feed state between ccxt and the outbox (pure): one handler per data kind.

A handler turns what one watch call returned for its feed into wire messages (run/seq
unset) and may emit more when the clock moves (closing a candle, releasing a
conflated book). Nothing here awaits or reads a clock.
"""

from __future__ import annotations

from collections import deque
from typing import Any, Protocol

from marketbus.producer import normalize
from marketbus.producer.candles import CandleTracker
from marketbus.shared.names import Feed
from marketbus.shared.schema import OHLCV, Book, MarketMessage, Trade

TRADE_ID_MEMORY = 10_000
"""Recent trade ids remembered per feed to drop trades ccxt repeats after a reconnect."""


class FeedHandler(Protocol):
    """What a watch loop and the clock need from a feed's state."""

    feed: Feed

    def on_data(self, data: Any, now_ms: int, recv_ns: int) -> list[MarketMessage]:
        """Messages for *data* (this feed's part of one watch result)."""
        ...

    def on_clock(self, now_ms: int, recv_ns: int) -> list[MarketMessage]:
        """Messages due because time passed."""
        ...


class OhlcvHandler:
    """Candles: copies ccxt's rows and infers closes with a `CandleTracker`.

    ``live`` is False while the feed's socket is down: the clock then closes nothing (the
    forming candle's last updates are missing); its watch loop fetches the final values
    over REST when data flows again.
    """

    def __init__(self, feed: Feed, close_grace_ms: int) -> None:
        timeframe = feed.timeframe
        if timeframe is None:
            raise ValueError(f"{feed.name} is not an ohlcv feed")
        self.feed = feed
        self.tracker = CandleTracker(feed.exchange, feed.symbol, timeframe, close_grace_ms)
        self.live = True
        self._where = f"{feed.name} ohlcv"

    def on_data(self, data: Any, now_ms: int, recv_ns: int) -> list[MarketMessage]:
        return list(self.apply(self.rows(data), now_ms, recv_ns))

    def rows(self, data: Any) -> list[normalize.Row]:
        """ccxt's rows, copied (ccxt mutates them later)."""
        return normalize.ohlcv_rows(data, self._where)

    def apply(self, rows: list[normalize.Row], now_ms: int, recv_ns: int) -> list[OHLCV]:
        """Messages for *rows* (the socket's, after any fetched to fill what it skipped)."""
        return self.tracker.update(rows, now_ms, recv_ns)

    def on_clock(self, now_ms: int, recv_ns: int) -> list[MarketMessage]:
        return list(self.tracker.tick(now_ms, recv_ns)) if self.live else []

    def take_holes(self) -> list[tuple[int, int]]:
        return self.tracker.take_holes()


class TickerHandler:
    """Tickers: one message per ccxt ticker."""

    def __init__(self, feed: Feed) -> None:
        self.feed = feed

    def on_data(self, data: Any, now_ms: int, recv_ns: int) -> list[MarketMessage]:
        return [normalize.ticker(self.feed.exchange, self.feed.symbol, data, recv_ns)]

    def on_clock(self, now_ms: int, recv_ns: int) -> list[MarketMessage]:
        return []


class TradeIds:
    """A bounded memory of recent trade ids: a set plus a FIFO for eviction."""

    def __init__(self, capacity: int = TRADE_ID_MEMORY) -> None:
        self.capacity = capacity
        self._seen: set[str] = set()
        self._order: deque[str] = deque()

    def __len__(self) -> int:
        return len(self._seen)

    def fresh(self, trades: tuple[Trade, ...]) -> tuple[Trade, ...]:
        """The trades not seen before (trades without an id are always kept)."""
        kept: list[Trade] = []
        for trade in trades:
            if trade.id is None:
                kept.append(trade)
                continue
            if trade.id in self._seen:
                continue
            self._seen.add(trade.id)
            self._order.append(trade.id)
            if len(self._order) > self.capacity:
                self._seen.discard(self._order.popleft())
            kept.append(trade)
        return tuple(kept)


class TradesHandler:
    """Trades: one message per ccxt batch, every trade kept once (deduplicated by id).

    ``live`` is False while the feed's socket is down: trades made meanwhile never reach
    us (exchanges do not replay them, and REST trade ids differ from the socket's on
    some exchanges, so they cannot be merged safely). When trades flow again the window
    is kept for `take_interruption`, and the watch loop announces it as a ``gap``.
    """

    def __init__(self, feed: Feed, memory: int = TRADE_ID_MEMORY) -> None:
        self.feed = feed
        self.ids = TradeIds(memory)
        self.duplicates = 0
        self.live = True
        self.newest_ms: int | None = None
        """Exchange time of the newest trade published."""
        self._interruption: tuple[int | None, int | None] | None = None

    def on_data(self, data: Any, now_ms: int, recv_ns: int) -> list[MarketMessage]:
        batch = normalize.trades(self.feed.exchange, self.feed.symbol, data, recv_ns)
        fresh = self.ids.fresh(batch.trades)
        self.duplicates += len(batch.trades) - len(fresh)
        if not fresh:
            return []
        if len(fresh) == len(batch.trades):
            message = batch
        else:
            message = normalize.trades_message(self.feed.exchange, self.feed.symbol, fresh, recv_ns)
        if not self.live:
            self.live = True
            stamps = [t.ts_ms for t in fresh if t.ts_ms is not None]
            self._interruption = (self.newest_ms, min(stamps) if stamps else None)
        newest = message.ts_ms  # the batch's newest trade time
        if newest is not None and (self.newest_ms is None or newest > self.newest_ms):
            self.newest_ms = newest
        return [message]

    def on_clock(self, now_ms: int, recv_ns: int) -> list[MarketMessage]:
        return []

    def take_interruption(self) -> str | None:
        """Once trades flow again after the socket was down: which trades may be missing,
        as the ``detail`` of a ``gap`` status event (None otherwise)."""
        window, self._interruption = self._interruption, None
        if window is None:
            return None
        after, before = window
        since = "the last trade published" if after is None else f"{after} (the last one published)"
        until = "the first one after" if before is None else f"{before} (the first one after)"
        return (
            f"the exchange stream was interrupted: trades between {since} and {until}, "
            "exchange time in ms, may be missing; they are not re-fetched"
        )


class BookHandler:
    """Top-N books, at most one per ``interval_ms`` (0: every update); the newest wins and
    a held one is released by the clock."""

    def __init__(self, feed: Feed, depth: int, interval_ms: int) -> None:
        self.feed = feed
        self.depth = depth
        self.interval_ms = interval_ms
        self._last_sent_ms: int | None = None
        self._held: Book | None = None

    def on_data(self, data: Any, now_ms: int, recv_ns: int) -> list[MarketMessage]:
        book = normalize.book(self.feed.exchange, self.feed.symbol, data, self.depth, recv_ns)
        if self._due(now_ms):
            self._held = None
            self._last_sent_ms = now_ms
            return [book]
        self._held = book
        return []

    def on_clock(self, now_ms: int, recv_ns: int) -> list[MarketMessage]:
        if self._held is None or not self._due(now_ms):
            return []
        held, self._held = self._held, None
        self._last_sent_ms = now_ms
        return [held]

    def _due(self, now_ms: int) -> bool:
        last = self._last_sent_ms
        return self.interval_ms == 0 or last is None or now_ms - last >= self.interval_ms


def handler_for(
    feed: Feed, *, close_grace_ms: int, book_depth: int, book_interval_ms: int
) -> FeedHandler:
    """The handler for *feed*'s kind."""
    if feed.timeframe is not None:
        return OhlcvHandler(feed, close_grace_ms)
    if feed.kind == "ticker":
        return TickerHandler(feed)
    if feed.kind == "trades":
        return TradesHandler(feed)
    return BookHandler(feed, book_depth, book_interval_ms)
