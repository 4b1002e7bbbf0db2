"""Inline delivery: callbacks called as the engine applies each update (no I/O)."""

from __future__ import annotations

import functools
import warnings

import msgspec
import pytest

from marketbus.consumers.delivery import InlineListener, check_inline
from marketbus.consumers.engine import BufferSizes, Engine
from marketbus.consumers.events import Event, Gap, Staleness, Update
from marketbus.shared.codecs import encode
from marketbus.shared.errors import ConfigError
from marketbus.shared.names import STREAM_FIELD_BYTES
from marketbus.shared.schema import Trade, Trades

TRADES = "md:binance:trades:BTC/USDT"
OTHER = "md:binance:trades:ETH/USDT"


def trade(seq: int, run: int = 1) -> Trades:
    return Trades(
        exchange="binance",
        symbol="BTC/USDT",
        run=run,
        seq=seq,
        ts_ms=seq,
        recv_ns=0,
        trades=(Trade(id=str(seq), ts_ms=seq, price=float(seq), amount=1.0, side="buy"),),
    )


def gap() -> Gap:
    return Gap(feed=TRADES, run=1, first_seq=2, last_seq=3, reason="missing")


def stale(feed: str) -> Staleness:
    return Staleness(feed=feed, stale=True, reason="quiet", age_s=1.0)


class Failures:
    def __init__(self) -> None:
        self.seen: list[tuple[Event, Exception]] = []

    def __call__(self, item: Event, exc: Exception) -> None:
        self.seen.append((item, exc))


def ready_engine(listener: InlineListener) -> Engine:
    """An engine with TRADES backfilled (empty stream) and *listener* as its sink."""
    engine = Engine()
    engine.add_sink(listener)
    engine.track(TRADES, msgspec.convert({}, BufferSizes))
    engine.on_subscribed(TRADES)
    [backfill] = engine.take_fetches()
    engine.on_history(backfill, [], done=True, stream_first=None)
    return engine


def test_each_update_is_delivered_before_the_next_is_applied() -> None:
    """Inline means: within the engine's call for one socket read, one update at a time,
    so a callback sees its buffer exactly at its update and every callback has run when
    the read path returns (before the transport can read again)."""
    seen: list[tuple[int, tuple[int, int] | None]] = []
    engine: Engine | None = None

    def on_message(update: Update) -> None:
        assert engine is not None
        seen.append((update.seq, engine.feeds[TRADES].last))

    engine = ready_engine(InlineListener(on_message, None, None, failed=Failures()))
    engine.on_live_batch([(TRADES.encode(), None, encode(trade(seq))) for seq in (1, 2, 3)])
    assert seen == [(1, (1, 1)), (2, (1, 2)), (3, (1, 3))]


def test_repaired_history_and_gaps_are_delivered_in_feed_order() -> None:
    order: list[str] = []
    listener = InlineListener(
        lambda u: order.append(f"update {u.seq}"),
        lambda g: order.append(f"gap {g.first_seq}..{g.last_seq}"),
        None,
        failed=Failures(),
    )
    engine = ready_engine(listener)
    engine.on_live_batch([(TRADES, None, encode(trade(1))), (TRADES, None, encode(trade(5)))])
    [repair] = engine.take_fetches()
    # 2, 4 and 5 are in the stream, 3 never was: reported as missing, in order
    history = [(f"1-{s}".encode(), {STREAM_FIELD_BYTES: encode(trade(s))}) for s in (2, 4, 5)]
    engine.on_history(repair, history, done=True, stream_first=(1, 1))
    assert order == ["update 1", "update 2", "gap 3..3", "update 4", "update 5"]


def test_feeds_filter_messages_and_staleness_but_not_gaps() -> None:
    got: list[object] = []
    listener = InlineListener(
        got.append, got.append, got.append, failed=Failures(), feeds=frozenset({TRADES})
    )
    listener.push(OTHER, trade(1), True)
    listener.push_event(stale(OTHER))
    listener.push(TRADES, trade(2), True)
    listener.push_event(stale(TRADES))
    listener.push_event(gap())  # as a mailbox does: gaps are not filtered
    assert got == [trade(2), stale(TRADES), gap()]


def test_an_error_goes_to_the_policy_with_its_item_and_delivery_goes_on() -> None:
    failures = Failures()
    seen: list[int] = []

    def picky(update: Update) -> None:
        if update.seq == 2:
            raise ValueError("strategy bug")
        seen.append(update.seq)

    def broken_gap(event: Gap) -> None:
        raise KeyError("gap bug")

    listener = InlineListener(picky, broken_gap, None, failed=failures)
    for seq in (1, 2, 3):
        listener.push(TRADES, trade(seq), True)
    listener.push_event(gap())
    assert seen == [1, 3]
    assert [(item, type(exc)) for item, exc in failures.seen] == [
        (trade(2), ValueError),
        (gap(), KeyError),
    ]


def test_an_awaitable_returned_inline_is_an_error_and_is_not_left_unawaited() -> None:
    failures = Failures()

    async def later() -> None:
        return None

    listener = InlineListener(lambda u: later(), None, None, failed=failures)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # "coroutine ... was never awaited" would fail
        listener.push(TRADES, trade(1), True)
    [(item, exc)] = failures.seen
    assert item == trade(1) and isinstance(exc, TypeError) and "delivery='queued'" in str(exc)


def test_close_stops_delivery() -> None:
    got: list[object] = []
    listener = InlineListener(got.append, got.append, got.append, failed=Failures())
    listener.close()
    listener.push(TRADES, trade(1), True)
    listener.push_event(gap())
    assert got == []


async def _async_callback(update: Update) -> None:
    return None


class _AsyncCallable:
    async def __call__(self, update: Update) -> None:
        return None


@pytest.mark.parametrize(
    "callback",
    [_async_callback, functools.partial(_async_callback), _AsyncCallable()],
    ids=["coroutine function", "partial", "async __call__"],
)
def test_coroutine_functions_are_refused(callback: object) -> None:
    with pytest.raises(ConfigError, match="delivery='queued'"):
        check_inline(None, callback)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="inline delivery calls plain functions"):
        InlineListener(None, None, callback, failed=Failures())  # type: ignore[arg-type]
    check_inline(print, None)  # plain callables pass
