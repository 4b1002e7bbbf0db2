"""A listener's mailbox: order, conflation, read-back on overflow, events first (no I/O)."""

from __future__ import annotations

import asyncio

from marketbus.consumers.delivery import Mailbox, ReadBackError
from marketbus.consumers.events import Event, Gap, Staleness, Stats, Update
from marketbus.consumers.sequencing import Position
from marketbus.shared.schema import Ticker, Trade, Trades

TRADES = "md:binance:trades:BTC/USDT"
TICKER = "md:binance:ticker:BTC/USDT"


def trade(seq: int) -> Trades:
    return Trades(
        exchange="binance",
        symbol="BTC/USDT",
        run=1,
        seq=seq,
        ts_ms=seq,
        recv_ns=0,
        trades=(Trade(id=str(seq), ts_ms=seq, price=float(seq), amount=1.0, side=None),),
    )


def ticker(seq: int) -> Ticker:
    return Ticker(exchange="binance", symbol="BTC/USDT", run=1, seq=seq, ts_ms=seq, recv_ns=0)


class Stream:
    """The feed's stream as `Mailbox` reads it back: (after, upto] in pages."""

    def __init__(self, messages: list[Update]) -> None:
        self.messages = messages
        self.reads = 0

    async def read_back(
        self, feed: str, after: Position, upto: Position, count: int
    ) -> list[Update]:
        self.reads += 1
        return [m for m in self.messages if after < m.position <= upto][:count]


def drain(mailbox: Mailbox) -> list[Event]:
    items = []
    while (item := mailbox.get_nowait()) is not None:
        items.append(item)
    return items


def seqs(items: list[Event]) -> list[tuple[str, int]]:
    return [(type(i).__name__, i.seq) for i in items if isinstance(i, Trades | Ticker)]


def test_must_deliver_updates_keep_feed_order_and_state_updates_are_conflated() -> None:
    stats = Stats()
    mailbox = Mailbox(Stream([]).read_back, stats)
    for seq in (1, 2):
        mailbox.push(TRADES, trade(seq), True)
        mailbox.push(TICKER, ticker(seq), False)
    mailbox.push(TICKER, ticker(3), False)
    mailbox.push(TRADES, trade(3), True)
    assert seqs(drain(mailbox)) == [("Trades", 1), ("Trades", 2), ("Trades", 3), ("Ticker", 3)]
    assert stats.conflated == 2 and mailbox.pending == 0


def test_events_come_first_and_staleness_respects_the_feed_filter() -> None:
    mailbox = Mailbox(Stream([]).read_back, Stats(), feeds=frozenset({TRADES}))
    mailbox.push(TRADES, trade(1), True)
    mailbox.push(TICKER, ticker(1), False)  # not a feed of this listener
    gap = Gap(feed=TRADES, run=1, first_seq=2, last_seq=3, reason="missing")
    mailbox.push_event(gap)
    mailbox.push_event(Staleness(feed=TICKER, stale=True, reason="quiet", age_s=None))
    assert drain(mailbox) == [gap, trade(1)]


async def test_overflow_reads_back_from_the_stream_in_order() -> None:
    history: list[Update] = [trade(seq) for seq in range(1, 8)]
    stream, stats = Stream(history), Stats()
    mailbox = Mailbox(stream.read_back, stats, max_pending=2)
    for message in history:
        mailbox.push(TRADES, message, True)
    assert mailbox.pending == 2
    got = [await mailbox.get() for _ in history]
    assert got == history
    assert stats.refetched == 5 and stats.gaps == 0 and stream.reads == 1


async def test_what_the_stream_evicted_before_the_read_back_is_a_delivery_gap() -> None:
    stream, stats = Stream([trade(seq) for seq in (1, 2, 6, 7)]), Stats()  # 3..5 evicted
    mailbox = Mailbox(stream.read_back, stats, max_pending=2)
    for seq in range(1, 8):
        mailbox.push(TRADES, trade(seq), True)
    got = [await mailbox.get() for _ in range(5)]
    gap = Gap(feed=TRADES, run=1, first_seq=3, last_seq=5, reason="delivery")
    assert got == [trade(1), trade(2), gap, trade(6), trade(7)]
    assert stats.missing == 3 and mailbox.get_nowait() is None


async def test_a_waiting_get_is_woken_by_a_push_and_by_close() -> None:
    mailbox = Mailbox(Stream([]).read_back, Stats())
    waiting = asyncio.create_task(mailbox.get())
    await asyncio.sleep(0)  # let it wait
    mailbox.push(TRADES, trade(1), True)
    async with asyncio.timeout(1):
        assert await waiting == trade(1)
    waiting = asyncio.create_task(mailbox.get())
    await asyncio.sleep(0)
    mailbox.close()
    async with asyncio.timeout(1):
        assert await waiting is None


class RefusingStream(Stream):
    """A stream whose read-back Redis refuses (e.g. NOPERM), as the reader reports it."""

    async def read_back(
        self, feed: str, after: Position, upto: Position, count: int
    ) -> list[Update]:
        self.reads += 1
        raise ReadBackError("ResponseError: NOPERM no permissions")


async def test_a_read_back_that_fails_is_a_delivery_gap_not_a_crash() -> None:
    stream, stats = RefusingStream([]), Stats()
    mailbox = Mailbox(stream.read_back, stats, max_pending=2)
    for seq in range(1, 6):
        mailbox.push(TRADES, trade(seq), True)
    got = [await mailbox.get() for _ in range(3)]
    assert got[:2] == [trade(1), trade(2)]
    gap = got[2]
    assert isinstance(gap, Gap) and gap.reason == "delivery" and "NOPERM" in gap.detail
    assert stats.missing == 3 and stats.gaps == 1 and stream.reads == 1
    mailbox.push(TRADES, trade(6), True)  # the feed goes on from memory
    assert await mailbox.get() == trade(6)


def test_a_forgotten_feed_leaves_the_mailbox_once_delivered() -> None:
    mailbox = Mailbox(Stream([]).read_back, Stats())
    mailbox.push(TRADES, trade(1), True)
    mailbox.push(TICKER, ticker(1), False)
    mailbox.forget(TICKER)
    mailbox.forget(TRADES)
    mailbox.forget("md:binance:trades:never/SEEN")
    assert mailbox.feeds_held == 2  # what they hold is still delivered
    assert seqs(drain(mailbox)) == [("Trades", 1), ("Ticker", 1)]
    assert mailbox.feeds_held == 0
    mailbox.push(TRADES, trade(2), True)  # followed again: a new box
    assert mailbox.feeds_held == 1 and drain(mailbox) == [trade(2)]
