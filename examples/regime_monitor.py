"""Rebuild a pandas DataFrame of 30m candles on every closed candle and name the regime.

    python examples/regime_monitor.py --redis redis://127.0.0.1:6379/0 --seconds 60

Needs pandas (``pip install 'marketbus[pandas]'``). On every closed 30m candle the
candle buffer becomes a fresh DataFrame (a copy: the strategy may keep it), and a
fast/slow moving-average cross with the recent volatility names the regime:
``trend-up``, ``trend-down`` or ``range``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
from typing import Any

from marketbus.consumers import OHLCV, Subscriber

TIMEFRAME = "30m"


def regime(frame: Any, fast: int, slow: int) -> str:
    """``trend-up``, ``trend-down`` or ``range`` from closed candles' closes."""
    closes = frame.loc[frame["closed"], "close"]
    if len(closes) < slow:
        return f"warming up ({len(closes)}/{slow} candles)"
    fast_ma = closes.rolling(fast).mean().iloc[-1]
    slow_ma = closes.rolling(slow).mean().iloc[-1]
    band = closes.pct_change().rolling(slow).std().iloc[-1] * slow_ma
    if fast_ma > slow_ma + band:
        return "trend-up"
    if fast_ma < slow_ma - band:
        return "trend-down"
    return "range"


async def main(
    redis_url: str, exchange: str, symbol: str, fast: int, slow: int, seconds: float
) -> None:
    async with Subscriber(redis_url, candles=500) as sub:
        await sub.subscribe(exchange=exchange, symbol=symbol, timeframe=TIMEFRAME)
        candles = sub.candles(exchange, symbol, TIMEFRAME)

        def report() -> None:
            frame = candles.to_pandas()
            print(f"{len(frame)} candles, regime: {regime(frame, fast, slow)}", flush=True)

        report()

        async def follow() -> None:
            async for event in sub:
                if isinstance(event, OHLCV) and event.closed:
                    report()

        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(follow(), seconds)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--exchange", default="kucoinfutures")
    parser.add_argument("--symbol", default="BTC/USDT:USDT")
    parser.add_argument("--fast", type=int, default=5)
    parser.add_argument("--slow", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=60.0)
    args = parser.parse_args()
    asyncio.run(main(args.redis, args.exchange, args.symbol, args.fast, args.slow, args.seconds))
