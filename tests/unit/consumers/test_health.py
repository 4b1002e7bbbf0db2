"""Staleness of one feed (pure): quiet, producer events, and the reader's own link."""

from __future__ import annotations

from marketbus.consumers.engine import BufferSizes, Engine, Fetch
from marketbus.consumers.health import FeedHealth
from marketbus.shared.codecs import encode
from tests.unit.consumers.test_engine import TICKER, TRADES, Recorder, entries, ticker, trade


def test_a_lost_link_is_stale_at_once_with_its_reason_until_it_is_back() -> None:
    health = FeedHealth("f", 60.0, now=0.0)
    health.on_data(1.0)
    down = health.on_link_down("disconnected from Redis", 2.0)
    assert down is not None and down.stale and down.reason == "disconnected from Redis"
    assert health.stale and health.reason == "disconnected from Redis"
    assert health.on_data(3.0) is None and health.stale  # history while down: still stale
    assert health.check(500.0) is None and health.reason == "disconnected from Redis"
    up = health.on_link_up(4.0)
    assert up is not None and not up.stale and not health.stale


def test_a_link_back_after_a_long_silence_is_quiet_not_fresh() -> None:
    health = FeedHealth("f", 5.0, now=0.0)
    health.on_data(1.0)
    health.on_link_down("disconnected from Redis", 2.0)
    up = health.on_link_up(100.0)
    assert up is not None and up.stale and up.reason == "quiet"


def test_a_producer_report_outlives_the_link() -> None:
    health = FeedHealth("f", 60.0, now=0.0)
    health.on_producer("disconnected", "ws down", 1.0)
    down = health.on_link_down("subscriber stopped: ValueError: x", 2.0)
    assert down is not None and down.reason == "subscriber stopped: ValueError: x"
    up = health.on_link_up(3.0)
    assert up is not None and up.stale and up.reason == "disconnected"


def test_a_stopped_engine_reports_every_feed_stale_and_never_fresh_again() -> None:
    engine = Engine(clock=lambda: 10.0)
    recorder = Recorder()
    engine.add_sink(recorder)
    for feed in (TRADES, TICKER):
        engine.track(feed, BufferSizes())
        engine.on_subscribed(feed)
    for fetch in engine.take_fetches():
        history = [trade(1, 1)] if fetch.feed == TRADES else [ticker(1, 1)]
        engine.on_history(fetch, entries(history), done=True, stream_first=(1, 1))
    events = engine.on_stopped("subscriber stopped: ValueError: x")
    assert {e.feed for e in events} == {TRADES, TICKER}
    assert recorder.events == events
    engine.on_live(TRADES, encode(trade(1, 2)))  # late data does not make it live
    engine.on_subscribed(TRADES)
    for fetch in engine.take_fetches():
        engine.on_history(fetch, [], done=True, stream_first=(1, 1))
    assert engine.is_stale(TRADES) and engine.is_stale(TICKER)


def test_a_disconnected_feed_is_fresh_again_only_once_it_resynced() -> None:
    engine = Engine(clock=lambda: 10.0)
    engine.track(TRADES, BufferSizes())
    engine.on_subscribed(TRADES)
    engine.on_history(take_one(engine), entries([trade(1, 1)]), done=True, stream_first=(1, 1))
    engine.on_reconnected()
    assert engine.is_stale(TRADES)
    assert engine.feeds[TRADES].health.reason == "disconnected from Redis"
    engine.on_subscribed(TRADES)  # the new connection's confirmation
    resume = take_one(engine)
    assert engine.is_stale(TRADES)
    engine.on_history(resume, entries([trade(1, 2)]), done=True, stream_first=(1, 1))
    assert not engine.is_stale(TRADES)


def test_a_read_started_before_the_outage_does_not_end_it() -> None:
    engine = Engine(clock=lambda: 10.0)
    engine.track(TRADES, BufferSizes())
    engine.on_subscribed(TRADES)
    backfill = take_one(engine)
    engine.on_reconnected()
    engine.on_history(backfill, entries([trade(1, 1)]), done=True, stream_first=(1, 1))
    assert engine.is_stale(TRADES)


def take_one(engine: Engine) -> Fetch:
    [fetch] = engine.take_fetches()
    return fetch
