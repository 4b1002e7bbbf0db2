"""The msgspec fast paths of `normalize` take only what the field-by-field path takes,
and give exactly its result; everything else goes that path (same value or same error)."""

from __future__ import annotations

import math
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from marketbus.producer import normalize
from marketbus.shared.errors import NormalizeError

ODD_VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(),  # NaN and infinities included
    st.sampled_from(["1.5", "x", "", "nan", "-0", "1e400"]),
    st.just([1.0]),
    st.just({"a": 1}),
)
NUMBERS = st.one_of(st.floats(allow_nan=False, allow_infinity=False), st.integers(0, 2**53))
VALUES = st.one_of(NUMBERS, ODD_VALUES)


def outcome(call: Any, *args: Any) -> Any:
    """The result, or the NormalizeError's text."""
    try:
        return call(*args)
    except NormalizeError as exc:
        return ("error", str(exc))


def same(a: Any, b: Any) -> bool:
    """Equal, with NaN equal to NaN (a result never holds NaN; an error text may)."""
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return bool(a == b)


@given(st.lists(st.lists(VALUES, min_size=0, max_size=8), max_size=4))
def test_ohlcv_rows_match_the_row_by_row_path(rows: list[list[Any]]) -> None:
    def by_row(rows: list[list[Any]]) -> list[normalize.Row]:
        where = "feed"
        return [
            normalize.ohlcv_row(r, where if len(rows) == 1 else f"{where}[{i}]")
            for i, r in enumerate(rows)
        ]

    assert same(outcome(normalize.ohlcv_rows, rows, "feed"), outcome(by_row, rows))


TICKER_KEYS = [
    "timestamp",
    "bid",
    "bidVolume",
    "ask",
    "askVolume",
    "last",
    "open",
    "high",
    "low",
    "baseVolume",
    "quoteVolume",
    "percentage",
    "markPrice",
    "indexPrice",
    "info",
    "datetime",
    "vwap",
]


@given(st.dictionaries(st.sampled_from(TICKER_KEYS), VALUES, max_size=len(TICKER_KEYS)))
def test_ticker_matches_the_field_by_field_path(data: dict[str, Any]) -> None:
    fast = outcome(normalize.ticker, "binance", "BTC/USDT", data, 1)
    checked = outcome(normalize.checked_ticker, "binance", "BTC/USDT", data, 1)
    assert same(fast, checked)


TRADE = st.fixed_dictionaries(
    {},
    optional={
        "id": st.one_of(st.none(), st.text(max_size=3), st.integers(0, 10)),
        "timestamp": VALUES,
        "price": VALUES,
        "amount": VALUES,
        "side": st.sampled_from([None, "buy", "sell", "long", 1]),
        "info": st.just({"t": 1}),
    },
)


@given(st.lists(TRADE, max_size=4))
def test_trades_match_the_trade_by_trade_path(data: list[dict[str, Any]]) -> None:
    def by_trade(data: list[dict[str, Any]]) -> Any:
        where = "x trades A/B"
        if not data:
            raise NormalizeError(f"{where}: empty batch")
        items = tuple(normalize.trade(t, f"{where}[{i}]") for i, t in enumerate(data))
        return normalize.trades_message("x", "A/B", items, 1)

    assert same(outcome(normalize.trades, "x", "A/B", data, 1), outcome(by_trade, data))


LEVEL = st.one_of(
    st.lists(NUMBERS, min_size=2, max_size=2),
    st.lists(VALUES, min_size=0, max_size=3),
    st.tuples(NUMBERS, NUMBERS),
)


@given(
    st.lists(LEVEL, max_size=6),
    st.lists(LEVEL, max_size=6),
    st.one_of(st.none(), st.integers(0, 2**53), VALUES),
    st.integers(1, 5),
)
def test_book_matches_the_level_by_level_path(
    bids: list[Any], asks: list[Any], timestamp: Any, depth: int
) -> None:
    data = {"bids": bids, "asks": asks, "timestamp": timestamp}

    def by_level(data: dict[str, Any]) -> Any:
        return normalize.checked_book("x", "A/B", data, depth, 1)

    assert same(outcome(normalize.book, "x", "A/B", data, depth, 1), outcome(by_level, data))


def test_the_fast_paths_copy_what_ccxt_will_mutate() -> None:
    rows = [[60_000, 1.0, 2.0, 0.5, 1.5, 10.0]]
    copied = normalize.ohlcv_rows(rows)
    rows[0][4] = 99.0
    assert copied == [(60_000, 1.0, 2.0, 0.5, 1.5, 10.0)]
    bids = [[10.0, 1.0], [9.0, 2.0]]
    book = normalize.book("x", "A/B", {"bids": bids, "asks": []}, depth=5, recv_ns=1)
    bids[0][1] = 7.0
    assert book.bids == ((10.0, 1.0), (9.0, 2.0))
