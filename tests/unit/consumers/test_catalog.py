"""Which feeds a subscribe names, and the catalog filter (pure)."""

from __future__ import annotations

import pytest

from marketbus.consumers.catalog import requested, select
from marketbus.shared.errors import ConfigError, FeedNameError

TRADES = "md:binance:trades:BTC/USDT"
CANDLES = "md:binance:ohlcv.1m:BTC/USDT"
OKX = "md:okx:ticker:ETH/USDT:USDT"


def test_a_subscribe_names_feeds_by_name_and_by_parts() -> None:
    assert requested("md", [TRADES]) == [TRADES]
    assert requested("md", [TRADES], exchange="binance", symbol="BTC/USDT", timeframe="1m") == [
        TRADES,
        CANDLES,
    ]
    assert requested("md", [], exchange="binance", symbol="BTC/USDT", kind="trades") == [TRADES]


def test_a_subscribe_without_a_whole_feed_says_what_is_missing() -> None:
    with pytest.raises(ConfigError, match="exchange, symbol and kind"):
        requested("md", [], exchange="binance", kind="trades")
    with pytest.raises(ConfigError, match="no feed"):
        requested("md", [])
    with pytest.raises(FeedNameError):
        requested("md", [], exchange="binance", symbol="BTC/USDT", kind="candles")


def test_catalog_names_are_selected_by_exchange_kind_and_symbol() -> None:
    names = [TRADES, CANDLES, OKX]
    assert select(names) == names
    assert select(names, exchange="binance") == [TRADES, CANDLES]
    assert select(names, kind="ticker") == [OKX]
    assert select(names, symbol="ETH/USDT:USDT") == [OKX]  # a symbol with ':' stays whole
    assert select(names, exchange="okx", kind="trades") == []
