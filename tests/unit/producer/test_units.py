"""The unit rule (pure): contract figures -> base units, what ccxt gives per exchange and
kind, and what a market must tell before its sizes can be trusted."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from marketbus.producer.units import (
    CCXT_FIGURES,
    SIZE_KINDS,
    SPOT,
    ContractTerms,
    Conversion,
    ccxt_figure,
    contract_terms,
    conversion,
)
from marketbus.shared.errors import ConfigError, NormalizeError

LINEAR = {"symbol": "BTC/USDT:USDT", "contract": True, "linear": True, "inverse": False}
INVERSE = {"symbol": "BTC/USD:BTC", "contract": True, "linear": False, "inverse": True}


def market(base: dict[str, Any], **fields: Any) -> dict[str, Any]:
    return base | fields


def test_spot_markets_have_no_contract_and_nothing_converts() -> None:
    spot = {"symbol": "BTC/USDT", "spot": True, "contract": False, "contractSize": None}
    assert contract_terms("binance", spot) == SPOT == ContractTerms(None)
    for kind in ("trades", "book", "ticker", "ohlcv.1m"):
        assert conversion("binance", kind, "BTC/USDT", SPOT) is None


def test_linear_and_inverse_terms_come_from_the_market() -> None:
    linear = contract_terms("okx", market(LINEAR, contractSize=0.01))
    assert linear == ContractTerms(0.01, inverse=False)
    inverse = contract_terms("okx", market(INVERSE, contractSize=100))
    assert inverse == ContractTerms(100.0, inverse=True)


@pytest.mark.parametrize("size", [None, 0, -1, "abc", True, float("nan"), float("inf"), [1]])
def test_a_contract_market_without_a_usable_contract_size_is_refused_by_name(size: Any) -> None:
    with pytest.raises(ConfigError, match=r"okx 'BTC/USDT:USDT'.*contractSize"):
        contract_terms("okx", market(LINEAR, contractSize=size))


def test_a_contract_market_that_is_neither_or_both_linear_and_inverse_is_refused() -> None:
    for linear, inverse in [(False, False), (True, True), (None, None)]:
        bad = market(LINEAR, contractSize=1, linear=linear, inverse=inverse)
        with pytest.raises(ConfigError, match="cannot tell"):
            contract_terms("okx", bad)


def test_the_table_says_okx_candles_are_base_and_kucoin_candles_contracts() -> None:
    assert ccxt_figure("okx", "ohlcv.1m") == "base"
    assert ccxt_figure("kucoinfutures", "ohlcv.1h") == "contracts"
    for kind in ("trades", "book", "ticker"):
        assert ccxt_figure("okx", kind) == ccxt_figure("kucoinfutures", kind) == "contracts"
        assert ccxt_figure("somewhere", kind) == "contracts"  # ccxt's unified rule
    assert ccxt_figure("somewhere", "ohlcv.1m") is None  # nobody checked
    assert {kind for _, kind in CCXT_FIGURES} <= set(SIZE_KINDS)


def test_conversions_per_kind_follow_the_table() -> None:
    okx = ContractTerms(0.01)
    assert conversion("okx", "ohlcv.1m", "BTC/USDT:USDT", okx) is None  # volCcy: base
    trades = conversion("okx", "trades", "BTC/USDT:USDT", okx)
    assert trades == Conversion("okx BTC/USDT:USDT", Decimal("0.01"), inverse=False)
    kucoin = conversion("kucoinfutures", "ohlcv.1m", "BTC/USDT:USDT", ContractTerms(0.001))
    assert kucoin is not None and kucoin.size == Decimal("0.001")


def test_a_linear_contract_of_one_base_unit_needs_no_conversion_anywhere() -> None:
    one = ContractTerms(1.0)
    assert conversion("binanceusdm", "ohlcv.1m", "BTC/USDT:USDT", one) is None
    assert conversion("somewhere", "ohlcv.1m", "BTC/USDT:USDT", one) is None
    inverse_one = ContractTerms(1.0, inverse=True)
    assert conversion("okx", "trades", "BTC/USD:BTC", inverse_one) is not None


def test_unchecked_candle_volume_of_a_real_contract_is_refused_at_start() -> None:
    with pytest.raises(ConfigError, match=r"somewhere ohlcv\.1m BTC/USDT:USDT.*CCXT_FIGURES"):
        conversion("somewhere", "ohlcv.1m", "BTC/USDT:USDT", ContractTerms(0.1))


def test_linear_contracts_convert_exactly_where_a_float_product_is_off() -> None:
    units = Conversion("okx BTC/USDT:USDT", Decimal("0.01"), inverse=False)
    assert 0.9 * 0.01 == 0.009000000000000001  # why the product is decimal
    assert units.base(0.9, None) == 0.009
    assert units.base(12.34, 50_000.0) == 0.1234  # a linear one ignores the price


def test_inverse_contracts_convert_at_the_price() -> None:
    units = Conversion("okx BTC/USD:BTC", Decimal(100), inverse=True)
    assert units.base(5.0, 50_000.0) == 0.01  # 5 x 100 USD at 50,000 USD per BTC
    assert units.base(3.0, 60_000.0) == float(Decimal(300) / Decimal(60_000))
    for price in (None, 0.0, -1.0):
        with pytest.raises(NormalizeError, match=r"okx BTC/USD:BTC: amount 5\.0.*price"):
            units.base(5.0, price, "amount")


SIZES = st.sampled_from(["0.001", "0.01", "0.1", "1", "10", "100", "1000", "0.0001"])


@given(
    size=SIZES,
    count=st.integers(min_value=1, max_value=10**9),
    decimals=st.integers(min_value=0, max_value=4),
)
def test_a_venues_exact_contract_figure_gives_back_the_exact_base_amount(
    size: str, count: int, decimals: int
) -> None:
    """Whatever the venue prints (a decimal number of contracts, parsed to a float by
    ccxt), the base amount on the bus is the float of the exact decimal product."""
    contracts = Decimal(count).scaleb(-decimals)
    exact_base = float(contracts * Decimal(size))
    units = Conversion("x", Decimal(size), inverse=False)
    assert units.base(float(contracts), None) == exact_base
    assert units.maybe(None, None, "size") is None
