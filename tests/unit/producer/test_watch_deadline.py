"""The watch loop's staleness deadline: one timer per loop, still exact per call."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from marketbus.producer.config import ProducerSettings
from marketbus.producer.feeds import TickerHandler
from marketbus.producer.stats import FeedCounters
from marketbus.producer.watch import Subscription, WatchLoop
from marketbus.shared.names import Feed
from tests.support.waiting import wait_until

TICKER = {"symbol": "BTC/USDT", "bid": 1.0, "ask": 2.0, "last": 1.5, "timestamp": 1}
STALE_S = 0.2


class Paced:
    """Call i of watch_ticker answers after *delays[i]* seconds; then calls wait forever."""

    def __init__(self, delays: list[float]) -> None:
        self.delays = delays
        self.clients: dict[str, Any] = {}
        self.answered = 0
        self.waiting = asyncio.Event()

    async def watch_ticker(self, symbol: str) -> Any:
        if self.answered == len(self.delays):
            self.waiting.set()
            await asyncio.Event().wait()
        self.answered += 1  # an interrupted call counts too: the next one takes the next delay
        await asyncio.sleep(self.delays[self.answered - 1])
        return TICKER


def watch_loop(exchange: Any, events: list[str], submitted: list[Any]) -> WatchLoop:
    feed = Feed("md", "binance", "ticker", "BTC/USDT")
    return WatchLoop(
        exchange,
        Subscription("binance", "ticker", (feed,), batch=False),
        {"BTC/USDT": TickerHandler(feed)},
        ProducerSettings(stale_after_s=STALE_S, backoff_initial_s=0.001, backoff_max_s=0.001),
        submit=lambda name, message: submitted.append(message),
        status=lambda exchange, event, name, detail: events.append(event),
        counters={feed.name: FeedCounters()},
    )


async def test_calls_each_within_the_deadline_are_never_interrupted() -> None:
    # Ten calls of a quarter deadline each: the one timer fires during some of them, finds
    # the deadline moved on, and re-arms instead of interrupting.
    exchange = Paced([0.25 * STALE_S] * 10)
    events: list[str] = []
    submitted: list[Any] = []
    task = asyncio.create_task(watch_loop(exchange, events, submitted).run())
    await asyncio.wait_for(exchange.waiting.wait(), 5)
    assert len(submitted) == 10
    assert events == ["connected"]
    await wait_until(lambda: "stale" in events, timeout_s=5, what="the silent call times out")
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_a_call_past_its_deadline_is_stale_and_the_loop_goes_on() -> None:
    exchange = Paced([0.01, 3 * STALE_S, 0.01])
    events: list[str] = []
    submitted: list[Any] = []
    task = asyncio.create_task(watch_loop(exchange, events, submitted).run())
    await wait_until(lambda: events[-2:] == ["stale", "connected"], timeout_s=5, what="recovery")
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert events == ["connected", "stale", "connected"]


async def test_stopping_the_loop_at_its_deadline_still_stops_it() -> None:
    exchange = Paced([])
    events: list[str] = []
    task = asyncio.create_task(watch_loop(exchange, events, []).run())
    await asyncio.wait_for(exchange.waiting.wait(), 5)
    await asyncio.sleep(STALE_S - 0.005)
    loop = asyncio.get_running_loop()
    loop.call_later(0.005, task.cancel)  # about when the deadline cancels the call too
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, 5)
