"""Subscription planning and the watch loop's failure reporting, without sockets."""

from __future__ import annotations

import asyncio
import contextvars
import time
from types import SimpleNamespace
from typing import Any

import ccxt
import pytest

from marketbus.producer.config import ProducerSettings
from marketbus.producer.feeds import OhlcvHandler, TickerHandler, TradesHandler
from marketbus.producer.stats import FeedCounters
from marketbus.producer.watch import (
    _WATCH_URLS,
    BadFrameError,
    StaleConnectionError,
    Subscription,
    WatchLoop,
    guard_frames,
    sample,
    subscriptions,
)
from marketbus.shared.names import Feed
from marketbus.shared.schema import StatusEvent
from tests.support.waiting import wait_until

SYMBOLS = ["BTC/USDT", "ETH/USDT", "SOL/USDT"]
KINDS = ["ohlcv.1m", "ticker", "trades", "book"]
HAS = {
    "watchOHLCV": True,
    "watchOHLCVForSymbols": True,
    "watchTicker": True,
    "watchTickers": True,
    "watchTrades": True,
    "watchTradesForSymbols": True,
    "watchOrderBook": True,
    "watchOrderBookForSymbols": True,
}


def feeds() -> list[Feed]:
    return [Feed("md", "binance", kind, symbol) for kind in KINDS for symbol in SYMBOLS]


def test_single_symbol_watches_are_the_default() -> None:
    subs = subscriptions(SimpleNamespace(has=HAS), feeds(), batch=False)
    assert len(subs) == 12
    assert all(not s.batch and len(s.feeds) == 1 for s in subs)


def test_batch_watches_are_an_opt_in_where_ccxt_has_them() -> None:
    has = HAS | {"watchTradesForSymbols": False}
    subs = subscriptions(SimpleNamespace(has=has), feeds(), batch=True)
    batched = {s.kind: len(s.feeds) for s in subs if s.batch}
    assert batched == {"ohlcv.1m": 3, "ticker": 3, "book": 3}
    assert sum(1 for s in subs if s.kind == "trades") == 3


def test_a_sample_is_short_text() -> None:
    assert sample(b"{bad") == "{bad"
    assert sample("x" * 500) == "x" * 200 + "..."
    assert sample({"a": 1}) == "{'a': 1}"


class ScriptedExchange:
    """Answers watch_ticker from a script: exceptions are raised, anything else returned."""

    def __init__(self, script: list[Any]) -> None:
        self.script = script
        self.clients: dict[str, Any] = {}
        self.done = asyncio.Event()

    async def watch_ticker(self, symbol: str) -> Any:
        if not self.script:
            self.done.set()
            await asyncio.Event().wait()
        item = self.script.pop(0)
        if isinstance(item, BaseException):
            raise item
        return item


TICKER = {"symbol": "BTC/USDT", "bid": 1.0, "ask": 2.0, "last": 1.5, "timestamp": 1}


async def run_script(script: list[Any]) -> tuple[list[tuple[StatusEvent, str]], FeedCounters]:
    feed = Feed("md", "binance", "ticker", "BTC/USDT")
    counters = {feed.name: FeedCounters()}
    events: list[tuple[StatusEvent, str]] = []
    exchange = ScriptedExchange(script)
    loop = WatchLoop(
        exchange,
        Subscription("binance", "ticker", (feed,), batch=False),
        {"BTC/USDT": TickerHandler(feed)},
        ProducerSettings(backoff_initial_s=0.001, backoff_max_s=0.001),
        submit=lambda name, message: None,
        status=lambda exchange, event, name, detail, **window: events.append((event, detail)),
        counters=counters,
    )
    task = asyncio.create_task(loop.run())
    await asyncio.wait_for(exchange.done.wait(), 5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    return events, counters[feed.name]


async def test_each_failure_kind_is_reported_once_per_outage_and_the_recovery_once() -> None:
    refused = ccxt.ExchangeError("subscription refused")
    stale = StaleConnectionError("no frame for 1s")
    events, counters = await run_script(
        [
            TICKER,
            refused,
            stale,
            refused,
            stale,
            refused,
            TICKER,
            TICKER,
            ccxt.NetworkError("closed"),
            TICKER,
        ]
    )
    assert [e for e, _ in events] == [
        "connected",
        "error",
        "stale",
        "connected",
        "disconnected",
        "connected",
    ]
    assert "after" in events[3][1] and "5 retries" in events[3][1]
    assert (counters.errors, counters.reconnects, counters.state) == (3, 6, "connected")


async def test_a_bad_frame_counts_as_an_error() -> None:
    events, counters = await run_script([BadFrameError("TypeError in frame {..."), TICKER])
    assert events[0][0] == "error" and "bad frame" in events[0][1]
    assert counters.errors == 1


async def test_a_cancellation_from_ccxt_is_a_disconnect_not_the_end() -> None:
    cancelled = asyncio.get_running_loop().create_future()
    cancelled.cancel()

    class Cancelling(ScriptedExchange):
        async def watch_ticker(self, symbol: str) -> Any:
            if self.script and self.script[0] == "cancel":
                self.script.pop(0)
                await cancelled  # what ccxt's client.close() does to pending futures
            return await super().watch_ticker(symbol)

    feed = Feed("md", "binance", "ticker", "BTC/USDT")
    counters = {feed.name: FeedCounters()}
    events: list[str] = []
    exchange = Cancelling(["cancel", TICKER])
    loop = WatchLoop(
        exchange,
        Subscription("binance", "ticker", (feed,), batch=False),
        {"BTC/USDT": TickerHandler(feed)},
        ProducerSettings(backoff_initial_s=0.001, backoff_max_s=0.001),
        submit=lambda name, message: None,
        status=lambda exchange, event, name, detail: events.append(event),
        counters=counters,
    )
    task = asyncio.create_task(loop.run())
    await asyncio.wait_for(exchange.done.wait(), 5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert events == ["disconnected", "connected"]


class FakeClient:
    url = "ws://x/0"

    def __init__(self) -> None:
        self.error: BaseException | None = None
        self.handled: list[Any] = []

    def handle_message(self, message: Any) -> None:
        if message == "poison":
            raise TypeError("can only concatenate str")
        self.handled.append(message)

    def on_error(self, error: BaseException) -> None:
        self.error = error


def test_the_frame_guard_reports_a_sample_and_fails_the_socket() -> None:
    ws = FakeClient()
    exchange = SimpleNamespace(client=lambda url: ws)
    reported: list[tuple[str, str, str]] = []
    guard_frames(exchange, lambda url, frame, exc: reported.append((url, frame, str(exc))))
    client = exchange.client("ws://x/0")
    client.handle_message("ok")
    client.handle_message("poison")
    client.handle_message("after")  # drained, not handled: the socket is failing
    assert ws.handled == ["ok"]
    assert reported == [("ws://x/0", "poison", "can only concatenate str")]
    assert isinstance(ws.error, BadFrameError) and "poison" in str(ws.error)
    assert exchange.client("ws://x/0") is ws  # guarded once


class FutureClient(FakeClient):
    """A ccxt client as far as its futures go: a failure rejects only the pending ones."""

    def __init__(self) -> None:
        super().__init__()
        self.futures: dict[str, asyncio.Future[Any]] = {}

    def future(self, message_hash: str) -> asyncio.Future[Any]:
        made = self.futures[message_hash] = asyncio.get_running_loop().create_future()
        return made

    def on_error(self, error: BaseException) -> None:
        super().on_error(error)
        for future in self.futures.values():
            if not future.done():
                future.set_exception(error)


async def test_a_bad_frame_while_a_loop_was_not_waiting_fails_that_loops_next_watch() -> None:
    """ccxt rejects only the watches pending when the guard fails a client and then
    drops it: a loop busy delivering would dial a fresh client silently (no report, no
    `on_down`). Its next watch raises the failure instead, once; a loop whose watch was
    rejected is not failed twice."""
    clients: dict[str, FutureClient] = {}

    def make_client(url: str) -> FutureClient:
        if url not in clients or clients[url].error is not None:  # ccxt drops a failed one
            clients[url] = FutureClient()
        return clients[url]

    exchange = SimpleNamespace(client=make_client)
    guard_frames(exchange, lambda url, frame, exc: None)
    away, waiting = contextvars.copy_context(), contextvars.copy_context()
    for loop in (away, waiting):
        loop.run(_WATCH_URLS.set, {})
    first = away.run(exchange.client, "ws://x/0")
    away.run(first.future, "candles").set_result("a candle")  # delivered: not waiting now
    assert waiting.run(exchange.client, "ws://x/0") is first
    pending = waiting.run(first.future, "trades")
    first.handle_message("poison")
    assert isinstance(pending.exception(), BadFrameError)
    with pytest.raises(BadFrameError, match="poison"):
        away.run(exchange.client, "ws://x/0")
    second = away.run(exchange.client, "ws://x/0")
    assert second is not first and second.error is None
    assert waiting.run(exchange.client, "ws://x/0") is second


async def test_a_feed_quiet_on_a_live_socket_is_resubscribed_after_a_few_deadlines() -> None:
    class LiveClient(FakeClient):
        url = "ws://x/1"

        @property
        def last_message_at(self) -> int:
            return time.time_ns() // 1_000_000  # other topics keep the socket busy

    live = LiveClient()

    class Quiet:
        """Subscribed on a live socket, but its own topic never delivers (a lost ack)."""

        def __init__(self) -> None:
            self.clients = {live.url: live}

        def client(self, url: str) -> Any:
            return self.clients[url]

        async def watch_ticker(self, symbol: str) -> Any:
            self.client(live.url)
            await asyncio.Event().wait()

    exchange = Quiet()
    guard_frames(exchange, lambda url, frame, exc: None)
    feed = Feed("md", "binance", "ticker", "BTC/USDT")
    counters = {feed.name: FeedCounters()}
    events: list[str] = []
    loop = WatchLoop(
        exchange,
        Subscription("binance", "ticker", (feed,), batch=False),
        {"BTC/USDT": TickerHandler(feed)},
        ProducerSettings(stale_after_s=0.02, backoff_initial_s=0.001, backoff_max_s=0.001),
        submit=lambda name, message: None,
        status=lambda exchange, event, name, detail: events.append(detail),
        counters=counters,
    )
    task = asyncio.create_task(loop.run())
    try:
        await wait_until(lambda: live.error is not None, timeout_s=5, what="resubscribe")
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert isinstance(live.error, StaleConnectionError)
    assert "on a live socket; resubscribing" in str(live.error)
    assert events == ["no data for 0.02s"], "reported stale once"
    assert counters[feed.name].reconnects >= 3


async def test_a_socket_another_loop_replaced_counts_as_down_for_this_loops_feeds() -> None:
    """The trades loop failed the shared socket first (its deadline fired first): this
    loop finds nothing silent to fail, yet what the old socket carried for it is lost,
    so its trades are announced as a gap once they flow again."""

    class BusyClient(FakeClient):
        @property
        def last_message_at(self) -> int:
            return time.time_ns() // 1_000_000

    old, new = BusyClient(), BusyClient()
    deliver = asyncio.Event()

    class Shared:
        def __init__(self) -> None:
            self.clients: dict[str, Any] = {old.url: old}

        def client(self, url: str) -> Any:
            return self.clients[url]

        async def watch_trades(self, symbol: str) -> Any:
            self.client(FakeClient.url)
            if self.clients[FakeClient.url] is old:
                self.clients[FakeClient.url] = new  # another loop failed and replaced it
                await asyncio.Event().wait()  # the deadline cancels this call
            await deliver.wait()
            deliver.clear()
            return [{"id": "9", "timestamp": 9, "price": 1.0, "amount": 1.0, "side": "buy"}]

    exchange = Shared()
    guard_frames(exchange, lambda url, frame, exc: None)
    feed = Feed("md", "binance", "trades", "BTC/USDT")
    handler = TradesHandler(feed)
    events: list[tuple[str, str]] = []
    loop = WatchLoop(
        exchange,
        Subscription("binance", "trades", (feed,), batch=False),
        {"BTC/USDT": handler},
        ProducerSettings(stale_after_s=0.02, backoff_initial_s=0.001, backoff_max_s=0.001),
        submit=lambda name, message: None,
        status=lambda exchange, event, name, detail, **window: events.append((event, detail)),
        counters={feed.name: FeedCounters()},
    )
    task = asyncio.create_task(loop.run())
    try:
        await wait_until(lambda: not handler.live, timeout_s=5, what="feed marked down")
        assert old.error is None and new.error is None, "nothing silent here to fail"
        deliver.set()
        await wait_until(lambda: any(e == "gap" for e, _ in events), timeout_s=5, what="gap")
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert [e for e, _ in events] == ["stale", "connected", "gap"]


async def test_a_socket_replaced_while_the_loop_was_busy_counts_as_down() -> None:
    """The server closed the socket while this loop was handing data on: ccxt forgot
    the client and the next call dialled a new one, with no error for this loop. What
    the old socket carried meanwhile is lost, so the trades go to recovery (here the
    fake exchange has no REST, so the hole is announced) instead of on as if nothing
    happened."""
    old, new = FakeClient(), FakeClient()
    calls = 0

    class Closing:
        id = "binance"
        has: dict[str, bool] = {}  # no REST trades: the hole is announced

        def __init__(self) -> None:
            self.clients: dict[str, Any] = {old.url: old}

        def client(self, url: str) -> Any:
            return self.clients[url]

        async def watch_trades(self, symbol: str) -> Any:
            nonlocal calls
            calls += 1
            if calls == 2:
                self.clients[FakeClient.url] = new  # closed and re-dialled under us
            if calls > 2:
                await asyncio.Event().wait()
            self.client(FakeClient.url)
            return [{"id": str(calls), "timestamp": calls, "price": 1.0, "amount": 1.0}]

    exchange = Closing()
    guard_frames(exchange, lambda url, frame, exc: None)
    feed = Feed("md", "binance", "trades", "BTC/USDT")
    handler = TradesHandler(feed)
    events: list[tuple[str, str]] = []
    published: list[Any] = []
    loop = WatchLoop(
        exchange,
        Subscription("binance", "trades", (feed,), batch=False),
        {"BTC/USDT": handler},
        ProducerSettings(stale_after_s=30, backoff_initial_s=0.001, backoff_max_s=0.001),
        submit=lambda name, message: published.append(message),
        status=lambda exchange, event, name, detail, **window: events.append((event, detail)),
        counters={feed.name: FeedCounters()},
    )
    task = asyncio.create_task(loop.run())
    try:
        await wait_until(lambda: calls >= 3, timeout_s=5, what="the second result handled")
        await wait_until(lambda: any(e == "gap" for e, _ in events), timeout_s=5, what="gap")
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert [e for e, _ in events] == ["connected", "gap"]


async def test_candles_the_socket_skipped_are_fetched_and_submitted_in_order() -> None:
    minute = 60_000
    start = (time.time_ns() // 1_000_000 // minute - 10) * minute

    def candle(i: int, close: float = 1.0) -> list[float]:
        return [start + i * minute, 1.0, 1.0, 1.0, close, 1.0]

    class Candles(ScriptedExchange):
        has = {"fetchOHLCV": True}
        id = "binance"

        def parse_timeframe(self, timeframe: str) -> int:
            return 60

        async def watch_ohlcv(self, symbol: str, timeframe: str) -> Any:
            return await self.watch_ticker(symbol)

        async def fetch_ohlcv(self, symbol: str, timeframe: str, **kw: Any) -> Any:
            return [candle(i, 5.0) for i in range(0, 4)]

    feed = Feed("md", "binance", "ohlcv.1m", "BTC/USDT")
    submitted: list[tuple[int | None, float | None, bool]] = []
    events: list[tuple[StatusEvent, str]] = []
    exchange = Candles([[candle(0)], [candle(3)]])
    loop = WatchLoop(
        exchange,
        Subscription("binance", "ohlcv.1m", (feed,), batch=False),
        {"BTC/USDT": OhlcvHandler(feed, close_grace_ms=0)},
        ProducerSettings(backoff_initial_s=0.001, backoff_max_s=0.001),
        submit=lambda name, m: submitted.append((m.ts_ms, m.close, m.closed)),  # type: ignore[union-attr]
        status=lambda exchange, event, name, detail, **window: events.append((event, detail)),
        counters={feed.name: FeedCounters()},
    )
    task = asyncio.create_task(loop.run())
    await asyncio.wait_for(exchange.done.wait(), 5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert [(ts - start, c, closed) for ts, c, closed in submitted if ts is not None] == [
        (0, 1.0, True),
        (minute, 5.0, True),
        (2 * minute, 5.0, True),
        (3 * minute, 1.0, True),
    ]
    assert [e for e, _ in events] == ["connected"], "everything skipped was fetched"
