"""`marketbus demo`: the whole bus on one machine, live in the terminal.

It starts the loopback binance simulator, a producer (real ccxt.pro) and a consumer
(the SDK), and shows the consumer's candle buffers and tickers once a second. Without
``--redis`` it starts a private redis-server (or, when none is installed, fakeredis's
TCP server) and says which. Everything it started is stopped on exit or Ctrl-C.

What can fail at its boundaries (Redis refusing a command, a socket, the private server
not starting, the producer stopping) ends as a `DemoError`: one line from the CLI and
exit 1, not a traceback.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TextIO

from redis.exceptions import RedisError

from marketbus.consumers import Subscriber
from marketbus.display import clock, number
from marketbus.localredis import FakeRedisTcp, RedisProcess, fakeredis_unusable
from marketbus.producer.config import ExchangeConfig, ProducerConfig
from marketbus.producer.process import Producer
from marketbus.shared.config import RedisConfig
from marketbus.shared.errors import MarketbusError
from marketbus.shared.urls import redact
from marketbus.sim.server import SimServer

log = logging.getLogger(__name__)

EXCHANGE = "binance"
SYMBOLS = ("BTC/USDT", "ETH/USDT", "SOL/USDT")
TIMEFRAME = "1s"
KINDS = (f"ohlcv.{TIMEFRAME}", "ohlcv.1m", "ticker", "trades", "book")
SIM_RATE = 20.0
WARMUP_S = 900.0  # simulated history, so the producer backfills past candles at startup


class DemoError(MarketbusError):
    """The demo could not start or stopped early; the message says what failed and, where
    something is missing, what to install."""


@contextlib.contextmanager
def local_redis(out: TextIO) -> Iterator[str]:
    """A private Redis for the demo: redis-server if installed, else fakeredis."""
    with tempfile.TemporaryDirectory(prefix="marketbus-demo-") as workdir:
        if shutil.which("redis-server"):
            server = RedisProcess(Path(workdir))
            try:
                server.start()
            except RuntimeError as exc:
                last_line = str(exc).strip().splitlines()[-1]  # its log's fatal line, if any
                raise DemoError(f"the private redis-server did not start: {last_line}") from exc
            try:
                print(f"redis: private redis-server at {server.url}", file=out)
                yield server.url
            finally:
                server.stop()
            return
        problem = fakeredis_unusable()
        if problem is not None:
            raise DemoError(
                f"redis-server is not installed and {problem}: install redis-server "
                "(apt-get install redis-server) or pip install 'marketbus[demo]'"
            )
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
    """Run the demo for *duration_s* seconds (None: until cancelled); returns 0.

    Raises DemoError (or the MarketbusError of the part that failed) when it cannot run.
    """
    try:
        return await _run(duration_s, redis_url, out)
    except (RedisError, OSError) as exc:
        # MarketbusErrors that are also redis-py errors (the fast transport's) say enough.
        if isinstance(exc, MarketbusError):
            raise
        log.debug("the demo stopped", exc_info=exc)  # the traceback, with -v
        raise DemoError(f"the demo stopped: {type(exc).__name__}: {exc}") from exc


async def _run(duration_s: float | None, redis_url: str | None, out: TextIO) -> int:
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
            async with Producer(config) as producer, Subscriber(redis_url) as sub:
                for symbol in SYMBOLS:
                    for kind in KINDS:
                        await sub.subscribe(exchange=EXCHANGE, symbol=symbol, kind=kind)
                await _show(sub, producer, duration_s, redis_text, out)
    return 0


async def _show(
    sub: Subscriber, producer: Producer, duration_s: float | None, redis_text: str, out: TextIO
) -> None:
    """A screen a second until *duration_s* is up; DemoError as soon as the producer
    failed (a failed subscriber raises from its ``async with``)."""
    started = time.monotonic()
    tty = out.isatty()
    while duration_s is None or time.monotonic() - started < duration_s:
        _check(producer)
        screen = render(sub, started, redis_text)
        out.write(("\x1b[H\x1b[2J" if tty else "\n") + screen + "\n")
        out.flush()
        remaining = 1.0 if duration_s is None else duration_s - (time.monotonic() - started)
        await asyncio.sleep(max(0.0, min(1.0, remaining)))
    _check(producer)


def _check(producer: Producer) -> None:
    failure = producer.failure
    if failure is not None:
        raise DemoError(f"the producer stopped: {type(failure).__name__}: {failure}") from failure
