"""Rolling buffers: ring semantics, forming candle, corrections, numpy views."""

from __future__ import annotations

import bisect
import math
import tracemalloc

import msgspec
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from marketbus.consumers.buffers import (
    BookState,
    Candle,
    CandleBuffer,
    TickerState,
    TradeBuffer,
)
from marketbus.shared.schema import OHLCV, Book, Ticker, Trade, Trades

M = 60_000


def candle(ts: int, close: float, closed: bool = False) -> OHLCV:
    return OHLCV(
        exchange="x",
        symbol="A/B",
        ts_ms=ts,
        recv_ns=0,
        timeframe="1m",
        open=close,
        high=close,
        low=close,
        close=close,
        volume=1.0,
        closed=closed,
    )


def test_forming_candle_updates_in_place_and_newer_ts_closes_it() -> None:
    buf = CandleBuffer(3)
    buf.apply(candle(0, 1.0))
    buf.apply(candle(0, 2.0))
    assert len(buf) == 1 and buf.latest is not None and buf.latest.close == 2.0
    assert buf.forming is not None and buf.closed() == []
    buf.apply(candle(M, 3.0))
    assert [c.close for c in buf.closed()] == [2.0]
    assert buf.forming is not None and buf.forming.ts_ms == M


def test_closed_message_closes_forming() -> None:
    buf = CandleBuffer(3)
    buf.apply(candle(0, 1.0))
    buf.apply(candle(0, 1.5, closed=True))
    assert buf.forming is None and [c.close for c in buf.closed()] == [1.5]


def test_ring_keeps_capacity_closed_plus_forming() -> None:
    buf = CandleBuffer(3)
    for i in range(10):
        buf.apply(candle(i * M, float(i)))
    assert [c.ts_ms for c in buf.closed()] == [6 * M, 7 * M, 8 * M]
    assert buf.latest is not None and buf.latest.ts_ms == 9 * M and not buf.latest.closed
    buf.apply(candle(10 * M, 10.0, closed=True))
    assert [c.ts_ms for c in buf] == [8 * M, 9 * M, 10 * M]
    assert buf.forming is None


def test_correction_replaces_older_row() -> None:
    buf = CandleBuffer(5)
    for i in range(4):
        buf.apply(candle(i * M, float(i), closed=True))
    buf.apply(candle(1 * M, 99.0, closed=True))
    assert [c.close for c in buf] == [0.0, 99.0, 2.0, 3.0]


def test_late_missing_candle_is_inserted_in_order() -> None:
    buf = CandleBuffer(5)
    for i in (0, 1, 3):
        buf.apply(candle(i * M, float(i), closed=True))
    buf.apply(candle(4 * M, 4.0))
    buf.apply(candle(2 * M, 2.0, closed=True))
    assert [c.ts_ms // M for c in buf] == [0, 1, 2, 3, 4]
    assert buf.forming is not None and buf.forming.ts_ms == 4 * M


def test_candle_older_than_window_is_ignored() -> None:
    buf = CandleBuffer(2)
    for i in range(5, 8):
        buf.apply(candle(i * M, float(i), closed=True))
    assert not buf.apply(candle(0, 0.0, closed=True))


def test_numpy_views_are_zero_copy_and_in_time_order() -> None:
    buf = CandleBuffer(4)
    for i in range(7):
        buf.apply(candle(i * M, float(i)))
    arrays = buf.arrays()
    assert arrays.ts.tolist() == [i * M for i in range(2, 7)]
    assert arrays.close.tolist() == [2.0, 3.0, 4.0, 5.0, 6.0]
    assert arrays.close.base is not None  # a view, not a copy
    assert not arrays.close.flags.owndata
    assert buf.arrays(closed_only=True).close.tolist() == [2.0, 3.0, 4.0, 5.0]
    buf.apply(candle(6 * M, 60.0))
    assert arrays.close[-1] == 60.0  # the view sees in-place updates


def test_null_prices_are_nan_in_views_and_none_in_rows() -> None:
    buf = CandleBuffer(2)
    nulls = dict.fromkeys(("open", "high", "low", "close", "volume"))
    buf.apply(
        OHLCV(exchange="x", symbol="A/B", ts_ms=0, recv_ns=0, timeframe="1m", **nulls, closed=False)
    )
    assert math.isnan(buf.arrays().close[0])
    assert buf.latest is not None and buf.latest.close is None


def test_snapshot_is_independent() -> None:
    buf = CandleBuffer(3)
    buf.apply(candle(0, 1.0))
    snap = buf.snapshot()
    buf.apply(candle(0, 2.0))
    assert snap.latest is not None and snap.latest.close == 1.0
    assert snap.arrays().close.tolist() == [1.0]


@given(st.lists(st.tuples(st.integers(0, 30), st.booleans()), max_size=80), st.integers(1, 6))
def test_candle_buffer_invariants(updates: list[tuple[int, bool]], capacity: int) -> None:
    buf = CandleBuffer(capacity)
    for ts, closed in updates:
        buf.apply(candle(ts * M, float(ts), closed))
    rows = buf.rows()
    ts_list = [r.ts_ms for r in rows]
    assert ts_list == sorted(set(ts_list))
    assert len(buf.closed()) <= capacity
    assert all(r.closed for r in rows[:-1])
    assert np.array_equal(buf.arrays().ts, np.array(ts_list, dtype=np.int64))


def trades(*prices: float) -> Trades:
    return Trades(
        exchange="x",
        symbol="A/B",
        ts_ms=5,
        recv_ns=0,
        trades=tuple(
            Trade(id=str(p), ts_ms=None if p == 0 else int(p), price=p, amount=1.0, side="sell")
            for p in prices
        ),
    )


def test_trade_ring_evicts_oldest() -> None:
    buf = TradeBuffer(3)
    buf.apply(trades(1, 2))
    buf.apply(trades(3, 4, 5))
    assert [t.price for t in buf] == [3, 4, 5]
    assert buf.total == 5 and len(buf) == 3
    assert buf.arrays().price.tolist() == [3, 4, 5]
    assert buf.arrays().side.tolist() == [-1, -1, -1]
    assert [t.id for t in buf.trades(last=2)] == ["4", "5"]


def test_trade_without_time_takes_batch_time() -> None:
    buf = TradeBuffer(3)
    buf.apply(trades(0))
    assert buf.latest is not None and buf.latest.ts_ms == 5


def test_book_state_cuts_depth_and_derives_top() -> None:
    bids = ((9.0, 1.0), (8.0, 1.0), (7.0, 1.0))
    asks = ((11.0, 2.0), (12.0, 1.0), (13.0, 1.0))
    book = Book(exchange="x", symbol="A/B", ts_ms=1, recv_ns=0, depth=3, bids=bids, asks=asks)
    state = BookState(depth=2)
    state.apply(book)
    assert state.bids == ((9.0, 1.0), (8.0, 1.0)) and len(state.asks) == 2
    assert state.mid == 10.0 and state.spread == 2.0 and state.updated_ns > 0


def test_a_held_state_snapshot_does_not_change_with_later_messages() -> None:
    ticker = TickerState()
    ticker.apply(Ticker(exchange="x", symbol="A/B", ts_ms=1, recv_ns=0, last=3.0))
    held = ticker.snapshot()
    ticker.apply(Ticker(exchange="x", symbol="A/B", ts_ms=2, recv_ns=0, last=4.0))
    assert held is not ticker and held.latest is not None and held.latest.last == 3.0
    book = BookState(depth=1)
    book.apply(
        Book(exchange="x", symbol="A/B", ts_ms=1, recv_ns=0, depth=1, bids=((9.0, 1.0),), asks=())
    )
    kept = book.snapshot()
    book.apply(
        Book(exchange="x", symbol="A/B", ts_ms=2, recv_ns=0, depth=1, bids=((8.0, 1.0),), asks=())
    )
    assert kept.depth == 1 and kept.best_bid == (9.0, 1.0) and kept.updated_ns > 0


def test_ticker_state_keeps_latest() -> None:
    state = TickerState()
    assert state.latest is None
    state.apply(Ticker(exchange="x", symbol="A/B", ts_ms=1, recv_ns=0, last=3.0))
    assert state.latest is not None and state.latest.last == 3.0


def test_capacity_must_be_positive() -> None:
    with pytest.raises(ValueError, match="capacity"):
        CandleBuffer(0)


def test_rows_and_views_stay_right_across_many_window_moves() -> None:
    """The columns hold twice the capacity; rows move back to the front when full."""
    buf = CandleBuffer(3)
    for i in range(1, 101):
        buf.apply(candle(i * M, float(i)))
        buf.apply(candle(i * M, float(i) + 0.5, closed=i % 2 == 0))
        expected = list(range(max(1, i - 3), i + 1)) if i % 2 else list(range(max(1, i - 2), i + 1))
        assert [c.ts_ms // M for c in buf] == expected
        assert buf.arrays().close.tolist() == [float(t) + 0.5 for t in expected]
        assert (buf.forming is None) == (i % 2 == 0)


@given(st.lists(st.integers(1, 7), max_size=60), st.integers(1, 9))
def test_trade_buffer_keeps_the_newest_capacity_trades(batches: list[int], capacity: int) -> None:
    buf = TradeBuffer(capacity)
    model: list[float] = []
    for size in batches:
        prices = [float(len(model) + k + 1) for k in range(size)]
        buf.apply(trades(*prices))
        model += prices
    kept = model[-capacity:] if model else []
    assert [t.price for t in buf] == kept and buf.arrays().price.tolist() == kept
    assert [t.id for t in buf] == [str(p) for p in kept] and buf.total == len(model)
    assert buf.snapshot().trades() == buf.trades()


class CandleModel:
    """The plain path that `CandleBuffer.apply` inlines, on a list: one row per candle,
    the newest last; every row is closed except the newest while it is forming."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.rows: list[Candle] = []
        self.forming = False

    def _row(self, message: OHLCV, closed: bool) -> Candle:
        return Candle(
            ts_ms=message.ts_ms or 0,
            open=message.open,
            high=message.high,
            low=message.low,
            close=message.close,
            volume=message.volume,
            closed=closed,
        )

    def apply(self, message: OHLCV) -> bool:
        ts, rows = message.ts_ms, self.rows
        if ts is None:
            return False
        if rows and ts < rows[-1].ts_ms:
            return self._correct(message, ts)
        if rows and ts == rows[-1].ts_ms:  # the newest again: in place
            if self.forming and message.closed:
                self.forming = False
                if len(rows) > self.capacity:
                    rows.pop(0)
            rows[-1] = self._row(message, closed=not self.forming)
            return True
        if rows:  # a newer candle closes the newest one
            rows[-1] = msgspec.structs.replace(rows[-1], closed=True)
        self.forming = not message.closed
        rows.append(self._row(message, closed=message.closed))
        if len(rows) > self.capacity + 1:
            rows.pop(0)
        if len(rows) - self.forming > self.capacity:
            rows.pop(0)
        return True

    def _correct(self, message: OHLCV, ts: int) -> bool:
        rows = self.rows
        stamps = [r.ts_ms for r in rows]
        index = bisect.bisect_left(stamps, ts)
        if stamps[index] == ts:
            rows[index] = self._row(message, closed=rows[index].closed)
            return True
        if index == 0 and len(rows) - self.forming >= self.capacity:
            return False
        rows.insert(index, self._row(message, closed=True))
        closed = [r for r in rows if r.closed][-self.capacity :]
        self.rows = closed + ([rows[-1]] if self.forming and not rows[-1].closed else [])
        return True


@given(
    st.integers(1, 5),
    st.lists(
        st.tuples(
            st.integers(-4, 2),
            st.booleans(),
            st.one_of(st.none(), st.floats(-1e6, 1e6, allow_nan=False)),
            st.booleans(),
        ),
        max_size=150,
    ),
)
def test_candle_apply_matches_the_plain_path_it_inlines(
    capacity: int, script: list[tuple[int, bool, float | None, bool]]
) -> None:
    """Whatever arrives (new candles, updates in place, corrections, closes, nulls, no
    time, many window moves), the inlined `apply` ends exactly where the plain path ends."""
    buf, model = CandleBuffer(capacity), CandleModel(capacity)
    ts = 0
    for step, closed, price, timed in script:
        ts = max(0, ts + step)
        message = OHLCV(
            exchange="x",
            symbol="A/B",
            ts_ms=ts * M if timed else None,
            recv_ns=0,
            timeframe="1m",
            open=price,
            high=price,
            low=price,
            close=price,
            volume=1.0,
            closed=closed,
        )
        assert buf.apply(message) == model.apply(message)
        assert buf.rows() == model.rows and buf.has_forming == model.forming
        assert buf.closed() == [r for r in model.rows if r.closed]
        ts_view = buf.arrays().ts.tolist()
        assert ts_view == [r.ts_ms for r in model.rows]


def test_a_buffers_memory_grows_with_the_rows_it_holds_not_with_its_capacity() -> None:
    full = TradeBuffer(10_000)
    full.apply(trades(*(float(p) for p in range(1, 20_001))))
    empty, some = TradeBuffer(10_000), TradeBuffer(10_000)
    some.apply(trades(*(float(p) for p in range(1, 101))))
    assert empty.nbytes * 100 < full.nbytes
    assert some.nbytes <= 128 * 33 < full.nbytes // 50
    assert full.nbytes == 12_500 * (8 + 8 + 8 + 1 + 8)  # capacity + a quarter, no more
    candles = CandleBuffer(10_000)
    assert candles.nbytes * 100 < 12_500 * 6 * 8
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        kept = [(TradeBuffer(10_000), CandleBuffer(10_000)) for _ in range(200)]
        cost = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert len(kept) == 200 and cost < 200 * 10_000, f"{cost / 200:.0f} B per empty pair"


@given(st.lists(st.integers(1, 90), max_size=40), st.sampled_from([1, 63, 64, 65, 150, 700]))
def test_trade_rows_and_views_stay_right_while_the_columns_grow(
    batches: list[int], capacity: int
) -> None:
    buf = TradeBuffer(capacity)
    model: list[float] = []
    for size in batches:
        view = buf.arrays().price
        before = view.tolist()
        prices = [float(len(model) + k + 1) for k in range(size)]
        buf.apply(trades(*prices))
        model += prices
        kept = model[-capacity:]
        assert buf.arrays().price.tolist() == kept and [t.price for t in buf] == kept
        assert len(view) == len(before)  # an old view stays readable memory
    assert buf.snapshot().trades() == buf.trades()


def test_candle_rows_views_and_corrections_stay_right_while_the_columns_grow() -> None:
    buf = CandleBuffer(500)
    for i in range(1, 301):
        buf.apply(candle(i * 2 * M, float(i), closed=True))
        assert buf.arrays().close[-1] == float(i) and len(buf) == i
    assert buf.nbytes <= 512 * 6 * 8 < (501 + 125) * 6 * 8
    buf.apply(candle(3 * M, 99.0, closed=True))  # a late candle between two: a rebuild
    assert [c.ts_ms // M for c in buf][:4] == [2, 3, 4, 6] and len(buf) == 301
    assert buf.arrays().close.tolist()[:3] == [1.0, 99.0, 2.0]
    for i in range(301, 1001):
        buf.apply(candle(i * 2 * M, float(i), closed=True))
    assert len(buf) == 500 and buf.arrays().close.tolist() == [float(i) for i in range(501, 1001)]
    assert buf.nbytes == (501 + 125) * 6 * 8
