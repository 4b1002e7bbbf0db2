"""normalize with a market's `Conversion`: every size leaves in base units, on the fast
path and on the field-by-field path alike, and REST answers convert like live data."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from marketbus.producer import normalize
from marketbus.producer.feeds import FetchedTrades, FetchTrades, handler_for
from marketbus.producer.units import Conversion
from marketbus.shared.errors import NormalizeError
from marketbus.shared.names import Feed
from marketbus.shared.schema import OHLCV, Book, Ticker, Trade, Trades

OKX = Conversion("okx BTC/USDT:USDT", Decimal("0.01"), inverse=False)
INVERSE = Conversion("okx BTC/USD:BTC", Decimal(100), inverse=True)
SYMBOL = "BTC/USDT:USDT"


def ccxt_trade(amount: Any, price: Any = 50_000.0, trade_id: Any = "1") -> dict[str, Any]:
    return {"id": trade_id, "timestamp": 1, "price": price, "amount": amount, "side": "buy"}


def amounts(batch: Trades) -> list[float]:
    return [t.amount for t in batch.trades]


def test_trades_amounts_convert_on_both_paths() -> None:
    fast = normalize.trades("okx", SYMBOL, [ccxt_trade(0.9), ccxt_trade(12.34)], 0, OKX)
    checked = normalize.trades("okx", SYMBOL, [ccxt_trade("0.9"), ccxt_trade(12.34, 1)], 0, OKX)
    assert amounts(fast) == amounts(checked) == [0.009, 0.1234]


def test_without_a_conversion_nothing_changes() -> None:
    batch = normalize.trades("binance", "BTC/USDT", [ccxt_trade(0.9)], 0)
    assert amounts(batch) == [0.9]
    assert normalize.ohlcv_rows([[0, 1.0, 1.0, 1.0, 1.0, 0.9]]) == [(0, 1.0, 1.0, 1.0, 1.0, 0.9)]


def test_inverse_trades_convert_at_their_own_price() -> None:
    raw = [ccxt_trade(5.0, 50_000.0), ccxt_trade(5.0, 40_000.0, "2")]
    assert amounts(normalize.trades("okx", "BTC/USD:BTC", raw, 0, INVERSE)) == [0.01, 0.0125]


def test_book_levels_convert_on_both_paths_and_inverse_levels_at_their_price() -> None:
    data = {"timestamp": 1, "bids": [[100.0, 0.9], [99.0, 3.0]], "asks": [[101.0, 12.34]]}
    fast = normalize.book("okx", SYMBOL, data, 20, 0, OKX)
    coerced = dict(data, bids=[["100", 0.9], [99.0, 3.0]])
    checked = normalize.book("okx", SYMBOL, coerced, 20, 0, OKX)
    assert isinstance(fast, Book) and (fast.bids, fast.asks) == (checked.bids, checked.asks)
    assert fast.bids == ((100.0, 0.009), (99.0, 0.03)) and fast.asks == ((101.0, 0.1234),)
    inverse = normalize.book(
        "okx", "BTC/USD:BTC", {"bids": [[50_000.0, 5.0]], "asks": []}, 5, 0, INVERSE
    )
    assert inverse.bids == ((50_000.0, 0.01),)


def test_ticker_sizes_and_base_volume_convert_and_quote_volume_stays() -> None:
    data = {
        "bid": 100.0,
        "bidVolume": 0.9,
        "ask": 101.0,
        "askVolume": 3.0,
        "last": 100.5,
        "baseVolume": 12.34,
        "quoteVolume": 1234.5,
    }
    fast = normalize.ticker("okx", SYMBOL, data, 0, OKX)
    checked = normalize.ticker("okx", SYMBOL, dict(data, bid="100"), 0, OKX)
    for t in (fast, checked):
        assert isinstance(t, Ticker)
        assert (t.bid_size, t.ask_size, t.base_volume) == (0.009, 0.03, 0.1234)
        assert t.quote_volume == 1234.5
    absent = normalize.ticker("okx", SYMBOL, {"bid": 1.0}, 0, OKX)
    assert (absent.bid_size, absent.base_volume) == (None, None)


def test_inverse_ticker_converts_at_bid_ask_and_last_and_needs_the_price() -> None:
    data = {"bid": 50_000.0, "bidVolume": 5.0, "ask": 40_000.0, "askVolume": 5.0}
    t = normalize.ticker(
        "okx", "BTC/USD:BTC", dict(data, last=25_000.0, baseVolume=5.0), 0, INVERSE
    )
    assert (t.bid_size, t.ask_size, t.base_volume) == (0.01, 0.0125, 0.02)
    with pytest.raises(NormalizeError, match=r"baseVolume 5\.0 of an inverse contract"):
        normalize.ticker("okx", "BTC/USD:BTC", dict(data, baseVolume=5.0), 0, INVERSE)


def test_candle_volume_converts_on_both_paths_and_inverse_at_the_close() -> None:
    fast = normalize.ohlcv_rows([[0, 1.0, 1.0, 1.0, 1.0, 0.9]], "k", OKX)
    checked = normalize.ohlcv_rows([[0, "1", 1.0, 1.0, 1.0, 0.9]], "k", OKX)
    assert fast == checked == [(0, 1.0, 1.0, 1.0, 1.0, 0.009)]
    row = [0, 1.0, 1.0, 1.0, 50_000.0, 5.0]
    assert normalize.ohlcv_rows([row], "k", INVERSE)[0][5] == 0.01
    assert normalize.ohlcv_rows([[0, None, None, None, None, None]], "k", INVERSE)[0][5] is None
    with pytest.raises(NormalizeError, match="candle volume"):
        normalize.ohlcv_rows([[0, None, None, None, None, 5.0]], "k", INVERSE)


@given(
    contracts=st.lists(st.integers(min_value=1, max_value=10**7), min_size=1, max_size=20),
    size=st.sampled_from(["0.01", "0.001", "0.1", "100"]),
)
def test_trades_carry_the_exact_decimal_product_whatever_the_batch(
    contracts: list[int], size: str
) -> None:
    units = Conversion("x", Decimal(size), inverse=False)
    figures = [float(Decimal(c).scaleb(-2)) for c in contracts]  # venue figures, 2 decimals
    batch = normalize.trades(
        "x", SYMBOL, [ccxt_trade(f, trade_id=str(i)) for i, f in enumerate(figures)], 0, units
    )
    assert amounts(batch) == [float(Decimal(c).scaleb(-2) * Decimal(size)) for c in contracts]


def test_handlers_convert_rest_answers_like_live_data() -> None:
    trades = handler_for(
        Feed("md", "okx", "trades", SYMBOL),
        close_grace_ms=0,
        book_depth=20,
        book_interval_ms=0,
        units=OKX,
    )
    assert amounts_of(trades.on_data([ccxt_trade(0.9, trade_id="1")], 0, 1)) == [0.009]
    trades.on_down()
    assert trades.on_data([ccxt_trade(3.0, trade_id="3")], 0, 1) == []
    (request,) = trades.take_requests()
    assert isinstance(request, FetchTrades)
    fetched = FetchedTrades((Trade(id="2", ts_ms=1, price=1.0, amount=12.34, side="buy"),))
    assert amounts_of(trades.on_trades(request, fetched, 2)) == [0.1234, 0.03]

    candles = handler_for(
        Feed("md", "kucoinfutures", "ohlcv.1m", SYMBOL),
        close_grace_ms=0,
        book_depth=20,
        book_interval_ms=0,
        units=Conversion("kucoinfutures BTC/USDT:USDT", Decimal("0.001"), inverse=False),
    )
    candles.on_start(None, now_ms=120_000)
    (backfill,) = candles.take_requests()
    out = candles.on_rest(backfill, [(0, 1.0, 1.0, 1.0, 1.0, 9.0)], recv_ns=1)
    assert [m.volume for m in out if isinstance(m, OHLCV)] == [0.009]


def amounts_of(messages: Any) -> list[float]:
    return [t.amount for m in messages if isinstance(m, Trades) for t in m.trades]
