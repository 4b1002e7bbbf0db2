"""The sans-I/O engine: rules 1-5 driven by hand, no Redis."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from marketbus.consumers.buffers import CandleBuffer, TickerState, TradeBuffer
from marketbus.consumers.delivery import Mailbox
from marketbus.consumers.engine import BufferSizes, Engine, Entry, Fetch
from marketbus.consumers.events import Gap, Staleness, Update
from marketbus.shared.codecs import encode
from marketbus.shared.errors import NotSubscribedError
from marketbus.shared.names import STREAM_FIELD_BYTES, entry_id
from marketbus.shared.schema import OHLCV, Message, Status, Ticker, Trade, Trades

TRADES = "md:binance:trades:BTC/USDT"
TICKER = "md:binance:ticker:BTC/USDT"
CANDLES = "md:binance:ohlcv.1m:BTC/USDT"
STATUS = "md:binance:status"
M = 60_000


class Recorder:
    def __init__(self) -> None:
        self.updates: list[tuple[str, Update, bool]] = []
        self.events: list[Gap | Staleness] = []
        self.forgotten: list[str] = []

    def push(self, feed: str, message: Update, must: bool) -> None:
        self.updates.append((feed, message, must))

    def push_event(self, event: Gap | Staleness) -> None:
        self.events.append(event)

    def forget(self, feed: str) -> None:
        self.forgotten.append(feed)


def trade(run: int, seq: int) -> Trades:
    return Trades(
        exchange="binance",
        symbol="BTC/USDT",
        run=run,
        seq=seq,
        ts_ms=seq,
        recv_ns=0,
        trades=(Trade(id=str(seq), ts_ms=seq, price=float(seq), amount=1.0, side="buy"),),
    )


def ticker(run: int, seq: int) -> Ticker:
    return Ticker(
        exchange="binance", symbol="BTC/USDT", run=run, seq=seq, ts_ms=seq, recv_ns=0, last=seq
    )


def candle(run: int, seq: int, minute: int, closed: bool) -> OHLCV:
    return OHLCV(
        exchange="binance",
        symbol="BTC/USDT",
        run=run,
        seq=seq,
        ts_ms=minute * M,
        recv_ns=0,
        timeframe="1m",
        open=1.0,
        high=1.0,
        low=1.0,
        close=float(seq),
        volume=1.0,
        closed=closed,
    )


def status(run: int, seq: int, event: Any, feed: str | None = None) -> Status:
    return Status(
        exchange="binance", run=run, seq=seq, ts_ms=None, recv_ns=0, event=event, feed=feed
    )


def entries(messages: Iterable[Message]) -> list[Entry]:
    return [(entry_id(m.run, m.seq).encode(), {STREAM_FIELD_BYTES: encode(m)}) for m in messages]


def setup(feed: str = TRADES, **sizes: object) -> tuple[Engine, Recorder]:
    engine = Engine()
    recorder = Recorder()
    engine.add_sink(recorder)
    engine.track(feed, msgspec.convert(sizes, BufferSizes))
    return engine, recorder


def take(engine: Engine) -> Fetch:
    fetches = engine.take_fetches()
    assert len(fetches) == 1, fetches
    return fetches[0]


def prices(engine: Engine, feed: str = TRADES) -> list[float]:
    buffer = engine.feeds[feed].buffer
    return [t.price for t in buffer]  # type: ignore[union-attr]


def test_live_is_held_until_backfill_then_newer_held_are_applied() -> None:
    engine, rec = setup()
    engine.on_subscribed(TRADES)
    fetch = take(engine)
    assert fetch.after is None and fetch.count == 10_000 and fetch.initial
    engine.on_live(TRADES, encode(trade(1, 3)))
    engine.on_live(TRADES, encode(trade(1, 4)))
    assert prices(engine) == []
    engine.on_history(
        fetch, entries([trade(1, 1), trade(1, 2), trade(1, 3)]), done=True, stream_first=(1, 1)
    )
    assert prices(engine) == [1, 2, 3, 4]
    assert engine.stats.duplicates == 1
    # history of the first backfill is not delivered; live updates are
    assert [m.seq for _, m, _ in rec.updates] == [4]


def test_gap_within_run_requests_exact_range_and_repairs() -> None:
    engine, _ = setup()
    engine.on_subscribed(TRADES)
    engine.on_history(take(engine), entries([trade(1, 1)]), done=True, stream_first=(1, 1))
    engine.on_live(TRADES, encode(trade(1, 4)))
    engine.on_live(TRADES, encode(trade(1, 5)))
    fetch = take(engine)
    assert (fetch.after, fetch.before, fetch.count) == ((1, 1), (1, 4), None)
    # the read goes up to and including the held message, which the stream confirms
    history = entries([trade(1, 2), trade(1, 3), trade(1, 4)])
    engine.on_history(fetch, history, done=True, stream_first=(1, 1))
    assert prices(engine) == [1, 2, 3, 4, 5]
    assert engine.stats.repairs == 1 and engine.stats.gaps == 0


def test_what_the_stream_evicted_is_reported_as_gap() -> None:
    engine, rec = setup()
    engine.on_subscribed(TRADES)
    engine.on_history(take(engine), entries([trade(1, 1)]), done=True, stream_first=(1, 1))
    engine.on_live(TRADES, encode(trade(1, 10)))
    fetch = take(engine)
    engine.on_history(
        fetch,
        entries([trade(1, 7), trade(1, 8), trade(1, 9), trade(1, 10)]),
        done=True,
        stream_first=(1, 7),
    )
    assert prices(engine) == [1, 7, 8, 9, 10]
    gaps = [e for e in rec.events if isinstance(e, Gap)]
    assert gaps == [Gap(feed=TRADES, run=1, first_seq=2, last_seq=6, reason="evicted")]
    assert engine.stats.missing == 5 and not engine.wants_fetches


def test_never_written_seqs_are_reported_missing_without_refetch_loop() -> None:
    engine, rec = setup()
    engine.on_subscribed(TRADES)
    engine.on_history(take(engine), entries([trade(1, 1)]), done=True, stream_first=(1, 1))
    engine.on_live(TRADES, encode(trade(1, 3)))
    engine.on_history(take(engine), entries([trade(1, 3)]), done=True, stream_first=(1, 1))
    assert prices(engine) == [1, 3] and not engine.wants_fetches
    assert rec.events == [Gap(feed=TRADES, run=1, first_seq=2, last_seq=2, reason="missing")]


def test_new_run_reads_old_tail_and_new_head() -> None:
    engine, rec = setup()
    engine.on_subscribed(TRADES)
    engine.on_history(take(engine), entries([trade(1, 1)]), done=True, stream_first=(1, 1))
    engine.on_live(TRADES, encode(trade(2, 3)))
    fetch = take(engine)
    assert (fetch.after, fetch.before) == ((1, 1), (2, 3))
    engine.on_history(
        fetch,
        entries([trade(1, 2), trade(2, 1), trade(2, 2), trade(2, 3)]),
        done=True,
        stream_first=(1, 1),
    )
    assert prices(engine) == [1, 2, 1, 2, 3] and rec.events == []


def test_resubscription_resumes_from_last_applied() -> None:
    engine, rec = setup()
    engine.on_subscribed(TRADES)
    engine.on_history(take(engine), entries([trade(1, 1)]), done=True, stream_first=(1, 1))
    engine.on_subscribed(TRADES)  # e.g. redis-py reconnected and re-subscribed
    fetch = take(engine)
    assert (fetch.after, fetch.before, fetch.count, fetch.initial) == ((1, 1), None, None, False)
    engine.on_live(TRADES, encode(trade(1, 4)))
    engine.on_history(
        fetch, entries([trade(1, 2), trade(1, 3), trade(1, 4)]), done=True, stream_first=(1, 1)
    )
    assert prices(engine) == [1, 2, 3, 4]
    assert [m.seq for _, m, _ in rec.updates] == [2, 3, 4]  # resumed data is delivered
    assert engine.stats.resumes == 1


def test_undecodable_payload_is_counted_and_skipped() -> None:
    engine, _ = setup()
    engine.on_subscribed(TRADES)
    engine.on_history(take(engine), [], done=True, stream_first=None)
    engine.on_live(TRADES, b"{not json")
    engine.on_live(TRADES, b"\xc1")
    engine.on_live(TRADES, encode(ticker(1, 1)))  # wrong type for the feed
    engine.on_live(TRADES, encode(trade(1, 1)))
    assert engine.stats.undecodable == 2 and engine.stats.rejected == 1
    assert prices(engine) == [1]


def test_state_feed_jump_reads_only_its_own_entry_to_confirm_it() -> None:
    engine, rec = setup(TICKER)
    engine.on_subscribed(TICKER)
    fetch = take(engine)
    assert fetch.count == 1
    engine.on_history(fetch, entries([ticker(1, 5)]), done=True, stream_first=(1, 1))
    engine.on_live(TICKER, encode(ticker(1, 9)))
    repair = take(engine)  # the jump waits for the stream (nothing skipped is read)
    assert (repair.after, repair.confirm, repair.count) == ((1, 5), (1, 9), 1)
    assert engine.feeds[TICKER].buffer.latest.last == 5.0  # type: ignore[union-attr]
    engine.on_history(repair, entries([ticker(1, 9)]), done=True, stream_first=(1, 1))
    assert not engine.wants_fetches and rec.events == []
    assert engine.feeds[TICKER].buffer.latest.last == 9.0  # type: ignore[union-attr]
    engine.on_subscribed(TICKER)
    assert take(engine).count == 1  # resume reads only the newest entry


def test_candle_stream_holes_are_normal_but_missing_periods_are_gaps() -> None:
    engine, rec = setup(CANDLES)
    engine.on_subscribed(CANDLES)
    engine.on_history(
        take(engine), entries([candle(1, 3, 0, True)]), done=True, stream_first=(1, 3)
    )
    engine.on_live(CANDLES, encode(candle(1, 4, 1, False)))
    engine.on_live(CANDLES, encode(candle(1, 9, 2, False)))  # forming updates 5..8 missed
    fetch = take(engine)
    engine.on_history(fetch, entries([candle(1, 6, 1, True)]), done=True, stream_first=(1, 3))
    assert rec.events == []  # only forming updates were lost
    engine.on_live(CANDLES, encode(candle(1, 20, 6, False)))  # minutes 3..5 missed
    fetch = take(engine)
    engine.on_history(fetch, entries([candle(1, 15, 5, True)]), done=True, stream_first=(1, 15))
    gap = rec.events[0]
    assert isinstance(gap, Gap) and gap.reason == "evicted" and gap.detail == "2 candle(s)"
    buf = engine.feeds[CANDLES].buffer
    assert isinstance(buf, CandleBuffer)
    assert [c.ts_ms // M for c in buf] == [0, 1, 2, 5, 6]


def test_producer_gap_status_is_surfaced_and_history_only_sets_state() -> None:
    engine, rec = setup(STATUS)
    engine.track(TRADES, BufferSizes())
    engine.on_subscribed(STATUS)
    history = [status(1, 1, "gap", TRADES), status(1, 2, "disconnected")]
    engine.on_history(take(engine), entries(history), done=True, stream_first=(1, 1))
    assert [type(e) for e in rec.events] == [Staleness]  # old gap not replayed
    assert engine.feeds[TRADES].health.stale
    engine.on_live(STATUS, encode(status(1, 3, "gap", TRADES)))
    gap = rec.events[-1]
    assert isinstance(gap, Gap) and gap.reason == "producer" and gap.feed == TRADES
    engine.on_live(STATUS, encode(status(1, 4, "connected")))
    assert not engine.feeds[TRADES].health.stale


def test_pattern_discovers_new_feed_and_backfills_it() -> None:
    engine, _ = setup(STATUS)
    engine.add_pattern("md:binance:*", BufferSizes(trades=5))
    engine.on_live(TRADES, encode(trade(1, 7)))
    fetch = take(engine)
    assert fetch.feed == TRADES and fetch.count == 5 and fetch.before == (1, 7)
    engine.on_history(fetch, entries([trade(1, 6), trade(1, 7)]), done=True, stream_first=(1, 1))
    assert prices(engine) == [6, 7]
    engine.on_live("md:other:trades:X", encode(trade(1, 1)))  # no pattern: ignored
    assert "md:other:trades:X" not in engine.feeds


def test_held_overflow_drops_oldest_which_the_stream_restores() -> None:
    engine, _ = setup(hold=2)
    engine.on_subscribed(TRADES)
    fetch = take(engine)
    for seq in range(1, 6):
        engine.on_live(TRADES, encode(trade(1, seq)))
    assert engine.stats.held_dropped == 3
    engine.on_history(fetch, [], done=True, stream_first=(1, 1))  # empty stream at first
    # 4 and 5 were held; seq 4 was first seen -> applied (nothing before to compare)
    assert prices(engine) == [4, 5]


def test_staleness_from_quiet_feed(monkeypatch: object) -> None:
    now = [0.0]
    engine = Engine(clock=lambda: now[0])
    rec = Recorder()
    engine.add_sink(rec)
    engine.track(TRADES, BufferSizes(stale_after_s=5))
    engine.on_subscribed(TRADES)
    engine.on_history(take(engine), [], done=True, stream_first=None)
    engine.on_live(TRADES, encode(trade(1, 1)))
    now[0] = 4.0
    engine.check_health()
    assert rec.events == []
    now[0] = 6.5
    engine.check_health()
    assert rec.events == [Staleness(feed=TRADES, stale=True, reason="quiet", age_s=6.5)]
    engine.on_live(TRADES, encode(trade(1, 2)))
    assert rec.events[-1] == Staleness(feed=TRADES, stale=False, reason="", age_s=0.0)


OKX_TRADES = "md:okx:trades:BTC/USDT"


def test_feed_found_by_pattern_brings_its_status_channel_along() -> None:
    engine = Engine()
    engine.add_pattern("md:*:trades:*", BufferSizes())  # does not cover md:*:status
    engine.on_live(TRADES, encode(trade(1, 1)))
    assert STATUS in engine.feeds and engine.take_subscriptions() == [STATUS]
    assert [f.feed for f in engine.take_fetches()] == [TRADES]  # the status syncs once subscribed
    engine.on_subscribed(STATUS)
    assert [f.feed for f in engine.take_fetches()] == [STATUS]


def test_status_channel_a_pattern_covers_is_synced_without_subscribing() -> None:
    engine = Engine()
    engine.add_pattern("md:binance:*", BufferSizes())
    engine.on_live(TRADES, encode(trade(1, 1)))
    assert engine.take_subscriptions() == []
    assert sorted(f.feed for f in engine.take_fetches()) == sorted([TRADES, STATUS])


def test_confirmed_subscription_to_a_pattern_match_tracks_and_backfills_it() -> None:
    """A cluster subscriber subscribes to pattern matches by name: the confirmation is
    the first the engine hears of them."""
    engine = Engine()
    engine.add_pattern("md:*:trades:*", BufferSizes(trades=7))
    engine.on_subscribed(TRADES)
    fetch = take(engine)
    assert (fetch.feed, fetch.count, fetch.initial) == (TRADES, 7, True)
    engine.on_subscribed("md:binance:ticker:BTC/USDT")  # no pattern covers it: ignored
    assert "md:binance:ticker:BTC/USDT" not in engine.feeds and not engine.wants_fetches


def test_drop_releases_the_status_channel_with_the_last_feed_of_its_exchange() -> None:
    engine = Engine()
    for name in (TRADES, TICKER, STATUS, OKX_TRADES, "md:okx:status"):
        engine.track(name, BufferSizes())
    assert engine.drop([TRADES]) == [TRADES]
    assert engine.drop([TICKER]) == [TICKER, STATUS]
    assert sorted(engine.feeds) == ["md:okx:status", OKX_TRADES]


def test_dropped_feed_is_not_rediscovered_by_a_pattern_until_tracked_again() -> None:
    engine = Engine()
    engine.add_pattern("md:binance:*", BufferSizes())
    engine.on_live(TRADES, encode(trade(1, 1)))
    engine.take_fetches()
    # a pattern covers the status channel: it stays although no feed is left
    assert engine.drop([TRADES]) == [TRADES]
    engine.on_live(TRADES, encode(trade(1, 2)))
    engine.on_subscribed(TRADES)
    assert TRADES not in engine.feeds and not engine.wants_fetches
    engine.track(TRADES, BufferSizes())
    engine.on_live(TRADES, encode(trade(1, 3)))
    assert TRADES in engine.feeds


# -- the batch path (on_live_batch) ---------------------------------------------------


def _ready(feed: str) -> tuple[Engine, Recorder]:
    engine, recorder = setup(feed, candles=4, trades=50)
    engine.on_subscribed(feed)
    engine.on_history(take(engine), [], done=True, stream_first=None)
    return engine, recorder


def _state_of(engine: Engine, recorder: Recorder, feed: str) -> tuple[object, ...]:
    """Everything observable after live messages: counters, position, buffer, output."""
    buffer = engine.feeds[feed].buffer
    content: object
    if isinstance(buffer, CandleBuffer):
        content = buffer.rows()
    elif isinstance(buffer, TradeBuffer):
        content = buffer.trades()
    else:
        assert isinstance(buffer, TickerState)
        content = buffer.latest
    return (
        msgspec.structs.asdict(engine.stats),
        engine.feeds[feed].last,
        engine.feeds[feed].syncing,
        content,
        [(f, m.position, must) for f, m, must in recorder.updates],
        recorder.events,
        [(f.feed, f.after, f.before, f.count) for f in engine.take_fetches()],
    )


@given(
    st.sampled_from([TRADES, TICKER, CANDLES]),
    st.lists(
        st.one_of(
            st.tuples(st.integers(1, 2), st.integers(1, 12), st.booleans()),
            st.just("garbage"),
        ),
        max_size=30,
    ),
    st.booleans(),
)
def test_inline_apply_matches_the_general_path(
    feed: str, script: list[tuple[int, int, bool] | str], as_bytes: bool
) -> None:
    """Whatever arrives (in order, jumps, duplicates, new runs, garbage), applying a batch
    inline ends exactly where the general per-message path ends."""
    payloads = []
    for item in script:
        if isinstance(item, str):
            payloads.append(b"{garbage")
            continue
        run, seq, closed = item
        message: Message
        if feed == TRADES:
            message = trade(run, seq)
        elif feed == TICKER:
            message = ticker(run, seq)
        else:
            message = candle(run, seq, seq // 3, closed)
        payloads.append(encode(message))
    channel: str | bytes = feed.encode() if as_bytes else feed
    fast, fast_recorder = _ready(feed)
    fast.on_live_batch([(channel, None, p) for p in payloads])
    general, general_recorder = _ready(feed)
    general.feeds[feed].live_type = None  # never inline: every message takes _on_message
    for payload in payloads:
        general.on_live(feed, payload)
    assert _state_of(fast, fast_recorder, feed) == _state_of(general, general_recorder, feed)


def test_a_batch_applies_in_order_under_bytes_or_str_channel_names() -> None:
    engine, recorder = _ready(TRADES)
    engine.on_live_batch(
        [
            (TRADES.encode(), None, encode(trade(1, 1))),
            (TRADES, b"md:*", encode(trade(1, 2))),
            (TRADES.encode(), None, b""),  # empty: undecodable, skipped
            (TRADES.encode(), None, encode(trade(1, 3))),
        ]
    )
    assert prices(engine) == [1.0, 2.0, 3.0]
    assert engine.stats.received == 4 and engine.stats.applied == 3
    assert engine.stats.undecodable == 1
    assert [must for _, _, must in recorder.updates] == [True, True, True]


def test_dropped_feed_leaves_the_channel_index() -> None:
    engine, _ = _ready(TRADES)
    engine.drop([TRADES])
    engine.on_live_batch([(TRADES.encode(), None, encode(trade(1, 1)))])
    assert TRADES not in engine.feeds and engine.stats.applied == 0


# -- what the shell reads, and what goes away with a feed -----------------------------


def test_asking_for_a_feed_as_another_kind_names_the_feed_and_its_kind() -> None:
    engine = Engine()
    engine.track(TRADES, BufferSizes())
    assert isinstance(engine.buffer_of(TRADES, TradeBuffer), TradeBuffer)
    with pytest.raises(TypeError, match=r"'md:binance:trades:BTC/USDT' is a trades feed"):
        engine.buffer_of(TRADES, CandleBuffer)
    with pytest.raises(NotSubscribedError, match="not subscribed"):
        engine.buffer_of(TICKER, TickerState)


async def _nothing_to_read_back(
    feed: str, after: tuple[int, int], upto: tuple[int, int], count: int
) -> list[Update]:
    return []


def test_feeds_coming_and_going_leave_nothing_behind() -> None:
    """Subscribing to and unsubscribing from many feeds: what the engine and a listener's
    mailbox keep per feed returns to where it was."""
    engine = Engine()
    mailbox = Mailbox(_nothing_to_read_back, engine.stats)
    engine.add_sink(mailbox)

    def kept() -> tuple[object, ...]:
        return (engine.excluded, engine.ignored, dict(engine.feeds), mailbox.feeds_held)

    baseline = kept()
    for i in range(300):
        name = f"md:binance:trades:C{i}/USDT"
        engine.follow([name], BufferSizes())
        for channel in (STATUS, name):
            engine.on_subscribed(channel)
        for fetch in engine.take_fetches():
            engine.on_history(fetch, [], done=True, stream_first=None)
        engine.on_live(name, encode(trade(1, 1)))
        if i % 2:  # half of them still waiting in the mailbox when dropped
            while mailbox.get_nowait() is not None:
                pass
        assert engine.drop([name]) == [name, STATUS]
    while mailbox.get_nowait() is not None:
        pass
    assert kept() == baseline


def test_only_what_a_pattern_would_bring_back_is_remembered_as_dropped() -> None:
    engine = Engine()
    engine.add_pattern("md:binance:*", BufferSizes())
    engine.track(OKX_TRADES, BufferSizes())
    engine.track(TRADES, BufferSizes())
    engine.drop([OKX_TRADES, TRADES])
    assert engine.excluded == {TRADES}  # no pattern covers okx: nothing to remember
    engine.track(TRADES, BufferSizes())
    assert engine.excluded == frozenset()


def test_messages_on_unknown_channels_are_counted_always_and_logged_at_a_bounded_rate(
    caplog: pytest.LogCaptureFixture,
) -> None:
    engine = Engine(max_ignored=5)
    engine.add_pattern("md:binance:*", BufferSizes())
    payload = encode(trade(1, 1))
    with caplog.at_level(logging.WARNING, logger="marketbus.consumers"):
        for _repeat in range(2):
            engine.on_live_batch([(f"md:okx:trades:C{i}", None, payload) for i in range(3000)])
    assert engine.stats.ignored == 6000 and engine.ignored == 5
    logged = [r for r in caplog.records if "ignoring channel" in r.message]
    # the 5 remembered ones once each, then the 1st, 1001st, ... of the 5990 others
    assert len(logged) == 5 + 6
