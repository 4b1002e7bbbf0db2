"""`marketbus demo`: the whole bus on one machine, live in the terminal.

It starts the loopback binance simulator, a producer (real ccxt.pro) and a consumer
(the SDK), and shows the consumer's candle buffers and tickers once a second. Without
``--redis`` it starts a private redis-server (or, when none is installed, fakeredis's
TCP server) and says which. Everything it started is stopped on exit or Ctrl-C.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TextIO

from marketbus.consumers import Subscriber
from marketbus.display import clock, number
from marketbus.localredis import FakeRedisTcp, RedisProcess
from marketbus.producer.config import ExchangeConfig, ProducerConfig
from marketbus.producer.process import Producer
from marketbus.shared.config import RedisConfig
from marketbus.shared.urls import redact
from marketbus.sim.server import SimServer

EXCHANGE = "binance"
SYMBOLS = ("BTC/USDT", "ETH/USDT", "SOL/USDT")
TIMEFRAME = "1s"
KINDS = (f"ohlcv.{TIMEFRAME}", "ohlcv.1m", "ticker", "trades", "book")
SIM_RATE = 20.0
WARMUP_S = 900.0  # simulated history, so the producer backfills past candles at startup


@contextlib.contextmanager
def local_redis(out: TextIO) -> Iterator[str]:
    """A private Redis for the demo: redis-server if installed, else fakeredis."""
    with tempfile.TemporaryDirectory(prefix="marketbus-demo-") as workdir:
        if shutil.which("redis-server"):
            with RedisProcess(Path(workdir)) as server:
                print(f"redis: private redis-server at {server.url}", file=out)
                yield server.url
            return
        with FakeRedisTcp() as fake:
            print(f"redis: redis-server not found, using fakeredis at {fake.url}", file=out)
            yield fake.url


def render(sub: Subscriber, started: float, redis_text: str) -> str:
    """One screen of the demo: per symbol the newest candle, ticker, book and trades."""
    lines = [
        f"marketbus demo: {EXCHANGE} simulator -> ccxt.pro producer -> Redis -> consumer SDK",
        f"redis {redis_text}   up {time.monotonic() - started:5.1f}s   (Ctrl-C to stop)",
        "",
        f"{'SYMBOL':<10} {'CANDLES ' + TIMEFRAME:>10}  {'LAST CLOSED CANDLE':<52} "
        f"{'TICKER':<40} {'BOOK SPREAD':>11} {'TRADES':>7}",
    ]
    for symbol in SYMBOLS:
        buffer = sub.candles(EXCHANGE, symbol, TIMEFRAME)
        closed = buffer.closed()
        candle = (
            f"{clock(closed[-1].ts_ms)} o={number(closed[-1].open)} h={number(closed[-1].high)} "
            f"l={number(closed[-1].low)} c={number(closed[-1].close)}"
            if closed
            else "(waiting for the first close)"
        )
        ticker = sub.ticker(EXCHANGE, symbol)
        quote = (
            f"bid {number(ticker.bid)} ask {number(ticker.ask)} last {number(ticker.last)}"
            if ticker
            else "-"
        )
        spread = sub.book(EXCHANGE, symbol).spread
        trades = sub.trades(EXCHANGE, symbol).total
        lines.append(
            f"{symbol:<10} {len(closed):>10}  {candle:<52} {quote:<40} "
            f"{number(spread):>11} {trades:>7}"
        )
    stats = sub.stats
    lines += [
        "",
        f"consumer: applied {stats.applied}  duplicates {stats.duplicates}  "
        f"gaps {stats.gaps}  undecodable {stats.undecodable}",
    ]
    return "\n".join(lines)


async def run_demo(
    duration_s: float | None, redis_url: str | None, out: TextIO = sys.stdout
) -> int:
    """Run the demo for *duration_s* seconds (None: until cancelled); returns 0."""
    with contextlib.ExitStack() as stack:
        if redis_url is None:
            redis_url = stack.enter_context(local_redis(out))
        redis_text = redact(redis_url)
        async with SimServer(
            exchange=EXCHANGE, symbols=list(SYMBOLS), rate=SIM_RATE, warmup_s=WARMUP_S
        ) as sim:
            ccxt_options = sim.url_overrides(EXCHANGE)
            # binance's default ticker stream (miniTicker) has no bid/ask; ask for the full one
            options = ccxt_options.setdefault("options", {})
            options["watchTicker"] = options["watchTickers"] = {"name": "ticker"}
            config = ProducerConfig(
                exchanges=[
                    ExchangeConfig(
                        id=EXCHANGE,
                        symbols=list(SYMBOLS),
                        kinds=list(KINDS),
                        ccxt=ccxt_options,
                    )
                ],
                redis=RedisConfig(url=redis_url),
            )
            async with Producer(config), Subscriber(redis_url) as sub:
                for symbol in SYMBOLS:
                    for kind in KINDS:
                        await sub.subscribe(exchange=EXCHANGE, symbol=symbol, kind=kind)
                await _show(sub, duration_s, redis_text, out)
    return 0


async def _show(sub: Subscriber, duration_s: float | None, redis_text: str, out: TextIO) -> None:
    started = time.monotonic()
    tty = out.isatty()
    while duration_s is None or time.monotonic() - started < duration_s:
        screen = render(sub, started, redis_text)
        out.write(("\x1b[H\x1b[2J" if tty else "\n") + screen + "\n")
        out.flush()
        remaining = 1.0 if duration_s is None else duration_s - (time.monotonic() - started)
        await asyncio.sleep(max(0.0, min(1.0, remaining)))
