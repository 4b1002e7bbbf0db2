"""A loopback exchange simulator that real ccxt.pro clients talk to unmodified.

`SyntheticMarket` (sans-I/O, seeded, clock injected) is the truth; one venue module
per exchange in `sim.protocols` speaks that exchange's REST and websocket protocol;
`SimServer` is the aiohttp shell that serves them all on one loopback port.

The market is the truth in base units; derivative venues print contracts as the real
ones do (`sim.contracts`; `SimServer(unit_contracts=True)` for one-unit contracts).
`sim.faults` switches misbehaviour on at runtime, per server, for every venue: drops,
stalls, garbage frames, delays, refused subscriptions and book sequence breaks (with
what ccxt 4.5.90 does about each break, per exchange).
"""

from marketbus.sim.faults import Faults
from marketbus.sim.market import Candle, SyntheticMarket, Ticker, Trade
from marketbus.sim.protocols import SUPPORTED_EXCHANGES
from marketbus.sim.server import SimServer, serve

__all__ = [
    "SUPPORTED_EXCHANGES",
    "Candle",
    "Faults",
    "SimServer",
    "SyntheticMarket",
    "Ticker",
    "Trade",
    "serve",
]
