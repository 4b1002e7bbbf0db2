"""A slow listener's mailbox is fair across feeds: feeds take turns, and what a stream
evicted is reported within a bounded number of turns (no I/O, turns counted)."""

from __future__ import annotations

from marketbus.consumers.delivery import TURN, Mailbox
from marketbus.consumers.events import Event, Gap, Stats, Update
from marketbus.consumers.sequencing import Position
from marketbus.shared.schema import Trade, Trades

FEEDS = [f"md:binance:trades:S{i}/USDT" for i in range(10)]


def trade(feed: str, seq: int) -> Trades:
    symbol = feed.rsplit(":", 1)[1]
    return Trades(
        exchange="binance",
        symbol=symbol,
        run=1,
        seq=seq,
        ts_ms=seq,
        recv_ns=0,
        trades=(Trade(id=str(seq), ts_ms=seq, price=1.0, amount=1.0, side=None),),
    )


class Streams:
    """Every feed's stream, holding seqs ``kept_from`` and up (older ones evicted)."""

    def __init__(self, last: int, kept_from: int) -> None:
        self.messages = {f: [trade(f, s) for s in range(kept_from, last + 1)] for f in FEEDS}

    async def read_back(
        self, feed: str, after: Position, upto: Position, count: int
    ) -> list[Update]:
        return [m for m in self.messages[feed] if after < m.position <= upto][:count]


def feed_of(item: Event) -> str:
    if isinstance(item, Gap):
        return item.feed
    assert isinstance(item, Trades)
    return f"md:binance:trades:{item.symbol}"


async def test_every_flooded_feed_gets_a_delivery_within_the_first_ten_turns() -> None:
    mailbox = Mailbox(Streams(2000, 1).read_back, Stats())
    for feed in FEEDS:  # the flood arrives one feed after the other
        for seq in range(1, 2001):
            mailbox.push(feed, trade(feed, seq), True)
    first_turns = [await mailbox.get() for _ in range(10 * TURN)]
    assert {feed_of(item) for item in first_turns if item is not None} == set(FEEDS)
    # per-feed order holds while feeds interleave
    seen: dict[str, int] = {}
    for _ in range(10 * TURN * 20):
        item = await mailbox.get()
        assert isinstance(item, Trades)
        feed = feed_of(item)
        assert item.seq > seen.get(feed, 0)
        seen[feed] = item.seq


async def test_eviction_notices_arrive_within_the_feeds_next_turn() -> None:
    stats = Stats()
    # the listener keeps 50 updates per feed in memory; the rest overflow to read-back,
    # and by the time it gets there the streams kept only seq 121 and up
    mailbox = Mailbox(Streams(200, 121).read_back, stats, max_pending=500)
    for seq in range(1, 201):
        for feed in FEEDS:
            mailbox.push(feed, trade(feed, seq), True)
    delivered = {feed: 0 for feed in FEEDS}
    gap_after: dict[str, int] = {}
    total = 0
    while (item := mailbox.get_nowait() or await mailbox.get()) is not None:
        feed = feed_of(item)
        if isinstance(item, Gap):
            assert (item.first_seq, item.last_seq, item.reason) == (51, 120, "delivery")
            gap_after[feed] = delivered[feed]
        else:
            delivered[feed] += 1
            total += 1
        if total == 10 * 130:
            break
    assert set(gap_after) == set(FEEDS)
    # within one turn of each feed: at most TURN of its updates came before its notice
    assert all(n <= TURN for n in gap_after.values()), gap_after
    assert stats.gaps == 10 and stats.missing == 10 * 70
    assert delivered == dict.fromkeys(FEEDS, 50 + 80)


async def test_a_probe_that_finds_nothing_reports_nothing_the_read_back_decides() -> None:
    feed = FEEDS[0]

    class Unreadable(Streams):
        """The front entry does not decode: one-entry probes come back empty."""

        async def read_back(
            self, feed: str, after: Position, upto: Position, count: int
        ) -> list[Update]:
            page = await super().read_back(feed, after, upto, count)
            return [m for m in page if m.seq != 41]

    stats = Stats()
    mailbox = Mailbox(Unreadable(60, 1).read_back, stats, max_pending=40)
    for seq in range(1, 61):
        mailbox.push(feed, trade(feed, seq), True)
    got = [await mailbox.get() for _ in range(60)]
    assert [m.seq for m in got if isinstance(m, Trades)] == [s for s in range(1, 61) if s != 41]
    # the page read reports the one entry it could not deliver, in its place, once
    gaps = [g for g in got if isinstance(g, Gap)]
    assert [(g.first_seq, g.last_seq) for g in gaps] == [(41, 41)] and stats.gaps == 1
    assert got.index(gaps[0]) == 40 and mailbox.get_nowait() is None
