"""Target 5: RSS of a consumer holding FEEDS feeds x CANDLES closed candles.

Each measurement runs in a fresh interpreter (``python -m bench.memory MODE URL FEEDS
CANDLES``) and prints its peak RSS:
- marketbus: the real consumer SDK, ``Subscriber(url, candles=CANDLES)`` subscribed to
  FEEDS feeds; once it says ``ready``, this process publishes CANDLES closed candles per
  feed and the child reports its peak RSS when every one is applied (interpreter,
  redis-py, asyncio and the socket path included);
- baseline: the naive holder, a ``deque(maxlen=CANDLES)`` of decoded OHLCV Structs per
  feed, filled in memory (no I/O, so it is a lower bound for a naive consumer).
"""

from __future__ import annotations

import asyncio
import os
import resource
import sys
from collections import deque
from collections.abc import Iterator
from pathlib import Path

from bench.report import Row

ROOT = Path(__file__).resolve().parent.parent
RUN = 1


def candle(feed: int, c: int) -> object:
    from marketbus.shared.schema import OHLCV

    price = 100.0 + c
    return OHLCV(
        exchange="binance",
        symbol=f"C{feed}/USDT",
        run=RUN,
        seq=c + 1,
        ts_ms=1_790_000_000_000 + c * 60_000,
        recv_ns=c,
        timeframe="1m",
        open=price,
        high=price + 1,
        low=price - 1,
        close=price + 0.5,
        volume=10.0 + c,
        closed=True,
    )


def names(feeds: int) -> list[str]:
    from bench.workload import Workload

    return Workload(1, feeds=feeds).feed_names()


def naive(feeds: int, candles: int) -> float:
    """Fill the naive holder; peak RSS in MB."""
    held: dict[str, deque[object]] = {}
    for f, name in enumerate(names(feeds)):
        held[name] = deque(maxlen=candles)
        for c in range(candles):
            held[name].append(candle(f, c))
    return peak_rss_mb()


async def subscriber(url: str, feeds: int, candles: int) -> float:
    """Subscribe, say ready, wait until every candle is applied; peak RSS in MB."""
    from marketbus.consumers import BufferSizes, Subscriber

    sizes = BufferSizes(candles=candles, stale_after_s=None)
    async with Subscriber(url, sizes=sizes, ready_timeout_s=120) as sub:
        await sub.subscribe(*names(feeds))
        print("ready", flush=True)
        async with asyncio.timeout(300):
            while sub.stats.applied < feeds * candles:  # noqa: ASYNC110 (a counter)
                await asyncio.sleep(0.05)
        held = sum(len(sub.candles("binance", f"C{f}/USDT", "1m")) for f in range(feeds))
        assert held == feeds * candles and sub.stats.gaps == 0, (held, sub.stats)
        return peak_rss_mb()


def peak_rss_mb() -> float:
    """This process's RSS high-water mark (VmHWM: unlike ru_maxrss, not inherited from
    the parent across fork + exec)."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def wire(feeds: int, candles: int) -> Iterator[tuple[str, bytes]]:
    """Every feed's candles, oldest first, round-robin over feeds (as JSON payloads)."""
    from marketbus.shared.codecs import encoder_for

    encode = encoder_for("json").encode
    channels = names(feeds)
    for c in range(candles):
        for f, channel in enumerate(channels):
            yield channel, encode(candle(f, c))


async def publish(url: str, feeds: int, candles: int) -> None:
    from bench.subscribe import publish_all

    await publish_all(url, wire(feeds, candles))


async def measure(mode: str, url: str, feeds: int, candles: int) -> float:
    env = dict(
        os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])
    )
    proc = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "bench.memory", mode, url, str(feeds), str(candles)),
        env=env,
        stdout=asyncio.subprocess.PIPE,
    )
    assert proc.stdout is not None
    try:
        async with asyncio.timeout(300):
            if mode == "marketbus":
                line = await proc.stdout.readline()
                if line.strip() != b"ready":
                    raise RuntimeError(f"memory child did not get ready: {line!r}")
                await publish(url, feeds, candles)
            out = await proc.stdout.read()
            await proc.wait()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    if proc.returncode:
        raise RuntimeError(f"memory child exited with {proc.returncode}")
    return float(out.decode().strip())


async def run(url: str, feeds: int, candles: int) -> list[Row]:
    import redis.asyncio as aioredis

    admin = aioredis.Redis.from_url(url)
    await admin.flushall()  # no history: every candle comes live, in order
    await admin.aclose()
    row = Row(
        f"consumer RSS, {feeds:,} feeds x {candles:,} candles",
        "MB",
        baseline_name="deque of OHLCV Structs (no I/O)",
        higher_is_better=False,
        target="< 150 MB",
    )
    row.marketbus.append(await measure("marketbus", url, feeds, candles))
    row.baseline.append(await measure("naive", url, feeds, candles))
    return [row]


if __name__ == "__main__":
    mode, url, feeds, candles = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    if mode == "marketbus":
        print(f"{asyncio.run(subscriber(url, feeds, candles)):.1f}")
    else:
        print(f"{naive(feeds, candles):.1f}")
