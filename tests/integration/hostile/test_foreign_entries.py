"""Foreign stream entries never stop the producer: a stray ``XADD feed '*'`` or a forged
entry is counted and announced, and the producer carries on; only a real message of a
later run (another producer) fences it."""

from __future__ import annotations

import time

import redis.asyncio as aioredis

from marketbus.producer import Producer
from marketbus.producer.sequencing import MAX_RUN_AHEAD_MS
from marketbus.shared.codecs import decode
from marketbus.shared.names import parse_entry_id
from marketbus.shared.schema import Message, Status, Trades
from marketbus.sim import SimServer
from tests.integration.producer.conftest import messages, producer_config
from tests.support.waiting import wait_until

TRADES = "md:binance:trades:BTC/USDT"
OHLCV = "md:binance:ohlcv.1s:BTC/USDT"
STATUS = "md:binance:status"


async def _events(redis: aioredis.Redis, event: str, feed: str) -> list[Status]:
    return [
        m
        for m in await messages(redis, STATUS)
        if isinstance(m, Status) and m.event == event and m.feed == feed
    ]


async def test_a_stray_xadd_is_announced_and_the_producer_writes_on_in_a_new_run(
    redis_url: str, binance_sim: SimServer
) -> None:
    config = producer_config(redis_url, binance_sim, symbols=["BTC/USDT"], kinds=["trades"])
    redis = aioredis.Redis.from_url(redis_url)
    try:
        async with Producer(config) as producer:
            first_run = producer.run_id

            async def writing() -> bool:
                return int(await redis.xlen(TRADES)) >= 5

            await wait_until(writing, timeout_s=30, what="the producer's trades")
            foreign = await redis.xadd(TRADES, {"d": "x"})  # a '*' id: now-ish, seq 0
            foreign_ms, _ = parse_entry_id(foreign)

            async def past_the_foreign_entry() -> bool:
                tail = await redis.xrevrange(TRADES, count=1)
                return bool(tail) and tail[0][0] != foreign

            await wait_until(past_the_foreign_entry, timeout_s=30, what="a trade after it")
            assert producer.failure is None, producer.failure
            assert producer.run_id > max(first_run, foreign_ms - 1)
            tail_id, fields = (await redis.xrevrange(TRADES, count=1))[0]
            message = decode(fields[b"d"])
            assert isinstance(message, Trades)
            assert (message.run, message.seq) == parse_entry_id(tail_id)
            assert message.run == producer.run_id
            [announced] = await _events(redis, "error", TRADES)
            assert foreign.decode() in announced.detail
            assert producer.publisher.foreign[TRADES] >= 1
    finally:
        await redis.aclose()


async def test_hostile_last_entries_do_not_stop_the_start_or_drag_the_run_ahead(
    redis_url: str, binance_sim: SimServer
) -> None:
    config = producer_config(
        redis_url, binance_sim, symbols=["BTC/USDT"], kinds=["trades", "ohlcv.1s"]
    )
    redis = aioredis.Redis.from_url(redis_url)
    try:
        await redis.xadd(OHLCV, {"d": '{"a":' * 1000})
        await redis.xadd(TRADES, {"d": b"\xff\x00junk"}, id="9999999999999-1")
        async with Producer(config) as producer:
            now_ms = time.time_ns() // 1_000_000
            assert producer.run_id <= now_ms

            async def announced() -> bool:
                return bool(await _events(redis, "error", TRADES))

            await wait_until(announced, timeout_s=30, what="the future entry announced")
            [refused] = await _events(redis, "error", TRADES)
            assert "9999999999999" in refused.detail and f"DEL {TRADES}" in refused.detail

            async def candles() -> bool:
                return any(m.run == producer.run_id for m in await messages_after(redis))

            await wait_until(candles, timeout_s=30, what="closed candles after the junk")
            assert producer.failure is None, producer.failure
            assert producer.run_id < 9999999999999 - MAX_RUN_AHEAD_MS
            await redis.delete(TRADES)  # the operator's fix: the feed is written again

            async def trades_again() -> bool:
                return any(m.run == producer.run_id for m in await messages(redis, TRADES))

            await wait_until(trades_again, timeout_s=30, what="trades after DEL")
    finally:
        await redis.aclose()


async def messages_after(redis: aioredis.Redis) -> list[Message]:
    """The messages of the ohlcv stream after the junk entry."""
    return [decode(fields[b"d"]) for _, fields in (await redis.xrange(OHLCV))[1:]]
