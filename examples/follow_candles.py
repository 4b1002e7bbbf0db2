"""Follow 1m candles and trades of one symbol with the asyncio Subscriber.

    python examples/follow_candles.py --redis redis://127.0.0.1:6379/0 --seconds 10

Prints the backfilled candles, then every closed candle, trade batch and gap as they
arrive, then the counters.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib

from marketbus.consumers import OHLCV, Gap, Staleness, Subscriber, Trades


async def main(redis_url: str, exchange: str, symbol: str, seconds: float) -> None:
    async with Subscriber(redis_url, candles=500) as sub:
        await sub.subscribe(exchange=exchange, symbol=symbol, timeframe="1m")
        await sub.subscribe(exchange=exchange, symbol=symbol, kind="trades")
        candles = sub.candles(exchange, symbol, "1m")
        print(f"backfilled {len(candles.closed())} closed candles; latest: {candles.latest}")

        async def follow() -> None:
            async for event in sub:
                match event:
                    case Gap():
                        print(
                            f"GAP {event.feed} {event.first_seq}..{event.last_seq} {event.reason}"
                        )
                    case Staleness(stale=True):
                        print(f"STALE {event.feed}: {event.reason}")
                    case OHLCV(closed=True):
                        print(f"candle {event.ts_ms} close={event.close}")
                    case Trades():
                        print(f"{len(event.trades)} trade(s), last price {event.trades[-1].price}")

        with contextlib.suppress(TimeoutError):  # follow for *seconds*, then report
            await asyncio.wait_for(follow(), seconds)
        print(f"stats: {sub.stats}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--exchange", default="binance")
    parser.add_argument("--symbol", default="BTC/USDT")
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()
    asyncio.run(main(args.redis, args.exchange, args.symbol, args.seconds))
