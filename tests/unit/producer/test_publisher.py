"""The writer against an in-memory transport: stamping, batching, retries, gaps, fencing."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Mapping, Sequence

import pytest
from msgspec.structs import replace
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ReadOnlyError, ResponseError

from marketbus.producer.publisher import FeedCounters, Publisher
from marketbus.producer.transport import Outgoing, Receipt, WriteOnConfirm
from marketbus.shared.backoff import BackoffState
from marketbus.shared.codecs import decode, encode
from marketbus.shared.config import StreamCaps
from marketbus.shared.errors import FencedError
from marketbus.shared.schema import OHLCV, Status, Ticker, Trade, Trades

TICKER = "md:x:ticker:A/B"
TRADES = "md:x:trades:A/B"
CANDLES = "md:x:ohlcv.1m:A/B"
STATUS = "md:x:status"
TOO_SMALL = "ERR The ID specified in XADD is equal or smaller than the target stream top item"


class MemoryTransport:
    """Records batches; `failures` raise in order before writes succeed."""

    def __init__(self) -> None:
        self.batches: list[list[Outgoing]] = []
        self.failures: list[Exception] = []
        self.replies: list[list[ResponseError | None]] = []
        self.gate: asyncio.Event | None = None
        self.tops: dict[str, bytes] = {}
        self.top_payloads: dict[str, bytes] = {}
        """The ``d`` field of a stream's top entry (default: junk, ``{}``)."""
        self.landed: set[tuple[str, str]] = set()
        """``(stream, entry id)`` that `has_entry` finds (set by the tests that ask)."""

    async def send(self, batch: Sequence[Outgoing]) -> Receipt:
        return WriteOnConfirm(self.write, batch)

    async def write(self, batch: Sequence[Outgoing]) -> list[ResponseError | None]:
        if self.gate is not None:
            await self.gate.wait()
        if self.failures:
            raise self.failures.pop(0)
        self.batches.append(list(batch))
        if self.replies:
            return self.replies.pop(0)
        return [None] * len(batch)

    async def last_entry(self, stream: str) -> tuple[bytes, bytes | None] | None:
        top = self.tops.get(stream)
        return None if top is None else (top, self.top_payloads.get(stream, b"{}"))

    async def has_entry(self, stream: str, entry_id: str) -> bool:
        return (stream, entry_id) in self.landed

    async def set_fields(self, key: str, fields: Mapping[str, bytes]) -> None:
        return None

    async def close(self) -> None:
        return None

    def items(self) -> Iterator[Outgoing]:
        for batch in self.batches:
            yield from batch


def make(
    transport: MemoryTransport, queue_max: int = 100, batch: int = 100
) -> tuple[Publisher, dict[str, FeedCounters]]:
    counters: dict[str, FeedCounters] = {}
    publisher = Publisher(
        transport,
        namespace="md",
        run=1000,
        encoding="json",
        caps=StreamCaps(ticker=50, trades=60, ohlcv=70),
        batch_size=batch,
        queue_max_messages=queue_max,
        backoff=BackoffState(0.001, 0.002),
        counters=lambda feed: counters.setdefault(feed, FeedCounters()),
    )
    return publisher, counters


def ticker(last: float) -> Ticker:
    return Ticker(exchange="x", symbol="A/B", ts_ms=None, recv_ns=0, last=last)


def trades(n: int) -> Trades:
    t = Trade(id=str(n), ts_ms=n, price=1.0, amount=1.0, side="buy")
    return Trades(exchange="x", symbol="A/B", ts_ms=n, recv_ns=0, trades=(t,))


def candle(closed: bool) -> OHLCV:
    return OHLCV(
        exchange="x",
        symbol="A/B",
        ts_ms=0,
        recv_ns=0,
        timeframe="1m",
        open=1,
        high=1,
        low=1,
        close=1,
        volume=1,
        closed=closed,
    )


async def run_until_flushed(publisher: Publisher) -> None:
    writer = asyncio.create_task(publisher.run())
    try:
        assert await publisher.flush(5)
    finally:
        writer.cancel()
        await asyncio.gather(writer, return_exceptions=True)


async def test_messages_are_stamped_encoded_once_and_streamed_by_policy() -> None:
    transport = MemoryTransport()
    publisher, counters = make(transport)
    publisher.submit(TICKER, ticker(1))
    publisher.submit(CANDLES, candle(closed=False))
    publisher.submit(CANDLES, candle(closed=True))
    publisher.submit(TRADES, trades(1))
    await run_until_flushed(publisher)
    items = list(transport.items())
    assert [(i.channel, i.stream, i.entry_id, i.maxlen) for i in items] == [
        (TICKER, TICKER, "1000-1", 50),
        (CANDLES, None, "1000-1", 70),
        (CANDLES, CANDLES, "1000-2", 70),
        (TRADES, TRADES, "1000-1", 60),
    ]
    for item in items:
        message = decode(item.payload)
        assert f"{message.run}-{message.seq}" == item.entry_id
    assert counters[CANDLES].published == 2 and counters[CANDLES].last_message_ms


async def test_batches_respect_the_batch_size() -> None:
    transport = MemoryTransport()
    publisher, _ = make(transport, batch=2)
    for i in range(5):
        publisher.submit(TRADES, trades(i))
    await run_until_flushed(publisher)
    assert [len(b) for b in transport.batches] == [2, 2, 1]


async def test_connection_errors_are_retried_with_the_same_stamped_batch() -> None:
    transport = MemoryTransport()
    transport.failures = [RedisConnectionError("down"), RedisConnectionError("down")]
    publisher, counters = make(transport)
    publisher.submit(TRADES, trades(1))
    await run_until_flushed(publisher)
    assert [i.entry_id for i in transport.items()] == ["1000-1"]
    assert publisher.redis_ok and counters[TRADES].published == 1


async def test_readonly_replies_after_failover_are_retried() -> None:
    transport = MemoryTransport()
    transport.replies = [[ReadOnlyError("READONLY You can't write against a read only replica")]]
    publisher, counters = make(transport)
    publisher.submit(TRADES, trades(1))
    await run_until_flushed(publisher)
    assert len(transport.batches) == 2 and counters[TRADES].published == 1


async def test_an_id_collision_with_a_newer_run_is_fencing() -> None:
    transport = MemoryTransport()
    transport.replies = [[ResponseError(TOO_SMALL)]]
    transport.tops[TRADES] = b"2000-1"
    transport.top_payloads[TRADES] = encode(replace(trades(7), run=2000, seq=1))
    publisher, _ = make(transport)
    publisher.submit(TRADES, trades(1))
    with pytest.raises(FencedError, match="another producer writes this feed with run 2000"):
        await asyncio.wait_for(publisher.run(), 5)


async def test_an_id_collision_with_our_own_run_means_an_earlier_attempt_landed() -> None:
    transport = MemoryTransport()
    transport.failures = [RedisConnectionError("reply lost")]
    transport.replies = [[ResponseError(TOO_SMALL)]]
    transport.tops[TRADES] = b"1000-1"
    transport.landed.add((TRADES, "1000-1"))
    publisher, counters = make(transport)
    publisher.submit(TRADES, trades(1))
    await run_until_flushed(publisher)
    assert counters[TRADES].published == 1 and counters[TRADES].errors == 0


async def test_an_entry_overtaken_by_a_later_one_of_ours_is_announced_as_lost() -> None:
    transport = MemoryTransport()
    # Refused as too small, yet not in the stream: our seq 2 (the batch in flight after
    # it) got there first.
    transport.replies = [[ResponseError(TOO_SMALL)]]
    transport.tops[TRADES] = b"1000-2"
    publisher, counters = make(transport, batch=1)
    publisher.submit(TRADES, trades(1))
    publisher.submit(TRADES, trades(2))
    await run_until_flushed(publisher)
    assert counters[TRADES].published == 1  # seq 2 only
    assert (counters[TRADES].errors, counters[TRADES].dropped) == (1, 1)
    [gap] = [decode(i.payload) for i in transport.items() if i.channel == STATUS]
    assert isinstance(gap, Status) and gap.event == "gap" and gap.feed == TRADES
    assert "seq 1..1 of run 1000" in gap.detail and "reached the stream first" in gap.detail
    assert (gap.first_seq, gap.last_seq, gap.from_ms, gap.to_ms) == (1, 1, None, None)


async def test_a_foreign_entry_above_ours_is_announced_and_passed_by_a_new_run() -> None:
    transport = MemoryTransport()
    transport.replies = [[ResponseError(TOO_SMALL), ResponseError(TOO_SMALL)]]
    transport.tops[TRADES] = b"5000-0"  # XADD feed '*' d x
    transport.top_payloads[TRADES] = b"x"
    publisher, counters = make(transport)
    publisher.submit(TRADES, trades(1))
    publisher.submit(TRADES, trades(2))
    await run_until_flushed(publisher)
    new_run = publisher.run_id
    assert new_run > 5000
    written = [i for i in transport.batches[1:] for i in i if i.channel == TRADES]
    assert [i.entry_id for i in written] == [f"{new_run}-1", f"{new_run}-2"]
    assert [decode(i.payload).trades[0].id for i in written] == ["1", "2"]  # type: ignore[union-attr]
    assert counters[TRADES].published == 2 and counters[TRADES].dropped == 0
    assert publisher.foreign[TRADES] == 1  # the second refusal was already in the old run
    [event] = [decode(i.payload) for i in transport.items() if i.channel == STATUS]
    assert isinstance(event, Status) and event.event == "error" and event.feed == TRADES
    assert "foreign entry 5000-0" in event.detail and event.run == new_run


async def test_a_forged_seq_in_our_own_run_is_foreign_not_ours() -> None:
    transport = MemoryTransport()
    transport.replies = [[ResponseError(TOO_SMALL)]]
    transport.tops[TRADES] = b"1000-1000001"
    transport.top_payloads[TRADES] = encode(replace(trades(9), run=1000, seq=1000001))
    publisher, counters = make(transport)
    publisher.submit(TRADES, trades(1))
    await run_until_flushed(publisher)
    assert publisher.run_id > 1000 and counters[TRADES].published == 1
    assert counters[TRADES].dropped == 0 and publisher.foreign[TRADES] == 1


async def test_a_foreign_entry_from_the_future_blocks_only_its_stream_until_deleted() -> None:
    transport = MemoryTransport()
    transport.replies = [[ResponseError(TOO_SMALL), None], [ResponseError(TOO_SMALL), None]]
    transport.tops[TRADES] = b"9999999999999-1"
    publisher, counters = make(transport, batch=2)
    publisher.submit(TRADES, trades(1))
    publisher.submit(TICKER, ticker(1))
    publisher.submit(TRADES, trades(2))
    publisher.submit(TRADES, trades(3))  # the operator deleted the stream by now
    await run_until_flushed(publisher)
    assert publisher.run_id == 1000, "never follows a run from the future"
    assert (counters[TRADES].dropped, counters[TRADES].published) == (2, 1)
    assert counters[TICKER].published == 1
    events = [decode(i.payload) for i in transport.items() if i.channel == STATUS]
    assert len(events) == 1, "announced once"
    [event] = events
    assert isinstance(event, Status) and event.event == "error" and event.feed == TRADES
    assert f"DEL {TRADES}" in event.detail


async def test_drops_while_redis_is_down_are_announced_as_a_gap_with_the_seq_range() -> None:
    transport = MemoryTransport()
    transport.gate = asyncio.Event()
    publisher, counters = make(transport, queue_max=2, batch=1)
    writer = asyncio.create_task(publisher.run())
    try:
        publisher.submit(TRADES, trades(1))
        await asyncio.sleep(0)  # the writer takes #1 and blocks on the gate
        for i in range(2, 7):
            publisher.submit(TRADES, trades(i))  # 2, 3 queued; 4, 5, 6 dropped
        publisher.submit(TICKER, ticker(1))
        publisher.submit(TICKER, ticker(2))  # conflated, not dropped
        transport.gate.set()
        assert await publisher.flush(5)
        publisher.submit(TRADES, trades(7))
        assert await publisher.flush(5)
    finally:
        writer.cancel()
        await asyncio.gather(writer, return_exceptions=True)
    items = list(transport.items())
    trade_ids = [i.entry_id for i in items if i.channel == TRADES]
    assert trade_ids == ["1000-1", "1000-2", "1000-3", "1000-7"]
    gaps = [decode(i.payload) for i in items if i.channel == STATUS]
    assert len(gaps) == 1 and isinstance(gaps[0], Status) and gaps[0].event == "gap"
    assert gaps[0].feed == TRADES and "seq 4..6 of run 1000" in gaps[0].detail
    assert (gaps[0].first_seq, gaps[0].last_seq) == (4, 6), "machine-readable range"
    assert counters[TRADES].dropped == 3
    assert [decode(i.payload).last for i in items if i.channel == TICKER] == [2]  # type: ignore[union-attr]


async def test_drops_not_followed_by_data_are_announced_on_flush() -> None:
    transport = MemoryTransport()
    transport.gate = asyncio.Event()
    publisher, _ = make(transport, queue_max=1, batch=1)
    writer = asyncio.create_task(publisher.run())
    try:
        publisher.submit(TRADES, trades(1))
        await asyncio.sleep(0)
        publisher.submit(TRADES, trades(2))
        publisher.submit(TRADES, trades(3))  # dropped
        transport.gate.set()
        assert await publisher.flush(5)
    finally:
        writer.cancel()
        await asyncio.gather(writer, return_exceptions=True)
    gaps = [decode(i.payload) for i in transport.items() if i.channel == STATUS]
    assert len(gaps) == 1 and "seq 3..3" in gaps[0].detail  # type: ignore[union-attr]


async def test_drops_of_the_status_feed_itself_keep_its_ids_increasing() -> None:
    transport = MemoryTransport()
    transport.gate = asyncio.Event()
    publisher, _ = make(transport, queue_max=1, batch=10)
    writer = asyncio.create_task(publisher.run())
    status = Status(exchange="x", ts_ms=None, recv_ns=0, event="heartbeat")
    try:
        publisher.submit(STATUS, status)
        await asyncio.sleep(0)  # taken by the writer, which blocks on the gate
        for _ in range(4):
            publisher.submit(STATUS, status)  # 1 queued, 3 dropped
        transport.gate.set()
        assert await publisher.flush(5)
        publisher.submit(STATUS, status)
        assert await publisher.flush(5)
    finally:
        writer.cancel()
        await asyncio.gather(writer, return_exceptions=True)
    ids = [i.entry_id for i in transport.items() if i.stream == STATUS]
    seqs = [int(i.split("-")[1]) for i in ids]
    assert seqs == [1, 2, 6, 7]  # 3..5 dropped, 6 announces them
    gap = decode(next(i.payload for i in transport.items() if b'"gap"' in i.payload))
    assert isinstance(gap, Status) and "seq 3..5" in gap.detail and gap.seq == 6


class WireTransport(MemoryTransport):
    """A pipelining transport: `send` puts a batch on the wire at once (recorded in
    ``wire``); its receipt fails with the next of ``lost`` (if any) or answers the next
    of ``answers`` (if any, else all fine). Batches written again after a failure go
    through `write` (``batches``)."""

    def __init__(self) -> None:
        super().__init__()
        self.wire: list[list[Outgoing]] = []
        self.lost: list[Exception] = []
        self.answers: list[list[ResponseError | None]] = []
        self.in_flight = 0
        self.most_in_flight = 0

    async def send(self, batch: Sequence[Outgoing]) -> Receipt:
        self.wire.append(list(batch))
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        return _WireReceipt(self, len(batch))


class _WireReceipt:
    def __init__(self, transport: WireTransport, size: int) -> None:
        self._transport = transport
        self._size = size

    async def confirm(self) -> list[ResponseError | None]:
        transport = self._transport
        transport.in_flight -= 1
        await asyncio.sleep(0)  # the reply takes a loop turn, like a socket read
        if transport.lost:
            transport.in_flight = 0  # the link is gone: nothing else will answer
            raise transport.lost.pop(0)
        if transport.answers:
            return transport.answers.pop(0)
        return [None] * self._size


async def test_two_batches_are_in_flight_and_settle_in_order() -> None:
    transport = WireTransport()
    publisher, counters = make(transport, batch=2)
    for i in range(1, 9):
        publisher.submit(TRADES, trades(i))
    await run_until_flushed(publisher)
    assert transport.most_in_flight == 2
    assert [i.entry_id for b in transport.wire for i in b] == [f"1000-{n}" for n in range(1, 9)]
    assert transport.batches == [] and counters[TRADES].published == 8


async def test_a_link_lost_with_batches_in_flight_writes_each_again_oldest_first() -> None:
    transport = WireTransport()
    transport.lost = [RedisConnectionError("connection lost")]
    publisher, counters = make(transport, batch=2)
    for i in range(1, 7):
        publisher.submit(TRADES, trades(i))
    await run_until_flushed(publisher)
    wire = [[i.entry_id for i in b] for b in transport.wire]
    rewritten = [[i.entry_id for i in b] for b in transport.batches]
    assert wire[:2] == [["1000-1", "1000-2"], ["1000-3", "1000-4"]]  # both lost in flight
    assert rewritten == wire[:2]  # written again, oldest first, same stamps
    assert wire[2:] == [["1000-5", "1000-6"]]  # then the writer goes on pipelining
    assert counters[TRADES].published == 6 and counters[TRADES].errors == 0


async def test_a_lost_reply_whose_batch_landed_is_recognised_on_the_rewrite() -> None:
    transport = WireTransport()
    transport.lost = [RedisConnectionError("connection lost")]
    # Redis applied both batches before the link died: the rewrites are refused.
    transport.replies = [[ResponseError(TOO_SMALL)] * 2, [ResponseError(TOO_SMALL)] * 2]
    transport.tops[TRADES] = b"1000-4"
    transport.landed |= {(TRADES, f"1000-{n}") for n in range(1, 5)}
    publisher, counters = make(transport, batch=2)
    for i in range(1, 5):
        publisher.submit(TRADES, trades(i))
    await run_until_flushed(publisher)
    assert counters[TRADES].published == 4 and counters[TRADES].errors == 0


async def test_readonly_with_batches_in_flight_writes_them_again() -> None:
    transport = WireTransport()
    transport.answers = [[ReadOnlyError("READONLY You can't write against a read only replica")]]
    publisher, counters = make(transport, batch=1)
    publisher.submit(TRADES, trades(1))
    publisher.submit(TRADES, trades(2))
    await run_until_flushed(publisher)
    assert [[i.entry_id for i in b] for b in transport.batches] == [["1000-1"], ["1000-2"]]
    assert counters[TRADES].published == 2
