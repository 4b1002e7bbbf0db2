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
from typing import Literal

from marketbus.sim.contracts import UNIT, ContractSpec, amount_step_lots, contract_spec

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
    """A tradable market: a spot pair or a linear perpetual swap.

    Amounts are base units here; a venue prints swap amounts in its own contracts
    (`contract`). `amount_step_lots`: every amount of the truth is a multiple of this
    many lots, so every venue's contract figure is exact (see `sim.contracts`).
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
        return contract_spec(exchange_id, self.base)

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
    stepped to whole contracts of every venue unless `unit_contracts`.
    """
    pair, _, settle = symbol.partition(":")
    base, slash, quote = pair.partition("/")
    if not slash or not base or not quote or "/" in quote:
        raise ValueError(f"not a ccxt unified symbol: {symbol!r}")
    if settle and settle != quote:
        raise ValueError(f"only linear swaps (settle == quote) are simulated: {symbol!r}")
    known = _KNOWN_PRICES.get(base)
    if known is not None:
        ticks, price_decimals, amount_decimals = known
    else:
        whole = 1 + zlib.crc32(base.encode()) % 999
        price_decimals = 2 if whole >= 10 else 4
        ticks = whole * 10**price_decimals
        amount_decimals = 2
    return Instrument(
        symbol=symbol,
        base=base,
        quote=quote,
        settle=settle or None,
        price_decimals=price_decimals,
        amount_decimals=amount_decimals,
        initial_price_ticks=ticks,
        amount_step_lots=(
            1 if not settle or unit_contracts else amount_step_lots(base, amount_decimals)
        ),
        unit_contracts=unit_contracts,
    )
