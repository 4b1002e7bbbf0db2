"""The writer queue policy: conflate state, bound history, count and place drops."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from marketbus.producer.outbox import Outbox, policy
from marketbus.shared.schema import OHLCV, Book, Message, Status, Ticker, Trade, Trades


def ticker(last: float) -> Ticker:
    return Ticker(exchange="x", symbol="A/B", ts_ms=None, recv_ns=0, last=last)


def trades(n: int) -> Trades:
    t = Trade(id=str(n), ts_ms=n, price=1.0, amount=1.0, side=None)
    return Trades(exchange="x", symbol="A/B", ts_ms=n, recv_ns=0, trades=(t,))


def candle(ts: int, closed: bool) -> OHLCV:
    return OHLCV(
        exchange="x",
        symbol="A/B",
        ts_ms=ts,
        recv_ns=0,
        timeframe="1m",
        open=1,
        high=1,
        low=1,
        close=1,
        volume=1,
        closed=closed,
    )


def test_policy_follows_the_spec_streams_section() -> None:
    book = Book(exchange="x", symbol="A/B", ts_ms=None, recv_ns=0, depth=1, bids=(), asks=())
    status = Status(exchange="x", ts_ms=None, recv_ns=0, event="heartbeat")
    assert policy(ticker(1)) == (True, True)
    assert policy(book) == (True, True)
    assert policy(trades(1)) == (True, False)
    assert policy(status) == (True, False)
    assert policy(candle(0, closed=True)) == (True, False)
    assert policy(candle(0, closed=False)) == (False, True)


def test_state_is_conflated_to_the_latest_per_feed() -> None:
    box = Outbox(capacity=10)
    for i in range(5):
        box.put("t1", ticker(i))
    box.put("t2", ticker(9))
    taken = box.take(10)
    assert [(e.feed, e.message) for e in taken] == [("t1", ticker(4)), ("t2", ticker(9))]
    assert box.conflated == 4 and len(box) == 0


def test_history_is_kept_in_order_up_to_capacity_then_dropped_and_counted() -> None:
    box = Outbox(capacity=2)
    assert box.put("tr", trades(1)) and box.put("tr", trades(2))
    assert not box.put("tr", trades(3))
    assert not box.put("tr", trades(4))
    assert box.dropped == {"tr": 2}
    assert box.put("t", ticker(1)), "state is not bounded by the history capacity"
    first = box.take(10)
    assert [e.message for e in first] == [trades(1), trades(2), ticker(1)]
    assert [e.skip for e in first] == [0, 0, 0]
    assert box.put("tr", trades(5))
    assert [(e.message, e.skip) for e in box.take(10)] == [(trades(5), 2)]


def test_a_queued_state_message_is_sealed_behind_later_history_of_its_feed() -> None:
    box = Outbox(capacity=10)
    box.put("c", candle(0, closed=False))
    box.put("c", candle(0, closed=True))
    box.put("c", candle(60_000, closed=False))
    box.put("c", candle(60_000, closed=False))
    taken = [(e.message.ts_ms, e.message.closed) for e in box.take(10)]  # type: ignore[union-attr]
    assert taken == [(0, False), (0, True), (60_000, False)]


def test_pending_skips_without_a_later_message_are_handed_over_once() -> None:
    box = Outbox(capacity=1)
    box.put("tr", trades(1))
    box.put("tr", trades(2))
    box.take(1)
    assert box.take_pending_skips() == {"tr": 1}
    assert box.take_pending_skips() == {}


@given(
    st.integers(1, 5),
    st.lists(st.tuples(st.sampled_from(["a", "b", "c"]), st.booleans()), max_size=60),
    st.lists(st.integers(0, 4), max_size=30),
)
def test_order_bound_and_accounting_hold_for_any_interleaving(
    capacity: int, puts: list[tuple[str, bool]], takes: list[int]
) -> None:
    """Per feed, messages come out in put order; history never exceeds capacity; every
    history message is either taken or counted as dropped, with skips summing to drops."""
    box = Outbox(capacity)
    out: list[tuple[str, Message, int]] = []
    history_put: dict[str, int] = {}
    takes_iter = iter(takes)
    for counter, (feed, is_state) in enumerate(puts, start=1):
        box.put(feed, ticker(counter) if is_state else trades(counter))
        if not is_state:
            history_put[feed] = history_put.get(feed, 0) + 1
        assert sum(1 for e in box.entries if not e.conflate) <= capacity
        n = next(takes_iter, 0)
        out.extend((e.feed, e.message, e.skip) for e in box.take(n))
    out.extend((e.feed, e.message, e.skip) for e in box.take(10_000))
    pending = box.take_pending_skips()
    for feed in "abc":
        stamps = [m.ts_ms if isinstance(m, Trades) else m.last for f, m, _ in out if f == feed]  # type: ignore[union-attr]
        assert stamps == sorted(stamps)  # type: ignore[type-var]
        taken_history = sum(1 for f, m, _ in out if f == feed and isinstance(m, Trades))
        skips = sum(s for f, _, s in out if f == feed) + pending.get(feed, 0)
        assert taken_history + box.dropped.get(feed, 0) == history_put.get(feed, 0)
        assert skips == box.dropped.get(feed, 0)
