"""A 5m-candle portfolio over several exchanges, with a status line of its streams.

    python examples/portfolio_5m.py --redis redis://127.0.0.1:6379/0 --seconds 30 \\
        --feed kucoinfutures:BTC/USDT:USDT --feed bingx:ETH/USDT

Holds one equal-weighted unit of every symbol from its first backfilled close and
prints the portfolio's value on every closed 5m candle, with how many streams it
follows and how many of them are live (not stale). Each ``--feed`` is
``exchange:symbol`` (the symbol may itself hold ``:``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib

from marketbus.consumers import OHLCV, Subscriber

DEFAULT_FEEDS = (
    "kucoinfutures:BTC/USDT:USDT",
    "kucoinfutures:ETH/USDT:USDT",
    "bingx:BTC/USDT",
    "bingx:ETH/USDT",
)


class Portfolio:
    """Equal weights, fixed at each holding's first close: value 1.0 at the start."""

    def __init__(self) -> None:
        self.entry: dict[str, float] = {}
        self.last: dict[str, float] = {}

    def mark(self, key: str, close: float) -> None:
        self.entry.setdefault(key, close)
        self.last[key] = close

    @property
    def value(self) -> float | None:
        if not self.last:
            return None
        return sum(self.last[k] / self.entry[k] for k in self.last) / len(self.last)


async def main(redis_url: str, feeds: list[str], seconds: float) -> None:
    portfolio = Portfolio()
    async with Subscriber(redis_url, candles=300) as sub:
        names = []
        for spec in feeds:
            exchange, symbol = spec.split(":", 1)
            names += await sub.subscribe(exchange=exchange, symbol=symbol, timeframe="5m")
            for candle in sub.candles(exchange, symbol, "5m").closed():
                portfolio.mark(spec, candle.close)

        def status() -> str:
            live = sum(not sub.is_stale(name) for name in names)
            value = portfolio.value
            shown = "n/a" if value is None else f"{value:.4f}"
            return f"streams total={len(names)} active={live} | portfolio value {shown}"

        print(status(), flush=True)

        async def follow() -> None:
            async for event in sub:
                if isinstance(event, OHLCV) and event.closed and event.close is not None:
                    portfolio.mark(f"{event.exchange}:{event.symbol}", event.close)
                    print(status(), flush=True)

        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(follow(), seconds)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--feed", action="append", help="exchange:symbol (repeatable)")
    parser.add_argument("--seconds", type=float, default=30.0)
    args = parser.parse_args()
    asyncio.run(main(args.redis, args.feed or list(DEFAULT_FEEDS), args.seconds))
