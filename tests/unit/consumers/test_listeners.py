"""The listener registry: typed records, waiting until started, sinks that come and go."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any

import pytest

from marketbus.consumers.engine import BufferSizes, Engine
from marketbus.consumers.events import Update
from marketbus.consumers.listeners import LOG_EVERY, Listener, Listeners
from marketbus.consumers.options import SubscriberOptions
from marketbus.consumers.sequencing import Position
from marketbus.shared.codecs import encode
from marketbus.shared.errors import ConfigError
from marketbus.shared.schema import Trade, Trades
from tests.support.waiting import wait_until

TRADES = "md:binance:trades:BTC/USDT"
DEFAULTS = SubscriberOptions()


def trade(seq: int) -> Trades:
    return Trades(
        exchange="binance",
        symbol="BTC/USDT",
        run=1,
        seq=seq,
        ts_ms=seq,
        recv_ns=0,
        trades=(Trade(id=str(seq), ts_ms=seq, price=float(seq), amount=1.0, side="buy"),),
    )


async def no_read_back(feed: str, after: Position, upto: Position, count: int) -> list[Update]:
    return []


def ready_engine() -> Engine:
    engine = Engine()
    engine.track(TRADES, BufferSizes())
    engine.on_subscribed(TRADES)
    [backfill] = engine.take_fetches()
    engine.on_history(backfill, [], done=True, stream_first=None)
    return engine


class Tasks:
    def __init__(self) -> None:
        self.tasks: list[asyncio.Task[None]] = []

    def __call__(self, coro: Coroutine[Any, Any, None], name: str) -> object:
        task = asyncio.ensure_future(coro)
        self.tasks.append(task)
        return task


def test_a_listener_is_a_named_record_with_the_subscriber_defaults() -> None:
    listener = Listener.make(print, None, None, defaults=DEFAULTS, feeds=[TRADES])
    assert listener.feeds == frozenset({TRADES})
    assert (listener.on_error, listener.delivery) == ("raise", "queued")
    chosen = Listener.make(print, None, None, defaults=DEFAULTS, on_error="log", delivery="inline")
    assert (chosen.on_error, chosen.delivery) == ("log", "inline")


def test_a_bad_registration_is_refused_when_made() -> None:
    async def coroutine_callback(update: Update) -> None:
        pass

    with pytest.raises(ConfigError, match="coroutine function"):
        Listener.make(coroutine_callback, None, None, defaults=DEFAULTS, delivery="inline")
    with pytest.raises(ConfigError, match="on_error"):
        Listener.make(print, None, None, defaults=DEFAULTS, on_error="ignore")  # type: ignore[arg-type]


async def test_listeners_wait_for_start_then_become_sinks_and_leave_with_their_mailbox() -> None:
    engine = ready_engine()
    listeners = Listeners(engine, max_pending=10, stop=lambda exc: None)
    seen: list[int] = []
    listeners.add(Listener.make(lambda u: seen.append(u.seq), None, None, defaults=DEFAULTS))
    inline_seen: list[int] = []
    inline = Listener.make(
        lambda u: inline_seen.append(u.seq), None, None, defaults=DEFAULTS, delivery="inline"
    )
    listeners.add(inline)
    assert listeners.waiting == 2 and engine.sinks == ()
    tasks = Tasks()
    listeners.start(no_read_back, tasks)
    assert listeners.waiting == 0 and listeners.mailboxes == 1 and listeners.inline == 1
    assert len(engine.sinks) == 2
    engine.on_live(TRADES, encode(trade(1)))
    assert inline_seen == [1]
    await wait_until(lambda: seen == [1], what="the queued listener got the update")
    listeners.close()
    async with asyncio.timeout(2):
        await asyncio.gather(*tasks.tasks)
    assert listeners.mailboxes == 0 and len(engine.sinks) == 1  # the inline one stays
    engine.on_live(TRADES, encode(trade(2)))
    assert inline_seen == [1]  # closed: not called any more


async def test_callback_errors_under_log_are_counted_always_and_logged_at_a_bounded_rate(
    caplog: pytest.LogCaptureFixture,
) -> None:
    engine = ready_engine()
    listeners = Listeners(engine, max_pending=10, stop=lambda exc: None)

    def broken(update: Update) -> None:
        raise ValueError("strategy bug")

    listeners.add(
        Listener.make(broken, None, None, defaults=DEFAULTS, on_error="log", delivery="inline")
    )
    listeners.start(no_read_back, Tasks())
    with caplog.at_level(logging.ERROR, logger="marketbus.consumers"):
        for seq in range(1, LOG_EVERY + 2):
            engine.on_live(TRADES, encode(trade(seq)))
    assert engine.stats.callback_errors == LOG_EVERY + 1
    assert len([r for r in caplog.records if "callback failed" in r.message]) == 2


async def test_an_inline_callback_under_raise_stops_once() -> None:
    engine = ready_engine()
    stopped: list[BaseException] = []
    listeners = Listeners(engine, max_pending=10, stop=stopped.append)

    def broken(update: Update) -> None:
        raise ValueError("strategy bug")

    listeners.add(Listener.make(broken, None, None, defaults=DEFAULTS, delivery="inline"))
    listeners.start(no_read_back, Tasks())
    engine.on_live(TRADES, encode(trade(1)))
    assert [type(e) for e in stopped] == [ValueError]
    listeners.close()
    engine.on_live(TRADES, encode(trade(2)))
    assert len(stopped) == 1
