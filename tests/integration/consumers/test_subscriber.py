"""Subscriber against a private redis-server: backfill, live, dedupe (rules 1 and 2)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from marketbus.consumers import NotSubscribedError, Subscriber, SubscriberClosedError
from marketbus.consumers.events import Update
from marketbus.consumers.options import TransportKind
from marketbus.shared.errors import ConfigError
from tests.support.waiting import wait_until
from tests.support.wire_writer import WireWriter

M = 60_000
SYM = "BTC/USDT"


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(redis_url)
    yield client
    await client.aclose()


@pytest.fixture
def writer(redis: aioredis.Redis) -> WireWriter:
    return WireWriter(redis, run=1_000)


async def test_backfill_then_live_candles(
    redis_url: str, writer: WireWriter, transport: TransportKind
) -> None:
    feed = writer.feed("ohlcv.1m", SYM)
    for i in range(5):
        await writer.write(feed, writer.candle(SYM, i * M, 100.0 + i, closed=True))
    seen: list[Update] = []
    async with Subscriber(redis_url, candles=3, on_message=seen.append, transport=transport) as sub:
        await sub.subscribe(exchange="binance", symbol=SYM, kind="ohlcv.1m")
        buf = sub.candles("binance", SYM, "1m")
        assert [c.ts_ms for c in buf.closed()] == [2 * M, 3 * M, 4 * M]
        await writer.write(feed, writer.candle(SYM, 5 * M, 105.0, closed=False))
        await writer.write(feed, writer.candle(SYM, 5 * M, 106.0, closed=False))
        await wait_until(lambda: buf.latest is not None and buf.latest.close == 106.0)
        assert buf.forming is not None and len(buf.closed()) == 3
        await wait_until(
            lambda: bool(seen) and seen[-1].position == (1_000, 7), what="callback saw the update"
        )
        stats = sub.stats
        assert stats.applied == 5 and stats.backfilled == 3 and stats.duplicates == 0


async def test_ticker_latest_and_feed_name_subscribe(redis_url: str, writer: WireWriter) -> None:
    feed = writer.feed("ticker", SYM)
    await writer.write(feed, writer.ticker(SYM, 10.0))
    await writer.write(feed, writer.ticker(SYM, 11.0))
    async with Subscriber(redis_url) as sub:
        await sub.subscribe(feed)
        ticker = sub.ticker("binance", SYM)
        assert ticker is not None and ticker.last == 11.0
        await writer.write(feed, writer.ticker(SYM, 12.0))
        await wait_until(lambda: (t := sub.ticker("binance", SYM)) is not None and t.last == 12.0)


async def test_duplicates_are_dropped(
    redis_url: str, redis: aioredis.Redis, writer: WireWriter, transport: TransportKind
) -> None:
    feed = writer.feed("trades", SYM)
    async with Subscriber(redis_url, transport=transport) as sub:
        await sub.subscribe(feed)
        first = await writer.write(feed, writer.trades(SYM, 1.0))
        await writer.write(feed, writer.trades(SYM, 2.0))
        from marketbus.shared.codecs import encode

        await redis.publish(feed, encode(first))  # a replay of seq 1
        await writer.write(feed, writer.trades(SYM, 3.0))
        buf = sub.trades("binance", SYM)
        await wait_until(lambda: len(buf) == 3)
        await wait_until(lambda: sub.stats.duplicates == 1)
        assert [t.price for t in buf] == [1.0, 2.0, 3.0]


async def _subscribers(redis: aioredis.Redis, channel: str) -> int:
    [(_, count)] = await redis.pubsub_numsub(channel)
    return int(count)


async def test_unsubscribe_drops_feeds_then_the_status_channel_with_the_last_one(
    redis_url: str, redis: aioredis.Redis, writer: WireWriter
) -> None:
    trades, ticker = writer.feed("trades", SYM), writer.feed("ticker", SYM)
    okx = WireWriter(redis, run=1_000, exchange="okx")
    okx_trades = okx.feed("trades", SYM)
    async with Subscriber(redis_url) as sub:
        await sub.subscribe(trades, ticker, okx_trades)
        await sub.unsubscribe(trades)
        assert sorted(sub.feeds) == sorted([ticker, okx_trades])
        with pytest.raises(NotSubscribedError):
            sub.trades("binance", SYM)
        assert await _subscribers(redis, writer.status_feed) == 1  # the ticker needs it
        await sub.unsubscribe(ticker)
        await wait_until(lambda: _no_subscriber(redis, writer.status_feed), what="status dropped")
        assert await _subscribers(redis, trades) == 0 and await _subscribers(redis, ticker) == 0
        assert await _subscribers(redis, okx.status_feed) == 1
        await writer.write(trades, writer.trades(SYM, 1.0))
        await okx.write(okx_trades, okx.trades(SYM, 2.0))
        await wait_until(lambda: len(sub.trades("okx", SYM)) == 1)
        assert sub.feeds == [okx_trades] and sub.stats.received == 1
        await sub.subscribe(trades)  # subscribing again follows it from its stream
        assert [t.price for t in sub.trades("binance", SYM)] == [1.0]
        assert await _subscribers(redis, writer.status_feed) == 1


async def _no_subscriber(redis: aioredis.Redis, channel: str) -> bool:
    return await _subscribers(redis, channel) == 0


async def test_callback_error_policy_log_keeps_the_subscriber_running(
    redis_url: str, writer: WireWriter
) -> None:
    feed = writer.feed("trades", SYM)
    seen: list[int] = []

    def picky(update: Update) -> None:
        if update.seq % 2 == 0:
            raise ValueError(f"strategy bug on {update.seq}")
        seen.append(update.seq)

    async with Subscriber(redis_url) as sub:  # the subscriber's default stays "raise"
        sub.on_message(picky, on_error="log")
        await sub.subscribe(feed)
        for i in range(1, 7):
            await writer.write(feed, writer.trades(SYM, float(i)))
        await wait_until(lambda: seen == [1, 3, 5] and sub.stats.callback_errors == 3)
        await writer.write(feed, writer.trades(SYM, 7.0))
        await wait_until(lambda: seen == [1, 3, 5, 7])


async def test_callback_error_stops_the_subscriber_by_default(
    redis_url: str, writer: WireWriter
) -> None:
    feed = writer.feed("trades", SYM)

    def broken(update: Update) -> None:
        raise ValueError("strategy bug")

    with pytest.raises(SubscriberClosedError) as info:
        async with Subscriber(redis_url, on_message=broken) as sub:
            await sub.subscribe(feed)
            await writer.write(feed, writer.trades(SYM, 1.0))
            async with asyncio.timeout(5):
                async for _ in sub:  # ends, raising, once the callback stopped it
                    pass
    assert isinstance(info.value.__cause__, ValueError)


def test_unknown_error_policy_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="on_error"):
        Subscriber("redis://127.0.0.1:1/0", on_error="ignore")  # type: ignore[arg-type]


def test_unknown_transport_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="transport"):
        Subscriber("redis://127.0.0.1:1/0", transport="zmq")  # type: ignore[arg-type]


async def test_closing_after_a_failure_waits_for_the_shutdown_it_started(
    redis_url: str, writer: WireWriter
) -> None:
    """A failing callback starts the shutdown; `close` then waits for that shutdown, so
    once it returns nothing of the subscriber runs any more."""
    feed = writer.feed("trades", SYM)
    failed = asyncio.Event()

    def broken(update: Update) -> None:
        failed.set()
        raise ValueError("strategy bug")

    sub = Subscriber(redis_url, on_message=broken, delivery="inline")
    await sub.start()
    await sub.subscribe(feed)
    await writer.write(feed, writer.trades(SYM, 1.0))
    async with asyncio.timeout(5):
        await failed.wait()
    await sub.close()
    assert not sub.connected
    running = [
        task.get_name()
        for task in asyncio.all_tasks()
        if task.get_name().startswith("marketbus-subscriber") and not task.done()
    ]
    assert running == []
    with pytest.raises(SubscriberClosedError, match="strategy bug"):
        await sub.subscribe(feed)
