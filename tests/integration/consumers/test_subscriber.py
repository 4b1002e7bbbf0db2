"""Subscriber against a private redis-server: backfill, live, dedupe (rules 1 and 2)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from marketbus.consumers import Subscriber
from marketbus.consumers.events import Update
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


async def test_backfill_then_live_candles(redis_url: str, writer: WireWriter) -> None:
    feed = writer.feed("ohlcv.1m", SYM)
    for i in range(5):
        await writer.write(feed, writer.candle(SYM, i * M, 100.0 + i, closed=True))
    seen: list[Update] = []
    async with Subscriber(redis_url, candles=3, on_message=seen.append) as sub:
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
    redis_url: str, redis: aioredis.Redis, writer: WireWriter
) -> None:
    feed = writer.feed("trades", SYM)
    async with Subscriber(redis_url) as sub:
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
