"""Never fooled, never frozen: a stopped, disconnected or fed-hostile subscriber on real
redis-servers (a dead subscriber never answers as if live; a hostile payload or a forged
message costs only itself)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable

import msgspec
import pytest
import redis.asyncio as aioredis

from marketbus.consumers import Backoff, Gap, Staleness, Subscriber, SubscriberFailedError
from marketbus.consumers.options import DeliveryMode, TransportKind
from marketbus.shared.codecs import encode
from marketbus.shared.errors import SubscriberClosedError
from marketbus.shared.names import entry_id
from marketbus.shared.schema import Trades
from tests.support.redis_process import RedisProcess
from tests.support.waiting import wait_until
from tests.support.wire_writer import WireWriter

SYM = "BTC/USDT"
FAST = Backoff(initial_s=0.02, maximum_s=0.2)
HOSTILE_JSON = b'{"a":' * 1000
"""5 KB nested deeper than msgspec follows: it raises RecursionError."""
HOSTILE_MSGPACK = b"\x81\xa1a" * 5000
"""The same in MessagePack: maps nested in maps."""
FUTURE_RUN = 9_999_999_999_999


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(redis_url)
    yield client
    await client.aclose()


def seqs(sub: Subscriber) -> list[int]:
    return [int(t.id or 0) for t in sub.trades("binance", SYM)]


async def write_range(writer: WireWriter, feed: str, first: int, last: int) -> None:
    for i in range(first, last + 1):
        await writer.write(feed, writer.trades(SYM, float(i), first_id=i))


# -- item 1: a dead or disconnected subscriber never looks alive ----------------------


async def test_failed_subscriber_reports_stale_and_refuses_reads(
    redis_url: str, redis: aioredis.Redis, transport: TransportKind
) -> None:
    writer = WireWriter(redis, run=7)
    trades, ticker = writer.feed("trades", SYM), writer.feed("ticker", SYM)
    stale: list[Staleness] = []

    def explode(update: object) -> None:
        if isinstance(update, Trades) and update.seq == 3:
            raise ValueError("strategy bug")

    sub = Subscriber(redis_url, transport=transport, on_message=explode)
    sub.on_stale(stale.append)
    await sub.start()
    try:
        await sub.subscribe(trades, ticker)
        await writer.write(ticker, writer.ticker(SYM, 100.0))
        await write_range(writer, trades, 1, 2)
        await wait_until(lambda: len(sub.trades("binance", SYM)) == 2)
        assert not sub.is_stale(trades) and not sub.is_stale(ticker)
        await write_range(writer, trades, 3, 3)
        await wait_until(lambda: sub.is_stale(trades), what="stale after the failure")
        for feed in (trades, ticker):
            assert sub.is_stale(feed)
            assert sub.stale_reason(feed) == "subscriber stopped: ValueError: strategy bug"
        with pytest.raises(SubscriberFailedError) as failed:
            sub.trades("binance", SYM)
        assert isinstance(failed.value.__cause__, ValueError)
        assert isinstance(failed.value, SubscriberClosedError)
        with pytest.raises(SubscriberFailedError):
            sub.ticker("binance", SYM)
        with pytest.raises(SubscriberFailedError):
            sub.position(trades)
        await wait_until(lambda: {s.feed for s in stale if s.stale} == {trades, ticker})
        assert all(s.reason.startswith("subscriber stopped: ") for s in stale if s.stale)
        with pytest.raises(SubscriberFailedError):
            await sub.subscribe(trades)
    finally:
        await sub.close()


async def test_closed_subscriber_reports_every_feed_stale(
    redis_url: str, redis: aioredis.Redis
) -> None:
    writer = WireWriter(redis, run=7)
    feed = writer.feed("trades", SYM)
    async with Subscriber(redis_url) as sub:
        await sub.subscribe(feed)
        await write_range(writer, feed, 1, 1)
        await wait_until(lambda: len(sub.trades("binance", SYM)) == 1)
        assert not sub.is_stale(feed)
    assert sub.is_stale(feed) and sub.stale_reason(feed) == "subscriber closed"
    assert seqs(sub) == [1]  # a clean close keeps the last state readable


async def test_disconnected_subscriber_is_stale_until_resynced(
    make_redis_server: Callable[..., RedisProcess], transport: TransportKind
) -> None:
    server = make_redis_server()
    redis = aioredis.Redis.from_url(server.url)
    writer = WireWriter(redis, run=7)
    feed = writer.feed("trades", SYM)
    events: list[Staleness] = []
    try:
        async with Subscriber(
            server.url, backoff=FAST, transport=transport, on_stale=events.append
        ) as sub:
            await sub.subscribe(feed)
            await write_range(writer, feed, 1, 5)
            await wait_until(lambda: len(sub.trades("binance", SYM)) == 5)
            assert not sub.is_stale(feed)
            server.kill()
            await wait_until(lambda: sub.is_stale(feed), what="stale once disconnected")
            assert sub.stale_reason(feed) == "disconnected from Redis"
            assert seqs(sub) == [1, 2, 3, 4, 5]  # still readable: the reason says why
            server.start()
            await redis.connection_pool.disconnect()
            await write_range(writer, feed, 6, 8)
            await wait_until(lambda: not sub.is_stale(feed), timeout_s=15, what="live again")
            await wait_until(lambda: len(sub.trades("binance", SYM)) == 8)
            assert seqs(sub) == list(range(1, 9))
            await wait_until(lambda: len(events) >= 2)
            assert events[0].stale and events[0].reason == "disconnected from Redis"
            assert not events[-1].stale
    finally:
        await redis.aclose()


# -- item 2: a hostile payload is counted and skipped, everywhere ---------------------


@pytest.mark.parametrize("delivery", ["queued", "inline"])
@pytest.mark.parametrize("hostile", [HOSTILE_JSON, HOSTILE_MSGPACK], ids=["json", "msgpack"])
async def test_hostile_payloads_are_counted_and_skipped(
    redis_url: str,
    redis: aioredis.Redis,
    transport: TransportKind,
    delivery: DeliveryMode,
    hostile: bytes,
) -> None:
    writer = WireWriter(redis, run=7)
    feed = writer.feed("trades", SYM)
    await write_range(writer, feed, 1, 3)
    await writer.raw(feed, hostile)  # the last entry a new consumer backfills
    await redis.xadd(feed, {"d": "x"}, id="*")  # foreign: an ID not {run}-{seq}, not a message
    received: list[int] = []

    def on_message(update: object) -> None:
        if isinstance(update, Trades):
            received.append(update.seq)

    async with Subscriber(
        redis_url, transport=transport, delivery=delivery, on_message=on_message
    ) as sub:
        await sub.subscribe(feed)
        assert seqs(sub) == [1, 2, 3]
        assert sub.stats.undecodable == 2  # the hostile entry and the foreign one
        await redis.publish(feed, hostile)  # live, in the middle of the feed
        await redis.publish(feed, b"")
        await wait_until(lambda: sub.stats.undecodable == 4)
        # The foreign entry's ID is the server's clock: the producer's next run follows it.
        writer.new_run(time.time_ns() // 1_000_000 + 1000)
        await write_range(writer, feed, 4, 6)  # the repair reads both bad entries again
        await writer.raw(feed, hostile)  # live and in the stream, read by the next repair
        await write_range(writer, feed, 7, 8)
        await wait_until(lambda: len(seqs(sub)) == 8, what="every real trade")
        assert seqs(sub) == list(range(1, 9))
        await wait_until(lambda: len(received) == 5)
        assert sub.stats.undecodable == 8
        assert not sub.is_stale(feed)


async def test_hostile_entry_read_back_by_a_slow_listener_is_skipped(
    redis_url: str, redis: aioredis.Redis
) -> None:
    writer = WireWriter(redis, run=7)
    feed = writer.feed("trades", SYM)
    release = asyncio.Event()
    received: list[int] = []

    async def slow(update: object) -> None:
        await release.wait()
        if isinstance(update, Trades):
            received.append(update.seq)

    async with Subscriber(redis_url, max_pending=2, on_message=slow) as sub:
        await sub.subscribe(feed)
        await write_range(writer, feed, 1, 3)
        await writer.raw(feed, HOSTILE_JSON)
        await write_range(writer, feed, 5, 10)
        await wait_until(lambda: len(seqs(sub)) == 9)
        release.set()
        await wait_until(lambda: received[-1:] == [10], what="the listener caught up")
        assert 4 not in received
        assert sub.stats.undecodable >= 2 and sub.stats.refetched > 0
        assert not sub.is_stale(feed)


# -- item 3: a forged message costs only itself ----------------------------------------


def forged(writer: WireWriter, *, run: int, seq: int, price: float = 666.0) -> bytes:
    message = msgspec.structs.replace(writer.trades(SYM, price, first_id=666), run=run, seq=seq)
    return encode(message)


async def test_forged_live_messages_are_dropped_and_counted(
    redis_url: str, redis: aioredis.Redis, transport: TransportKind
) -> None:
    writer = WireWriter(redis, run=7)
    feed = writer.feed("trades", SYM)
    gaps: list[Gap] = []
    async with Subscriber(redis_url, transport=transport, on_gap=gaps.append) as sub:
        await sub.subscribe(feed)
        await write_range(writer, feed, 1, 5)
        await wait_until(lambda: len(seqs(sub)) == 5)
        await redis.publish(feed, forged(writer, run=7, seq=5 + 1_000_000))
        await write_range(writer, feed, 6, 10)
        await wait_until(lambda: len(seqs(sub)) == 10, what="real trades after a seq forgery")
        await redis.publish(feed, forged(writer, run=FUTURE_RUN, seq=1))
        await write_range(writer, feed, 11, 15)
        await wait_until(lambda: len(seqs(sub)) == 15, what="real trades after a run forgery")
        writer.new_run(8)  # a real producer restart is still accepted
        await write_range(writer, feed, 16, 18)
        await wait_until(lambda: len(seqs(sub)) == 18, what="the next real run")
        assert seqs(sub) == list(range(1, 19))
        assert 666.0 not in [t.price for t in sub.trades("binance", SYM)]
        assert gaps == [] and sub.stats.gaps == 0
        assert sub.stats.suspect == 2
        assert sub.position(feed) == (8, 3)


async def test_forgery_in_the_stream_is_applied_but_a_future_run_never(
    redis_url: str, redis: aioredis.Redis
) -> None:
    writer = WireWriter(redis, run=7)
    feed = writer.feed("trades", SYM)
    async with Subscriber(redis_url) as sub:
        await sub.subscribe(feed)
        await write_range(writer, feed, 1, 3)
        await wait_until(lambda: len(seqs(sub)) == 3)
        # In the stream, at a plausible ID: the stream is the authority, it is applied.
        payload = forged(writer, run=7, seq=100)
        await redis.xadd(feed, {"d": payload}, id=entry_id(7, 100))
        await redis.publish(feed, payload)
        await wait_until(lambda: sub.position(feed) == (7, 100))
        # A run from the future is never applied, not even from the stream.
        payload = forged(writer, run=FUTURE_RUN, seq=1, price=777.0)
        await redis.xadd(feed, {"d": payload}, id=entry_id(FUTURE_RUN, 1))
        await redis.publish(feed, payload)
        await wait_until(lambda: sub.stats.suspect == 1)
        assert sub.position(feed) == (7, 100)
        # The forged entry also blocks the producer (XADD refuses lower IDs); the
        # operator deletes the stream, and the producer's next run is followed at once.
        await redis.delete(feed)
        writer.new_run(8)
        await write_range(writer, feed, 4, 5)
        await wait_until(lambda: sub.position(feed) == (8, 2), what="the next real run")
        assert 777.0 not in [t.price for t in sub.trades("binance", SYM)]
