"""Rolling, bounded state of one feed: candles, trades, the order book, the ticker.

Buffers are plain classes with no I/O: the subscriber applies decoded messages to
them. Memory is bounded by the capacity and grows with the rows held: columns start at
`FIRST_ROWS` rows and double as rows come, up to their final length, then the oldest
row is evicted. A feed that never gets data (a junk channel a pattern found) costs a
few hundred bytes, not its capacity.

Rows live in ``array.array`` columns up to a quarter longer than the capacity, used as a
sliding window (`_Window`): rows in time order are always one contiguous slice, each
value is written once, and every update is O(1) (amortized: the rows move back to the
front once per quarter capacity of new rows, about four row copies per new row; while
the columns grow, a doubling copies each row once more). That
lets `CandleBuffer.arrays` / `TradeBuffer.arrays` hand out zero-copy numpy views (numpy
is optional and imported only there). A view aliases live memory: it is valid until the
next update of the buffer (in asyncio code, until your next ``await``); ``.copy()`` it
to keep it longer, or take a `snapshot`.
"""

from __future__ import annotations

import bisect
import math
import time
from array import array
from collections.abc import Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, Generic, NamedTuple, Self, TypeVar

import msgspec

from marketbus.shared.schema import OHLCV, Book, Level, Ticker, Trade, Trades

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

_NAN = math.nan
_time_ns = time.time_ns


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


FIRST_ROWS = 64
"""Rows the columns of a new buffer hold before they first grow."""


class _Window:
    """Where the rows of a column store are: physical ``end - length .. end - 1``,
    oldest first, of columns that hold ``limit`` rows, growing to ``most = slots + spare``.

    A new row goes at ``end``. Once ``end`` reaches ``limit``, the owner makes room
    first (`grows` says how): while the columns are shorter than ``most`` it doubles
    them; after that it moves the rows back to the front (`compact`): a copy of at most
    *slots* rows every *spare* new rows, so a new row costs O(1) amortized (``slots /
    spare`` row copies, about 4) and one write per value, and the rows in time order
    stay one contiguous slice.
    """

    __slots__ = ("end", "length", "limit", "most", "slots")

    def __init__(self, slots: int, limit: int | None = None) -> None:
        self.slots = slots
        self.most = slots + max(16, slots // 4)
        """The columns' final length (rows)."""
        self.limit = min(self.most, FIRST_ROWS) if limit is None else limit
        """The columns' current length (rows): ``end`` never passes it."""
        self.end = 0
        self.length = 0

    def grows(self) -> int | None:
        """The columns' next length when they are full but may grow (else None:
        `compact` instead); the window counts with it from now on."""
        if self.limit >= self.most:
            return None
        self.limit = min(self.most, 2 * self.limit)
        return self.limit

    @property
    def start(self) -> int:
        """Physical index of the oldest row."""
        return self.end - self.length

    @property
    def full(self) -> bool:
        """True when a new row needs the window moved to the front first."""
        return self.end == self.limit

    def push(self) -> int:
        """Physical index of a new newest row (evicting the oldest if full); the caller
        has made room (``full`` is False)."""
        index = self.end
        self.end = index + 1
        if self.length < self.slots:
            self.length += 1
        return index

    def physical(self, row: int) -> int:
        """Physical index of logical *row*; negative rows count from the newest."""
        length = self.length
        if row < 0:
            row += length
        if not 0 <= row < length:
            raise IndexError(f"row {row} out of range (buffer holds {length})")
        return self.end - length + row

    def compact(self, columns: Sequence[Any]) -> None:
        """Move the rows of *columns* (arrays or lists) to the front."""
        start, end, length = self.end - self.length, self.end, self.length
        for column in columns:
            column[0:length] = column[start:end]
        self.end = length

    def copy(self) -> _Window:
        window = _Window(self.slots, self.limit)
        window.end, window.length = self.end, self.length
        return window


def _zeros(typecode: str, n: int) -> array[Any]:
    return array(typecode, bytes(array(typecode).itemsize * n))


def _grown(column: Any, n: int) -> Any:
    """A copy of *column* (an array or a list) *n* rows long. A new object, not a
    resize: numpy views handed out earlier keep the old memory alive and valid."""
    if isinstance(column, list):
        return column + [None] * (n - len(column))
    grown = _zeros(column.typecode, n)
    grown[0 : len(column)] = column
    return grown


def _nbytes(columns: Sequence[Any]) -> int:
    """Bytes of the column storage (a list column counts its pointers)."""
    return sum(
        len(column) * (8 if isinstance(column, list) else column.itemsize) for column in columns
    )


R = TypeVar("R")


class _Rows(Generic[R]):
    """Rows in time order over a `_Window`: ``len``, ``buf[i]`` (``buf[-1]`` is the
    newest), iteration and `latest`; a buffer supplies `_row` and its ``_window``."""

    __slots__ = ()
    _window: _Window
    _columns: tuple[Any, ...]

    def _row(self, row: int) -> R:
        raise NotImplementedError

    def _set_columns(self, columns: tuple[Any, ...]) -> None:
        raise NotImplementedError

    def _make_room(self) -> None:
        """The window is full: grow the columns, or move the rows to the front."""
        window = self._window
        n = window.grows()
        if n is None:
            window.compact(self._columns)
        else:
            self._set_columns(tuple(_grown(column, n) for column in self._columns))

    def __len__(self) -> int:
        return self._window.length

    def __getitem__(self, row: int) -> R:
        return self._row(row)

    def __iter__(self) -> Iterator[R]:
        for row in range(self._window.length):
            yield self._row(row)

    @property
    def latest(self) -> R | None:
        """The newest row, None when empty."""
        return self._row(-1) if self._window.length else None


class CandleBuffer(_Rows[Candle]):
    """The last *capacity* closed candles of one feed plus the forming one.

    A message with the newest ``ts_ms`` updates the newest row in place; a newer
    ``ts_ms`` closes it and starts a row; an older one is a correction (re-sent closed
    candle) and replaces its row. Rows are in time order; ``len`` and `latest` count
    the forming candle.
    """

    __slots__ = (
        "_close",
        "_columns",
        "_forming",
        "_high",
        "_low",
        "_np",
        "_open",
        "_ts",
        "_volume",
        "_window",
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
        self._window = window = _Window(slots)
        self._np: tuple[Any, ...] | None = None
        self._set_columns(tuple(_zeros(t, window.limit) for t in "qddddd"))
        self._forming = False
        self.updated_ns = 0
        """Wall clock (epoch ns) of the last applied message; 0 before the first."""

    def _set_columns(self, columns: tuple[Any, ...]) -> None:
        self._columns = columns
        self._ts, self._open, self._high, self._low, self._close, self._volume = columns
        self._np = None  # views of the old columns

    @property
    def nbytes(self) -> int:
        """Bytes of the column storage: grows with the rows held, up to the capacity's."""
        return _nbytes(self._columns)

    @property
    def has_forming(self) -> bool:
        """True when the newest row is a candle that is not final yet."""
        return self._forming

    def _put(self, index: int, ts: int, c: OHLCV | Candle) -> None:
        """Write one row (the hot path: one store per column, nulls as NaN)."""
        value = c.open
        self._open[index] = _NAN if value is None else value
        value = c.high
        self._high[index] = _NAN if value is None else value
        value = c.low
        self._low[index] = _NAN if value is None else value
        value = c.close
        self._close[index] = _NAN if value is None else value
        value = c.volume
        self._volume[index] = _NAN if value is None else value
        self._ts[index] = ts

    def apply(self, candle: OHLCV) -> bool:
        """Apply one candle update; False if it is older than everything held."""
        ts = candle.ts_ms
        if ts is None:
            return False
        window = self._window
        end = window.end
        ts_column = self._ts
        if window.length and ts <= ts_column[end - 1]:
            if ts < ts_column[end - 1]:
                return self._correct(candle, ts)
            index = end - 1  # the newest candle again: updated in place
            if self._forming and candle.closed:
                self._forming = False
                if window.length > self.capacity:
                    window.length -= 1  # the oldest closed candle goes
        else:  # a newer candle: it closes the previous one (as `_Window.push`, inlined)
            if end == window.limit:
                self._make_room()
                end, ts_column = window.end, self._ts
            index = end
            window.end = end + 1
            length = window.length
            if length < window.slots:
                length += 1
            self._forming = forming = not candle.closed
            if length - forming > self.capacity:
                length -= 1  # the oldest closed candle goes
            window.length = length
        # One store per column, nulls as NaN (as `_put`, inlined: the hot path).
        value = candle.open
        self._open[index] = _NAN if value is None else value
        value = candle.high
        self._high[index] = _NAN if value is None else value
        value = candle.low
        self._low[index] = _NAN if value is None else value
        value = candle.close
        self._close[index] = _NAN if value is None else value
        value = candle.volume
        self._volume[index] = _NAN if value is None else value
        ts_column[index] = ts
        self.updated_ns = _time_ns()
        return True

    def _correct(self, candle: OHLCV, ts: int) -> bool:
        """A re-sent older candle: replace its row, or insert it in time order (rare)."""
        window = self._window
        start, end = window.start, window.end
        index = bisect.bisect_left(self._ts, ts, start, end)
        if index < end and self._ts[index] == ts:
            self._put(index, ts, candle)
            return True
        if index == start and window.length - self._forming >= self.capacity:
            return False  # older than the window we keep
        rows = list(self)
        rows.insert(index - start, candle_row(candle, closed=True))
        self._rebuild(rows)
        return True

    def fill_older(self, candles: Iterable[OHLCV]) -> int:
        """Closed *candles* (e.g. from an archive) older than every row held fill the
        buffer's older part, newest first, up to its capacity; of two with one
        ``ts_ms`` the later wins. Rows held are kept as they are. Returns how many
        were added."""
        rows = list(self)
        room = self.capacity - (len(rows) - self._forming)
        oldest = rows[0].ts_ms if rows else None
        by_time: dict[int, OHLCV] = {}
        for candle in candles:
            ts = candle.ts_ms
            if ts is not None and (oldest is None or ts < oldest):
                by_time[ts] = candle
        if room <= 0 or not by_time:
            return 0
        older = [candle_row(by_time[ts], closed=True) for ts in sorted(by_time)[-room:]]
        self._rebuild(older + rows)
        return len(older)

    def _rebuild(self, rows: Sequence[Candle]) -> None:
        forming = self._forming
        window = self._window = _Window(self._window.slots, self._window.limit)
        closed = [r for r in rows if r.closed][-self.capacity :]
        keep = closed + ([rows[-1]] if forming and not rows[-1].closed else [])
        for r in keep:
            if window.end == window.limit:
                self._make_room()
            self._put(window.push(), r.ts_ms, r)
        self._forming = forming

    def _row(self, row: int) -> Candle:
        i = self._window.physical(row)
        last = i == self._window.end - 1
        return Candle(
            ts_ms=self._ts[i],
            open=_back(self._open[i]),
            high=_back(self._high[i]),
            low=_back(self._low[i]),
            close=_back(self._close[i]),
            volume=_back(self._volume[i]),
            closed=not (last and self._forming),
        )

    @property
    def forming(self) -> Candle | None:
        """The candle that is not final yet, if any."""
        return self._row(-1) if self._forming else None

    def rows(self) -> list[Candle]:
        """Every candle held, oldest first, the forming one last."""
        return list(self)

    def closed(self) -> list[Candle]:
        """The final candles, oldest first."""
        n = self._window.length - self._forming
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
        start = self._window.start
        stop = self._window.end - (self._forming and closed_only)
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
        copy._window = self._window.copy()
        copy._set_columns(tuple(array(column.typecode, column) for column in self._columns))
        copy._forming = self._forming
        copy.updated_ns = self.updated_ns
        return copy

    def __repr__(self) -> str:
        return (
            f"CandleBuffer(timeframe={self.timeframe!r}, len={len(self)}, "
            f"capacity={self.capacity}, latest={self.latest!r})"
        )


def candle_row(candle: OHLCV, *, closed: bool) -> Candle:
    """The `Candle` row a `CandleBuffer` holds for *candle*."""
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


class TradeBuffer(_Rows[Trade]):
    """The last *capacity* public trades of one feed, oldest first.

    A trade without its own time takes the batch's ``ts_ms``, else the receive time.
    """

    __slots__ = (
        "_amount",
        "_columns",
        "_ids",
        "_np",
        "_price",
        "_side",
        "_ts",
        "_window",
        "capacity",
        "total",
        "updated_ns",
    )

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        self.capacity = capacity
        self._window = window = _Window(capacity)
        self._np: tuple[Any, ...] | None = None
        ids: list[str | None] = [None] * window.limit
        self._set_columns((*(_zeros(t, window.limit) for t in "qddb"), ids))
        self.total = 0
        """Trades applied since the start (evicted ones included)."""
        self.updated_ns = 0

    def _set_columns(self, columns: tuple[Any, ...]) -> None:
        self._columns = columns
        self._ts, self._price, self._amount, self._side, self._ids = columns
        self._np = None  # views of the old columns

    @property
    def nbytes(self) -> int:
        """Bytes of the column storage (not the trade id strings): grows with the rows
        held, up to the capacity's."""
        return _nbytes(self._columns)

    def apply(self, batch: Trades) -> None:
        """Append every trade of *batch*, evicting the oldest beyond capacity."""
        default_ts = batch.ts_ms if batch.ts_ms is not None else batch.recv_ns // 1_000_000
        window = self._window
        ts_col, price, amount, side, ids = self._columns
        for trade in batch.trades:
            if window.end == window.limit:
                self._make_room()
                ts_col, price, amount, side, ids = self._columns
            index = window.push()
            ts = trade.ts_ms
            ts_col[index] = default_ts if ts is None else ts
            price[index] = trade.price
            amount[index] = trade.amount
            side[index] = _SIDE_CODE[trade.side]
            ids[index] = trade.id
        self.total += len(batch.trades)
        self.updated_ns = _time_ns()

    def _row(self, row: int) -> Trade:
        i = self._window.physical(row)
        return Trade(
            id=self._ids[i],
            ts_ms=self._ts[i],
            price=self._price[i],
            amount=self._amount[i],
            side=_SIDE_NAME[self._side[i]],
        )

    def trades(self, last: int | None = None) -> list[Trade]:
        """The *last* trades held (all by default), oldest first."""
        n = self._window.length
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
        start, stop = self._window.start, self._window.end
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
        copy._window = self._window.copy()
        copy._set_columns(
            (*(array(column.typecode, column) for column in self._columns[:4]), list(self._ids))
        )
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
        self.updated_ns = _time_ns()

    def snapshot(self) -> Self:
        """An independent copy: a later message does not change it (the message it
        holds is immutable, so it is shared, not copied)."""
        copy = object.__new__(type(self))
        copy.latest = self.latest
        copy.updated_ns = self.updated_ns
        return copy


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

    def snapshot(self) -> Self:
        copy = super().snapshot()
        copy.depth = self.depth
        return copy

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
