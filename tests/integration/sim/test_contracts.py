"""ccxt.pro against venues that print contracts: amounts arrive in contracts, and the
market's `contractSize` (from the venue's own market list) converts them to the truth."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from tests.integration.sim.conftest import VENUES, Venue, collect_until, rig_for, within

CONTRACT_SIZES = {"okx": Decimal("0.01"), "kucoinfutures": Decimal("0.001"), "binance": Decimal(1)}
"""Base units per contract of BTC/USDT:USDT, as the real venues list it."""

SWAPS = [v for v in VENUES if ":" in v.symbol and v.exchange in CONTRACT_SIZES]


def _base(contracts: float, size: Decimal) -> Decimal:
    return Decimal(str(contracts)) * size


@pytest.mark.parametrize("venue", SWAPS, ids=str)
async def test_swap_amounts_arrive_in_contracts_and_contract_size_converts_them(
    venue: Venue,
) -> None:
    async with rig_for(venue) as rig:
        exchange, symbol = rig.exchange, venue.symbol
        market = (await within(exchange.load_markets()))[symbol]
        size = CONTRACT_SIZES[venue.exchange]
        assert (market["contract"], market["linear"], market["inverse"]) == (True, True, False)
        assert Decimal(str(market["contractSize"])) == size
        trades: list[dict[str, Any]] = []

        async def watch() -> None:
            trades.extend(await exchange.watch_trades(symbol))

        await collect_until(watch, lambda _: len(trades) >= 20)
        truth = {t.id: t for t in rig.sim.market.trades(symbol)}
        decimals = rig.sim.market.instrument(symbol).amount_decimals
        for trade in trades:
            amount = Decimal(f"{truth[int(trade['id'])].amount:.{decimals}f}")
            assert _base(trade["amount"], size) == amount
            if size != 1:
                assert Decimal(str(trade["amount"])) != amount  # contracts, not base
        book = await within(exchange.watch_order_book(symbol))
        if size != 1:
            assert all(float(a).is_integer() for _, a in book["bids"]) == (
                venue.exchange == "kucoinfutures"
            )
