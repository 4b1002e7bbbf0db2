"""okx's book checksum and kucoin's sequence continuity (`marketbus.producer.book_check`),
against okx's documented example, the simulator's own `books` frames and random books."""

from __future__ import annotations

from decimal import Decimal

from hypothesis import given
from hypothesis import strategies as st

from marketbus.producer.book_check import (
    OkxBook,
    OkxChecksums,
    okx_checksum,
    sequence_gap,
)
from marketbus.sim.faults import corrupt_book_event
from marketbus.sim.market import BookEvent, BookSnapshot, SyntheticMarket
from marketbus.sim.protocols import okx as okx_sim

SYMBOL = "BTC/USDT:USDT"


def test_okx_checksum_matches_okx_documented_examples() -> None:
    # okx's checksum examples: "3366.1:7:3366.8:9:3366:6:3368:8" and, with more asks
    # than bids, "3366.1:7:3366.8:9:3368:8:3372:8".
    bids = [("3366.1", "7"), ("3366", "6")]
    asks = [("3366.8", "9"), ("3368", "8")]
    assert okx_checksum(bids, asks) == -1881014294
    assert okx_checksum(bids[:1], [*asks, ("3372", "8")]) == 831078360


def test_okx_checksum_is_the_simulators() -> None:
    bids = [("3366.1", "7"), ("3366", "6")]
    asks = [("3366.8", "9"), ("3368", "8"), ("3372", "8")]
    sim = okx_sim.checksum([list(b) for b in bids], [list(a) for a in asks])
    assert okx_checksum(bids, asks) == sim


def _frames(events: int) -> tuple[list[dict[str, object]], list[BookEvent]]:
    """The simulator's okx `books` pushes: a snapshot, then one update per book event."""
    market = SyntheticMarket([SYMBOL], seed=11, start_ms=1_000_000)
    inst = market.instrument(SYMBOL)
    pushes = [okx_sim.book_data(inst, market.book(SYMBOL), None, -1)]
    book_events: list[BookEvent] = []
    now = 1_000_000
    while len(book_events) < events:
        now += 10
        for event in market.step(SYMBOL, now):
            if isinstance(event, BookEvent):
                book_events.append(event)
                pushes.append(_update(inst, event))
    return pushes, book_events


def _update(inst: object, event: BookEvent) -> dict[str, object]:
    delta = event.delta
    changes = BookSnapshot(delta.ts_ms, delta.last_update_id, delta.bids, delta.asks)
    return okx_sim.book_data(inst, event.book, changes, delta.prev_update_id)  # type: ignore[arg-type]


def test_every_simulated_okx_push_checks_out() -> None:
    pushes, _ = _frames(300)
    checks = OkxChecksums()
    problems = [checks.on_push(SYMBOL, i == 0, push) for i, push in enumerate(pushes)]
    assert problems == [None] * len(pushes)


def test_a_corrupt_okx_push_fails_its_checksum_and_a_snapshot_starts_anew() -> None:
    pushes, events = _frames(50)
    market = SyntheticMarket([SYMBOL], seed=11, start_ms=1_000_000)
    inst = market.instrument(SYMBOL)
    checks = OkxChecksums()
    for i, push in enumerate(pushes[:40]):
        assert checks.on_push(SYMBOL, i == 0, push) is None
    bad = _update(inst, corrupt_book_event(events[39], inst))
    problem = checks.on_push(SYMBOL, False, bad)
    assert problem is not None and "checksum" in problem
    checks.forget(SYMBOL)
    assert checks.on_push(SYMBOL, False, pushes[41]) is None  # unchecked until a snapshot
    snapshot = okx_sim.book_data(inst, events[41].book, None, -1)
    assert checks.on_push(SYMBOL, True, snapshot) is None
    for push in pushes[42:]:
        assert checks.on_push(SYMBOL, False, push) is None


def test_a_lost_okx_push_fails_the_next_checksum() -> None:
    pushes, _ = _frames(30)
    checks = OkxChecksums()
    for i, push in enumerate(pushes[:20]):
        assert checks.on_push(SYMBOL, i == 0, push) is None
    assert checks.on_push(SYMBOL, False, pushes[21]) is not None


prices = st.decimals(min_value=1, max_value=10_000, places=2, allow_nan=False)
sizes = st.decimals(min_value=0, max_value=50, places=2, allow_nan=False)
levels = st.dictionaries(prices, sizes, max_size=60)


@given(levels, levels, st.lists(st.tuples(st.booleans(), prices, sizes), max_size=40))
def test_okx_book_checksum_is_that_of_the_book_its_pushes_make(
    bids: dict[Decimal, Decimal],
    asks: dict[Decimal, Decimal],
    updates: list[tuple[bool, Decimal, Decimal]],
) -> None:
    book = OkxBook()
    book.apply(True, [[str(p), str(s)] for p, s in bids.items()], [])
    book.apply(False, [], [[str(p), str(s)] for p, s in asks.items()])
    truth_bids = {p: s for p, s in bids.items() if s}
    truth_asks = {p: s for p, s in asks.items() if s}
    for is_bid, price, size in updates:
        side = truth_bids if is_bid else truth_asks
        if size:
            side[price] = size
        else:
            side.pop(price, None)
        level = [[str(price), str(size)]]
        book.apply(False, level if is_bid else [], [] if is_bid else level)
    want_bids = [(str(p), str(truth_bids[p])) for p in sorted(truth_bids, reverse=True)[:25]]
    want_asks = [(str(p), str(truth_asks[p])) for p in sorted(truth_asks)[:25]]
    assert book.top() == (want_bids, want_asks)
    assert book.checksum() == okx_checksum(want_bids, want_asks)


def test_sequence_gap_only_when_a_delta_skips_a_number() -> None:
    assert not sequence_gap(10, 11)
    assert not sequence_gap(10, 10)  # already applied: ccxt skips it
    assert not sequence_gap(10, 5)
    assert sequence_gap(10, 12)
    assert not sequence_gap(None, 12)  # no book yet: ccxt is still caching for a snapshot
    assert not sequence_gap(10, None)


@given(st.integers(min_value=0, max_value=2**53), st.integers(min_value=0, max_value=2**53))
def test_sequence_gap_is_first_beyond_next(nonce: int, first: int) -> None:
    assert sequence_gap(nonce, first) == (first > nonce + 1)
