"""Fixtures for the simulator's integration tests: a real server, real ccxt.pro."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

import ccxt.pro
import pytest

from marketbus.sim import SimServer
from marketbus.sim.market import Candle
from marketbus.sim.server import accelerated_clock, wall_clock_ms

T = TypeVar("T")

DEADLINE_S = 5.0


async def within(awaitable: Awaitable[T], timeout: float = DEADLINE_S) -> T:
    """Await with a deadline: a silent socket must fail the test, not hang it."""
    return await asyncio.wait_for(awaitable, timeout)


@asynccontextmanager
async def ccxt_client(sim: SimServer, exchange_id: str, **extra: Any) -> AsyncIterator[Any]:
    """A real ccxt.pro exchange aimed at `sim`, always closed afterwards.

    `timeout_on_exit` 0: ccxt sleeps that long in `close()` for TLS shutdown, which
    plain loopback HTTP does not need (it would cost every test 0.25 s).
    """
    options = sim.url_overrides(exchange_id)
    options["timeout_on_exit"] = 0
    options.update(extra)
    exchange = getattr(ccxt.pro, exchange_id)(options)
    try:
        yield exchange
    finally:
        await exchange.close()


async def collect_until(
    watch: Callable[[], Awaitable[T]], done: Callable[[list[T]], bool], timeout: float = 10.0
) -> list[T]:
    """Call `watch` repeatedly, keeping every result, until `done(results)`."""
    results: list[T] = []

    async def loop() -> None:
        while not done(results):
            results.append(await watch())

    await within(loop(), timeout)
    return results


async def live_book_when(
    exchange: Any, symbol: str, done: Callable[[Any], bool], timeout: float = DEADLINE_S
) -> Any:
    """ccxt's live book of `symbol` once `done(book)`, checked as frames arrive while a
    watch loop keeps the subscription going; raises what that loop raises.

    Waiting on successive watches alone can hang on a paused market: a frame handled
    between two watch calls resolves nothing, and no later frame comes.
    """

    async def watch_forever() -> None:
        while True:
            await exchange.watch_order_book(symbol)

    watcher = asyncio.ensure_future(watch_forever())

    async def reached() -> Any:
        while True:
            book = exchange.orderbooks.get(symbol)
            if book is not None and done(book):
                return book
            if watcher.done():
                watcher.result()
            await asyncio.sleep(0.01)

    try:
        return await within(reached(), timeout)
    finally:
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError, ccxt.BaseError):
            await watcher


@dataclass(frozen=True)
class Venue:
    """One simulated exchange and market kind, as the producer would watch it.

    The flags record what the exchange's own protocol, as parsed by ccxt, cannot carry;
    tests check the weaker property there (and that the gap is still there).
    """

    exchange: str
    symbols: tuple[str, ...]
    timeframe: str = "1m"
    trade_ids: bool = True
    """False: the trade stream has no trade id (bingx swap), ccxt's `id` is None."""
    ticker_stats: bool = True
    """False: the ticker stream has no 24 h statistics (kucoinfutures' ticker carries
    the last trade and best bid/ask only), ccxt's open/high/low/baseVolume are None."""
    refusal_rejects_watch: bool = True
    """False: ccxt's handler raises on the exchange's subscribe error inside its receive
    loop (kucoinfutures), so the watch is never rejected: it stalls, like on garbage."""
    trade_ms_may_be_early: bool = False
    """True: trade times come in nanoseconds and ccxt parses them through a float, then
    truncates (kucoinfutures), so its `timestamp` can be 1 ms before the trade's."""
    candle_volume_in_contracts: bool = False
    """True: ccxt's candle volume is the venue's contract count (kucoinfutures); okx
    swaps print contracts too, but ccxt reads okx's base-unit `volCcy` column."""

    @property
    def symbol(self) -> str:
        return self.symbols[0]

    def __str__(self) -> str:
        return f"{self.exchange}-{self.symbol}"


VENUES = [
    Venue("binance", ("BTC/USDT", "ETH/USDT")),
    Venue("binance", ("BTC/USDT:USDT", "ETH/USDT:USDT")),
    Venue("okx", ("BTC/USDT", "ETH/USDT")),
    Venue("okx", ("BTC/USDT:USDT", "ETH/USDT:USDT")),
    Venue(
        "kucoinfutures",
        ("BTC/USDT:USDT", "ETH/USDT:USDT"),
        ticker_stats=False,
        refusal_rejects_watch=False,
        trade_ms_may_be_early=True,
        candle_volume_in_contracts=True,
    ),
    Venue("bingx", ("BTC/USDT", "ETH/USDT")),
    Venue("bingx", ("BTC/USDT:USDT", "ETH/USDT:USDT"), trade_ids=False),
]


@dataclass
class Rig:
    """A running simulator and a ccxt client aimed at it."""

    venue: Venue
    sim: SimServer
    exchange: Any

    def printed(self, amount: float, symbol: str | None = None) -> float:
        """A base amount of the truth as the venue prints it and ccxt passes it on:
        contracts on derivative venues with contract sizes, else the amount itself."""
        inst = self.sim.market.instrument(symbol or self.venue.symbol)
        return float(inst.contract(self.venue.exchange).contracts(inst.amount_str(amount)))

    def candle_row(self, candle: Candle) -> list[Any]:
        """`candle` as ccxt's OHLCV row from this venue."""
        volume = (
            self.printed(candle.volume) if self.venue.candle_volume_in_contracts else candle.volume
        )
        return [candle.ts_ms, candle.open, candle.high, candle.low, candle.close, volume]


@asynccontextmanager
async def rig_for(venue: Venue, **server_args: Any) -> AsyncIterator[Rig]:
    """A simulator (1m candles close about every 0.25 s) and a client for `venue`.

    The clock factor is prime: with 240 every timestamp of a run was the same number
    mod 240, so a parsing bug that hits some millisecond values hit all or none.
    """
    args: dict[str, Any] = {
        "rate": 100,
        "seed": 7,
        "warmup_s": 600,
        "warmup_every_ms": 5000,
        "clock": accelerated_clock(241),
    }
    args.update(server_args)
    async with (
        SimServer(venue.exchange, venue.symbols, **args) as sim,
        ccxt_client(sim, venue.exchange) as exchange,
    ):
        yield Rig(venue, sim, exchange)


@pytest.fixture(params=VENUES, ids=str)
async def rig(request: pytest.FixtureRequest) -> AsyncIterator[Rig]:
    async with rig_for(request.param) as rig:
        yield rig


@pytest.fixture(params=VENUES, ids=str)
async def wall_clock_rig(request: pytest.FixtureRequest) -> AsyncIterator[Rig]:
    """A rig on the real clock, for calls whose window ccxt computes from its own clock:
    kucoinfutures' `fetch_ohlcv` without `since` asks for [now - limit x timeframe, now],
    which an accelerated simulator has long left behind."""
    async with rig_for(request.param, clock=wall_clock_ms) as rig:
        yield rig
