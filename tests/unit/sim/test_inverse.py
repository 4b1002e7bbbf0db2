"""okx's inverse BTC-USD-SWAP: frames in whole contracts of 100 USD, truth in BTC.

The truth's base amount of an inverse trade or level is defined as
`float(Decimal(contracts) * 100 / Decimal(price))`; converting the venue's figures back
the same way must give it exactly, and the candle and ticker base volumes (`volCcy`,
`volCcy24h`) must parse to the truth's float exactly.
"""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from marketbus.sim.contracts import inverse_spec
from marketbus.sim.instruments import parse_instrument
from marketbus.sim.market import SyntheticMarket
from marketbus.sim.protocols import okx

SYMBOL = "BTC/USD:BTC"
SIZE = Decimal(100)


def _base(contracts: str, price: str) -> float:
    return float(Decimal(contracts) * SIZE / Decimal(price))


@pytest.fixture(scope="module")
def market() -> SyntheticMarket:
    market = SyntheticMarket([SYMBOL], seed=3, start_ms=0, timeframes=("1m",))
    for i in range(1, 400):
        market.step(SYMBOL, i * 1000)
    return market


def test_the_instrument_is_an_inverse_swap_in_whole_contracts_of_100_usd() -> None:
    inst = parse_instrument(SYMBOL)
    assert inst.inverse and inst.kind == "swap" and inst.amount_decimals == 0
    spec = inst.contract("okx")
    assert (spec.size, spec.step, spec.inverse) == (SIZE, Decimal(1), True)
    assert not parse_instrument("BTC/USDT:USDT").inverse


def test_other_settlements_and_unit_contracts_are_refused() -> None:
    with pytest.raises(ValueError, match="quote or its base"):
        parse_instrument("BTC/USD:ETH")
    with pytest.raises(ValueError, match="inverse"):
        parse_instrument(SYMBOL, unit_contracts=True)


def test_the_market_list_is_okxs_inverse_instrument() -> None:
    info = okx.instrument_info(parse_instrument(SYMBOL))
    assert info["instId"] == "BTC-USD-SWAP"
    assert (info["ctType"], info["ctVal"], info["ctValCcy"]) == ("inverse", "100", "USD")
    assert (info["settleCcy"], info["uly"], info["lotSz"]) == ("BTC", "BTC-USD", "1")


def test_trades_print_whole_contracts_that_convert_back_to_the_truth(
    market: SyntheticMarket,
) -> None:
    inst = market.instrument(SYMBOL)
    trades = market.trades(SYMBOL)
    assert len(trades) > 300
    for trade in trades:
        data = okx.trade_data(inst, trade)
        assert data["sz"].isdigit() and int(data["sz"]) > 0
        assert _base(data["sz"], data["px"]) == trade.amount


def test_book_levels_print_whole_contracts_that_convert_back_to_the_truth(
    market: SyntheticMarket,
) -> None:
    inst = market.instrument(SYMBOL)
    book = market.book(SYMBOL)
    frame = okx.book_data(inst, book, None, -1)
    for levels, truth in ((frame["bids"], book.bids), (frame["asks"], book.asks)):
        assert len(levels) == len(truth) > 0
        for (px, sz, _, _), (price, amount) in zip(levels, truth, strict=True):
            assert sz.isdigit()
            assert (float(px), _base(sz, px)) == (price, amount)


def test_candles_print_contracts_and_btc_volume(market: SyntheticMarket) -> None:
    inst = market.instrument(SYMBOL)
    trades = {t.id: t for t in market.trades(SYMBOL)}
    closed = [c for c in market.candles(SYMBOL, "1m") if c.closed and c.trades]
    assert closed
    for candle in closed:
        row = okx.candle_row(inst, candle)
        assert candle.first_trade_id is not None and candle.last_trade_id is not None
        mine = [trades[i] for i in range(candle.first_trade_id, candle.last_trade_id + 1)]
        contracts = sum(int(okx.trade_data(inst, t)["sz"]) for t in mine)
        assert row[5] == str(contracts) == str(candle.contracts_volume)
        btc = sum((Decimal(repr(t.amount)) for t in mine), Decimal(0))
        assert float(row[6]) == candle.volume == float(btc)


def test_the_ticker_prints_contracts_and_btc_volume(market: SyntheticMarket) -> None:
    inst = market.instrument(SYMBOL)
    ticker = market.ticker(SYMBOL)
    data = okx.ticker_data(inst, ticker)
    assert data["vol24h"] == str(ticker.contracts_volume)
    assert float(data["volCcy24h"]) == ticker.base_volume
    assert _base(data["bidSz"], data["bidPx"]) == ticker.bid_size
    assert _base(data["askSz"], data["askPx"]) == ticker.ask_size
    assert _base(data["lastSz"], data["last"]) == ticker.last_size


@given(contracts=st.integers(0, 10**6), ticks=st.integers(1, 10**9))
def test_inverse_amounts_round_trip_through_the_venues_contracts(
    contracts: int, ticks: int
) -> None:
    spec = inverse_spec("BTC")
    price = Decimal(ticks).scaleb(-2)
    amount = spec.inverse_base(contracts, price)
    assert spec.contracts(repr(amount), str(price)) == str(contracts)


def test_an_amount_that_is_not_whole_contracts_is_refused() -> None:
    spec = inverse_spec("BTC")
    with pytest.raises(ValueError, match="whole number"):
        spec.contracts("0.001", "60000.00")
    with pytest.raises(ValueError, match="price"):
        spec.contracts("0.001")
