"""Read the latest ticker and candles from plain (non-async) code with SyncSubscriber.

python examples/sync_ticker.py --redis redis://127.0.0.1:6379/0 --polls 5
"""

from __future__ import annotations

import argparse
import time

from marketbus.consumers import SyncSubscriber


def main(redis_url: str, exchange: str, symbol: str, polls: int) -> None:
    with SyncSubscriber(redis_url, candles=100) as sub:
        sub.subscribe(exchange=exchange, symbol=symbol, kind="ticker")
        sub.subscribe(exchange=exchange, symbol=symbol, timeframe="1m")
        for _ in range(polls):
            ticker = sub.ticker(exchange, symbol)  # an immutable message
            candles = sub.candles(exchange, symbol, "1m")  # a snapshot: safe to keep
            closes = [c.close for c in candles.closed()]
            last = ticker.last if ticker else None
            print(f"last={last} closed candles={len(closes)} last closes={closes[-3:]}")
            time.sleep(0.2)  # a strategy's own polling interval
        print(f"stats: {sub.stats}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--exchange", default="binance")
    parser.add_argument("--symbol", default="BTC/USDT")
    parser.add_argument("--polls", type=int, default=5)
    args = parser.parse_args()
    main(args.redis, args.exchange, args.symbol, args.polls)
