"""The consumer SDK: follow feeds on the bus with warm, gap-free rolling buffers.

``Subscriber`` (asyncio) and ``SyncSubscriber`` (threads) subscribe, backfill from the
streams, repair gaps, resume after reconnects and report what cannot be recovered.
Importing this package needs neither ccxt nor numpy (numpy/pandas are optional).
"""

from marketbus.consumers.buffers import (
    BookState,
    Candle,
    CandleArrays,
    CandleBuffer,
    TickerState,
    TradeArrays,
    TradeBuffer,
)
from marketbus.consumers.engine import BufferSizes
from marketbus.consumers.events import Event, Gap, Staleness, Stats, Update
from marketbus.consumers.options import SubscriberOptions
from marketbus.consumers.subscriber import Subscriber
from marketbus.consumers.sync import SyncSubscriber
from marketbus.shared.backoff import Backoff
from marketbus.shared.errors import (
    NotSubscribedError,
    SubscriberClosedError,
    SubscriberError,
    SubscriberFailedError,
)
from marketbus.shared.schema import OHLCV, Book, Ticker, Trade, Trades

__all__ = [
    "OHLCV",
    "Backoff",
    "Book",
    "BookState",
    "BufferSizes",
    "Candle",
    "CandleArrays",
    "CandleBuffer",
    "Event",
    "Gap",
    "NotSubscribedError",
    "Staleness",
    "Stats",
    "Subscriber",
    "SubscriberClosedError",
    "SubscriberError",
    "SubscriberFailedError",
    "SubscriberOptions",
    "SyncSubscriber",
    "Ticker",
    "TickerState",
    "Trade",
    "TradeArrays",
    "TradeBuffer",
    "Trades",
    "Update",
]
