"""The wire messages of SPEC v1 as msgspec Structs: a tagged union on the field ``type``.

Every message carries ``exchange``, ``symbol``, ``run``, ``seq``, ``ts_ms`` and
``recv_ns``. Messages are frozen: the publisher stamps ``run``/``seq`` with
`msgspec.structs.replace`. Unknown fields are ignored on decode (forward compatible).
"""

from __future__ import annotations

from typing import Literal, TypeAlias

import msgspec

Side: TypeAlias = Literal["buy", "sell"]
StatusEvent: TypeAlias = Literal[
    "started", "connected", "disconnected", "stale", "error", "heartbeat", "stopped", "gap"
]
Level: TypeAlias = tuple[float, float]


class _Message(msgspec.Struct, frozen=True, kw_only=True, tag_field="type"):
    """Fields every message has (SPEC "Messages")."""

    exchange: str
    symbol: str | None
    run: int = 0
    seq: int = 0
    ts_ms: int | None
    recv_ns: int

    @property
    def position(self) -> tuple[int, int]:
        """``(run, seq)``: the order of messages within one feed."""
        return (self.run, self.seq)


class OHLCV(_Message, frozen=True, kw_only=True, tag="ohlcv"):
    """One candle; ``ts_ms`` is its open time. ``closed`` once it is final."""

    timeframe: str
    open: float | None
    high: float | None
    low: float | None
    close: float | None
    volume: float | None
    closed: bool


class Ticker(_Message, frozen=True, kw_only=True, tag="ticker"):
    """Best bid/ask, last price and 24h statistics."""

    bid: float | None = None
    bid_size: float | None = None
    ask: float | None = None
    ask_size: float | None = None
    last: float | None = None
    open: float | None = None
    high: float | None = None
    low: float | None = None
    base_volume: float | None = None
    quote_volume: float | None = None
    change_pct: float | None = None
    mark: float | None = None
    index: float | None = None


class Trade(msgspec.Struct, frozen=True, kw_only=True):
    """One public trade; ``side`` is the taker's."""

    id: str | None
    ts_ms: int | None
    price: float
    amount: float
    side: Side | None


class Trades(_Message, frozen=True, kw_only=True, tag="trades"):
    """One exchange batch of trades, oldest first."""

    trades: tuple[Trade, ...]


class Book(_Message, frozen=True, kw_only=True, tag="book"):
    """Top ``depth`` levels of the order book, best first, as ``[price, amount]``."""

    depth: int
    bids: tuple[Level, ...]
    asks: tuple[Level, ...]


class Status(_Message, frozen=True, kw_only=True, tag="status"):
    """A producer event on ``{ns}:{exchange}:status``; ``symbol`` is null.

    ``gap`` is our extension of the SPEC's event list: the producer announces data it
    had to drop (e.g. while Redis was unreachable), so readers never lose it silently.
    Its structured fields (v1.1, additive: older readers ignore them, and they are None
    on other events and in older producers' gaps) say which data: ``from_ms``/``to_ms``
    for exchange data lost before it reached the producer, ``first_seq``/``last_seq``
    for messages the producer dropped on the bus.
    """

    symbol: str | None = None
    event: StatusEvent
    feed: str | None = None
    detail: str = ""
    from_ms: int | None = None
    """``gap`` of exchange data (v1.1): the last trade published before the loss, in
    exchange time (ms); what is missing lies strictly between ``from_ms`` and ``to_ms``."""
    to_ms: int | None = None
    """``gap`` of exchange data (v1.1): the first trade published after the loss."""
    first_seq: int | None = None
    """``gap`` on the bus (v1.1): the first seq of ``feed`` (this run) that was dropped."""
    last_seq: int | None = None
    """``gap`` on the bus (v1.1): the last dropped seq, inclusive."""


Message: TypeAlias = OHLCV | Ticker | Trades | Book | Status
MarketMessage: TypeAlias = OHLCV | Ticker | Trades | Book

MESSAGE_TYPES: tuple[type[_Message], ...] = (OHLCV, Ticker, Trades, Book, Status)
COMMON_FIELDS: tuple[str, ...] = _Message.__struct_fields__
"""The fields every message has (SPEC "Messages"); a type's own fields are the rest."""


class FeedInfo(msgspec.Struct, frozen=True, kw_only=True):
    """A catalog entry in the hash ``{ns}:feeds`` (field = feed name)."""

    exchange: str
    symbol: str
    kind: str
    timeframe: str | None
    run: int
    stream_maxlen: int
    updated_ms: int
    contract_size: float | None = None
    """The market's ccxt ``contractSize`` (None: spot): base units per contract, or
    quote units per contract when ``inverse``. Sizes on the bus are already base units;
    this lets a reader convert back to the exchange's contracts."""
    inverse: bool = False
    """An inverse contract (``BTC/USD:BTC``): contracts = base * price / contract_size."""
