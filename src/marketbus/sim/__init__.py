"""A loopback exchange simulator that real ccxt.pro clients talk to unmodified.

`SyntheticMarket` (sans-I/O, seeded, clock injected) is the truth; one venue module
per exchange in `sim.protocols` speaks that exchange's REST and websocket protocol;
`SimServer` is the aiohttp shell that serves them all on one loopback port.
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
