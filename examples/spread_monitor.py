"""Watch the bid/ask spread of symbols' tickers and flag it when it widens.

    python examples/spread_monitor.py --redis redis://127.0.0.1:6379/0 --seconds 30 \\
        --exchange binance --symbol BTC/USDT --symbol ETH/USDT --alert-bps 5

Prints the spread in basis points of the mid on every ticker update, marked ``WIDE``
above ``--alert-bps``, and ``STALE`` when a feed goes quiet or its producer reports
trouble, so a silent feed is never mistaken for a tight market.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib

from marketbus.consumers import Staleness, Subscriber, Ticker


def spread_bps(bid: float | None, ask: float | None) -> float | None:
    """The spread in basis points of the mid, None without both sides."""
    if bid is None or ask is None or bid <= 0 or ask <= 0:
        return None
    return (ask - bid) / ((ask + bid) / 2) * 10_000


async def main(
    redis_url: str, exchange: str, symbols: list[str], alert_bps: float, seconds: float
) -> None:
    async with Subscriber(redis_url) as sub:
        for symbol in symbols:
            await sub.subscribe(exchange=exchange, symbol=symbol, kind="ticker")

        def show(ticker: Ticker) -> None:
            bps = spread_bps(ticker.bid, ticker.ask)
            if bps is None:
                print(f"{ticker.symbol}: no two-sided quote", flush=True)
                return
            flag = " WIDE" if bps > alert_bps else ""
            print(f"{ticker.symbol}: spread {bps:.2f} bps{flag}", flush=True)

        for symbol in symbols:
            ticker = sub.ticker(exchange, symbol)
            if ticker is not None:
                show(ticker)

        async def follow() -> None:
            async for event in sub:
                match event:
                    case Ticker():
                        show(event)
                    case Staleness(stale=True):
                        print(f"STALE {event.feed}: {event.reason}", flush=True)

        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(follow(), seconds)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--exchange", default="binance")
    parser.add_argument("--symbol", action="append", help="repeatable")
    parser.add_argument("--alert-bps", type=float, default=5.0)
    parser.add_argument("--seconds", type=float, default=30.0)
    args = parser.parse_args()
    symbols = args.symbol or ["BTC/USDT"]
    asyncio.run(main(args.redis, args.exchange, symbols, args.alert_bps, args.seconds))
