"""A broken book sequence, through the real producer: after it, the bus shows a book
rebuilt from a fresh snapshot, equal to the simulator's, and says so.

Each test pauses the simulator, waits until the bus's book is the simulator's, breaks
the next book change (`Faults.break_book`) and steps the market until the break shows.
ccxt notices a binance gap and an okx seqId gap; the producer itself notices okx's
checksum disagreeing (a corrupt level) and a kucoinfutures sequence gap
(`marketbus.producer.book_check`). Either way the producer publishes an ``error``
status naming the feed (``book resync: ...``), and the first book published after it
(a later ``recv_ns``) must equal the simulator's book. bingx pushes whole snapshots:
its next push heals the book, with nothing to announce.

The simulators run with ``unit_contracts=True`` (one contract is one base unit), so the
sizes compare exactly whether or not the producer converts contracts to base units.
"""

from __future__ import annotations

import time

import pytest
import redis.asyncio as aioredis

from marketbus.producer import Producer
from marketbus.shared.names import status_name
from marketbus.shared.schema import Book, Level, Status
from marketbus.sim import SimServer
from marketbus.sim.faults import BookBreak
from tests.integration.producer.conftest import messages, producer_config
from tests.support.waiting import wait_until

NS = "md"
DEADLINE_S = 30.0
STEP_EVERY_S = 1.0
"""While waiting for the fresh book, step the market this often: kucoin's ccxt fetches
the snapshot only after a few deltas have been cached."""
MIN_LEVELS = 5

Side = list[tuple[float, float]]


def _truth(sim: SimServer, symbol: str, depth: int) -> tuple[Side, Side]:
    book = sim.market.book(symbol)
    return list(book.bids[:depth]), list(book.asks[:depth])


def _levels(levels: tuple[Level, ...]) -> Side:
    return [(float(p), float(a)) for p, a in levels]


def _equal(sim: SimServer, symbol: str, book: Book) -> bool:
    depth = min(len(book.bids), len(book.asks))
    truth = _truth(sim, symbol, depth)
    return depth >= MIN_LEVELS and (_levels(book.bids)[:depth], _levels(book.asks)[:depth]) == truth


async def _books(redis: aioredis.Redis, exchange: str, symbol: str) -> list[Book]:
    found = await messages(redis, f"{NS}:{exchange}:book:{symbol}")
    return [m for m in found if isinstance(m, Book)]


async def _resyncs(redis: aioredis.Redis, exchange: str) -> list[Status]:
    found = await messages(redis, status_name(NS, exchange))
    return [
        m
        for m in found
        if isinstance(m, Status) and m.event == "error" and m.detail.startswith("book resync")
    ]


CASES = [
    pytest.param("binance", "BTC/USDT", "gap", id="binance-gap-ccxt-notices"),
    pytest.param("okx", "BTC/USDT:USDT", "gap", id="okx-gap"),
    pytest.param("okx", "BTC/USDT:USDT", "corrupt", id="okx-corrupt-checksum"),
    pytest.param("kucoinfutures", "BTC/USDT:USDT", "gap", id="kucoinfutures-gap"),
]


async def _running_and_settled(
    redis: aioredis.Redis, sim: SimServer, exchange: str, symbol: str
) -> None:
    """Books flow; the market is paused and the bus's newest book is the simulator's."""

    async def some_book() -> bool:
        return bool(await _books(redis, exchange, symbol))

    await wait_until(some_book, timeout_s=DEADLINE_S, what=f"{exchange} books on the bus")
    sim.pause()

    async def settled() -> bool:
        books = await _books(redis, exchange, symbol)
        return bool(books) and _equal(sim, symbol, books[-1])

    await wait_until(settled, timeout_s=DEADLINE_S, what="the bus's book to be the simulator's")


@pytest.mark.parametrize(("exchange", "symbol", "kind"), CASES)
async def test_a_broken_book_is_announced_and_followed_by_the_simulators_book(
    redis_url: str, exchange: str, symbol: str, kind: BookBreak
) -> None:
    async with SimServer(exchange, [symbol], rate=20, seed=5, unit_contracts=True) as sim:
        config = producer_config(redis_url, sim, exchange, [symbol], ("book",))
        redis = aioredis.Redis.from_url(redis_url)
        try:
            async with Producer(config):
                await _running_and_settled(redis, sim, exchange, symbol)
                assert await _resyncs(redis, exchange) == []
                sim.faults.break_book(kind, [symbol])
                truths = []
                resyncs: list[Status] = []
                deadline = time.monotonic() + DEADLINE_S
                while not resyncs:  # step until the break shows
                    assert time.monotonic() < deadline, "no resync announced"
                    sim.step(symbol)
                    truths.append(_truth(sim, symbol, 20))
                    try:
                        await wait_until(
                            lambda: _announced(redis, exchange, resyncs),
                            timeout_s=STEP_EVERY_S,
                            what="a resync",
                        )
                    except AssertionError:
                        continue
                [resync] = resyncs
                assert resync.feed == f"{NS}:{exchange}:book:{symbol}"
                fresh = await _fresh_book(redis, sim, exchange, symbol, resync, truths)
            depth = min(len(fresh.bids), len(fresh.asks))
            assert depth >= MIN_LEVELS
            shown = (_levels(fresh.bids)[:depth], _levels(fresh.asks)[:depth])
            assert shown in [(bids[:depth], asks[:depth]) for bids, asks in truths], (
                "the first book after the resync is not the simulator's"
            )
            if exchange != "kucoinfutures":  # no step needed: a fresh snapshot at once
                assert shown == (truths[-1][0][:depth], truths[-1][1][:depth])
        finally:
            await redis.aclose()


async def _announced(redis: aioredis.Redis, exchange: str, into: list[Status]) -> bool:
    found = await _resyncs(redis, exchange)
    into[:] = found
    return bool(found)


async def _fresh_book(
    redis: aioredis.Redis,
    sim: SimServer,
    exchange: str,
    symbol: str,
    resync: Status,
    truths: list[tuple[Side, Side]],
) -> Book:
    """The first book published after *resync*; steps the market while none comes (each
    step's truth appended to *truths*)."""
    deadline = time.monotonic() + DEADLINE_S
    while True:
        after = [b for b in await _books(redis, exchange, symbol) if b.recv_ns > resync.recv_ns]
        if after:
            return after[0]
        assert time.monotonic() < deadline, "no book after the resync"
        try:
            await wait_until(
                lambda: _published_after(redis, exchange, symbol, resync.recv_ns),
                timeout_s=STEP_EVERY_S,
                what="a book after the resync",
            )
        except AssertionError:
            sim.step(symbol)
            truths.append(_truth(sim, symbol, 20))


async def _published_after(redis: aioredis.Redis, exchange: str, symbol: str, ns: int) -> bool:
    return any(b.recv_ns > ns for b in await _books(redis, exchange, symbol))


async def test_bingx_heals_a_lost_book_push_by_itself(redis_url: str) -> None:
    """bingx pushes whole top-N snapshots: the push after a lost one is the whole book
    again; nothing is announced."""
    exchange, symbol = "bingx", "BTC/USDT"
    async with SimServer(exchange, [symbol], rate=20, seed=5, unit_contracts=True) as sim:
        config = producer_config(redis_url, sim, exchange, [symbol], ("book",))
        redis = aioredis.Redis.from_url(redis_url)
        try:
            async with Producer(config):
                await _running_and_settled(redis, sim, exchange, symbol)
                sim.faults.break_book("gap", [symbol])
                sim.step(symbol)
                assert sim.faults.book_breaks_pending == 0
                sim.step(symbol)

                async def healed() -> bool:
                    books = await _books(redis, exchange, symbol)
                    return _equal(sim, symbol, books[-1])

                await wait_until(healed, timeout_s=DEADLINE_S, what="bingx's book to heal")
                assert await _resyncs(redis, exchange) == []
        finally:
            await redis.aclose()
