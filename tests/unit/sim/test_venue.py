"""What the venue modules share: the listing index, the kline window, query ints."""

from __future__ import annotations

import pytest

from marketbus.sim.market import SyntheticMarket
from marketbus.sim.protocols.binance import BinanceVenue
from marketbus.sim.protocols.kucoinfutures import KucoinFuturesVenue
from marketbus.sim.protocols.okx import OkxVenue
from marketbus.sim.venue import compact_json, optional_int

T0 = 1_700_000_000_000
SYMBOLS = ["BTC/USDT", "BTC/USDT:USDT", "ETH/USDT"]


def _market() -> SyntheticMarket:
    return SyntheticMarket(SYMBOLS, seed=1, start_ms=T0)


def test_shared_market_ids_are_told_apart_by_kind() -> None:
    venue = BinanceVenue(_market(), lambda: T0)
    spot = venue.instrument_by_id("BTCUSDT", "spot")
    swap = venue.instrument_by_id("BTCUSDT", "swap")
    assert spot is not None and spot.symbol == "BTC/USDT"
    assert swap is not None and swap.symbol == "BTC/USDT:USDT"
    assert list(venue.listed("spot")) == ["BTCUSDT", "ETHUSDT"]
    assert venue.instrument_for("BTC/USDT", "swap") is None
    assert venue.instrument_for("BTC/USDT:USDT", "swap") is swap


def test_distinct_market_ids_are_found_without_a_kind() -> None:
    venue = OkxVenue(_market(), lambda: T0)
    swap = venue.instrument_by_id("BTC-USDT-SWAP")
    assert swap is not None and swap.symbol == "BTC/USDT:USDT"
    assert venue.instrument_by_id("BTC-USDC") is None


def test_a_venue_lists_only_its_kinds() -> None:
    venue = KucoinFuturesVenue(_market(), lambda: T0)
    assert list(venue.listed("swap")) == ["XBTUSDTM"]
    assert venue.listed("spot") == {}
    assert venue.instrument_for("BTC/USDT") is None
    assert venue.instrument_by_id("XBTUSDTM") is venue.instrument_for("BTC/USDT:USDT")


def test_optional_int_and_compact_json() -> None:
    assert optional_int({"limit": "5"}, "limit") == 5
    assert optional_int({}, "limit") is None
    with pytest.raises(ValueError):
        optional_int({"limit": "five"}, "limit")
    assert compact_json({"a": [1, 2]}) == '{"a":[1,2]}'
