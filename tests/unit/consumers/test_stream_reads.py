"""Which stream read next, paging and the retry bound (pure: no Redis)."""

from __future__ import annotations

import random

from hypothesis import given
from hypothesis import strategies as st

from marketbus.consumers.engine import Entry, Fetch
from marketbus.consumers.sequencing import Position
from marketbus.consumers.stream_reads import (
    MAX_ATTEMPTS,
    PAGE,
    Attempts,
    FetchQueue,
    Range,
    first_range,
    next_range,
)
from marketbus.shared.backoff import Backoff
from marketbus.shared.names import entry_id, parse_entry_id

A, B = "md:binance:trades:A/USDT", "md:binance:trades:B/USDT"


def fetch(
    feed: str = A,
    epoch: int = 1,
    after: Position | None = None,
    before: Position | None = None,
    count: int | None = None,
) -> Fetch:
    return Fetch(feed, epoch, after, before, count, initial=False)


def test_the_newest_request_of_a_feed_replaces_the_waiting_one() -> None:
    queue = FetchQueue()
    assert queue.put([fetch(A, 1), fetch(B, 1), fetch(A, 2)])
    assert not queue.put([])
    assert queue.waiting == 2
    assert queue.take() == fetch(A, 2)  # replaced, keeping its place in line
    assert queue.take() == fetch(B, 1)
    assert queue.take() is None and queue.reading == {A, B}


def test_a_feed_is_never_read_twice_at_once() -> None:
    queue = FetchQueue()
    queue.put([fetch(A, 1)])
    first = queue.take()
    assert first is not None
    queue.put([fetch(A, 2)])
    assert queue.superseded(first)
    assert queue.take() is None  # A is being read: its next read waits
    queue.done(first)
    assert queue.take() == fetch(A, 2) and not queue.superseded(fetch(A, 2))


def test_a_count_is_one_newest_first_read_with_exclusive_bounds() -> None:
    current = first_range(fetch(after=(1, 4), before=(2, 7), count=5))
    assert current == Range("(1-4", "(2-7", 5, newest_first=True)
    page: list[Entry] = [(f"1-{s}".encode(), {}) for s in range(5)]
    assert next_range(current, page) is None  # one read, however full
    assert first_range(fetch()) == Range("-", "+", PAGE, newest_first=False)


def stream_of(positions: list[Position]) -> list[Entry]:
    return [(entry_id(*p).encode(), {}) for p in sorted(set(positions))]


def xrange(stream: list[Entry], current: Range) -> list[Entry]:
    """What Redis answers for *current* (XRANGE; the bounds are exclusive or open)."""

    def above(raw: bytes | str, bound: str) -> bool:
        return bound == "-" or parse_entry_id(raw) > parse_entry_id(bound.lstrip("("))

    def below(raw: bytes | str, bound: str) -> bool:
        return bound == "+" or parse_entry_id(raw) < parse_entry_id(bound.lstrip("("))

    hits = [e for e in stream if above(e[0], current.low) and below(e[0], current.high)]
    return hits[: current.count]


@given(
    st.lists(st.tuples(st.integers(1, 3), st.integers(1, 3 * PAGE)), max_size=4 * PAGE),
    st.one_of(st.none(), st.tuples(st.integers(1, 3), st.integers(0, 3 * PAGE))),
    st.one_of(st.none(), st.tuples(st.integers(1, 4), st.integers(0, 3 * PAGE))),
)
def test_paging_reads_every_entry_of_the_range_once_in_order(
    positions: list[Position], after: Position | None, before: Position | None
) -> None:
    stream = stream_of(positions)
    current: Range | None = first_range(fetch(after=after, before=before))
    got: list[Entry] = []
    reads = 0
    while current is not None:
        page = xrange(stream, current)
        got += page
        reads += 1
        current = next_range(current, page)
    wanted = [
        e
        for e in stream
        if (after is None or parse_entry_id(e[0]) > after)
        and (before is None or parse_entry_id(e[0]) < before)
    ]
    assert got == wanted
    assert reads == len(wanted) // PAGE + 1


def test_connection_failures_are_retried_with_backoff_up_to_the_bound() -> None:
    backoff = Backoff(initial_s=0.1, maximum_s=1.0)
    attempts = Attempts(backoff, rng=random.Random(1))
    delays = [attempts.failed() for _ in range(MAX_ATTEMPTS - 1)]
    assert all(d is not None and 0.05 <= d <= 1.0 for d in delays)
    assert attempts.failed() is None and attempts.failures == MAX_ATTEMPTS
    assert Attempts(backoff, limit=1).failed() is None
