"""Contracts -> base units: the one rule that puts every size on the bus in base units.

On derivative markets ccxt hands over sizes as the venue printed them, in CONTRACTS
(unified trade ``amount``, order book sizes, ticker ``bidVolume``/``askVolume``/
``baseVolume``), and candle volume in whatever column its ``parse_ohlcv`` picked. The
wire contract says every size is in base units (docs/wire-contract.md, "Units"), so the
producer converts with the market's ``contractSize``:

- linear (``BTC/USDT:USDT``, ``contractSize`` base units per contract):
  ``base = contracts * contractSize``, in decimal arithmetic, so a venue's exact decimal
  figure gives back the exact base amount (a float product can be one ulp off);
- inverse (``BTC/USD:BTC``, ``contractSize`` quote units per contract, e.g. 100 USD):
  ``base = contracts * contractSize / price`` at the trade's or level's own price, the
  bid/ask for the ticker's sizes, ``last`` for its 24 h base volume, and the candle's
  close for a candle volume given in contracts (where ccxt gives the exchange's base
  turnover instead, `CCXT_FIGURES` says "base" and nothing is converted);
- spot: untouched.

ccxt is not an oracle: a contract market without a positive ``contractSize`` is refused
with a `ConfigError` naming it (at start-up), never taken as 1. Which ccxt figures are
already base lives in `CCXT_FIGURES` and nowhere else. Pure: no ccxt import, no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from types import MappingProxyType
from typing import Any, Literal, TypeAlias

from marketbus.shared.errors import ConfigError, NormalizeError

Figure: TypeAlias = Literal["contracts", "base"]
"""What one ccxt figure counts on a contract market: contracts, or already base units."""

SIZE_KINDS = ("trades", "book", "ticker", "ohlcv")
"""The kinds whose figures carry sizes (``ohlcv`` stands for every ``ohlcv.{tf}``)."""

DEFAULT_FIGURES: Mapping[str, Figure] = MappingProxyType(
    {"trades": "contracts", "book": "contracts", "ticker": "contracts"}
)
"""Exchanges not in `CCXT_FIGURES`: ccxt's unified rule (its Manual: amounts of
derivative markets are contracts). Candle volume has no default: each exchange's
``parse_ohlcv`` picks its own column, so an unlisted one is refused where it matters."""

CCXT_FIGURES: Mapping[tuple[str, str], Figure] = MappingProxyType(
    {
        # okx (ccxt 4.5.90 okx.py): parse_trade ``amount`` = ``sz``, book sizes,
        # parse_ticker ``bidVolume``/``askVolume`` = bidSz/askSz and ``baseVolume`` =
        # vol24h are contracts on swaps (quoteVolume is null there); parse_ohlcv reads
        # index 6 (volCcy, BASE units on every derivative, linear or inverse) unless spot.
        ("okx", "trades"): "contracts",
        ("okx", "book"): "contracts",
        ("okx", "ticker"): "contracts",
        ("okx", "ohlcv"): "base",
        # kucoinfutures (ccxt 4.5.90 kucoin.py, shared by kucoinfutures): trade ``size``,
        # level2 sizes, bestBidSize/bestAskSize and volumeOf24h are contracts;
        # parse_ohlcv takes index 5 of a millisecond row (REST) and the WS candle's
        # volume alike: CONTRACTS.
        ("kucoinfutures", "trades"): "contracts",
        ("kucoinfutures", "book"): "contracts",
        ("kucoinfutures", "ticker"): "contracts",
        ("kucoinfutures", "ohlcv"): "contracts",
        # binance USD-M (contractSize 1) needs no entry. binancecoinm is left out on
        # purpose: its REST parse_ohlcv reads index 7 (base) for inverse markets while
        # pro's handle_ohlcv reads the kline's ``v`` (contracts), so one kind has two
        # units there and its inverse candle feeds are refused until that is resolved.
    }
)


def ccxt_figure(exchange_id: str, kind: str) -> Figure | None:
    """What ccxt hands over for *kind* (``ohlcv.1m`` counts as ``ohlcv``) on
    *exchange_id*'s contract markets; None when nobody has checked."""
    family = "ohlcv" if kind.startswith("ohlcv") else kind
    figure = CCXT_FIGURES.get((exchange_id, family))
    return figure if figure is not None else DEFAULT_FIGURES.get(family)


@dataclass(frozen=True, slots=True)
class ContractTerms:
    """A market's contract as the catalog shows it (`FeedInfo`): ``contract_size`` is
    None on spot; base per contract when linear, quote per contract when ``inverse``."""

    contract_size: float | None
    inverse: bool = False


SPOT = ContractTerms(None)


def _decimal(value: Any) -> Decimal | None:
    """A positive finite number as the Decimal of its shortest repr, else None."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return None
    try:
        number = Decimal(str(value))
    except InvalidOperation:
        return None
    return number if number.is_finite() and number > 0 else None


def contract_terms(exchange_id: str, market: Mapping[str, Any]) -> ContractTerms:
    """*market* (a ccxt market dict) as `ContractTerms`; ConfigError naming the market
    when it is a contract market without a usable ``contractSize`` or side."""
    if not market.get("contract"):
        return SPOT
    name = f"{exchange_id} {market.get('symbol')!r}"
    size = _decimal(market.get("contractSize"))
    if size is None:
        raise ConfigError(
            f"{name}: contract market with contractSize {market.get('contractSize')!r}: "
            "its sizes cannot be converted to base units (check the exchange's market list)"
        )
    linear, inverse = market.get("linear"), market.get("inverse")
    if bool(linear) == bool(inverse):
        raise ConfigError(
            f"{name}: contract market with linear={linear!r} inverse={inverse!r}: "
            "cannot tell how its contracts convert to base units"
        )
    return ContractTerms(float(size), inverse=bool(inverse))


@dataclass(frozen=True, slots=True)
class Conversion:
    """How one feed's contract figures become base units (exact decimal arithmetic)."""

    where: str
    """The market, for errors: ``okx BTC/USD:BTC``."""
    size: Decimal
    inverse: bool

    def base(self, contracts: float, price: float | None, what: str = "size") -> float:
        """*contracts* in base units; *price* is needed (and used) only when inverse."""
        amount = Decimal(repr(contracts)) * self.size
        if self.inverse:
            if price is None or not price > 0:
                raise NormalizeError(
                    f"{self.where}: {what} {contracts!r} of an inverse contract needs a "
                    f"positive price to convert to base units, got {price!r}"
                )
            amount /= Decimal(repr(price))
        return float(amount)

    def maybe(self, contracts: float | None, price: float | None, what: str) -> float | None:
        """`base`, passing an absent figure through as None."""
        return None if contracts is None else self.base(contracts, price, what)


def conversion(exchange_id: str, kind: str, symbol: str, terms: ContractTerms) -> Conversion | None:
    """The conversion *kind*'s figures need on this market, None when they are base
    already (spot, ccxt gives base, or a linear contract of exactly one base unit).
    ConfigError when nobody knows what ccxt gives and it would matter."""
    size = terms.contract_size
    if size is None:
        return None
    exact = Decimal(repr(size))
    if not terms.inverse and exact == 1:
        return None
    figure = ccxt_figure(exchange_id, kind)
    if figure is None:
        raise ConfigError(
            f"{exchange_id} {kind} {symbol}: nobody has checked whether ccxt's {kind} "
            f"figures are contracts or base units on {exchange_id} (contract size {size}); "
            "add it to marketbus.producer.units.CCXT_FIGURES or drop the feed"
        )
    if figure == "base":
        return None
    return Conversion(f"{exchange_id} {symbol}", exact, terms.inverse)
