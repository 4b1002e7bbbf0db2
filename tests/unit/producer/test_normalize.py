"""ccxt structures -> wire messages, including every malformed shape."""

from __future__ import annotations

import math
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from marketbus.producer import normalize
from marketbus.shared.errors import NormalizeError
from marketbus.shared.schema import Trade


def test_ohlcv_row_is_copied_and_coerced() -> None:
    row: list[Any] = [1_700_000_000_000.0, 1, "2.5", 0.5, 2, 10]
    copied = normalize.ohlcv_row(row)
    row[4] = 99  # ccxt mutates its cache rows later
    assert copied == (1_700_000_000_000, 1.0, 2.5, 0.5, 2.0, 10.0)


def test_ohlcv_row_keeps_absent_values_as_none_and_ignores_extra_columns() -> None:
    assert normalize.ohlcv_row([60_000, None, None, None, None, None, "x"]) == (
        60_000,
        None,
        None,
        None,
        None,
        None,
    )


@pytest.mark.parametrize(
    ("row", "match"),
    [
        ([1, 2, 3], "is not a list"),
        ("abcdef", "is not a list"),
        ([None, 1, 1, 1, 1, 1], "open time is missing"),
        ([-5, 1, 1, 1, 1, 1], "non-negative whole"),
        ([1.5, 1, 1, 1, 1, 1], "non-negative whole"),
        ([1, "x", 1, 1, 1, 1], "open 'x' is not a number"),
        ([1, 1, math.nan, 1, 1, 1], "not finite"),
        ([1, 1, 1, True, 1, 1], "bool"),
        ([1, 1, 1, 1, [1], 1], "expected a number"),
    ],
)
def test_malformed_ohlcv_rows_raise_a_clear_normalize_error(row: Any, match: str) -> None:
    with pytest.raises(NormalizeError, match=match):
        normalize.ohlcv_row(row)


def test_ohlcv_rows_names_the_bad_index() -> None:
    with pytest.raises(NormalizeError, match=r"feed\[1\]"):
        normalize.ohlcv_rows([[1, 1, 1, 1, 1, 1], [2]], "feed")
    with pytest.raises(NormalizeError, match="expected a list of rows"):
        normalize.ohlcv_rows({"a": 1}, "feed")


@given(
    st.lists(
        st.tuples(
            st.integers(0, 2**53),
            *[st.one_of(st.none(), st.floats(allow_nan=False, allow_infinity=False))] * 5,
        ),
        max_size=20,
    )
)
def test_well_formed_rows_survive_exactly(rows: list[tuple[Any, ...]]) -> None:
    assert normalize.ohlcv_rows([list(r) for r in rows]) == [tuple(r) for r in rows]


CCXT_TICKER = {
    "symbol": "BTC/USDT",
    "timestamp": 1_700_000_000_123,
    "bid": 1.0,
    "bidVolume": 2.0,
    "ask": 3.0,
    "askVolume": 4.0,
    "last": 5.0,
    "open": 6.0,
    "high": 7.0,
    "low": 8.0,
    "baseVolume": 9.0,
    "quoteVolume": 10.0,
    "percentage": 11.0,
    "markPrice": 12.0,
    "indexPrice": 13.0,
    "info": {},
}


def test_ticker_maps_every_unified_field() -> None:
    t = normalize.ticker("binance", "BTC/USDT", CCXT_TICKER, recv_ns=5)
    assert (t.exchange, t.symbol, t.ts_ms, t.recv_ns) == (
        "binance",
        "BTC/USDT",
        1_700_000_000_123,
        5,
    )
    assert (t.bid, t.bid_size, t.ask, t.ask_size, t.last) == (1.0, 2.0, 3.0, 4.0, 5.0)
    assert (t.open, t.high, t.low, t.base_volume, t.quote_volume) == (6.0, 7.0, 8.0, 9.0, 10.0)
    assert (t.change_pct, t.mark, t.index) == (11.0, 12.0, 13.0)
    assert (t.run, t.seq) == (0, 0)


def test_ticker_missing_fields_are_null() -> None:
    t = normalize.ticker("binance", "BTC/USDT", {"last": 1}, recv_ns=1)
    assert t.last == 1.0 and t.bid is None and t.ts_ms is None and t.mark is None


def test_malformed_ticker_names_exchange_symbol_and_field() -> None:
    with pytest.raises(NormalizeError, match="binance ticker BTC/USDT: expected a dict"):
        normalize.ticker("binance", "BTC/USDT", [1], recv_ns=1)
    with pytest.raises(NormalizeError, match="binance ticker BTC/USDT: bid 'x'"):
        normalize.ticker("binance", "BTC/USDT", {"bid": "x"}, recv_ns=1)


def _trade(**kw: Any) -> dict[str, Any]:
    return {"id": 1, "timestamp": 10, "price": 2.0, "amount": 3.0, "side": "buy"} | kw


def test_trades_keep_every_trade_in_one_batch_with_newest_time() -> None:
    batch = normalize.trades(
        "okx", "ETH/USDT", [_trade(), _trade(id="2", timestamp=20, side="sell")], recv_ns=7
    )
    assert batch.trades == (
        Trade(id="1", ts_ms=10, price=2.0, amount=3.0, side="buy"),
        Trade(id="2", ts_ms=20, price=2.0, amount=3.0, side="sell"),
    )
    assert batch.ts_ms == 20 and batch.recv_ns == 7


def test_trade_without_id_time_or_side_is_kept_with_nulls() -> None:
    batch = normalize.trades("x", "A/B", [_trade(id=None, timestamp=None, side=None)], recv_ns=1)
    assert batch.trades[0].id is None and batch.trades[0].side is None and batch.ts_ms is None


@pytest.mark.parametrize(
    ("data", "match"),
    [
        ([], "empty batch"),
        ({"id": 1}, "expected a list of trades"),
        ([_trade(side="long")], "side 'long'"),
        ([_trade(price=None)], r"\[0\]: price is missing"),
        ([_trade(), _trade(amount="?")], r"\[1\]: amount '\?'"),
        (["nope"], "expected a dict"),
    ],
)
def test_malformed_trades_raise(data: Any, match: str) -> None:
    with pytest.raises(NormalizeError, match=match):
        normalize.trades("x", "A/B", data, recv_ns=1)


def test_book_takes_top_n_and_copies() -> None:
    bids = [[10.0 - i, 1.0 + i] for i in range(30)]
    asks = [[11.0 + i, 2.0, "order-id"] for i in range(30)]
    live = {"bids": bids, "asks": asks, "timestamp": 99, "nonce": 1}
    book = normalize.book("binance", "BTC/USDT", live, depth=3, recv_ns=1)
    bids[0][0] = -1.0
    assert book.bids == ((10.0, 1.0), (9.0, 2.0), (8.0, 3.0))
    assert book.asks == ((11.0, 2.0), (12.0, 2.0), (13.0, 2.0))
    assert book.depth == 3 and book.ts_ms == 99


def test_short_book_keeps_what_exists() -> None:
    book = normalize.book("x", "A/B", {"bids": [[1, 1]], "asks": []}, depth=20, recv_ns=1)
    assert book.bids == ((1.0, 1.0),) and book.asks == () and book.ts_ms is None


@pytest.mark.parametrize(
    ("data", "match"),
    [
        ({"bids": None, "asks": []}, "bids: expected a list"),
        ({"bids": [[1]], "asks": []}, r"bids\[0\]: \[1\] is not \[price, amount\]"),
        ({"bids": [], "asks": [[1, None]]}, r"asks\[0\]: amount is missing"),
        ("book", "expected a dict"),
    ],
)
def test_malformed_books_raise(data: Any, match: str) -> None:
    with pytest.raises(NormalizeError, match=match):
        normalize.book("x", "A/B", data, depth=5, recv_ns=1)
