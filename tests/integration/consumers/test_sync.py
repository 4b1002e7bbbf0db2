"""SyncSubscriber: blocking calls, snapshots that do not change under the reader."""

from __future__ import annotations

import asyncio

import redis.asyncio as aioredis

from marketbus.consumers import SyncSubscriber
from tests.support.waiting import wait_until
from tests.support.wire_writer import WireWriter

SYM = "BTC/USDT"
M = 60_000


async def test_sync_subscriber_reads_snapshots(redis_url: str) -> None:
    redis = aioredis.Redis.from_url(redis_url)
    writer = WireWriter(redis, run=3)
    feed = writer.feed("ohlcv.1m", SYM)
    for i in range(4):
        await writer.write(feed, writer.candle(SYM, i * M, float(i), closed=True))
    sub = SyncSubscriber(redis_url, candles=10)
    try:
        await asyncio.to_thread(sub.start)
        await asyncio.to_thread(sub.subscribe, exchange="binance", symbol=SYM, timeframe="1m")
        snap = await asyncio.to_thread(sub.candles, "binance", SYM, "1m")
        assert snap.arrays().close.tolist() == [0.0, 1.0, 2.0, 3.0]
        await writer.write(feed, writer.candle(SYM, 4 * M, 4.0, closed=False))

        async def has_five() -> bool:
            return len(await asyncio.to_thread(sub.candles, "binance", SYM, "1m")) == 5

        await wait_until(has_five)
        assert len(snap) == 4  # the earlier snapshot did not move
        stats = await asyncio.to_thread(lambda: sub.stats)
        assert stats.applied == 5
        await asyncio.to_thread(sub.unsubscribe, feed)
        assert await asyncio.to_thread(lambda: sub.feeds) == []
    finally:
        await asyncio.to_thread(sub.close)
        await redis.aclose()
