"""The pure rules of `marketbus status`: when a producer is dead, which stream entries
are ours, and how the report says so."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from marketbus.shared import codecs
from marketbus.shared.schema import Status, StatusEvent
from marketbus.status_report import (
    DEAD_AFTER_BEATS,
    DEFAULT_HEARTBEAT_S,
    MIN_DEAD_AFTER_S,
    ExchangeRow,
    FeedRow,
    Liveness,
    entry_message,
    heartbeat_interval_s,
    liveness,
    render,
)

S = 1_000_000_000


def event(kind: StatusEvent, at_s: float, *, run: int = 1, seq: int = 1) -> Status:
    return Status(
        exchange="binance", run=run, seq=seq, ts_ms=None, recv_ns=int(at_s * S), event=kind
    )


def beats(*times_s: float, run: int = 1) -> list[Status]:
    return [event("heartbeat", t, run=run, seq=i) for i, t in enumerate(times_s, 1)]


def verdict(events: list[Status], now_s: float) -> str | None:
    live = liveness(events, int(now_s * S))
    return None if live is None else live.verdict


def test_the_interval_is_the_median_spacing_of_the_newest_beats_of_one_run() -> None:
    assert heartbeat_interval_s(beats(0, 2, 4, 6, 8, 10)) == 2.0
    # one stall between beats does not stretch the interval
    assert heartbeat_interval_s(beats(0, 2, 4, 30, 32)) == 2.0
    # beats of an older run are not spacings of this one
    assert heartbeat_interval_s([*beats(0, 1, run=1), *beats(50, 60, run=2)]) == 10.0
    assert heartbeat_interval_s(beats(5)) is None
    assert heartbeat_interval_s([event("connected", 1)]) is None


@given(
    interval=st.floats(min_value=0.01, max_value=600),
    silent=st.floats(min_value=0, max_value=5000),
)
def test_dead_exactly_when_silent_longer_than_the_bound(interval: float, silent: float) -> None:
    events = beats(1000, 1000 + interval)
    now_ns = int((1000 + interval + silent) * S)
    live = liveness(events, now_ns)
    assert live is not None
    bound = max(DEAD_AFTER_BEATS * live.interval_s, MIN_DEAD_AFTER_S)
    assert live.dead_after_s == bound
    assert abs(live.interval_s - interval) < 1e-6
    silent_s = (now_ns - events[-1].recv_ns) / 1e9
    assert (live.verdict == "dead") == (silent_s > bound)


def test_one_beat_assumes_the_default_interval_and_none_cannot_be_judged() -> None:
    live = liveness(beats(100), now_ns=int(100.5 * S))
    assert live == Liveness("alive", DEFAULT_HEARTBEAT_S, DEAD_AFTER_BEATS * DEFAULT_HEARTBEAT_S)
    dead_at = 100 + DEAD_AFTER_BEATS * DEFAULT_HEARTBEAT_S + 1
    assert verdict(beats(100), dead_at) == "dead"
    assert liveness([event("started", 1), event("connected", 2)], now_ns=10**12) is None


def test_a_stopped_event_after_the_last_beat_means_stopped_not_dead() -> None:
    events = [*beats(0, 5), event("stopped", 6)]
    assert verdict(events, 1000) == "stopped"
    # a stop of an older run says nothing about this one
    events = [*beats(0, 5, run=2), event("stopped", 6, run=1)]
    assert verdict(events, 1000) == "dead"


def test_only_entries_filed_under_their_own_run_and_seq_are_ours() -> None:
    status = event("connected", 1, run=7, seq=3)
    payload = codecs.encode(status)
    assert entry_message(b"7-3", {b"d": payload}) == status
    assert entry_message(b"7-4", {b"d": payload}) is None  # foreign: ID is not its seq
    assert entry_message("not-an-id", {b"d": payload}) is None
    assert entry_message(b"7-3", {b"x": payload}) is None  # no payload field
    assert entry_message(b"7-3", {b"d": b'{"a":' * 1000}) is None  # RecursionError inside
    assert entry_message(b"7-3", {b"d": b""}) is None


def test_the_report_names_dead_producers_and_skipped_entries() -> None:
    row = FeedRow(
        feed="md:binance:ticker:BTC/USDT",
        run=1,
        stream_len=3,
        last_age_s=70.0,
        state="dead",
        errors=0,
    )
    dead = ExchangeRow("binance", 70.0, 0, None, (), Liveness("dead", 5.0, 15.0))
    text = render([row], "now", [dead], skipped=3)
    assert "binance: DEAD: last heartbeat 70.0s ago (over 15.0s = 3 x its 5.0s interval)" in text
    assert text.endswith("1 feed(s) at now\nskipped 3 undecodable or foreign stream entries\n")
    assert "skipped" not in render([row], "now", [dead])
    assert render([], "now", skipped=1).endswith(
        "skipped 1 undecodable or foreign stream entries\n"
    )
