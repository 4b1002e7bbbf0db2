"""Candle reconciliation decisions: what a check covers, when it is due, the budget
spreading, and (through the ohlcv handler) correction vs none and once-closed periods."""

from __future__ import annotations

from collections import Counter
from itertools import pairwise

from hypothesis import given
from hypothesis import strategies as st

from marketbus.producer.feeds import FetchCandles, OhlcvHandler, RestFailed
from marketbus.producer.normalize import Row
from marketbus.producer.reconcile import (
    MAX_UNCHECKED,
    ReconcilePolicy,
    ReconcileSchedule,
    phase_of,
)
from marketbus.shared.names import Feed
from marketbus.shared.schema import OHLCV

P = 60_000
AFTER = 5_000
EVERY = 60_000
POLICY = ReconcilePolicy(after_ms=AFTER, every_ms=EVERY)


def ccxt_row(ts: int, close: float = 1.0) -> list[float]:
    return [ts, 1.0, max(1.0, close), min(1.0, close), close, 1.0]


def rest_row(ts: int, close: float = 1.0) -> Row:
    return (ts, 1.0, max(1.0, close), min(1.0, close), close, 1.0)


# -- the schedule ---------------------------------------------------------------------


def test_a_check_is_due_after_the_wait_at_the_feeds_phase_and_covers_what_is_ready() -> None:
    s = ReconcileSchedule(POLICY, phase_ms=20_000)
    s.closed(0, now_ms=62_000)
    s.closed(P, now_ms=122_000)
    assert s.due_at() == 80_000, "ready at 67 s, the phase slot is at 80 s"
    assert s.due(79_999) is None
    check = s.due(80_000)
    assert check is not None and check.covers == (0,), "the second is not ready yet"
    assert s.due(200_000) is None, "one in flight at a time"
    s.answered(check, ok=True)
    assert s.unchecked == [P]
    assert s.due_at() == 140_000, "the next slot after it was ready (127 s)"
    again = s.due(140_000)
    assert again is not None and again.covers == (P,)


def test_one_check_covers_every_candle_closed_since_the_last() -> None:
    s = ReconcileSchedule(ReconcilePolicy(after_ms=1_000, every_ms=60_000), phase_ms=0)
    for second in range(1, 50):
        s.closed(second * 1000, now_ms=second * 1000 + 300)  # 1 s candles
    check = s.due(60_000)
    assert check is not None and check.covers == tuple(range(1000, 50_000, 1000))
    assert (check.first_ms, check.last_ms) == (1000, 49_000)


def test_a_failed_check_keeps_its_candles_for_the_next_slot() -> None:
    s = ReconcileSchedule(POLICY, phase_ms=0)
    s.closed(0, now_ms=61_000)
    check = s.due(120_000)
    assert check is not None
    s.answered(check, ok=False)
    assert s.unchecked == [0]
    assert s.due(120_001) is None and s.due_at() == 180_000, "not before the next slot"


def test_unchecked_candles_are_bounded() -> None:
    s = ReconcileSchedule(POLICY)
    for i in range(MAX_UNCHECKED + 5):
        s.closed(i * 1000, now_ms=i)
    assert len(s.unchecked) == MAX_UNCHECKED and s.dropped == 5
    assert s.unchecked[0] == 5000, "the oldest go"


@given(
    st.lists(st.integers(0, 10 * EVERY), min_size=1, max_size=40),
    st.integers(0, EVERY // 1000 - 1).map(lambda s: s * 1000),
)
def test_a_feed_checks_at_most_once_per_every_ms(closes: list[int], phase: int) -> None:
    s = ReconcileSchedule(POLICY, phase_ms=phase)
    pending = sorted(closes)
    checks: list[int] = []
    for now in range(0, 12 * EVERY, 1000):
        while pending and pending[0] <= now:
            ts = pending.pop(0)
            s.closed(ts, now_ms=ts)
        check = s.due(now)
        if check is not None:
            checks.append(now)
            assert all(ts + AFTER <= now for ts in check.covers), "checked too early"
            s.answered(check, ok=True)
    assert all(b - a >= EVERY for a, b in pairwise(checks))
    assert all((c - phase) % EVERY == 0 for c in checks), "only at the feed's phase"
    assert s.unchecked == [], "everything checked in the end"


def test_500_feeds_spread_their_checks_over_the_minute() -> None:
    """500 binance 1m feeds all close a candle at the same boundary: their checks are
    spread over the next minute (about 8 a second), one per feed per minute."""
    names = [f"md:binance:ohlcv.1m:C{i}/USDT" for i in range(500)]
    due: list[int] = []
    for name in names:
        s = ReconcileSchedule(POLICY, phase_of(name, EVERY))
        s.closed(P, now_ms=2 * P + 300)
        at = s.due_at()
        assert at is not None and 2 * P + 300 + AFTER <= at < 3 * P + 300 + AFTER
        due.append(at)
    per_second = Counter(at // 1000 for at in due)
    assert max(per_second.values()) <= 25, "no burst at the boundary"
    assert len(per_second) >= 50, "spread over most of the minute"


# -- through the ohlcv handler ---------------------------------------------------------


def handler(policy: ReconcilePolicy = POLICY) -> OhlcvHandler:
    feed = Feed("md", "binance", "ohlcv.1m", "BTC/USDT")
    h = OhlcvHandler(feed, close_grace_ms=2_000, reconcile=policy)
    assert h.schedule is not None
    h.schedule.phase_ms = 0
    return h


def closes(messages: object) -> list[tuple[int | None, float | None]]:
    assert isinstance(messages, list)
    return [(m.ts_ms, m.close) for m in messages if isinstance(m, OHLCV) and m.closed]


def test_a_late_candle_is_settled_once_by_the_socket_and_corrected_by_one_check() -> None:
    h = handler()
    h.on_data([ccxt_row(0, 1.0)], now_ms=30_000, recv_ns=1)
    assert closes(h.on_clock(62_000, 1)) == [(0, 1.0)], "closed by the clock"
    # The exchange lags: more updates of the closed period come, none is re-sent.
    for i, now in enumerate(range(62_500, 66_000, 500)):
        assert h.on_data([ccxt_row(0, 1.0 + i / 10)], now, 1) == []
    # The exchange moves on: its last values of the period are sent once, settled.
    assert closes(h.on_data([ccxt_row(P, 3.0)], now_ms=66_000, recv_ns=1)) == [(0, 1.6)]
    assert not h.pending, "not due before the wait and the slot"
    assert h.on_clock(120_000, 1) == []
    [request] = h.take_requests()
    assert isinstance(request, FetchCandles) and request.purpose == "reconcile"
    assert (request.after_ms, request.until_ms, request.limit) == (-P, P, 3)
    assert h.take_requests() == [], "one check in flight"
    h.on_clock(125_000, 1)
    assert h.take_requests() == []
    answer = [rest_row(0, 1.7), rest_row(P, 3.0)]
    assert closes(h.on_rest(request, answer, recv_ns=2)) == [(0, 1.7)]
    assert h.corrections == 1
    [notice] = h.take_notices()
    assert "corrected 1 closed candle" in notice.detail and notice.event is None


def test_equal_values_send_nothing_and_a_failed_check_is_retried() -> None:
    h = handler()
    h.on_data([ccxt_row(0, 1.0)], now_ms=30_000, recv_ns=1)
    h.on_data([ccxt_row(P, 2.0)], now_ms=61_000, recv_ns=1)
    h.on_clock(120_000, 1)
    [request] = h.take_requests()
    assert h.on_rest(request, RestFailed("timeout"), recv_ns=2) == []
    assert "retried" in h.take_notices()[0].detail
    h.on_clock(180_000, 1)
    [again] = h.take_requests()
    assert (again.after_ms, again.until_ms, again.purpose) == (-P, P, "reconcile")
    assert h.on_rest(again, [rest_row(0, 1.0)], recv_ns=3) == [] and h.corrections == 0
    assert h.schedule is not None and h.schedule.unchecked == [P], "closed by the clock at 180 s"


def test_reconciliation_off_asks_for_nothing() -> None:
    feed = Feed("md", "binance", "ohlcv.1m", "BTC/USDT")
    h = OhlcvHandler(feed, close_grace_ms=2_000)
    h.on_data([ccxt_row(0)], now_ms=30_000, recv_ns=1)
    h.on_data([ccxt_row(P)], now_ms=61_000, recv_ns=1)
    h.on_clock(10 * P, 1)
    assert h.schedule is None and not h.pending


def test_a_check_asked_by_the_clock_survives_a_skipped_period_fetch() -> None:
    h = handler()
    h.on_data([ccxt_row(0)], now_ms=30_000, recv_ns=1)
    h.on_data([ccxt_row(P)], now_ms=61_000, recv_ns=1)
    h.on_clock(120_000, 1)  # asks for the check; the shell serves it with the next data
    h.on_data([ccxt_row(3 * P)], now_ms=3 * P + 1, recv_ns=1)  # skipped 2 periods
    purposes = [r.purpose for r in h.take_requests()]
    assert purposes == ["reconcile", "missed"]


def first_sends(published: list[object]) -> list[int]:
    """The open time of each period's first message, in publication order."""
    seen: list[int] = []
    for m in published:
        assert isinstance(m, OHLCV) and m.ts_ms is not None
        if m.ts_ms not in seen:
            seen.append(m.ts_ms)
    return seen


def test_the_clock_closes_nothing_while_a_round_of_rest_work_is_in_flight() -> None:
    """The shell publishes what `on_data` returned once the round of REST work it started
    is answered, but the clock's closes at once (found by the fault tests: a period was
    first published after the next one). A close by the clock waits for the round."""
    h = handler()
    h.on_data([ccxt_row(0)], now_ms=30_000, recv_ns=1)
    h.on_data([ccxt_row(P)], now_ms=61_000, recv_ns=1)
    h.on_clock(120_000, 1)  # asks for the check; the shell serves it with the next data
    published: list[object] = []
    # The socket comes back with two new periods: P closes, 2P and 3P are first sent.
    returned = list(h.on_data([ccxt_row(2 * P), ccxt_row(3 * P)], 3 * P + 1, recv_ns=2))
    [check] = h.take_requests()
    assert check.purpose == "reconcile"
    # The shell awaits the check; the clock task runs meanwhile, past 3P's end + grace.
    published += h.on_clock(4 * P + 2_000, 3)
    returned += h.on_rest(check, [rest_row(0), rest_row(P)], recv_ns=4)
    published += returned  # the round is over: the shell publishes what it returned
    published += h.on_clock(4 * P + 2_500, 5)
    assert first_sends(published) == [P, 2 * P, 3 * P]
    assert closes(published)[-1] == (3 * P, 1.0), "closed by the clock after the round"
    assert h.in_flight == 0


def test_a_round_cut_short_by_a_failed_socket_does_not_stop_the_clock() -> None:
    h = handler()
    h.on_data([ccxt_row(0)], now_ms=30_000, recv_ns=1)
    h.on_data([ccxt_row(P)], now_ms=61_000, recv_ns=1)
    h.on_clock(120_000, 1)
    h.on_data([ccxt_row(P)], now_ms=121_000, recv_ns=1)
    assert h.take_requests() and h.in_flight == 1
    h.on_down()  # the shell's round ended without an answer, then the socket failed
    h.on_data([ccxt_row(P)], now_ms=121_500, recv_ns=1)  # data flows again
    assert h.in_flight == 0
    assert closes(h.on_clock(2 * P + 2_000, 1)) == [(P, 1.0)]
