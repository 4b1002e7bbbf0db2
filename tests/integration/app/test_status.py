"""`marketbus status` on a real Redis: it is never fooled by a dead producer or hostile
stream entries, and finds its Redis URL without putting a password in ``ps``."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import msgspec
import redis.asyncio as aioredis

from marketbus.producer.stats import FeedCounters, heartbeat_detail
from marketbus.shared import codecs
from marketbus.shared.schema import FeedInfo
from tests.support.wire_writer import WireWriter

CLI = [sys.executable, "-m", "marketbus.cli"]
HOSTILE = b'{"a":' * 1000
"""5 KB nested deeper than msgspec follows: it raises RecursionError."""


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, *args], capture_output=True, text=True, timeout=60, env=env or dict(os.environ)
    )


async def catalogue(redis: aioredis.Redis, writer: WireWriter, feed: str) -> None:
    """Put *feed* of *writer*'s run in the catalog, as a producer does at start."""
    kind, symbol = feed.split(":", 3)[2:]
    info = FeedInfo(
        exchange=writer.exchange,
        symbol=symbol,
        kind=kind,
        timeframe=kind.partition(".")[2] or None,
        run=writer.run,
        stream_maxlen=writer.cap,
        updated_ms=1,
    )
    await redis.hset("md:feeds", feed, codecs.encode_feed_info(info))


async def heartbeat(writer: WireWriter, feeds: list[str], *, age_s: float) -> None:
    """A heartbeat saying every feed of *feeds* is connected, written *age_s* ago."""
    counters = {}
    for feed in feeds:
        counters[feed] = FeedCounters()
        counters[feed].state = "connected"
    detail = heartbeat_detail(
        counters, prefix=f"md:{writer.exchange}:", queued=0, now_ms=int(time.time() * 1000)
    )
    beat = writer.status("heartbeat", detail=detail)
    beat = msgspec.structs.replace(beat, recv_ns=time.time_ns() - int(age_s * 1e9))
    await writer.write(writer.status_feed, beat)


def row_of(stdout: str, feed: str) -> list[str]:
    [row] = [line.split() for line in stdout.splitlines() if line.startswith(feed + " ")]
    return row


async def test_a_producer_silent_for_3_heartbeats_is_dead_and_so_are_its_feeds(
    redis_url: str,
) -> None:
    redis = aioredis.Redis.from_url(redis_url)
    dead = WireWriter(redis, exchange="binance", run=100)
    alive = WireWriter(redis, exchange="okx", run=200)
    try:
        for writer in (dead, alive):
            feed = writer.feed("ticker", "BTC/USDT")
            await catalogue(redis, writer, feed)
            await writer.write(feed, writer.ticker("BTC/USDT", 100.0))
        # binance beat every 5 s, then stopped 60 s ago (no "stopped" event: killed).
        await heartbeat(dead, [dead.feed("ticker", "BTC/USDT")], age_s=65)
        await heartbeat(dead, [dead.feed("ticker", "BTC/USDT")], age_s=60)
        await heartbeat(alive, [alive.feed("ticker", "BTC/USDT")], age_s=5)
        await heartbeat(alive, [alive.feed("ticker", "BTC/USDT")], age_s=0)
    finally:
        await redis.aclose()
    result = await asyncio.to_thread(run_cli, "status", "--redis", redis_url)
    assert result.returncode == 0, result.stderr
    assert row_of(result.stdout, "md:binance:ticker:BTC/USDT")[4] == "dead"
    assert row_of(result.stdout, "md:okx:ticker:BTC/USDT")[4] == "connected"
    assert re.search(
        r"binance: DEAD: last heartbeat 6\d\.\ds ago \(over 15\.0s = 3 x its 5\.0s interval\)",
        result.stdout,
    ), result.stdout
    assert re.search(r"okx: heartbeat \d+\.\ds ago", result.stdout), result.stdout


async def test_hostile_and_foreign_entries_are_skipped_and_counted(redis_url: str) -> None:
    redis = aioredis.Redis.from_url(redis_url)
    writer = WireWriter(redis, exchange="binance", run=100)
    candles = writer.feed("ohlcv.1m", "BTC/USDT")
    try:
        await catalogue(redis, writer, candles)
        await writer.write(candles, writer.candle("BTC/USDT", 60_000, 100.0, closed=True))
        await heartbeat(writer, [candles], age_s=0)
        await writer.raw(candles, HOSTILE)  # the newest entry of the stream
        await writer.raw(writer.status_feed, HOSTILE)  # and of the status stream
        await redis.xadd(writer.status_feed, {"x": "not ours"})  # foreign: no "d" field
        # foreign: a valid message under an ID that is not its {run}-{seq}
        stray = msgspec.structs.replace(writer.status("error", feed=candles), run=7, seq=7)
        await redis.xadd(writer.status_feed, {"d": codecs.encode(stray)})
    finally:
        await redis.aclose()
    result = await asyncio.to_thread(run_cli, "status", "--redis", redis_url)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    row = row_of(result.stdout, candles)
    assert row[4] == "connected"  # from the heartbeat under the garbage, not the stray error
    assert row[3] != "-"  # the age of the newest decodable candle
    assert "skipped 4 undecodable or foreign stream entries" in result.stdout, result.stdout


async def test_redis_url_from_the_environment_or_a_file(redis_url: str, tmp_path: Path) -> None:
    redis = aioredis.Redis.from_url(redis_url)
    writer = WireWriter(redis, exchange="binance", run=100)
    try:
        await catalogue(redis, writer, writer.feed("ticker", "ETH/USDT"))
    finally:
        await redis.aclose()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MARKETBUS_REDIS_URL")}
    from_env = await asyncio.to_thread(
        run_cli, "status", env=env | {"MARKETBUS_REDIS_URL": redis_url}
    )
    assert from_env.returncode == 0, from_env.stderr
    assert "md:binance:ticker:ETH/USDT" in from_env.stdout
    secret = tmp_path / "redis-url"
    secret.write_text(redis_url + "\n")
    from_file = await asyncio.to_thread(
        run_cli, "status", env=env | {"MARKETBUS_REDIS_URL_FILE": str(secret)}
    )
    assert from_file.returncode == 0, from_file.stderr
    assert "md:binance:ticker:ETH/USDT" in from_file.stdout
    # --redis still wins over both
    ignored = await asyncio.to_thread(
        run_cli,
        "status",
        "--redis",
        "redis://127.0.0.1:1/0",
        env=env | {"MARKETBUS_REDIS_URL": redis_url},
    )
    assert ignored.returncode == 1
    assert "cannot reach Redis at redis://127.0.0.1:1/0" in ignored.stderr
