"""Rolling, bounded state of one feed: candles, trades, the order book, the ticker.

Buffers are plain classes with no I/O: the subscriber applies decoded messages to
them. Memory is fixed at construction: a ring never grows, the oldest row is evicted.

Columns live in ``array.array`` rings written twice (at ``i`` and ``i + slots``), so the
rows in time order are always one contiguous window. That keeps every update O(1) and
lets `CandleBuffer.arrays` / `TradeBuffer.arrays` hand out zero-copy numpy views
(numpy is optional and imported only there). A view aliases live memory: it is valid
until the next update of the buffer (in asyncio code, until your next ``await``);
``.copy()`` it to keep it longer, or take a `snapshot`.
"""

from __future__ import annotations

import bisect
import math
import time
from array import array
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any, Generic, NamedTuple, TypeVar

import msgspec

from marketbus.shared.schema import OHLCV, Book, Level, Ticker, Trade, Trades

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

_NAN = math.nan


def _opt(value: float | None) -> float:
    return _NAN if value is None else value


def _back(value: float) -> float | None:
    return None if value != value else value  # NaN stores a null price


class Candle(msgspec.Struct, frozen=True, kw_only=True):
    """One candle row of a `CandleBuffer`; prices are None where the wire had null."""

    ts_ms: int
    open: float | None
    high: float | None
    low: float | None
    close: float | None
    volume: float | None
    closed: bool


class CandleArrays(NamedTuple):
    """Zero-copy numpy views of a `CandleBuffer`, oldest first (nulls are NaN)."""

    ts: npt.NDArray[np.int64]
    open: npt.NDArray[np.float64]
    high: npt.NDArray[np.float64]
    low: npt.NDArray[np.float64]
    close: npt.NDArray[np.float64]
    volume: npt.NDArray[np.float64]


class TradeArrays(NamedTuple):
    """Zero-copy numpy views of a `TradeBuffer`, oldest first.

    ``side`` is +1 (taker bought), -1 (taker sold) or 0 (unknown).
    """

    ts: npt.NDArray[np.int64]
    price: npt.NDArray[np.float64]
    amount: npt.NDArray[np.float64]
    side: npt.NDArray[np.int8]


def _numpy() -> Any:
    try:
        import numpy
    except ImportError:
        raise ImportError("numpy views need numpy: pip install 'marketbus[numpy]'") from None
    return numpy


def _pandas() -> Any:
    try:
        import pandas
    except ImportError:
        raise ImportError("to_pandas() needs pandas: pip install 'marketbus[pandas]'") from None
    return pandas


class _Ring:
    """Slot bookkeeping of a double-written ring: logical row i is at ``start + i``."""

    __slots__ = ("length", "slots", "start")

    def __init__(self, slots: int) -> None:
        self.slots = slots
        self.start = 0
        self.length = 0

    def push(self) -> int:
        """Physical index (< slots) for a new newest row, evicting the oldest if full."""
        if self.length == self.slots:
            index = self.start
            self.start = (self.start + 1) % self.slots
            return index
        index = (self.start + self.length) % self.slots
        self.length += 1
        return index

    def drop_oldest(self) -> None:
        self.start = (self.start + 1) % self.slots
        self.length -= 1

    def physical(self, row: int) -> int:
        """Index (< slots) of logical *row*; negative rows count from the newest."""
        if row < 0:
            row += self.length
        if not 0 <= row < self.length:
            raise IndexError(f"row {row} out of range (buffer holds {self.length})")
        return (self.start + row) % self.slots


def _zeros(typecode: str, n: int) -> array[Any]:
    return array(typecode, bytes(array(typecode).itemsize * n))


class CandleBuffer:
    """The last *capacity* closed candles of one feed plus the forming one.

    A message with the newest ``ts_ms`` updates the newest row in place; a newer
    ``ts_ms`` closes it and starts a row; an older one is a correction (re-sent closed
    candle) and replaces its row. Rows are in time order.
    """

    __slots__ = (
        "_close",
        "_forming",
        "_high",
        "_low",
        "_np",
        "_open",
        "_ring",
        "_ts",
        "_volume",
        "capacity",
        "timeframe",
        "updated_ns",
    )

    def __init__(self, capacity: int, timeframe: str | None = None) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        self.capacity = capacity
        self.timeframe = timeframe
        slots = capacity + 1
        self._ring = _Ring(slots)
        self._ts = _zeros("q", 2 * slots)
        self._open = _zeros("d", 2 * slots)
        self._high = _zeros("d", 2 * slots)
        self._low = _zeros("d", 2 * slots)
        self._close = _zeros("d", 2 * slots)
        self._volume = _zeros("d", 2 * slots)
        self._forming = False
        self._np: tuple[Any, ...] | None = None
        self.updated_ns = 0
        """Wall clock (epoch ns) of the last applied message; 0 before the first."""

    def __len__(self) -> int:
        """Candles held, the forming one included."""
        return self._ring.length

    @property
    def has_forming(self) -> bool:
        """True when the newest row is a candle that is not final yet."""
        return self._forming

    def _write(self, index: int, c: OHLCV | Candle) -> None:
        for i in (index, index + self._ring.slots):
            self._ts[i] = c.ts_ms or 0
            self._open[i] = _opt(c.open)
            self._high[i] = _opt(c.high)
            self._low[i] = _opt(c.low)
            self._close[i] = _opt(c.close)
            self._volume[i] = _opt(c.volume)

    def apply(self, candle: OHLCV) -> bool:
        """Apply one candle update; False if it is older than everything held."""
        ts = candle.ts_ms
        if ts is None:
            return False
        ring = self._ring
        self.updated_ns = time.time_ns()
        if ring.length == 0 or ts > self._ts[ring.start + ring.length - 1]:
            self._forming = False  # a newer candle closes the previous one
            self._write(ring.push(), candle)
            self._forming = not candle.closed
        elif ts == self._ts[ring.start + ring.length - 1]:
            self._write(ring.physical(-1), candle)
            if self._forming and candle.closed:
                self._forming = False
        else:
            return self._correct(candle, ts)
        if ring.length - self._forming > self.capacity:
            ring.drop_oldest()
        return True

    def _correct(self, candle: OHLCV, ts: int) -> bool:
        """A re-sent older candle: replace its row, or insert it in time order (rare)."""
        ring = self._ring
        view = self._ts[ring.start : ring.start + ring.length]
        row = bisect.bisect_left(view, ts)
        if row < ring.length and view[row] == ts:
            self._write(ring.physical(row), candle)
            return True
        if row == 0 and ring.length - self._forming >= self.capacity:
            return False  # older than the window we keep
        rows = list(self)
        rows.insert(row, _candle_row(candle, closed=True))
        self._rebuild(rows)
        return True

    def _rebuild(self, rows: Sequence[Candle]) -> None:
        forming = self._forming
        self._ring = _Ring(self._ring.slots)
        self._forming = False
        closed = [r for r in rows if r.closed][-self.capacity :]
        keep = closed + ([rows[-1]] if forming and not rows[-1].closed else [])
        for r in keep:
            self._write(self._ring.push(), r)
        self._forming = forming

    def _row(self, row: int) -> Candle:
        i = self._ring.physical(row)
        last = row == -1 or row == self._ring.length - 1
        return Candle(
            ts_ms=self._ts[i],
            open=_back(self._open[i]),
            high=_back(self._high[i]),
            low=_back(self._low[i]),
            close=_back(self._close[i]),
            volume=_back(self._volume[i]),
            closed=not (last and self._forming),
        )

    def __getitem__(self, row: int) -> Candle:
        """Row *row* in time order (``buf[-1]`` is the newest)."""
        return self._row(row)

    def __iter__(self) -> Iterator[Candle]:
        for row in range(self._ring.length):
            yield self._row(row)

    @property
    def latest(self) -> Candle | None:
        """The newest candle (the forming one if any), None when empty."""
        return self._row(-1) if self._ring.length else None

    @property
    def forming(self) -> Candle | None:
        """The candle that is not final yet, if any."""
        return self._row(-1) if self._forming else None

    def rows(self) -> list[Candle]:
        """Every candle held, oldest first, the forming one last."""
        return list(self)

    def closed(self) -> list[Candle]:
        """The final candles, oldest first."""
        n = self._ring.length - self._forming
        return [self._row(row) for row in range(n)]

    def arrays(self, *, closed_only: bool = False) -> CandleArrays:
        """Zero-copy numpy views (ts, open, high, low, close, volume), oldest first.

        Valid until the next update of this buffer; ``.copy()`` to keep.
        """
        if self._np is None:
            np = _numpy()
            self._np = (
                np.frombuffer(self._ts, dtype=np.int64),
                *(
                    np.frombuffer(a, dtype=np.float64)
                    for a in (self._open, self._high, self._low, self._close, self._volume)
                ),
            )
        start = self._ring.start
        stop = start + self._ring.length - (self._forming and closed_only)
        return CandleArrays(*(a[start:stop] for a in self._np))

    def to_pandas(self) -> Any:
        """A pandas DataFrame (a copy), indexed by the candle open time (UTC)."""
        pd = _pandas()
        arrays = self.arrays()
        closed = [True] * len(self)
        if self._forming:
            closed[-1] = False
        frame = pd.DataFrame(
            {name: col.copy() for name, col in arrays._asdict().items() if name != "ts"}
            | {"closed": closed},
            index=pd.to_datetime(arrays.ts.copy(), unit="ms", utc=True),
        )
        frame.index.name = "ts"
        return frame

    def snapshot(self) -> CandleBuffer:
        """An independent copy (safe to read from another thread or keep)."""
        copy = CandleBuffer.__new__(CandleBuffer)
        copy.capacity = self.capacity
        copy.timeframe = self.timeframe
        copy._ring = _Ring(self._ring.slots)
        copy._ring.start, copy._ring.length = self._ring.start, self._ring.length
        for name in ("_ts", "_open", "_high", "_low", "_close", "_volume"):
            setattr(copy, name, array(getattr(self, name).typecode, getattr(self, name)))
        copy._forming = self._forming
        copy._np = None
        copy.updated_ns = self.updated_ns
        return copy

    def __repr__(self) -> str:
        return (
            f"CandleBuffer(timeframe={self.timeframe!r}, len={len(self)}, "
            f"capacity={self.capacity}, latest={self.latest!r})"
        )


def _candle_row(candle: OHLCV, *, closed: bool) -> Candle:
    return Candle(
        ts_ms=candle.ts_ms or 0,
        open=candle.open,
        high=candle.high,
        low=candle.low,
        close=candle.close,
        volume=candle.volume,
        closed=closed,
    )


_SIDE_CODE = {"buy": 1, "sell": -1, None: 0}
_SIDE_NAME: dict[int, Any] = {1: "buy", -1: "sell", 0: None}


class TradeBuffer:
    """The last *capacity* public trades of one feed, oldest first.

    A trade without its own time takes the batch's ``ts_ms``, else the receive time.
    """

    __slots__ = (
        "_amount",
        "_ids",
        "_np",
        "_price",
        "_ring",
        "_side",
        "_ts",
        "capacity",
        "total",
        "updated_ns",
    )

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        self.capacity = capacity
        self._ring = _Ring(capacity)
        self._ts = _zeros("q", 2 * capacity)
        self._price = _zeros("d", 2 * capacity)
        self._amount = _zeros("d", 2 * capacity)
        self._side = _zeros("b", 2 * capacity)
        self._ids: list[str | None] = [None] * capacity
        self._np: tuple[Any, ...] | None = None
        self.total = 0
        """Trades applied since the start (evicted ones included)."""
        self.updated_ns = 0

    def __len__(self) -> int:
        return self._ring.length

    def apply(self, batch: Trades) -> None:
        """Append every trade of *batch*, evicting the oldest beyond capacity."""
        default_ts = batch.ts_ms if batch.ts_ms is not None else batch.recv_ns // 1_000_000
        ring, slots = self._ring, self._ring.slots
        for trade in batch.trades:
            index = ring.push()
            ts = trade.ts_ms if trade.ts_ms is not None else default_ts
            side = _SIDE_CODE[trade.side]
            for i in (index, index + slots):
                self._ts[i] = ts
                self._price[i] = trade.price
                self._amount[i] = trade.amount
                self._side[i] = side
            self._ids[index] = trade.id
        self.total += len(batch.trades)
        self.updated_ns = time.time_ns()

    def _row(self, row: int) -> Trade:
        i = self._ring.physical(row)
        return Trade(
            id=self._ids[i],
            ts_ms=self._ts[i],
            price=self._price[i],
            amount=self._amount[i],
            side=_SIDE_NAME[self._side[i]],
        )

    def __getitem__(self, row: int) -> Trade:
        return self._row(row)

    def __iter__(self) -> Iterator[Trade]:
        for row in range(self._ring.length):
            yield self._row(row)

    @property
    def latest(self) -> Trade | None:
        return self._row(-1) if self._ring.length else None

    def trades(self, last: int | None = None) -> list[Trade]:
        """The *last* trades held (all by default), oldest first."""
        n = self._ring.length
        first = 0 if last is None else max(0, n - last)
        return [self._row(row) for row in range(first, n)]

    def arrays(self) -> TradeArrays:
        """Zero-copy numpy views (ts, price, amount, side), oldest first."""
        if self._np is None:
            np = _numpy()
            self._np = (
                np.frombuffer(self._ts, dtype=np.int64),
                np.frombuffer(self._price, dtype=np.float64),
                np.frombuffer(self._amount, dtype=np.float64),
                np.frombuffer(self._side, dtype=np.int8),
            )
        start = self._ring.start
        stop = start + self._ring.length
        return TradeArrays(*(a[start:stop] for a in self._np))

    def to_pandas(self) -> Any:
        """A pandas DataFrame (a copy) with columns id, price, amount, side, by trade time."""
        pd = _pandas()
        arrays = self.arrays()
        frame = pd.DataFrame(
            {
                "id": [t.id for t in self],
                "price": arrays.price.copy(),
                "amount": arrays.amount.copy(),
                "side": arrays.side.copy(),
            },
            index=pd.to_datetime(arrays.ts.copy(), unit="ms", utc=True),
        )
        frame.index.name = "ts"
        return frame

    def snapshot(self) -> TradeBuffer:
        """An independent copy (safe to read from another thread or keep)."""
        copy = TradeBuffer.__new__(TradeBuffer)
        copy.capacity = self.capacity
        copy._ring = _Ring(self._ring.slots)
        copy._ring.start, copy._ring.length = self._ring.start, self._ring.length
        for name in ("_ts", "_price", "_amount", "_side"):
            setattr(copy, name, array(getattr(self, name).typecode, getattr(self, name)))
        copy._ids = list(self._ids)
        copy._np = None
        copy.total = self.total
        copy.updated_ns = self.updated_ns
        return copy

    def __repr__(self) -> str:
        return f"TradeBuffer(len={len(self)}, capacity={self.capacity}, total={self.total})"


M = TypeVar("M", Ticker, Book)


class _Latest(Generic[M]):
    """The newest message of a state feed (messages are immutable: safe to hand out)."""

    __slots__ = ("latest", "updated_ns")

    def __init__(self) -> None:
        self.latest: M | None = None
        self.updated_ns = 0

    def apply(self, message: M) -> None:
        self.latest = message
        self.updated_ns = time.time_ns()

    def snapshot(self) -> _Latest[M]:
        return self  # the held message is immutable; replacing it does not touch readers


class TickerState(_Latest[Ticker]):
    """The latest `Ticker` of one feed."""

    __slots__ = ()

    def __repr__(self) -> str:
        return f"TickerState(latest={self.latest!r})"


class BookState(_Latest[Book]):
    """The latest top-of-book snapshot of one feed, cut to at most *depth* levels."""

    __slots__ = ("depth",)

    def __init__(self, depth: int | None = None) -> None:
        super().__init__()
        self.depth = depth

    def apply(self, message: Book) -> None:
        depth = self.depth
        if depth is not None and (len(message.bids) > depth or len(message.asks) > depth):
            message = msgspec.structs.replace(
                message, depth=depth, bids=message.bids[:depth], asks=message.asks[:depth]
            )
        super().apply(message)

    @property
    def bids(self) -> tuple[Level, ...]:
        return self.latest.bids if self.latest else ()

    @property
    def asks(self) -> tuple[Level, ...]:
        return self.latest.asks if self.latest else ()

    @property
    def best_bid(self) -> Level | None:
        bids = self.bids
        return bids[0] if bids else None

    @property
    def best_ask(self) -> Level | None:
        asks = self.asks
        return asks[0] if asks else None

    @property
    def mid(self) -> float | None:
        bid, ask = self.best_bid, self.best_ask
        return (bid[0] + ask[0]) / 2 if bid and ask else None

    @property
    def spread(self) -> float | None:
        bid, ask = self.best_bid, self.best_ask
        return ask[0] - bid[0] if bid and ask else None

    def __repr__(self) -> str:
        return f"BookState(depth={self.depth}, best_bid={self.best_bid}, best_ask={self.best_ask})"
