"""What a reader trusts: the pure rules, and the engine holding a jump until the stream
backs it (no I/O: stream reads are handed in by hand)."""

from __future__ import annotations

import msgspec
from hypothesis import given
from hypothesis import strategies as st

from marketbus.consumers.engine import BufferSizes, Engine, Fetch
from marketbus.consumers.events import Gap
from marketbus.consumers.stream_reads import first_range
from marketbus.consumers.trust import confirmable, confirmed, from_future
from marketbus.shared.codecs import encode
from tests.unit.consumers.test_engine import (
    CANDLES,
    TRADES,
    Recorder,
    candle,
    entries,
    prices,
    trade,
)

NOW_MS = 1_700_000_000_000
FUTURE_RUN = 9_999_999_999_999


def ready(feed: str = TRADES) -> tuple[Engine, Recorder]:
    """An engine whose *feed* applied (1, 1)..(1, 3), at wall clock `NOW_MS`."""
    engine = Engine(wall_clock=lambda: NOW_MS / 1000)
    recorder = Recorder()
    engine.add_sink(recorder)
    engine.track(feed, BufferSizes())
    engine.on_subscribed(feed)
    [backfill] = engine.take_fetches()
    history = [trade(1, s) for s in (1, 2, 3)]
    engine.on_history(backfill, entries(history), done=True, stream_first=(1, 1))
    return engine, recorder


def take(engine: Engine) -> Fetch:
    [fetch] = engine.take_fetches()
    return fetch


@given(st.integers(0, 2 * NOW_MS), st.integers(0, 10**8))
def test_a_run_is_from_the_future_only_beyond_the_allowed_lead(run: int, lead: int) -> None:
    assert from_future(run, NOW_MS, lead) == (run - NOW_MS > lead)


def test_forming_candles_are_not_in_the_stream_so_not_confirmable() -> None:
    assert confirmable(trade(1, 1))
    assert confirmable(candle(1, 1, 0, closed=True))
    assert not confirmable(candle(1, 1, 0, closed=False))


def test_only_the_entry_at_the_claimed_position_confirms() -> None:
    assert confirmed((1, 5), (1, 5))
    assert not confirmed(None, (1, 5))
    assert not confirmed((1, 4), (1, 5))


def test_a_repair_reads_up_to_and_including_the_message_to_confirm() -> None:
    engine, _ = ready()
    engine.on_live(TRADES, encode(trade(1, 7)))
    fetch = take(engine)
    assert (fetch.after, fetch.before, fetch.confirm) == ((1, 3), (1, 7), (1, 7))
    bounds = first_range(fetch)
    assert (bounds.low, bounds.high) == ("(1-3", "1-7")


def test_a_forged_seq_jump_costs_only_itself() -> None:
    engine, recorder = ready()
    engine.on_live(TRADES, encode(trade(1, 3 + 1_000_000)))
    engine.on_live(TRADES, encode(trade(1, 4)))  # real, held behind the forgery
    repair = take(engine)
    engine.on_history(repair, entries([trade(1, 4)]), done=True, stream_first=(1, 1))
    engine.on_live(TRADES, encode(trade(1, 5)))
    assert prices(engine) == [1, 2, 3, 4, 5]
    assert engine.feeds[TRADES].last == (1, 5) and not engine.wants_fetches
    assert engine.stats.suspect == 1 and engine.stats.gaps == 0
    assert not [e for e in recorder.events if isinstance(e, Gap)]


def test_a_run_from_the_future_is_rejected_outright_even_from_the_stream() -> None:
    engine, _ = ready()
    engine.on_live(TRADES, encode(trade(FUTURE_RUN, 1)))
    assert not engine.wants_fetches and engine.stats.suspect == 1
    engine.on_live(TRADES, encode(trade(2, 1)))  # the real next run
    repair = take(engine)
    history = entries([trade(FUTURE_RUN, 1), trade(2, 1)])  # a forgery XADDed first
    engine.on_history(repair, history, done=True, stream_first=(1, 1))
    assert engine.feeds[TRADES].last == (2, 1) and engine.stats.suspect == 2


def test_a_jump_the_stream_backs_is_applied_as_the_stream_has_it() -> None:
    engine, recorder = ready()
    claimed = trade(1, 100)
    engine.on_live(TRADES, encode(claimed))
    repair = take(engine)
    [real] = claimed.trades
    authority = msgspec.structs.replace(
        claimed, trades=(msgspec.structs.replace(real, price=42.0),)
    )
    engine.on_history(repair, entries([authority]), done=True, stream_first=(1, 1))
    assert prices(engine) == [1, 2, 3, 42]
    [gap] = [e for e in recorder.events if isinstance(e, Gap)]
    assert (gap.first_seq, gap.last_seq, gap.reason) == (4, 99, "missing")
    assert engine.stats.suspect == 0


def test_a_suspect_held_during_the_first_backfill_is_dropped() -> None:
    engine = Engine(wall_clock=lambda: NOW_MS / 1000)
    engine.track(TRADES, BufferSizes())
    engine.on_subscribed(TRADES)
    backfill = take(engine)
    engine.on_live(TRADES, encode(trade(1, 1_000_000)))  # held while the backfill runs
    engine.on_history(backfill, entries([trade(1, 1), trade(1, 2)]), done=True, stream_first=(1, 1))
    repair = take(engine)
    assert repair.confirm == (1, 1_000_000)
    engine.on_history(repair, [], done=True, stream_first=(1, 1))
    engine.on_live(TRADES, encode(trade(1, 3)))
    assert prices(engine) == [1, 2, 3] and engine.stats.suspect == 1


def test_a_message_held_before_a_pattern_feed_backfills_must_be_confirmed() -> None:
    engine = Engine(wall_clock=lambda: NOW_MS / 1000)
    engine.add_pattern("md:binance:trades:*", BufferSizes())
    engine.on_live(TRADES, encode(trade(1, 1_000_000)))  # first sight: a forgery
    backfill = next(f for f in engine.take_fetches() if f.feed == TRADES)
    assert backfill.confirm == (1, 1_000_000) and backfill.initial
    engine.on_history(backfill, entries([trade(1, 1), trade(1, 2)]), done=True, stream_first=(1, 1))
    engine.on_live(TRADES, encode(trade(1, 3)))
    assert prices(engine) == [1, 2, 3] and engine.stats.suspect == 1


def test_a_given_up_read_confirms_nothing_and_drops_nothing() -> None:
    engine, _ = ready()
    engine.on_live(TRADES, encode(trade(1, 5)))
    engine.on_fetch_failed(take(engine), "NOPERM")
    assert prices(engine) == [1, 2, 3, 5] and engine.stats.suspect == 0


def test_a_forming_candle_jump_is_trusted_as_before() -> None:
    engine = Engine(wall_clock=lambda: NOW_MS / 1000)
    engine.track(CANDLES, BufferSizes())
    engine.on_subscribed(CANDLES)
    engine.on_history(take(engine), entries([candle(1, 1, 0, True)]), done=True, stream_first=None)
    engine.on_live(CANDLES, encode(candle(1, 5, 1, False)))
    repair = take(engine)
    assert repair.confirm is None
    engine.on_history(repair, [], done=True, stream_first=(1, 1))
    assert engine.feeds[CANDLES].last == (1, 5) and engine.stats.suspect == 0
