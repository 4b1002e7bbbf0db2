"""A pattern subscriber flooded with junk channels stays small and keeps working."""

from __future__ import annotations

import gc
import os
import tracemalloc

import msgspec
import redis.asyncio as aioredis

from marketbus.consumers import Subscriber
from marketbus.shared.codecs import encode
from tests.support.waiting import wait_until
from tests.support.wire_writer import WireWriter

SYM = "ETH/USDT"
JUNK = int(os.environ.get("MARKETBUS_TEST_JUNK_CHANNELS", "5000"))
CAP = 20


async def publish_all(redis: aioredis.Redis, messages: list[tuple[str, bytes]]) -> None:
    for first in range(0, len(messages), 500):
        async with redis.pipeline(transaction=False) as pipe:
            for channel, payload in messages[first : first + 500]:
                pipe.publish(channel, payload)
            await pipe.execute()


async def test_junk_channels_cost_a_counter_and_discovered_feeds_are_capped(
    redis_url: str,
) -> None:
    redis = aioredis.Redis.from_url(redis_url)
    try:
        writer = WireWriter(redis, run=5)
        real = writer.feed("trades", SYM)
        async with Subscriber(redis_url, max_pattern_feeds=CAP) as sub:
            await sub.subscribe_pattern("md:*")
            await writer.write(real, writer.trades(SYM, 1.0, first_id=1))
            await wait_until(lambda: len(sub.trades("binance", SYM)) == 1, what="real feed")
            # names that parse, payloads that do not decode: a counter each
            undecodable = [(f"md:x:trades:S{i}", b"{}") for i in range(JUNK)]
            # names that parse, payloads that decode: at most CAP channels are kept
            junk = writer.trades("J/USDT", 1.0)
            payload = encode(msgspec.structs.replace(junk, exchange="y", run=1, seq=1))
            valid = [(f"md:y:trades:S{i}/USDT", payload) for i in range(JUNK)]
            gc.collect()
            tracemalloc.start()
            try:
                before = tracemalloc.get_traced_memory()[0]
                await publish_all(redis, undecodable)
                await publish_all(redis, valid)
                await wait_until(
                    lambda: sub.stats.undecodable >= JUNK,
                    timeout_s=60,
                    what="the undecodable flood",
                )
                await wait_until(
                    lambda: sub.stats.refused >= JUNK - CAP,
                    timeout_s=60,
                    what="the refused flood",
                )
                gc.collect()
                grown = tracemalloc.get_traced_memory()[0] - before
            finally:
                tracemalloc.stop()
            stats = sub.stats
            assert stats.undecodable == JUNK
            kept = [name for name in sub.feeds if name.startswith("md:y:")]
            assert len(kept) <= CAP and len(kept) + stats.refused >= JUNK
            assert all(not name.startswith("md:x:trades") for name in sub.feeds)
            # bounded: the CAP kept feeds and I/O buffers (about 0.8 MB), nothing per
            # undecodable or refused channel (each used to cost about 413 KB)
            assert grown < 2_000_000, f"{grown / JUNK:.0f} B per junk channel"
            await writer.write(real, writer.trades(SYM, 2.0, first_id=2))
            await wait_until(lambda: len(sub.trades("binance", SYM)) == 2, what="real feed")
    finally:
        await redis.aclose()
