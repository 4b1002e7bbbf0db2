"""What the simulator trades: one `Instrument` per ccxt unified symbol.

Prices and amounts live as integers (ticks and lots) inside the simulator, so sums
never drift; `Instrument` converts them to floats and to the decimal strings that
exchanges send. A float made by `ticks / 10**decimals` is the float nearest that
decimal, and so is the float that parsing the decimal string gives: values survive a
trip through JSON strings exactly.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from decimal import Decimal
from typing import Literal

from marketbus.sim.contracts import (
    UNIT,
    ContractSpec,
    amount_step_lots,
    contract_spec,
    inverse_spec,
)

InstrumentKind = Literal["spot", "swap"]

_KNOWN_PRICES: dict[str, tuple[int, int, int]] = {
    # base: (initial price in ticks, price decimals, amount decimals)
    "BTC": (6_000_000, 2, 4),
    "ETH": (300_000, 2, 4),
    "SOL": (15_000, 2, 3),
    "BNB": (60_000, 2, 3),
    "XRP": (5_000, 4, 1),
    "DOGE": (10_000, 5, 0),
}


def _pow10(exponent: int) -> int:
    return int(10**exponent)


@dataclass(frozen=True, slots=True)
class Instrument:
    """A tradable market: a spot pair, a linear or an inverse perpetual swap.

    Amounts are base units here; a venue prints swap amounts in its own contracts
    (`contract`). `amount_step_lots`: every amount of the truth is a multiple of this
    many lots, so every venue's contract figure is exact (see `sim.contracts`). On an
    inverse swap (settle == base) the lots are whole CONTRACTS and `base_amount` values
    them at a price.
    """

    symbol: str
    base: str
    quote: str
    settle: str | None
    price_decimals: int
    amount_decimals: int
    initial_price_ticks: int
    amount_step_lots: int = 1
    unit_contracts: bool = False

    def contract(self, exchange_id: str) -> ContractSpec:
        """How `exchange_id` sizes this market's contracts (UNIT for spot)."""
        if self.kind == "spot" or self.unit_contracts:
            return UNIT
        if self.inverse:
            return inverse_spec(self.base)
        return contract_spec(exchange_id, self.base)

    @property
    def inverse(self) -> bool:
        """An inverse swap: settled in the base currency, contracts count quote units."""
        return self.settle is not None and self.settle != self.quote

    def base_amount(self, lots: int, ticks: int) -> float:
        """`lots` traded at `ticks` in base units: `amount(lots)`, or on an inverse swap
        whole contracts valued at that price (`ContractSpec.inverse_base`)."""
        if not self.inverse:
            return self.amount(lots)
        price = Decimal(ticks).scaleb(-self.price_decimals)
        return inverse_spec(self.base).inverse_base(lots, price)

    @property
    def kind(self) -> InstrumentKind:
        return "spot" if self.settle is None else "swap"

    @property
    def tick_size(self) -> float:
        return 1 / _pow10(self.price_decimals)

    @property
    def lot_size(self) -> float:
        return 1 / _pow10(self.amount_decimals)

    def price(self, ticks: int) -> float:
        return ticks / _pow10(self.price_decimals)

    def amount(self, lots: int) -> float:
        return lots / _pow10(self.amount_decimals)

    def notional(self, ticks_times_lots: int) -> float:
        return ticks_times_lots / _pow10(self.price_decimals + self.amount_decimals)

    def price_str(self, price: float) -> str:
        return f"{price:.{self.price_decimals}f}"

    def amount_str(self, amount: float) -> str:
        return f"{amount:.{self.amount_decimals}f}"

    def notional_str(self, value: float) -> str:
        return f"{value:.{self.price_decimals + self.amount_decimals}f}"


def parse_instrument(symbol: str, *, unit_contracts: bool = False) -> Instrument:
    """Build the instrument for a ccxt unified symbol: `BASE/QUOTE` or `BASE/QUOTE:SETTLE`.

    Well-known bases get realistic prices; any other base gets a price derived from
    its name, so every symbol is deterministic without configuration. Swap amounts are
    stepped to whole contracts of every venue unless `unit_contracts`. An inverse swap
    (`BTC/USD:BTC`) counts its amounts in whole contracts (`amount_decimals` 0).
    """
    pair, _, settle = symbol.partition(":")
    base, slash, quote = pair.partition("/")
    if not slash or not base or not quote or "/" in quote:
        raise ValueError(f"not a ccxt unified symbol: {symbol!r}")
    if settle and settle not in (quote, base):
        raise ValueError(f"a swap settles in its quote or its base currency: {symbol!r}")
    inverse = bool(settle) and settle != quote
    if inverse and unit_contracts:
        raise ValueError(f"an inverse swap has no one-base-unit contracts: {symbol!r}")
    known = _KNOWN_PRICES.get(base)
    if known is not None:
        ticks, price_decimals, amount_decimals = known
    else:
        whole = 1 + zlib.crc32(base.encode()) % 999
        price_decimals = 2 if whole >= 10 else 4
        ticks = whole * 10**price_decimals
        amount_decimals = 2
    if inverse:
        amount_decimals = 0  # lots are whole contracts
    return Instrument(
        symbol=symbol,
        base=base,
        quote=quote,
        settle=settle or None,
        price_decimals=price_decimals,
        amount_decimals=amount_decimals,
        initial_price_ticks=ticks,
        amount_step_lots=(
            1
            if not settle or unit_contracts or inverse
            else amount_step_lots(base, amount_decimals)
        ),
        unit_contracts=unit_contracts,
    )
