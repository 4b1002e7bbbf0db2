"""Feed names: one name per feed, symbol last, parsed with split(':', 3)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from marketbus.shared.errors import ContractError, EntryIdError, FeedNameError
from marketbus.shared.names import (
    Feed,
    catalog_key,
    check_kind,
    entry_id,
    exchange_of,
    feed_name,
    is_status_name,
    kind_and_symbol,
    newest_wins,
    ns_of,
    parse_entry_id,
    split_name,
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


@given(ns=part, exchange=part, kind=kind, symbol=symbol)
def test_unvalidated_splits_agree_with_parse(
    ns: str, exchange: str, kind: str, symbol: str
) -> None:
    feed = Feed(ns, exchange, kind, symbol)
    assert split_name(feed.name) == (ns, exchange, kind, symbol)
    assert kind_and_symbol(feed.name) == (kind, symbol)
    assert ns_of(feed.name) == ns_of(status_name(ns, exchange)) == ns
    assert exchange_of(feed.name) == exchange_of(status_name(ns, exchange)) == exchange


def test_unvalidated_splits_refuse_names_without_enough_parts() -> None:
    with pytest.raises(FeedNameError):
        split_name("md:binance:ticker")
    with pytest.raises(FeedNameError):
        exchange_of("md")


def test_only_ticker_and_book_are_newest_wins() -> None:
    assert [k for k in ("ticker", "trades", "book", "ohlcv.1m", "status") if newest_wins(k)] == [
        "ticker",
        "book",
    ]


@given(run=st.integers(0, 2**63), seq=st.integers(0, 2**63))
def test_entry_ids_round_trip(run: int, seq: int) -> None:
    assert parse_entry_id(entry_id(run, seq)) == (run, seq)
    assert parse_entry_id(entry_id(run, seq).encode()) == (run, seq)


@pytest.mark.parametrize("bad", ["5", "a-1", "5-", "-5", "1-2-3", b"\xff-1", "*", "²-1", "1-٣"])
def test_foreign_entry_ids_are_contract_errors(bad: str | bytes) -> None:
    with pytest.raises(EntryIdError):
        parse_entry_id(bad)
    assert issubclass(EntryIdError, ContractError)


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
