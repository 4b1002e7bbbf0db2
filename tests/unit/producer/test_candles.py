"""Candle close inference: forming updates, exactly-once closes, corrections, holes."""

from __future__ import annotations

from collections import Counter

from hypothesis import example, given
from hypothesis import strategies as st

from marketbus.producer.candles import CandleTracker
from marketbus.producer.normalize import Row
from marketbus.shared.schema import OHLCV

P = 60_000
GRACE = 2_000


def row(ts: int, close: float = 1.0, volume: float = 1.0) -> Row:
    return (ts, 1.0, max(1.0, close), min(1.0, close), close, volume)


def tracker(memory: int = 64) -> CandleTracker:
    return CandleTracker("binance", "BTC/USDT", "1m", GRACE, memory=memory)


def summary(messages: list[OHLCV]) -> list[tuple[int | None, float | None, bool]]:
    return [(m.ts_ms, m.close, m.closed) for m in messages]


def test_forming_updates_are_sent_open_and_a_newer_candle_closes_the_previous() -> None:
    t = tracker()
    assert summary(t.update([row(0, 1.0)], now_ms=10, recv_ns=1)) == [(0, 1.0, False)]
    assert summary(t.update([row(0, 2.0)], now_ms=20, recv_ns=1)) == [(0, 2.0, False)]
    assert summary(t.update([row(P, 3.0)], now_ms=P + 5, recv_ns=1)) == [
        (0, 2.0, True),
        (P, 3.0, False),
    ]
    message = t.update([row(P, 4.0)], now_ms=P + 6, recv_ns=9)[0]
    assert (message.exchange, message.symbol, message.timeframe, message.recv_ns) == (
        "binance",
        "BTC/USDT",
        "1m",
        9,
    )


def test_clock_closes_after_end_plus_grace_exactly_once() -> None:
    t = tracker()
    t.update([row(0)], now_ms=1, recv_ns=1)
    assert t.tick(P + GRACE - 1, 1) == []
    assert summary(t.tick(P + GRACE, 1)) == [(0, 1.0, True)]
    assert t.tick(P + GRACE + 1000, 1) == []
    # the exchange repeats the same final values: not a correction
    assert t.update([row(0)], now_ms=P + GRACE + 2000, recv_ns=1) == []
    # a newer candle after a clock close does not close the old one again
    assert summary(t.update([row(P)], now_ms=P + GRACE + 3000, recv_ns=1)) == [(P, 1.0, False)]


def test_socket_updates_of_a_closed_candle_are_not_resent_only_rest_corrects_it() -> None:
    t = tracker()
    t.update([row(0, 1.0)], now_ms=1, recv_ns=1)
    t.update([row(P, 2.0)], now_ms=P + 1, recv_ns=1)
    assert t.update([row(0, 1.5)], now_ms=P + 2, recv_ns=1) == []
    assert t.update([row(0, 1.6)], now_ms=P + 3, recv_ns=1) == []
    assert t.late_updates == 2 and t.forming == row(P, 2.0)
    # The exchange's final values over REST: one correction, same open time, closed.
    assert summary(t.reconcile([row(0, 1.5), row(P, 9.0)], {0}, recv_ns=1)) == [(0, 1.5, True)]
    assert t.reconcile([row(0, 1.5)], {0}, recv_ns=1) == [], "equal values: nothing to send"
    # REST rows fetched after an outage are final too and correct a closed period.
    assert summary(t.update([row(0, 1.7)], P + 4, 1, final={0})) == [(0, 1.7, True)]


def test_a_lagging_exchange_closes_each_period_once_and_settles_it_once() -> None:
    """The exchange is 5 s behind the clock (grace 2 s): the clock closes each candle,
    the late updates of that period are held, and its final values are sent once, when
    the exchange's next period begins (not once per late update)."""
    t = tracker()
    lag = 5_000
    closed: list[OHLCV] = []
    for second in range(0, 4 * 60):
        now = second * 1000
        exchange_now = now - lag
        if exchange_now >= 0:
            ts = exchange_now // P * P
            closed += [m for m in t.update([row(ts, float(second))], now, 1) if m.closed]
        closed += t.tick(now, 1)
    assert [m.ts_ms for m in closed] == [0, 0, P, P, 2 * P, 2 * P]
    final = {m.ts_ms: m.close for m in closed}
    assert final == {k * P: float((k + 1) * 60 + 4) for k in range(3)}, "the last update"
    assert all(a.close != b.close for a, b in zip(closed[::2], closed[1::2], strict=True))
    assert t.late_updates == 3 * 2, "2 s of late updates per period (5 s lag, 2 s grace)"


def test_a_row_already_over_when_first_seen_is_sent_closed() -> None:
    t = tracker()
    assert summary(t.update([row(0)], now_ms=P + GRACE, recv_ns=1)) == [(0, 1.0, True)]
    assert t.forming is None and t.last_closed_ms == 0


def test_several_rows_in_one_update_are_applied_in_time_order() -> None:
    t = tracker()
    out = t.update([row(P, 2.0), row(0, 1.0)], now_ms=P + 1, recv_ns=1)
    assert summary(out) == [(0, 1.0, False), (0, 1.0, True), (P, 2.0, False)]


def test_seeded_candles_are_not_resent_and_a_missed_period_is_a_hole() -> None:
    t = tracker()
    t.seed_closed([row(0), row(P)])
    assert t.update([row(P)], now_ms=2 * P, recv_ns=1) == []
    assert t.missing([row(4 * P)]) == [(2 * P, 4 * P)]
    assert summary(t.update([row(4 * P)], now_ms=4 * P + 1, recv_ns=1)) == [(4 * P, 1.0, False)]
    assert t.missing([row(4 * P)]) == []
    filled = t.fill([row(P), row(2 * P, 5.0), row(3 * P, 6.0), row(4 * P)], recv_ns=1)
    assert summary(filled) == [(2 * P, 5.0, True), (3 * P, 6.0, True)]


def test_no_hole_without_a_reference_candle() -> None:
    t = tracker()
    assert t.missing([row(5 * P)]) == []
    t.update([row(5 * P)], now_ms=5 * P + 1, recv_ns=1)
    assert t.missing([row(6 * P)]) == []


def test_memory_is_bounded_and_forgotten_candles_are_not_corrected() -> None:
    t = tracker(memory=2)
    t.seed_closed([row(0), row(P), row(2 * P)])
    assert t.update([row(0)], now_ms=3 * P, recv_ns=1) == []
    assert t.reconcile([row(0, 5.0)], {0}, recv_ns=1) == [], "what was sent is unknown"
    assert t.last_closed_ms == 2 * P


@example(steps=[(0, 2.0, 62000), (0, 1.0, 0), (0, 2.0, 0)])  # failed before: A->B->A
@example(steps=[(0, 1.0, 0), (0, 2.0, 62000), (1, 1.0, 0)])
@given(st.lists(st.tuples(st.integers(0, 20), st.floats(1, 2), st.integers(0, 3 * P)), min_size=1))
def test_each_candle_closes_once_when_data_moves_forward(
    steps: list[tuple[int, float, int]],
) -> None:
    """Each period is sent closed once with the values seen when it closed, plus at most
    one settling correction: a candle the clock closed takes the last values the socket
    gave it before showing a newer period. (The property used to expect every later
    socket value re-sent closed, so a correction A->B->A repeated a key.)"""
    t = tracker()
    now = 0
    period = 0
    sends: Counter[int] = Counter()
    last_sent: dict[int, float | None] = {}
    seen: dict[int, float] = {}
    expected: dict[int, float] = {}
    clock_closed: set[int] = set()  # closed by the clock, no newer period shown since

    def sent(messages: list[OHLCV], row_ts: int | None = None) -> None:
        for m in messages:
            if not m.closed:
                continue
            assert m.ts_ms is not None
            sends[m.ts_ms] += 1
            last_sent[m.ts_ms] = m.close
            if m.ts_ms not in expected:  # its first close
                expected[m.ts_ms] = seen[m.ts_ms]
                if row_ts is None or m.ts_ms == row_ts:  # by the clock / over when seen
                    clock_closed.add(m.ts_ms)

    for advance, close, dt in steps:
        period += advance
        now = max(now + dt, period * P)
        sent(t.tick(now, 1))  # the clock passes first, as it does between rows
        ts = period * P
        for p in [p for p in clock_closed if p < ts]:  # the exchange moved on: settled
            expected[p] = seen[p]
            clock_closed.discard(p)
        if ts not in expected or ts in clock_closed:
            seen[ts] = close
        sent(t.update([row(ts, close)], now_ms=now, recv_ns=1), row_ts=ts)
    sent(t.tick(now + P + GRACE, 1))
    assert max(sends.values()) <= 2, "closed once, settled at most once"
    assert last_sent == expected
    assert set(expected) == set(seen), "every period seen was closed"


def test_missing_periods_are_found_before_and_between_rows() -> None:
    t = tracker()
    t.update([row(0)], now_ms=10, recv_ns=1)
    assert t.missing([row(P)]) == []
    assert t.missing([row(3 * P), row(5 * P)]) == [(P, 3 * P), (4 * P, 5 * P)]
    assert tracker().missing([row(9 * P)]) == [], "nothing to measure from"


def test_after_an_outage_the_forming_candle_is_fetched_again() -> None:
    t = tracker()
    t.update([row(0)], now_ms=10, recv_ns=1)
    # ccxt may hand over its cached (stale) row of the forming candle first.
    assert t.missing([row(0), row(2 * P)], refetch_forming=True) == [(0, 2 * P)]
    assert t.missing([row(0)], refetch_forming=True) == []
    closed = tracker()
    closed.seed_closed([row(0)])
    assert closed.missing([row(3 * P)], refetch_forming=True) == [(P, 3 * P)]


def test_a_candle_the_clock_closed_during_an_unnoticed_outage_is_fetched_again() -> None:
    t = tracker()
    t.update([row(0)], now_ms=10, recv_ns=1)
    assert summary(t.tick(P + GRACE, 1)) == [(0, 1.0, True)]  # no final row: socket dead
    assert t.missing([row(3 * P)], refetch_forming=True) == [(0, 3 * P)]
    # The fetched final values correct it (re-sent closed), then the rest follows in order.
    fetched = [row(0, 2.0), row(P), row(2 * P)]
    out = t.update([*fetched, row(3 * P)], 3 * P + 1, 1, final={r[0] for r in fetched})
    assert [s for s in summary(out) if s[2]] == [(0, 2.0, True), (P, 1.0, True), (2 * P, 1.0, True)]
    assert t.missing([row(4 * P)], refetch_forming=True) == [(3 * P, 4 * P)]
