"""What one derivative contract is on each simulated venue, and its wire units.

Derivative venues print trade amounts, book sizes and (some) volumes in CONTRACTS, and
ccxt passes those numbers on unconverted: `market['contractSize']` is the only bridge
back to base units. The simulator's truth (`sim.market`) stays in base units; every
venue converts on the way out with its `ContractSpec`, exactly as the real venue sizes
its contracts (linear swaps: base units per contract):

| venue         | BTC          | ETH        | SOL     | XRP     | DOGE     | BNB      | trades   |
|---------------|--------------|------------|---------|---------|----------|----------|----------|
| okx (ctVal)   | 0.01         | 0.1        | 1       | 100     | 1000     | 0.01     | 0.01 ct  |
| kucoinfutures | 0.001        | 0.01       | 0.1     | 10      | 100      | 0.01     | whole    |
| binance USD-M | 1 (base)     | 1          | 1       | 1       | 1        | 1        | any lot  |
| bingx USDT-M  | 1 (base)     | 1          | 1       | 1       | 1        | 1        | any lot  |

Other bases: contract size 1 (whole contracts on kucoinfutures, 0.01 on okx).

KuCoin trades whole contracts only, so a base amount that is not a whole number of
its contracts cannot be printed. The truth is therefore generated in multiples of
`amount_step_lots` (the least common multiple of every venue's smallest tradable
amount, in the instrument's lots): every venue's contract figure is then an exact
decimal and converting back gives the truth exactly, when done in decimal arithmetic
(`Decimal(contracts) * Decimal(contractSize)`; a float product can be 1 ulp off).

Inverse swaps (`BTC/USD:BTC`, okx's BTC-USD-SWAP) count contracts in QUOTE units
(`INVERSE_SIZES`: 100 USD for BTC, 10 USD otherwise, okx's ctVal) and trade whole
contracts, so a contract's base value depends on the price. The truth of an inverse
market is generated in whole contracts (its instrument's lots ARE contracts) and its base
amount is DEFINED as `float(Decimal(contracts) * size / Decimal(price))`: the exact
decimal quotient (28 digits, the default context) as the nearest float, which is what
the producer's decimal conversion yields from the venue's figures. A venue prints the
contracts back from such an amount by rounding `amount * price / size` to the whole
number (`ContractSpec.contracts` with a price), which is exact because the float is
within one ulp of the quotient. Only okx prints inverse markets.

`unit_contracts=True` (on `SimServer`, `SyntheticMarket`) restores the simulator as it
was before contract sizes: every contract is one base unit on every venue and the truth
is not stepped. Tests of code that does not convert units yet pin it.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from fractions import Fraction
from math import lcm

_ONE = Decimal(1)
_OKX_STEP = Decimal("0.01")


_INVERSE_TOLERANCE = Decimal("0.000001")
"""How far `amount * price / size` of an inverse amount may be from its whole number of
contracts: a float quotient is off by ~1e-16 relatively, a wrong amount by far more."""


@dataclass(frozen=True, slots=True)
class ContractSpec:
    """One venue's contract: `size` base units each (QUOTE units when `inverse`),
    traded in steps of `step` contracts."""

    size: Decimal
    step: Decimal
    inverse: bool = False

    @property
    def whole(self) -> bool:
        """Only whole contracts trade (KuCoin's lotSize 1)."""
        return self.step == _ONE

    def step_lots(self, amount_decimals: int) -> int:
        """The fewest lots (of `10**-amount_decimals` base units) that make a whole
        number of tradable steps: the smallest amount this venue prints exactly."""
        return Fraction(self.size * self.step * 10**amount_decimals).numerator

    def contracts(self, amount_str: str, price_str: str | None = None) -> str:
        """The base amount `amount_str` (a decimal string) in contracts, as the venue
        prints it; ValueError if it is not a multiple of `step` contracts. Inverse
        contracts need the price the amount was valued at (`price_str`)."""
        if self == UNIT:
            return amount_str
        if self.inverse:
            return str(self._inverse_contracts(amount_str, price_str))
        count = Decimal(amount_str) / self.size
        shown = count.quantize(self.step)
        if shown != count:
            raise ValueError(f"{amount_str} is not a multiple of {self.step} x {self.size}")
        return format(shown.normalize() if self.whole else shown, "f")

    def _inverse_contracts(self, amount_str: str, price_str: str | None) -> int:
        if price_str is None:
            raise ValueError(f"inverse contracts of {amount_str} need the price it was valued at")
        count = Decimal(amount_str) * Decimal(price_str) / self.size
        whole = count.to_integral_value()
        if abs(count - whole) > _INVERSE_TOLERANCE:
            raise ValueError(
                f"{amount_str} at {price_str} is not a whole number of {self.size} contracts"
            )
        return int(whole)

    def to_base(self, contracts: str) -> Decimal:
        """Linear contracts back to base units, exactly (inverse: `inverse_base`)."""
        if self.inverse:
            raise ValueError("inverse contracts convert at a price: use inverse_base")
        return Decimal(contracts) * self.size

    def inverse_base(self, contracts: int, price: Decimal) -> float:
        """Whole inverse contracts at `price` in base units: the truth's definition
        (the exact decimal quotient as the nearest float)."""
        return float(Decimal(contracts) * self.size / price)


UNIT = ContractSpec(_ONE, Decimal("0.00000001"))
"""One base unit per contract, any amount (binance and bingx USD-M, `unit_contracts`)."""

_SIZES: dict[str, dict[str, str]] = {
    "okx": {"BTC": "0.01", "ETH": "0.1", "SOL": "1", "XRP": "100", "DOGE": "1000", "BNB": "0.01"},
    "kucoinfutures": {
        "BTC": "0.001",
        "ETH": "0.01",
        "SOL": "0.1",
        "XRP": "10",
        "DOGE": "100",
        "BNB": "0.01",
    },
}
_STEPS: dict[str, Decimal] = {"okx": _OKX_STEP, "kucoinfutures": _ONE}


def contract_spec(exchange_id: str, base: str) -> ContractSpec:
    """How `exchange_id` sizes a linear swap on `base` (UNIT where amounts are base)."""
    sizes = _SIZES.get(exchange_id)
    if sizes is None:
        return UNIT
    return ContractSpec(Decimal(sizes.get(base, "1")), _STEPS[exchange_id])


INVERSE_SIZES: dict[str, str] = {"BTC": "100"}
"""Quote units per inverse contract (okx ctVal, USD); any other base: 10."""


def inverse_spec(base: str) -> ContractSpec:
    """The inverse swap contract on `base` (okx's, whole contracts)."""
    return ContractSpec(Decimal(INVERSE_SIZES.get(base, "10")), _ONE, inverse=True)


def amount_step_lots(base: str, amount_decimals: int) -> int:
    """The truth's amount step for swaps on `base`: every venue can print any multiple."""
    return lcm(*(contract_spec(ex, base).step_lots(amount_decimals) for ex in _SIZES))
