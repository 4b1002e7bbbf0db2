"""Feed names: one name per feed, symbol last, parsed with split(':', 3)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from marketbus.shared.errors import FeedNameError
from marketbus.shared.names import (
    Feed,
    catalog_key,
    check_kind,
    feed_name,
    is_status_name,
    status_name,
    timeframe_ms,
    timeframe_of,
)

part = st.text(
    alphabet=st.characters(blacklist_characters=":", blacklist_categories=("Z", "C")),
    min_size=1,
    max_size=12,
)
symbol = st.text(alphabet=st.characters(blacklist_categories=("Z", "C")), min_size=1, max_size=20)
kind = st.sampled_from(["ticker", "trades", "book", "ohlcv.1m", "ohlcv.1h", "ohlcv.15m"])


def test_spec_examples() -> None:
    assert feed_name("md", "binance", "ohlcv.1m", "BTC/USDT") == "md:binance:ohlcv.1m:BTC/USDT"
    feed = Feed.parse("md:kucoinfutures:ticker:BTC/USDT:USDT")
    assert feed == Feed("md", "kucoinfutures", "ticker", "BTC/USDT:USDT")
    assert feed.timeframe is None
    assert Feed.parse("md:binance:ohlcv.1m:BTC/USDT").timeframe == "1m"


@given(ns=part, exchange=part, kind=kind, symbol=symbol)
def test_names_round_trip_even_with_colons_in_symbol(
    ns: str, exchange: str, kind: str, symbol: str
) -> None:
    feed = Feed(ns, exchange, kind, symbol)
    assert Feed.parse(feed.name) == feed


@pytest.mark.parametrize(
    "name",
    ["md:binance:ticker", "md::ticker:BTC/USDT", "md:binance:candles:BTC/USDT", "md:x:ohlcv.:A"],
)
def test_malformed_names_are_rejected(name: str) -> None:
    with pytest.raises(FeedNameError):
        Feed.parse(name)


@pytest.mark.parametrize("bad", ["ohlcv", "ohlcv.0m", "ohlcv.1x", "tick", ""])
def test_bad_kinds_name_the_choice(bad: str) -> None:
    with pytest.raises(FeedNameError, match=r"ohlcv\.<timeframe>"):
        check_kind(bad)


def test_status_and_catalog_keys() -> None:
    assert status_name("md", "binance") == "md:binance:status"
    assert is_status_name("md:binance:status")
    assert not is_status_name("md:binance:ticker:BTC/USDT")
    assert catalog_key("md") == "md:feeds"
    with pytest.raises(FeedNameError):
        status_name("m:d", "binance")


def test_timeframes() -> None:
    assert timeframe_ms("1m") == 60_000
    assert timeframe_ms("4h") == 4 * 3_600_000
    assert timeframe_ms("1s") == 1_000
    assert timeframe_of("ohlcv.5m") == "5m"
    assert timeframe_of("book") is None
    with pytest.raises(FeedNameError):
        timeframe_ms("m1")
