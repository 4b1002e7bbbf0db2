"""Rules 3-5 and reconnection against real redis-servers, with exact accounting by seq."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import pytest
import redis.asyncio as aioredis

from marketbus.consumers import Backoff, Gap, Subscriber
from marketbus.consumers.options import TransportKind
from tests.support.redis_process import RedisProcess
from tests.support.waiting import wait_until
from tests.support.wire_writer import WireWriter

SYM = "BTC/USDT"
FAST = Backoff(initial_s=0.02, maximum_s=0.2)


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(redis_url)
    yield client
    await client.aclose()


def seqs(sub: Subscriber) -> list[int]:
    return [int(t.id or 0) for t in sub.trades("binance", SYM)]


async def test_gap_within_stream_is_repaired_exactly(
    redis_url: str, redis: aioredis.Redis, transport: TransportKind
) -> None:
    writer = WireWriter(redis, run=7)
    feed = writer.feed("trades", SYM)
    async with Subscriber(redis_url, transport=transport) as sub:
        await sub.subscribe(feed)
        for i in range(1, 21):
            # 5..9 reach the stream but not the channel (as if pub/sub dropped them)
            await writer.write(
                feed, writer.trades(SYM, float(i), first_id=i), publish=not 5 <= i <= 9
            )
        await wait_until(lambda: len(sub.trades("binance", SYM)) == 20)
        assert seqs(sub) == list(range(1, 21))
        assert sub.stats.repairs == 1 and sub.stats.gaps == 0


async def test_evicted_history_is_reported_as_gap(redis_url: str, redis: aioredis.Redis) -> None:
    writer = WireWriter(redis, run=7)
    feed = writer.feed("trades", SYM)
    gaps: list[Gap] = []
    async with Subscriber(redis_url, on_gap=gaps.append) as sub:
        await sub.subscribe(feed)
        await writer.write(feed, writer.trades(SYM, 1.0, first_id=1))
        await wait_until(lambda: len(sub.trades("binance", SYM)) == 1)
        for i in range(2, 12):
            await writer.write(feed, writer.trades(SYM, float(i), first_id=i), publish=False)
        await redis.xtrim(feed, maxlen=3, approximate=False)  # evicts 1..8
        await writer.write(feed, writer.trades(SYM, 12.0, first_id=12))
        await wait_until(lambda: len(gaps) == 1, what="gap event")
        assert gaps[0] == Gap(feed=feed, run=7, first_seq=2, last_seq=8, reason="evicted")
        assert seqs(sub) == [1, 9, 10, 11, 12]
        assert sub.stats.missing == 7 and sub.gaps == gaps


async def test_new_run_is_bridged(redis_url: str, redis: aioredis.Redis) -> None:
    writer = WireWriter(redis, run=7)
    feed = writer.feed("trades", SYM)
    async with Subscriber(redis_url) as sub:
        await sub.subscribe(feed)
        await writer.write(feed, writer.trades(SYM, 1.0, first_id=1))
        await writer.write(feed, writer.trades(SYM, 2.0, first_id=2), publish=False)
        writer.new_run()
        await writer.write(feed, writer.trades(SYM, 3.0, first_id=3), publish=False)
        await writer.write(feed, writer.trades(SYM, 4.0, first_id=4))
        await wait_until(lambda: len(sub.trades("binance", SYM)) == 4)
        assert seqs(sub) == [1, 2, 3, 4] and sub.position(feed) == (8, 2)


async def test_undecodable_payload_does_not_stop_the_consumer(
    redis_url: str, redis: aioredis.Redis
) -> None:
    writer = WireWriter(redis, run=7)
    feed = writer.feed("trades", SYM)
    async with Subscriber(redis_url) as sub:
        await sub.subscribe(feed)
        await writer.write(feed, writer.trades(SYM, 1.0, first_id=1))
        await writer.raw(feed, b"{garbage")
        await writer.write(feed, writer.trades(SYM, 3.0, first_id=3))
        await wait_until(lambda: len(sub.trades("binance", SYM)) == 2)
        # seq 2 is garbage: the repair reads it back, skips it again and reports it lost
        assert sub.stats.undecodable == 2
        assert sub.gaps == [Gap(feed=feed, run=7, first_seq=2, last_seq=2, reason="missing")]
        assert seqs(sub) == [1, 3]


async def test_producer_gap_status_reaches_the_strategy(
    redis_url: str, redis: aioredis.Redis
) -> None:
    writer = WireWriter(redis, run=7)
    feed = writer.feed("trades", SYM)
    gaps: list[Gap] = []
    async with Subscriber(redis_url, on_gap=gaps.append) as sub:
        await sub.subscribe(feed)
        await writer.write(writer.status_feed, writer.status("gap", feed, "dropped 12 messages"))
        await wait_until(lambda: len(gaps) == 1)
        assert gaps[0].reason == "producer" and gaps[0].feed == feed
        assert gaps[0].detail == "dropped 12 messages"


async def _write_range(writer: WireWriter, feed: str, first: int, last: int) -> None:
    for i in range(first, last + 1):
        await writer.write(feed, writer.trades(SYM, float(i), first_id=i))


async def test_pubsub_client_kill_resumes_without_loss(
    redis_url: str, redis: aioredis.Redis, transport: TransportKind
) -> None:
    writer = WireWriter(redis, run=7)
    feed = writer.feed("trades", SYM)
    async with Subscriber(redis_url, backoff=FAST, transport=transport) as sub:
        await sub.subscribe(feed)
        await _write_range(writer, feed, 1, 100)
        await wait_until(lambda: len(sub.trades("binance", SYM)) == 100)
        for round_ in range(3):
            await redis.client_kill_filter(_type="pubsub")
            # written while the subscriber is (maybe) disconnected: only the stream has them
            await _write_range(writer, feed, 101 + 100 * round_, 200 + 100 * round_)
        await wait_until(lambda: len(sub.trades("binance", SYM)) == 400, timeout_s=15)
        await _write_range(writer, feed, 401, 410)
        await wait_until(lambda: len(sub.trades("binance", SYM)) == 410)
        assert seqs(sub) == list(range(1, 411))
        assert sub.stats.gaps == 0 and sub.stats.resumes >= 1


async def test_redis_restart_resumes_and_keeps_buffers(
    make_redis_server: Callable[..., RedisProcess], transport: TransportKind
) -> None:
    server = make_redis_server()
    redis = aioredis.Redis.from_url(server.url)
    writer = WireWriter(redis, run=7)
    feed = writer.feed("trades", SYM)
    try:
        async with Subscriber(server.url, backoff=FAST, transport=transport) as sub:
            await sub.subscribe(feed)
            await _write_range(writer, feed, 1, 50)
            await wait_until(lambda: len(sub.trades("binance", SYM)) == 50)
            server.kill()
            await wait_until(lambda: not sub.connected, what="subscriber noticed the outage")
            assert seqs(sub) == list(range(1, 51))  # buffers survive the outage
            server.start()
            await redis.connection_pool.disconnect()
            # written before the subscriber is back: recovered from the stream
            await _write_range(writer, feed, 51, 80)
            await wait_until(lambda: len(sub.trades("binance", SYM)) == 80, timeout_s=15)
            await _write_range(writer, feed, 81, 90)
            await wait_until(lambda: len(sub.trades("binance", SYM)) == 90)
            assert seqs(sub) == list(range(1, 91))
            assert sub.stats.reconnects >= 1 and sub.stats.gaps == 0 and sub.connected
    finally:
        await redis.aclose()


async def test_slow_listener_conflates_state_and_reads_back_trades(
    redis_url: str, redis: aioredis.Redis, transport: TransportKind
) -> None:
    writer = WireWriter(redis, run=7)
    trades_feed = writer.feed("trades", SYM)
    ticker_feed = writer.feed("ticker", SYM)
    got_trades: list[int] = []
    got_tickers: list[int] = []
    release = asyncio.Event()

    async def slow(update: object) -> None:
        await release.wait()  # blocked until the flood is over: as slow as it gets
        if update.__class__.__name__ == "Trades":
            got_trades.append(update.seq)  # type: ignore[attr-defined]
        else:
            got_tickers.append(update.seq)  # type: ignore[attr-defined]

    async with Subscriber(
        redis_url, max_pending=50, on_message=slow, trades=5000, transport=transport
    ) as sub:
        await sub.subscribe(trades_feed, ticker_feed)
        n = 2000
        for i in range(1, n + 1):
            await writer.write(trades_feed, writer.trades(SYM, float(i), first_id=i))
            await writer.write(ticker_feed, writer.ticker(SYM, float(i)))
        await wait_until(lambda: len(sub.trades("binance", SYM)) == n, timeout_s=20)
        assert sub.stats.reconnects == 0
        release.set()
        await wait_until(lambda: len(got_trades) == n, timeout_s=20, what="all trades delivered")
        await wait_until(lambda: bool(got_tickers) and got_tickers[-1] == n)
        assert got_trades == list(range(1, n + 1))
        assert len(got_tickers) < n and got_tickers == sorted(got_tickers)
        stats = sub.stats
        assert stats.refetched > 0 and stats.conflated > 0 and stats.gaps == 0


async def test_pattern_subscription_resumes_without_loss_after_client_kill(
    redis_url: str, redis: aioredis.Redis, transport: TransportKind
) -> None:
    writer = WireWriter(redis, run=7)
    feed = writer.feed("trades", SYM)
    async with Subscriber(redis_url, backoff=FAST, transport=transport) as sub:
        await sub.subscribe_pattern("md:binance:trades:*")
        await _write_range(writer, feed, 1, 10)
        await wait_until(lambda: feed in sub.feeds and len(sub.trades("binance", SYM)) == 10)
        await redis.client_kill_filter(_type="pubsub")
        await wait_until(lambda: sub.stats.reconnects == 1, what="the loss noticed")
        await _write_range(writer, feed, 11, 60)  # maybe while disconnected: from the stream
        await wait_until(lambda: len(sub.trades("binance", SYM)) == 60, timeout_s=15)
        await _write_range(writer, feed, 61, 70)
        await wait_until(lambda: len(sub.trades("binance", SYM)) == 70)
        assert seqs(sub) == list(range(1, 71)) and sub.stats.gaps == 0
