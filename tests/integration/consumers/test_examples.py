"""Every example in examples/ runs against a private redis-server (docs cannot rot)."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import redis.asyncio as aioredis

from tests.support.wire_writer import WireWriter

EXAMPLES = Path(__file__).resolve().parents[3] / "examples"
SYM = "BTC/USDT"
M = 60_000


async def _seed(redis_url: str) -> None:
    redis = aioredis.Redis.from_url(redis_url)
    writer = WireWriter(redis, run=9)
    for i in range(3):
        await writer.write(
            writer.feed("ohlcv.1m", SYM), writer.candle(SYM, i * M, 10.0 + i, closed=True)
        )
    await writer.write(writer.feed("ticker", SYM), writer.ticker(SYM, 12.5))
    await writer.write(writer.feed("trades", SYM), writer.trades(SYM, 12.4, 12.6))
    await redis.aclose()


async def _run(*args: str) -> str:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 0, err.decode()
    return out.decode()


async def test_follow_candles_example(redis_url: str) -> None:
    await _seed(redis_url)
    out = await _run(str(EXAMPLES / "follow_candles.py"), "--redis", redis_url, "--seconds", "0.5")
    assert "backfilled 3 closed candles" in out and "stats:" in out


async def test_sync_ticker_example(redis_url: str) -> None:
    await _seed(redis_url)
    out = await _run(str(EXAMPLES / "sync_ticker.py"), "--redis", redis_url, "--polls", "2")
    assert "last=12.5 closed candles=3" in out
