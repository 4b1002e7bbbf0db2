"""The wire contract (SPEC v1): names, messages, codecs, config and Redis connections.

Importing this package never imports ccxt.
"""

from marketbus.shared.codecs import Encoding, decode, encode
from marketbus.shared.errors import (
    ConfigError,
    ContractError,
    FeedNameError,
    FencedError,
    MarketbusError,
    NormalizeError,
    RedisUnavailableError,
)
from marketbus.shared.names import Feed, catalog_key, feed_name, status_name
from marketbus.shared.schema import (
    OHLCV,
    Book,
    FeedInfo,
    MarketMessage,
    Message,
    Status,
    Ticker,
    Trade,
    Trades,
)

__all__ = [
    "OHLCV",
    "Book",
    "ConfigError",
    "ContractError",
    "Encoding",
    "Feed",
    "FeedInfo",
    "FeedNameError",
    "FencedError",
    "MarketMessage",
    "MarketbusError",
    "Message",
    "NormalizeError",
    "RedisUnavailableError",
    "Status",
    "Ticker",
    "Trade",
    "Trades",
    "catalog_key",
    "decode",
    "encode",
    "feed_name",
    "status_name",
]
