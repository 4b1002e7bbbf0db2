"""One module per simulated exchange; `make_venue` picks by ccxt exchange id."""

from __future__ import annotations

from collections.abc import Callable

from marketbus.sim.market import SyntheticMarket
from marketbus.sim.protocols.binance import BinanceVenue
from marketbus.sim.protocols.bingx import BingxVenue
from marketbus.sim.protocols.kucoinfutures import KucoinFuturesVenue
from marketbus.sim.protocols.okx import OkxVenue
from marketbus.sim.venue import Clock, Venue

_FACTORIES: dict[str, Callable[[SyntheticMarket, Clock], Venue]] = {
    "binance": BinanceVenue,
    "okx": OkxVenue,
    "kucoinfutures": KucoinFuturesVenue,
    "bingx": BingxVenue,
}

SUPPORTED_EXCHANGES: tuple[str, ...] = tuple(_FACTORIES)


def make_venue(exchange_id: str, market: SyntheticMarket, clock: Clock) -> Venue:
    """The venue simulating `exchange_id` on `market`, with `clock` for server times."""
    try:
        factory = _FACTORIES[exchange_id]
    except KeyError:
        raise ValueError(
            f"exchange {exchange_id!r} is not simulated (have {SUPPORTED_EXCHANGES})"
        ) from None
    return factory(market, clock)
