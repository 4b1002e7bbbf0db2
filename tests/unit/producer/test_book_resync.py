"""A broken book in the watch loop and `BookHandler`: announced once, no backoff, and
the first book after it goes out at once, without sockets."""

from __future__ import annotations

import asyncio
from typing import Any

import ccxt
import pytest

from marketbus.producer.config import ProducerSettings
from marketbus.producer.feeds import BookHandler
from marketbus.producer.stats import FeedCounters
from marketbus.producer.watch import BookResyncError, Subscription, WatchLoop
from marketbus.shared.names import Feed
from marketbus.shared.schema import Book, MarketMessage, Status

FEED = Feed("md", "okx", "book", "BTC/USDT:USDT")


def _book(best_bid: float) -> dict[str, Any]:
    return {
        "symbol": FEED.symbol,
        "bids": [[best_bid, 1.0]],
        "asks": [[best_bid + 1, 1.0]],
        "timestamp": 1,
    }


class ScriptedBooks:
    """Answers watch_order_book from a script: exceptions are raised, anything else returned."""

    def __init__(self, script: list[Any]) -> None:
        self.script = script
        self.clients: dict[str, Any] = {}
        self.done = asyncio.Event()

    async def watch_order_book(self, symbol: str) -> Any:
        if not self.script:
            self.done.set()
            await asyncio.Event().wait()
        item = self.script.pop(0)
        if isinstance(item, BaseException):
            raise item
        return item


async def _run(script: list[Any], interval_ms: int) -> tuple[list[MarketMessage], FeedCounters]:
    """What the loop sends, books and status events in one list in order."""
    counters = {FEED.name: FeedCounters()}
    out: list[MarketMessage] = []

    def status(exchange: str, event: Any, feed: str | None, detail: str, **_: Any) -> None:
        out.append(
            Status(exchange=exchange, ts_ms=None, recv_ns=0, event=event, feed=feed, detail=detail)
        )

    exchange = ScriptedBooks(script)
    loop = WatchLoop(
        exchange,
        Subscription("okx", "book", (FEED,), batch=False),
        {FEED.symbol: BookHandler(FEED, 5, interval_ms)},
        ProducerSettings(backoff_initial_s=30, backoff_max_s=30),
        submit=lambda name, message: out.append(message),
        status=status,
        counters=counters,
    )
    task = asyncio.create_task(loop.run())
    await asyncio.wait_for(exchange.done.wait(), 5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    return out, counters[FEED.name]


@pytest.mark.parametrize(
    "error",
    [
        ccxt.ChecksumError("binance orderbook data checksum validation failed"),
        ccxt.InvalidNonce("okx watchOrderBook received invalid nonce"),
        BookResyncError("okx books checksum 1 != 2"),
    ],
    ids=type,
)
async def test_a_resync_is_announced_before_the_fresh_book_which_is_not_held(
    error: Exception,
) -> None:
    # The first book goes out; the second is held by the interval; then the book breaks.
    # The backoff is 30 s: a loop that backed off would not finish within the deadline.
    out, counters = await _run([_book(100), _book(101), error, _book(200)], interval_ms=60_000)
    kinds = [
        (m.event, m.detail.split(":")[0].split(" after")[0])
        if isinstance(m, Status)
        else m.bids[0][0]
        for m in out
        if isinstance(m, Status | Book)
    ]
    assert kinds == [
        ("connected", "receiving data"),
        100.0,
        ("error", "book resync"),
        ("connected", "receiving data again"),
        200.0,
    ]
    resync = out[2]
    assert isinstance(resync, Status) and resync.feed == FEED.name
    assert type(error).__name__ in resync.detail
    assert (counters.errors, counters.reconnects, counters.state) == (1, 0, "connected")


def test_book_handler_drops_a_held_book_on_resync_and_sends_the_next_at_once() -> None:
    handler = BookHandler(FEED, 5, interval_ms=1000)
    assert len(handler.on_data(_book(100), now_ms=0, recv_ns=0)) == 1
    assert handler.on_data(_book(101), now_ms=10, recv_ns=1) == []
    handler.on_resync()
    assert handler.on_clock(now_ms=5000, recv_ns=2) == []
    [fresh] = handler.on_data(_book(200), now_ms=20, recv_ns=3)
    assert isinstance(fresh, Book) and fresh.bids[0][0] == 200.0
