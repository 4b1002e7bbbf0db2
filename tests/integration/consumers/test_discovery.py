"""Subscribing by pattern and by catalog; staleness from the producer's status channel."""

from __future__ import annotations

import asyncio

import redis.asyncio as aioredis

from marketbus.consumers import BufferSizes, Gap, Staleness, Subscriber
from marketbus.consumers.options import TransportKind
from marketbus.shared.codecs import encode_feed_info
from marketbus.shared.names import catalog_key
from marketbus.shared.schema import FeedInfo
from tests.support.waiting import wait_until
from tests.support.wire_writer import WireWriter

SYM = "ETH/USDT"


async def test_pattern_discovers_feeds_from_messages_and_catalog(
    redis_url: str, transport: TransportKind
) -> None:
    redis = aioredis.Redis.from_url(redis_url)
    try:
        writer = WireWriter(redis, run=5)
        old = writer.feed("trades", SYM)
        await writer.write(old, writer.trades(SYM, 1.0, first_id=1))
        info = FeedInfo(
            exchange="binance",
            symbol=SYM,
            kind="trades",
            timeframe=None,
            run=5,
            stream_maxlen=100,
            updated_ms=0,
        )
        await redis.hset(catalog_key("md"), old, encode_feed_info(info))
        async with Subscriber(redis_url, transport=transport) as sub:
            known = await sub.subscribe_pattern("md:binance:*")
            assert old in known
            await wait_until(lambda: len(sub.trades("binance", SYM)) == 1, what="catalog backfill")
            new = writer.feed("ticker", SYM)
            await writer.write(new, writer.ticker(SYM, 5.0))
            await wait_until(lambda: new in sub.feeds and sub.ticker("binance", SYM) is not None)
            await writer.write(old, writer.trades(SYM, 2.0, first_id=2))
            await wait_until(lambda: len(sub.trades("binance", SYM)) == 2)
    finally:
        await redis.aclose()


async def test_discover_from_catalog(redis_url: str) -> None:
    redis = aioredis.Redis.from_url(redis_url)
    try:
        writer = WireWriter(redis, run=5)
        feed = writer.feed("ohlcv.1m", SYM)
        await writer.write(feed, writer.candle(SYM, 0, 1.0, closed=True))
        info = FeedInfo(
            exchange="binance",
            symbol=SYM,
            kind="ohlcv.1m",
            timeframe="1m",
            run=5,
            stream_maxlen=100,
            updated_ms=0,
        )
        await redis.hset(catalog_key("md"), feed, encode_feed_info(info))
        async with Subscriber(redis_url) as sub:
            assert await sub.discover(exchange="binance") == [feed]
            assert len(sub.candles("binance", SYM, "1m")) == 1
    finally:
        await redis.aclose()


async def test_stale_flag_from_quiet_feed_and_producer_status(redis_url: str) -> None:
    redis = aioredis.Redis.from_url(redis_url)
    events: list[Staleness] = []
    try:
        writer = WireWriter(redis, run=5)
        feed = writer.feed("ticker", SYM)
        async with Subscriber(redis_url, on_stale=events.append) as sub:
            await sub.subscribe(feed, sizes=BufferSizes(stale_after_s=0.2))
            await writer.write(feed, writer.ticker(SYM, 1.0))
            await wait_until(lambda: sub.is_stale(feed), what="quiet feed flagged stale")
            assert sub.stale_reason(feed) == "quiet"
            await writer.write(feed, writer.ticker(SYM, 2.0))
            await wait_until(lambda: not sub.is_stale(feed))
            await writer.write(writer.status_feed, writer.status("disconnected", feed, "ws closed"))
            await wait_until(lambda: sub.stale_reason(feed) == "disconnected")
            await wait_until(lambda: any(e.reason == "disconnected" for e in events))
    finally:
        await redis.aclose()


async def test_pattern_not_covering_status_still_follows_each_exchanges_status(
    redis_url: str,
) -> None:
    redis = aioredis.Redis.from_url(redis_url)
    gaps: list[Gap] = []
    try:
        binance, okx = WireWriter(redis, run=5), WireWriter(redis, run=6, exchange="okx")
        async with Subscriber(redis_url, on_gap=gaps.append) as sub:
            await sub.subscribe_pattern("md:*:ticker:*")
            for writer in (binance, okx):
                feed = writer.feed("ticker", SYM)
                await writer.write(feed, writer.ticker(SYM, 1.0))

                async def status_followed(w: WireWriter = writer) -> bool:
                    [(_, count)] = await redis.pubsub_numsub(w.status_feed)
                    return int(count) == 1

                await wait_until(status_followed, what=f"{writer.status_feed} subscribed")
            feed = binance.feed("ticker", SYM)
            await binance.write(binance.status_feed, binance.status("disconnected", feed, "ws"))
            await wait_until(lambda: sub.stale_reason(feed) == "disconnected")
            await okx.write(okx.status_feed, okx.status("gap", okx.feed("ticker", SYM), "lost 4"))
            await wait_until(lambda: len(gaps) == 1)
            assert gaps[0].reason == "producer" and gaps[0].detail == "lost 4"
            assert sorted(sub.feeds) == sorted(w.feed("ticker", SYM) for w in (binance, okx))
    finally:
        await redis.aclose()


async def test_catalogued_feeds_are_backfilled_before_subscribe_pattern_returns(
    redis_url: str,
) -> None:
    """What is published once subscribe_pattern returned is live data for listeners, not
    history swallowed by a backfill still running (it used to be, for catalogued feeds)."""
    admin = aioredis.Redis.from_url(redis_url)
    writer = WireWriter(admin, run=1)
    feed = writer.feed("ticker", "BTC/USDT")
    await writer.write(feed, writer.ticker("BTC/USDT", 1.5))
    info = FeedInfo(
        exchange="binance",
        symbol="BTC/USDT",
        kind="ticker",
        timeframe=None,
        run=1,
        stream_maxlen=1000,
        updated_ms=0,
    )
    await admin.hset(catalog_key("md"), feed, encode_feed_info(info))
    try:
        async with Subscriber(redis_url) as sub:
            assert feed in await sub.subscribe_pattern("md:*")
            events = sub.events()
            first = asyncio.ensure_future(anext(events))
            await asyncio.sleep(0)  # the listener's mailbox exists from here on
            await writer.write(feed, writer.ticker("BTC/USDT", 2.5))
            event = await asyncio.wait_for(first, 10)
            assert event.last == 2.5  # type: ignore[union-attr]
            assert sub.stats.duplicates == 0 and sub.stats.backfilled == 1
            await events.aclose()
    finally:
        await admin.aclose()
