"""The four usages of the system marketbus replaces, ported to examples/ on the SDK.

Each example runs as a real process against a private redis-server seeded as a producer
writes it; the live ones also get a message while they run and must react to it.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import redis.asyncio as aioredis

from tests.support.wire_writer import WireWriter

EXAMPLES = Path(__file__).resolve().parents[3] / "examples"
M5 = 300_000
M30 = 1_800_000
DEADLINE_S = 30.0


class Example:
    """One example process; `expect` reads its output until a line holds a text."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.lines: list[str] = []

    async def expect(self, text: str) -> str:
        assert self.proc.stdout is not None
        async with asyncio.timeout(DEADLINE_S):
            while True:
                raw = await self.proc.stdout.readline()
                if not raw:
                    err = b"" if self.proc.stderr is None else await self.proc.stderr.read()
                    raise AssertionError(
                        f"example ended before printing {text!r}: {self.lines} {err.decode()}"
                    )
                line = raw.decode().rstrip()
                self.lines.append(line)
                if text in line:
                    return line


@asynccontextmanager
async def example(name: str, redis_url: str, *args: str) -> AsyncIterator[Example]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        str(EXAMPLES / name),
        "--redis",
        redis_url,
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        yield Example(proc)
        async with asyncio.timeout(DEADLINE_S):
            _, err = await proc.communicate()
        assert proc.returncode == 0, err.decode()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def test_latest_close_prints_the_backfilled_close_then_each_new_close(
    redis_url: str,
) -> None:
    redis = aioredis.Redis.from_url(redis_url)
    kucoin = WireWriter(redis, exchange="kucoinfutures", run=5)
    feed = kucoin.feed("ohlcv.1m", "BTC/USDT:USDT")
    for i in range(3):
        await kucoin.write(feed, kucoin.candle("BTC/USDT:USDT", i * 60_000, 100.0 + i, closed=True))
    async with example("latest_close.py", redis_url, "--seconds", "3") as run:
        await run.expect("latest close: 102.0")
        await kucoin.write(feed, kucoin.candle("BTC/USDT:USDT", 180_000, 99.5, closed=True))
        assert await run.expect("closed 180000") == "closed 180000: close 99.5"
    await redis.aclose()


async def test_portfolio_values_holdings_across_exchanges_with_a_stream_status_line(
    redis_url: str,
) -> None:
    redis = aioredis.Redis.from_url(redis_url)
    kucoin = WireWriter(redis, exchange="kucoinfutures", run=5)
    bingx = WireWriter(redis, exchange="bingx", run=5)
    k_feed = kucoin.feed("ohlcv.5m", "BTC/USDT:USDT")
    b_feed = bingx.feed("ohlcv.5m", "ETH/USDT")
    await kucoin.write(
        k_feed, kucoin.candle("BTC/USDT:USDT", 0, 100.0, closed=True, timeframe="5m")
    )
    await bingx.write(b_feed, bingx.candle("ETH/USDT", 0, 10.0, closed=True, timeframe="5m"))
    args = ("--feed", "kucoinfutures:BTC/USDT:USDT", "--feed", "bingx:ETH/USDT", "--seconds", "3")
    async with example("portfolio_5m.py", redis_url, *args) as run:
        await run.expect("streams total=2 active=2 | portfolio value 1.0000")
        # BTC +10%, ETH unchanged: the equal-weighted portfolio is up 5%
        await kucoin.write(
            k_feed, kucoin.candle("BTC/USDT:USDT", M5, 110.0, closed=True, timeframe="5m")
        )
        await run.expect("portfolio value 1.0500")
    await redis.aclose()


async def test_spread_monitor_flags_a_wide_spread(redis_url: str) -> None:
    redis = aioredis.Redis.from_url(redis_url)
    binance = WireWriter(redis, run=5)
    feed = binance.feed("ticker", "BTC/USDT")
    await binance.write(feed, binance.ticker("BTC/USDT", 100_000.0))  # bid/ask +-0.5
    args = ("--symbol", "BTC/USDT", "--alert-bps", "5", "--seconds", "3")
    async with example("spread_monitor.py", redis_url, *args) as run:
        assert await run.expect("BTC/USDT: spread") == "BTC/USDT: spread 0.10 bps"
        await binance.write(feed, binance.ticker("BTC/USDT", 10.0))  # 1.0 on 10: 1000 bps
        assert await run.expect("WIDE") == "BTC/USDT: spread 1000.00 bps WIDE"
    await redis.aclose()


async def test_regime_monitor_rebuilds_its_frame_on_every_closed_candle(redis_url: str) -> None:
    redis = aioredis.Redis.from_url(redis_url)
    kucoin = WireWriter(redis, exchange="kucoinfutures", run=5)
    feed = kucoin.feed("ohlcv.30m", "BTC/USDT:USDT")
    for i in range(6):  # a steady rise
        candle = kucoin.candle(
            "BTC/USDT:USDT", i * M30, 100.0 + i * i, closed=True, timeframe="30m"
        )
        await kucoin.write(feed, candle)
    args = ("--fast", "2", "--slow", "4", "--seconds", "3")
    async with example("regime_monitor.py", redis_url, *args) as run:
        assert await run.expect("regime") == "6 candles, regime: trend-up"
        for i, close in enumerate((120.0, 110.0, 95.0, 80.0), start=6):  # then a fall
            candle = kucoin.candle("BTC/USDT:USDT", i * M30, close, closed=True, timeframe="30m")
            await kucoin.write(feed, candle)
        assert await run.expect("10 candles") == "10 candles, regime: trend-down"
    await redis.aclose()
