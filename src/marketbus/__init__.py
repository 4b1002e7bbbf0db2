"""marketbus: a market-data bus for crypto trading.

Producers stream exchange data with ccxt.pro into Redis (pub/sub + capped streams);
the consumer SDK (`marketbus.consumers`) keeps gap-free rolling buffers for strategies.
The wire contract lives in `marketbus.shared`.
"""

__version__ = "0.1.0"
