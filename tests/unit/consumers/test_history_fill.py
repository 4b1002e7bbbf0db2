"""Older candles from an archive, without I/O: the engine's request, the buffer's fill,
the window read, the trade rows, and the configuration errors."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from marketbus.consumers.buffers import CandleBuffer, candle_row
from marketbus.consumers.engine import BufferSizes, Engine, OlderCandles
from marketbus.consumers.history import RECORD_EXTRA, check_archive, older_window, trade_rows
from marketbus.consumers.options import resolve_options
from marketbus.consumers.subscriber import Subscriber
from marketbus.shared.errors import ConfigError
from marketbus.shared.schema import OHLCV, Trade, Trades
from tests.unit.consumers.test_engine import CANDLES, M, candle, entries, take


def closed_candles(minutes: list[int], run: int = 1, close: float = 0.0) -> list[OHLCV]:
    return [
        msgspec.structs.replace(candle(run, i + 1, m, closed=True), close=close + m)
        for i, m in enumerate(minutes)
    ]


# -- the buffer --------------------------------------------------------------------------


def test_fill_older_adds_only_candles_older_than_the_buffer_up_to_its_capacity() -> None:
    buffer = CandleBuffer(5, "1m")
    for c in closed_candles([10, 11], close=100.0):
        buffer.apply(c)
    buffer.apply(candle(1, 9, 12, closed=False))  # forming
    added = buffer.fill_older(closed_candles(list(range(0, 12))))
    assert added == 3
    assert [c.ts_ms for c in buffer] == [7 * M, 8 * M, 9 * M, 10 * M, 11 * M, 12 * M]
    assert [c.close for c in buffer.closed()][-2:] == [110.0, 111.0]  # the stream's win
    assert buffer.forming is not None and buffer.forming.ts_ms == 12 * M


def test_fill_older_on_a_full_buffer_changes_nothing() -> None:
    buffer = CandleBuffer(2, "1m")
    for c in closed_candles([5, 6]):
        buffer.apply(c)
    assert buffer.fill_older(closed_candles([3, 4])) == 0
    assert [c.ts_ms for c in buffer] == [5 * M, 6 * M]


@given(
    held=st.sets(st.integers(0, 60), max_size=20),
    archived=st.lists(st.integers(0, 60), max_size=40),
    capacity=st.integers(1, 30),
)
def test_fill_older_keeps_held_rows_and_time_order(
    held: set[int], archived: list[int], capacity: int
) -> None:
    buffer = CandleBuffer(capacity, "1m")
    for c in closed_candles(sorted(held), close=1000.0):
        buffer.apply(c)
    before = buffer.rows()
    buffer.fill_older(closed_candles(archived))
    rows = buffer.rows()
    times = [r.ts_ms for r in rows]
    assert times == sorted(set(times))  # in time order, each once
    assert rows[len(rows) - len(before) :] == before  # what was held is untouched
    oldest = before[0].ts_ms if before else None
    older = sorted({m * M for m in archived if oldest is None or m * M < oldest})
    expected = older[max(0, len(older) - (capacity - len(before))) :]
    assert times[: len(rows) - len(before)] == expected


# -- the engine --------------------------------------------------------------------------


def backfilled(engine: Engine, minutes: list[int]) -> None:
    engine.track(CANDLES, BufferSizes(candles=5))
    engine.on_subscribed(CANDLES)
    engine.on_history(take(engine), entries(closed_candles(minutes)), done=True, stream_first=None)


def test_a_short_backfill_asks_the_archive_for_the_rest_and_waits_for_it() -> None:
    engine = Engine(fill_older=True)
    backfilled(engine, [20, 21])
    [request] = engine.take_older()
    assert request == OlderCandles(CANDLES, 20 * M, 3, M)
    assert not engine.feeds[CANDLES].ready
    engine.on_older_candles(CANDLES, closed_candles([17, 18, 19, 20]))
    assert engine.feeds[CANDLES].ready
    buffer = engine.buffer_of(CANDLES, CandleBuffer)
    assert [c.ts_ms // M for c in buffer] == [17, 18, 19, 20, 21]


def test_a_failed_archive_read_leaves_the_stream_candles_and_makes_the_feed_ready() -> None:
    engine = Engine(fill_older=True)
    backfilled(engine, [20, 21])
    engine.take_older()
    engine.on_older_failed(CANDLES, "OSError: gone")
    assert engine.feeds[CANDLES].ready
    assert len(engine.buffer_of(CANDLES, CandleBuffer)) == 2


def test_no_archive_request_without_an_archive_or_with_a_full_backfill() -> None:
    engine = Engine()
    backfilled(engine, [20, 21])
    assert engine.take_older() == [] and engine.feeds[CANDLES].ready
    engine = Engine(fill_older=True)
    backfilled(engine, [1, 2, 3, 4, 5])
    assert engine.take_older() == [] and engine.feeds[CANDLES].ready


# -- the shell's pure parts --------------------------------------------------------------


def test_older_window_covers_the_missing_periods_before_the_oldest_candle() -> None:
    assert older_window(OlderCandles("f", 40 * M, 30, M), now_ms=0) == (10 * M, 40 * M)
    # no candle yet: the periods up to the current one
    assert older_window(OlderCandles("f", None, 3, M), now_ms=50 * M + 5) == (48 * M, 51 * M)


def test_trade_rows_fill_missing_times_like_the_buffer_and_sort_by_time() -> None:
    def batch(ts_ms: int | None, *trades: Trade) -> Trades:
        return Trades(exchange="x", symbol="s", ts_ms=ts_ms, recv_ns=9_000_000, trades=trades)

    a = Trade(id="a", ts_ms=None, price=1.0, amount=1.0, side="buy")
    b = Trade(id="b", ts_ms=5, price=2.0, amount=1.0, side=None)
    c = Trade(id="c", ts_ms=None, price=3.0, amount=1.0, side="sell")
    rows = trade_rows([batch(7, a, b), batch(None, c)])
    assert [(t.id, t.ts_ms) for t in rows] == [("b", 5), ("a", 7), ("c", 9)]


def test_candle_rows_are_the_buffer_rows() -> None:
    [c] = closed_candles([3])
    buffer = CandleBuffer(1, "1m")
    buffer.apply(c)
    assert buffer.rows() == [candle_row(c, closed=True)]


# -- configuration errors ----------------------------------------------------------------


def test_history_without_an_archive_is_a_config_error_naming_the_option() -> None:
    with pytest.raises(ConfigError, match=r"archive=DIR"):
        check_archive(None)


async def test_subscriber_history_without_an_archive_raises_before_connecting() -> None:
    sub = Subscriber("redis://127.0.0.1:1/0")
    with pytest.raises(ConfigError, match="archive"):
        await sub.history(CANDLES, 0, M)


def test_an_archive_without_pyarrow_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "pyarrow" else real(name)
    )
    with pytest.raises(ConfigError, match=r"archive='/data'.*" + RECORD_EXTRA.replace("[", r"\[")):
        Subscriber("redis://127.0.0.1:1/0", archive="/data")


def test_the_archive_option_takes_a_path_and_keeps_it_as_text(tmp_path: Path) -> None:
    assert resolve_options(None, {"archive": tmp_path}).archive == str(tmp_path)
    with pytest.raises(ConfigError, match="archive"):
        resolve_options(None, {"archive": 5})  # type: ignore[typeddict-item]


def test_the_sdk_imports_without_pyarrow() -> None:
    code = (
        "import sys; sys.modules['pyarrow'] = None;"  # what the light install finds: nothing
        "import marketbus.consumers, marketbus.consumers.history, marketbus.consumers.sync;"
        "print(sorted(m for m in sys.modules if m.startswith('marketbus.archive')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
