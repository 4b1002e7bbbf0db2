"""Forged or buggy ticker and book messages cost at most themselves (no I/O).

A stream is modelled as a sorted list of entries; the engine's stream reads are served
from it through the shell's own range logic (`marketbus.consumers.stream_reads`), so
what is checked is what a subscriber on a real Redis would do.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from hypothesis import given, settings
from hypothesis import strategies as st

from marketbus.consumers.engine import BufferSizes, Engine, Entry, Fetch
from marketbus.consumers.events import Gap
from marketbus.consumers.stream_reads import Range, first_range, next_range
from marketbus.consumers.trust import MAX_RUN_AHEAD_S
from marketbus.shared.codecs import encode
from marketbus.shared.names import parse_entry_id
from marketbus.shared.schema import Book, Message, Ticker
from tests.unit.consumers.test_engine import TICKER, Recorder, entries

BOOK = "md:binance:book:BTC/USDT"
NOW_MS = 1_700_000_000_000
RUN = NOW_MS - 60_000
"""The real producer's run: it started a minute before the reader's clock."""
FORGED_PRICE = -1.0


def state(feed: str, run: int, seq: int, price: float) -> Message:
    """A ticker or book message of *feed* whose price is *price*."""
    if feed == TICKER:
        return Ticker(
            exchange="binance",
            symbol="BTC/USDT",
            run=run,
            seq=seq,
            ts_ms=seq,
            recv_ns=0,
            last=price,
        )
    return Book(
        exchange="binance",
        symbol="BTC/USDT",
        run=run,
        seq=seq,
        ts_ms=seq,
        recv_ns=0,
        depth=1,
        bids=((price, 1.0),),
        asks=(),
    )


def price_of(message: Message) -> float:
    if isinstance(message, Ticker):
        assert message.last is not None
        return message.last
    assert isinstance(message, Book)
    return message.bids[0][0]


def _bound(bound: str, low: bool) -> tuple[tuple[int, int], bool]:
    """A Redis range bound as ``(position, inclusive)``."""
    if bound == "-":
        return (0, 0), True
    if bound == "+":
        return (2**63, 2**63), True
    exclusive = bound.startswith("(")
    return parse_entry_id(bound.lstrip("(")), not exclusive


@dataclass
class Stream:
    """One feed's stream, as XADD leaves it: entries in ID order."""

    messages: list[Message] = field(default_factory=list)

    def read(self, bounds: Range) -> list[Entry]:
        low, low_in = _bound(bounds.low, True)
        high, high_in = _bound(bounds.high, False)
        inside = [
            m
            for m in self.messages
            if (m.position > low or (low_in and m.position == low))
            and (m.position < high or (high_in and m.position == high))
        ]
        page = inside[-bounds.count :][::-1] if bounds.newest_first else inside[: bounds.count]
        return entries(page)

    def serve(self, engine: Engine, fetch: Fetch) -> None:
        """Perform *fetch* as the shell does and hand the pages to the engine."""
        first = self.messages[0].position if self.messages else None
        bounds: Range | None = first_range(fetch)
        while bounds is not None:
            page = self.read(bounds)
            if bounds.newest_first:
                page = page[::-1]  # handed over oldest first
            following = next_range(bounds, page)
            engine.on_history(fetch, page, done=following is None, stream_first=first)
            bounds = following


class Bus:
    """A producer, a forger and one reader of *feed*; stream reads wait until served."""

    def __init__(self, feed: str) -> None:
        self.feed = feed
        self.engine = Engine(wall_clock=lambda: NOW_MS / 1000)
        self.recorder = Recorder()
        self.engine.add_sink(self.recorder)
        self.engine.track(feed, BufferSizes())
        self.stream = Stream()
        self.seq = 0
        self.forged = 0
        self.pending: Fetch | None = None
        self.engine.on_subscribed(feed)
        self._collect()

    def _collect(self) -> None:
        fetches = self.engine.take_fetches()
        if fetches:
            self.pending = fetches[-1]  # the newest read of a feed wins (FetchQueue)

    def publish(self, *, live: bool) -> None:
        """The real producer's next message; *live* False: its PUBLISH was lost."""
        self.seq += 1
        message = state(self.feed, RUN, self.seq, float(self.seq))
        self.stream.messages.append(message)
        if live:
            self.offer(message)

    def forge(self, how: str) -> None:
        """PUBLISH a message the stream does not have."""
        self.forged += 1
        run, seq = (RUN, self.seq + 1_000_000) if how == "seq" else (RUN + 1, 1)
        self.offer(state(self.feed, run, seq, FORGED_PRICE))

    def offer(self, message: Message) -> None:
        self.engine.on_live_batch([(self.feed.encode(), None, encode(message))])
        self._collect()

    def serve(self) -> None:
        fetch, self.pending = self.pending, None
        if fetch is not None:
            self.stream.serve(self.engine, fetch)
            self._collect()

    def shown(self) -> float | None:
        buffer = self.engine.feeds[self.feed].buffer
        latest = buffer.latest  # type: ignore[union-attr]
        return None if latest is None else price_of(latest)


EVENTS = st.sampled_from(["real", "real", "real", "lost", "forged seq", "forged run", "serve"])


@settings(max_examples=200, deadline=None)
@given(st.sampled_from([TICKER, BOOK]), st.lists(EVENTS, max_size=40))
def test_forged_states_are_never_shown_and_every_real_one_is(feed: str, script: list[str]) -> None:
    bus = Bus(feed)
    bus.serve()  # the first backfill
    for event in script:
        if event == "serve":
            bus.serve()
        elif event.startswith("forged"):
            bus.forge(event.removeprefix("forged "))
        else:
            bus.publish(live=event == "real")
            if event == "real":  # a real message's state is shown once the reads are done
                while bus.pending is not None:
                    bus.serve()
                assert bus.shown() == float(bus.seq)
    while bus.pending is not None:
        bus.serve()
    shown = [price_of(m) for _, m, _ in bus.recorder.updates]  # type: ignore[arg-type]
    assert FORGED_PRICE not in shown and bus.shown() != FORGED_PRICE
    assert shown == sorted(shown)  # never back in time
    assert bus.engine.stats.suspect == bus.forged
    assert not [e for e in bus.recorder.events if isinstance(e, Gap)]
    if script.count("real"):
        assert bus.shown() is not None


def test_a_forged_ticker_seq_costs_only_itself() -> None:
    bus = Bus(TICKER)
    bus.publish(live=False)
    bus.serve()
    bus.forge("seq")
    bus.publish(live=True)  # held while the forgery is checked
    repair = bus.pending
    assert repair is not None and (repair.confirm, repair.count) == ((RUN, 1_000_001), 1)
    bus.serve()
    assert bus.shown() == 2.0 and bus.engine.stats.suspect == 1
    bus.publish(live=True)  # the feed is not frozen: the next one is in order
    assert bus.pending is None and bus.shown() == 3.0


def test_a_real_book_jump_is_shown_after_one_stream_read() -> None:
    bus = Bus(BOOK)
    bus.publish(live=True)
    bus.serve()
    bus.publish(live=False)  # lost to a reconnect
    bus.publish(live=True)
    assert bus.shown() == 1.0 and bus.pending is not None
    bus.serve()
    assert bus.shown() == 3.0 and bus.engine.stats.suspect == 0 and bus.pending is None


def test_a_state_run_from_the_future_is_rejected_without_a_read() -> None:
    for feed in (TICKER, BOOK):
        bus = Bus(feed)
        bus.publish(live=True)
        bus.serve()
        future = NOW_MS + int(MAX_RUN_AHEAD_S * 1000) + 1
        bus.offer(state(feed, 9_999_999_999_999, 1, FORGED_PRICE))
        bus.offer(state(feed, future, 1, FORGED_PRICE))
        assert bus.pending is None and bus.engine.stats.suspect == 2
        bus.publish(live=True)
        assert bus.shown() == 2.0
