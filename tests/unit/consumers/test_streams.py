"""StreamReader over a stand-in Redis: paging into the engine, and one retry policy for
stream reads and read-backs (a refused or failing read is reported, never raised)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import Any

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

from marketbus.consumers.delivery import ReadBackError
from marketbus.consumers.engine import BufferSizes, Engine, Entry
from marketbus.consumers.events import Gap, Staleness, Update
from marketbus.consumers.stream_reads import MAX_ATTEMPTS
from marketbus.consumers.streams import StreamReader
from marketbus.shared.backoff import Backoff
from marketbus.shared.codecs import encode
from marketbus.shared.names import STREAM_FIELD_BYTES, entry_id, parse_entry_id
from marketbus.shared.schema import Trade, Trades
from tests.support.waiting import wait_until

TRADES = "md:binance:trades:BTC/USDT"
QUICK = Backoff(initial_s=0.001, maximum_s=0.002)


def trade(seq: int) -> Trades:
    return Trades(
        exchange="binance",
        symbol="BTC/USDT",
        run=1,
        seq=seq,
        ts_ms=seq,
        recv_ns=0,
        trades=(Trade(id=str(seq), ts_ms=seq, price=float(seq), amount=1.0, side="buy"),),
    )


def _in(raw: bytes | str, low: str, high: str) -> bool:
    position = parse_entry_id(raw)
    above = low == "-" or position > parse_entry_id(low.lstrip("("))
    below = high == "+" or (
        position < parse_entry_id(high[1:])
        if high.startswith("(")
        else position <= parse_entry_id(high)
    )
    return above and below


class FakeRedis:
    """XRANGE/XREVRANGE (also in a pipeline) over one stream; the first calls raise
    *errors*, one each."""

    def __init__(self, entries: list[Entry], errors: Sequence[Exception] = ()) -> None:
        self.entries = entries
        self.errors = list(errors)
        self.calls = 0

    def _fail(self) -> None:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)

    async def xrange(self, key: str, low: str, high: str, count: int) -> list[Entry]:
        self._fail()
        return [e for e in self.entries if _in(e[0], low, high)][:count]

    async def xrevrange(self, key: str, high: str, low: str, count: int) -> list[Entry]:
        self._fail()
        return [e for e in self.entries if _in(e[0], low, high)][::-1][:count]

    def pipeline(self, transaction: bool) -> FakePipeline:
        return FakePipeline(self)


class FakePipeline:
    def __init__(self, redis: FakeRedis) -> None:
        self.redis = redis
        self.queued: list[Any] = []

    async def __aenter__(self) -> FakePipeline:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        return None

    def xrange(self, key: str, low: str, high: str, count: int) -> None:
        self.queued.append(lambda: self.redis.xrange(key, low, high, count))

    def xrevrange(self, key: str, high: str, low: str, count: int) -> None:
        self.queued.append(lambda: self.redis.xrevrange(key, high, low, count))

    async def execute(self) -> list[Any]:
        return [await call() for call in self.queued]


class Recorder:
    def __init__(self) -> None:
        self.events: list[Gap | Staleness] = []

    def push(self, feed: str, message: Update, must: bool) -> None:
        pass

    def push_event(self, event: Gap | Staleness) -> None:
        self.events.append(event)

    def forget(self, feed: str) -> None:
        pass


def stream(seqs: range) -> list[Entry]:
    return [(entry_id(1, s).encode(), {STREAM_FIELD_BYTES: encode(trade(s))}) for s in seqs]


def reader(redis: FakeRedis) -> tuple[Engine, Recorder, StreamReader]:
    engine, recorder = Engine(), Recorder()
    engine.add_sink(recorder)
    streams = StreamReader(engine, QUICK, on_progress=lambda: None)
    streams.attach(redis)  # type: ignore[arg-type]
    return engine, recorder, streams


async def run_worker(
    engine: Engine, streams: StreamReader, done: Callable[[], bool] | None = None
) -> None:
    """Run one fetch worker until *done* (default: the feed's backfill is applied)."""
    streams.pump()
    worker = asyncio.create_task(streams.worker())
    try:
        await wait_until(done or (lambda: engine.feeds[TRADES].ready), timeout_s=5)
    finally:
        worker.cancel()


async def test_an_open_range_is_read_in_pages_into_the_engine() -> None:
    engine, recorder, streams = reader(FakeRedis(stream(range(1, 2501))))
    engine.track(TRADES, BufferSizes(trades=5000))
    engine.on_subscribed(TRADES)
    engine.on_history(engine.take_fetches()[0], stream(range(1, 2)), done=True, stream_first=None)
    engine.on_subscribed(TRADES)  # a resume: everything after seq 1, in pages
    await run_worker(engine, streams, lambda: engine.feeds[TRADES].last == (1, 2500))
    assert engine.stats.backfilled == 2500 and engine.stats.resumes == 1
    assert recorder.events == []


async def test_a_refused_stream_read_is_a_gap_and_the_feed_goes_live() -> None:
    redis = FakeRedis(stream(range(1, 4)), [ResponseError("NOPERM no permissions")])
    engine, recorder, streams = reader(redis)
    engine.track(TRADES, BufferSizes())
    engine.on_subscribed(TRADES)
    await run_worker(engine, streams)
    [gap] = recorder.events
    assert isinstance(gap, Gap) and gap.reason == "unreadable" and "NOPERM" in gap.detail
    assert engine.stats.read_errors == 1 and engine.stats.gaps == 1
    assert redis.calls == 1  # refused: not retried


async def test_a_stream_read_failing_for_good_is_given_up_after_the_bound() -> None:
    redis = FakeRedis([], [RedisConnectionError("refused")] * 100)
    engine, recorder, streams = reader(redis)
    engine.track(TRADES, BufferSizes())
    engine.on_subscribed(TRADES)
    await run_worker(engine, streams)
    assert redis.calls == MAX_ATTEMPTS  # one failing pipeline per attempt
    assert [type(e) for e in recorder.events] == [Gap] and engine.stats.read_errors == 1


async def test_a_refused_read_back_is_a_read_back_error_not_a_crash() -> None:
    engine, _, streams = reader(FakeRedis([], [ResponseError("NOPERM no permissions")]))
    with pytest.raises(ReadBackError, match="NOPERM"):
        await streams.read_back(TRADES, (1, 0), (1, 5), 10)
    assert engine.stats.read_errors == 1


async def test_a_read_back_failing_for_good_is_given_up_after_the_bound() -> None:
    redis = FakeRedis([], [RedisConnectionError("refused")] * 100)
    _, _, streams = reader(redis)
    with pytest.raises(ReadBackError, match="refused"):
        await streams.read_back(TRADES, (1, 0), (1, 5), 10)
    assert redis.calls == MAX_ATTEMPTS


async def test_read_back_decodes_and_skips_what_does_not_decode() -> None:
    entries = stream(range(1, 4))
    entries[1] = (entries[1][0], {STREAM_FIELD_BYTES: b"{garbage"})
    engine, _, streams = reader(FakeRedis(entries, [RedisConnectionError("blip")] * 2))
    got = await streams.read_back(TRADES, (1, 0), (1, 3), 10)
    assert [u.seq for u in got] == [1, 3] and engine.stats.undecodable == 1
