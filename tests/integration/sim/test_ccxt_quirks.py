"""ccxt quirks the producer must live with, pinned against the simulator.

Each test states a fact about how ccxt 4.5.90 parses one exchange's own protocol (the
simulator speaks it faithfully). When a ccxt upgrade changes one, its test fails:
revisit the producer's workaround and the shared CCXT notes.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from marketbus.sim import SimServer
from tests.integration.sim.conftest import Venue, ccxt_client, collect_until, rig_for, within

KUCOIN = "kucoinfutures"
KUCOIN_SYMBOL = "BTC/USDT:USDT"


@pytest.mark.parametrize(
    ("symbol", "latest_only"), [("BTC/USDT", True), ("BTC/USDT:USDT", False)], ids=str
)
async def test_bingx_spot_ohlcv_cache_holds_only_the_latest_candle(
    symbol: str, latest_only: bool
) -> None:
    """bingx spot: ccxt looks its candle cache up by the raw interval (`1min`) but stores
    it under the unified one (`1m`), so every message starts a new cache. Each
    `watch_ohlcv` returns the one candle of the message that resolved it; updates
    handled while no watch is pending are lost to the caller. Swap intervals are
    spelt the same both ways (`1m`), so its cache keeps every candle."""
    async with rig_for(Venue("bingx", (symbol,))) as rig:
        stamps: set[int] = set()

        async def watch() -> None:
            rows = await rig.exchange.watch_ohlcv(symbol, "1m")
            stamps.update(row[0] for row in rows)

        await collect_until(watch, lambda _: len(stamps) >= 3)
        cached = len(rig.exchange.ohlcvs[symbol]["1m"])
        assert cached == 1 if latest_only else cached >= 3


async def test_kucoinfutures_trade_timestamp_can_be_a_millisecond_early() -> None:
    """kucoinfutures sends trade times in nanoseconds; ccxt's `safe_integer` goes through
    a float (`int(float(ns))`) and `parse_to_int` truncates, so 1_700_000_000_002 ms
    comes out as 1_700_000_000_001. The exact time is still in `info['ts']`."""
    trade_ms = 1_700_000_000_002
    async with (
        SimServer(KUCOIN, [KUCOIN_SYMBOL], rate=0, clock=lambda: trade_ms) as sim,
        ccxt_client(sim, KUCOIN) as exchange,
    ):
        pending = asyncio.ensure_future(exchange.watch_trades(KUCOIN_SYMBOL))
        await sim.wait_for(lambda: sim.subscribed("/contractMarket/execution") or pending.done())
        sim.step(KUCOIN_SYMBOL)
        [trade] = await within(pending)
        assert sim.market.trades(KUCOIN_SYMBOL)[-1].ts_ms == trade_ms
        assert trade["info"]["ts"] == trade_ms * 1_000_000
        assert trade["timestamp"] == trade_ms - 1


async def test_kucoinfutures_watch_after_set_markets_needs_open() -> None:
    """kucoinfutures fetches its websocket token through `spawn`, which needs the event
    loop that `open()` (or any REST call, e.g. `load_markets`) binds: after
    `set_markets` alone the first watch raises AttributeError. `open()` is a plain
    method: call it inside the running loop, do not await it."""
    async with SimServer(KUCOIN, [KUCOIN_SYMBOL], rate=50) as sim:
        async with ccxt_client(sim, KUCOIN) as loader:
            markets: list[Any] = list((await within(loader.load_markets())).values())
        async with ccxt_client(sim, KUCOIN) as exchange:
            exchange.set_markets(markets)
            with pytest.raises(AttributeError):
                await within(exchange.watch_trades(KUCOIN_SYMBOL))
            assert exchange.open() is None
            assert await within(exchange.watch_trades(KUCOIN_SYMBOL))
