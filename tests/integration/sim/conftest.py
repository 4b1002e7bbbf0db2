"""Fixtures for the simulator's integration tests: a real server, real ccxt.pro."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

import ccxt.pro
import pytest

from marketbus.sim import SimServer
from marketbus.sim.server import accelerated_clock

T = TypeVar("T")

DEADLINE_S = 5.0


async def within(awaitable: Awaitable[T], timeout: float = DEADLINE_S) -> T:
    """Await with a deadline: a silent socket must fail the test, not hang it."""
    return await asyncio.wait_for(awaitable, timeout)


@asynccontextmanager
async def ccxt_client(sim: SimServer, exchange_id: str, **extra: Any) -> AsyncIterator[Any]:
    """A real ccxt.pro exchange aimed at `sim`, always closed afterwards."""
    options = sim.url_overrides(exchange_id)
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


@dataclass(frozen=True)
class Venue:
    """One simulated exchange and market kind, as the producer would watch it."""

    exchange: str
    symbols: tuple[str, ...]
    timeframe: str = "1m"

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
]


@dataclass
class Rig:
    """A running simulator and a ccxt client aimed at it."""

    venue: Venue
    sim: SimServer
    exchange: Any


@asynccontextmanager
async def rig_for(venue: Venue, **server_args: Any) -> AsyncIterator[Rig]:
    """A simulator (1m candles close every 0.25 s) and a client for `venue`."""
    args: dict[str, Any] = {
        "rate": 100,
        "seed": 7,
        "warmup_s": 600,
        "warmup_every_ms": 5000,
        "clock": accelerated_clock(240),
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
