"""Target 5: RSS of a consumer holding FEEDS feeds x CANDLES closed candles.

Each measurement runs in a fresh interpreter (``python -m bench.memory MODE FEEDS
CANDLES``) that imports the consumer SDK, fills the buffers and prints its peak RSS:
- marketbus: the consumer's real `Engine` with one tracked feed per name and
  `BufferSizes(candles=CANDLES)`, candles applied to each feed's `CandleBuffer`;
- baseline: the naive holder, a ``deque(maxlen=CANDLES)`` of decoded OHLCV Structs.
"""

from __future__ import annotations

import asyncio
import os
import resource
import sys
from collections import deque
from collections.abc import Callable
from pathlib import Path

from bench.report import Row

ROOT = Path(__file__).resolve().parent.parent


def fill(mode: str, feeds: int, candles: int) -> float:
    """Fill the holder; peak RSS in MB."""
    from marketbus.consumers.buffers import CandleBuffer
    from marketbus.consumers.engine import BufferSizes, Engine
    from marketbus.shared.names import feed_name
    from marketbus.shared.schema import OHLCV

    engine = Engine()
    naive: dict[str, deque[OHLCV]] = {}
    for f in range(feeds):
        name = feed_name("md", "binance", "ohlcv.1m", f"C{f}/USDT")
        apply: Callable[[OHLCV], object]
        if mode == "marketbus":
            buffer = engine.track(name, BufferSizes(candles=candles)).buffer
            assert isinstance(buffer, CandleBuffer)
            apply = buffer.apply
        else:
            naive[name] = deque(maxlen=candles)
            apply = naive[name].append
        for c in range(candles):
            price = 100.0 + c
            apply(
                OHLCV(
                    exchange="binance",
                    symbol=f"C{f}/USDT",
                    run=1,
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
            )
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


async def measure(mode: str, feeds: int, candles: int) -> float:
    env = dict(
        os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])
    )
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bench.memory",
        mode,
        str(feeds),
        str(candles),
        env=env,
        stdout=asyncio.subprocess.PIPE,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 300)
    if proc.returncode:
        raise RuntimeError(f"memory child exited with {proc.returncode}")
    return float(out.decode().strip())


async def run(feeds: int, candles: int) -> list[Row]:
    row = Row(
        f"consumer RSS, {feeds:,} feeds x {candles:,} candles",
        "MB",
        baseline_name="deque of OHLCV Structs",
        higher_is_better=False,
        target="< 150 MB",
    )
    row.marketbus.append(await measure("marketbus", feeds, candles))
    row.baseline.append(await measure("naive", feeds, candles))
    return [row]


if __name__ == "__main__":
    print(f"{fill(sys.argv[1], int(sys.argv[2]), int(sys.argv[3])):.1f}")
