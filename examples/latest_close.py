"""Stream 1m candles of one symbol and print the latest close, then every new close.

    python examples/latest_close.py --redis redis://127.0.0.1:6379/0 --seconds 30

The first use of the system marketbus replaces: kucoinfutures ``BTC/USDT:USDT`` by
default. Against the demo or a replay, pass ``--exchange binance --symbol BTC/USDT``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib

from marketbus.consumers import OHLCV, Gap, Subscriber


async def main(redis_url: str, exchange: str, symbol: str, seconds: float) -> None:
    async with Subscriber(redis_url, candles=10) as sub:
        await sub.subscribe(exchange=exchange, symbol=symbol, timeframe="1m")
        latest = sub.candles(exchange, symbol, "1m").latest
        print(f"latest close: {latest.close if latest else None}", flush=True)

        async def follow() -> None:
            async for event in sub:
                match event:
                    case OHLCV(closed=True):
                        print(f"closed {event.ts_ms}: close {event.close}", flush=True)
                    case Gap():
                        print(f"gap on {event.feed}: {event.reason}", flush=True)

        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(follow(), seconds)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--exchange", default="kucoinfutures")
    parser.add_argument("--symbol", default="BTC/USDT:USDT")
    parser.add_argument("--seconds", type=float, default=30.0)
    args = parser.parse_args()
    asyncio.run(main(args.redis, args.exchange, args.symbol, args.seconds))
