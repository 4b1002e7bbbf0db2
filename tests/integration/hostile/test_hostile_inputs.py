"""Every kind of bad input, published and XADDed onto live feeds, while a real producer,
four subscribers (both transports x both deliveries), ``marketbus tail`` and
``marketbus status`` share one redis-server: all keep running, count what they skipped,
and every message the streams hold reaches every subscriber exactly once."""

from __future__ import annotations

import asyncio
import itertools
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from marketbus.consumers import Backoff, Subscriber
from marketbus.consumers.events import Update
from marketbus.producer import Producer
from marketbus.producer.sequencing import MAX_RUN_AHEAD_MS, of_feed
from marketbus.shared.codecs import decode, encode
from marketbus.shared.errors import ContractError
from marketbus.shared.names import parse_entry_id
from marketbus.shared.schema import Message, Status, Ticker, Trade, Trades
from marketbus.sim import SimServer
from tests.integration.producer.conftest import SYMBOLS, producer_config
from tests.support.waiting import wait_until

CLI = [sys.executable, "-m", "marketbus.cli"]
BTC_TRADES = "md:binance:trades:BTC/USDT"
ETH_TRADES = "md:binance:trades:ETH/USDT"
BTC_TICKER = "md:binance:ticker:BTC/USDT"
ETH_TICKER = "md:binance:ticker:ETH/USDT"
STATUS = "md:binance:status"
FEEDS = [BTC_TRADES, ETH_TRADES, BTC_TICKER, ETH_TICKER]
FUTURE_RUN = 9_999_999_999_999
DEEP_JSON = b'{"a":' * 1000
DEEP_MSGPACK = b"\x81\xa1a" * 5000
HUGE = b"{" + b" " * 1_000_000 + b"}"
FAST = Backoff(initial_s=0.02, maximum_s=0.2)
DEADLINE_S = 45.0
"""Deadline of every wait: generous for 2 loaded cores; the suite takes ~20 s idle."""


@dataclass
class Follower:
    """A subscriber and the trade ids it delivered, per feed, in delivery order."""

    name: str
    sub: Subscriber
    trade_ids: dict[str, list[str]] = field(default_factory=dict)
    tickers: int = 0

    def on_message(self, update: Update) -> None:
        if isinstance(update, Trades):
            feed = f"md:{update.exchange}:trades:{update.symbol}"
            self.trade_ids.setdefault(feed, []).extend(t.id or "" for t in update.trades)
        elif isinstance(update, Ticker):
            self.tickers += 1


@asynccontextmanager
async def followers(redis_url: str) -> AsyncIterator[list[Follower]]:
    made: list[Follower] = []
    try:
        for transport, delivery in itertools.product(("fast", "redis-py"), ("queued", "inline")):
            sub = Subscriber(redis_url, transport=transport, delivery=delivery, backoff=FAST)
            follower = Follower(f"{transport}/{delivery}", sub)
            sub.on_message(follower.on_message)
            made.append(follower)
            await sub.start()
            await sub.subscribe(*FEEDS)
        yield made
    finally:
        for follower in made:
            await follower.sub.close()


class Tail:
    """``marketbus tail md:*`` with its stdout collected by line."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.lines: list[str] = []

    async def collect(self) -> None:
        assert self.proc.stdout is not None
        async for raw in self.proc.stdout:
            self.lines.append(raw.decode(errors="replace").rstrip("\n"))

    def undecodable(self) -> int:
        return sum(line.startswith("UNDECODABLE on ") for line in self.lines)


@asynccontextmanager
async def running_tail(redis_url: str) -> AsyncIterator[Tail]:
    proc = await asyncio.create_subprocess_exec(
        *CLI, "tail", "md:*", "--redis", redis_url, stdout=asyncio.subprocess.PIPE
    )
    tail = Tail(proc)
    reader = asyncio.create_task(tail.collect())
    try:
        yield tail
    finally:
        if proc.returncode is None:
            proc.kill()
        await proc.wait()
        await asyncio.wait_for(reader, timeout=10)


def run_status(redis_url: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, "status", "--redis", redis_url],
        capture_output=True,
        text=True,
        timeout=DEADLINE_S,
        env=dict(os.environ),
    )


async def tail_id(redis: aioredis.Redis, stream: str) -> tuple[int, int]:
    entries = await redis.xrevrange(stream, count=1)
    return parse_entry_id(entries[0][0]) if entries else (0, 0)


async def producer_on_top(redis: aioredis.Redis, stream: str) -> bool:
    """True when *stream*'s newest entry is a producer's message at its own ``{run}-{seq}``."""
    newest = await redis.xrevrange(stream, count=1)
    if not newest:
        return False
    entry_id, fields = newest[0]
    try:
        message = decode(fields.get(b"d", b""))
    except ContractError:
        return False
    return entry_id.decode() == f"{message.run}-{message.seq}"


async def xadd_above(
    redis: aioredis.Redis, stream: str, payload: Callable[[int, int], bytes], jump: int
) -> None:
    """XADD ``payload(run, seq)`` at ``{top run}-{top seq + jump}`` (a forged seq), again
    if the producer's entry got there first."""
    for _ in range(10):
        run, seq = await tail_id(redis, stream)
        try:
            await redis.xadd(stream, {"d": payload(run, seq + jump)}, id=f"{run}-{seq + jump}")
            return
        except ResponseError as exc:
            if "equal or smaller" not in str(exc):
                raise
    raise AssertionError(f"could not XADD above the producer on {stream}")


def trades(symbol: str, run: int, seq: int, trade_id: str) -> bytes:
    trade = Trade(id=trade_id, ts_ms=1, price=1.0, amount=1.0, side="buy")
    message = Trades(
        exchange="binance",
        symbol=symbol,
        ts_ms=1,
        recv_ns=time.time_ns(),
        run=run,
        seq=seq,
        trades=(trade,),
    )
    return encode(message)


def ticker(symbol: str, run: int, seq: int) -> bytes:
    message = Ticker(
        exchange="binance",
        symbol=symbol,
        ts_ms=1,
        recv_ns=time.time_ns(),
        run=run,
        seq=seq,
        last=1.0,
    )
    return encode(message)


async def publish_everything(redis: aioredis.Redis, run: int, seq: int) -> int:
    """PUBLISH every kind of bad input on live and junk channels; how many were
    undecodable on channels ``md:*`` covers (what tail must count)."""
    undecodable = [DEEP_JSON, DEEP_MSGPACK, b"\x00\xffgarbage", b"", HUGE, b"{", b"\xc1"]
    for payload in undecodable:
        await redis.publish(BTC_TRADES, payload)
    await redis.publish(BTC_TRADES, ticker("BTC/USDT", run, seq + 1))  # wrong type
    await redis.publish(BTC_TRADES, trades("ETH/USDT", run, seq + 1, "x-eth"))  # other feed
    await redis.publish(BTC_TRADES, trades("BTC/USDT", run, seq + 1_000_000, "x-seq"))
    await redis.publish(BTC_TRADES, trades("BTC/USDT", FUTURE_RUN, 1, "x-future"))
    await redis.publish(BTC_TICKER, ticker("BTC/USDT", FUTURE_RUN, 1))
    for junk in ("md:binance:nonsense", "md:junk", "md:binance:trades:", "md:binance:status:x"):
        await redis.publish(junk, b"junk")
    await redis.publish(b"md:binance:trades:\xff\xfe", b"junk")
    return len(undecodable) + 5


def differences(subs: list[Follower], truth: dict[str, list[str]]) -> list[str]:
    """Per subscriber and feed: the stream's trades it lacks and the trades it has extra."""
    found: list[str] = []
    for f in subs:
        for feed, ids in truth.items():
            got = set(f.trade_ids.get(feed, []))
            lacks, extra = sorted(set(ids) - got), sorted(got - set(ids))
            if lacks or extra:
                found.append(f"{f.name} {feed}: lacks {lacks[:10]}, extra {extra[:10]}")
    return found


async def real_trades(redis: aioredis.Redis, truth: dict[str, list[str]]) -> list[Trades]:
    """The trades messages of the streams in *truth* that decode."""
    found: list[Trades] = []
    for feed in truth:
        for _, fields in await redis.xrange(feed):
            try:
                message = decode(fields.get(b"d", b""))
            except ContractError:
                continue
            if isinstance(message, Trades):
                found.append(message)
    return found


def stream_truth(entries: list[tuple[bytes, dict[bytes, bytes]]], feed: str) -> list[str]:
    """Trade ids of the entries readers must apply: decodable messages of *feed* at their
    own ``{run}-{seq}``, from a plausible run (forged ones included: the stream is the
    authority)."""
    ids: list[str] = []
    now_ms = time.time_ns() // 1_000_000
    for entry_id, fields in entries:
        try:
            message: Message = decode(fields.get(b"d", b""))
        except ContractError:
            continue
        if not isinstance(message, Trades) or not of_feed(message, feed):
            continue
        if parse_entry_id(entry_id) != (message.run, message.seq):
            continue
        if message.run > now_ms + MAX_RUN_AHEAD_MS:
            continue
        ids.extend(t.id or "" for t in message.trades)
    return ids


async def test_bad_input_costs_only_itself_and_every_stream_message_arrives_once(
    redis_url: str, binance_sim: SimServer
) -> None:
    config = producer_config(redis_url, binance_sim, kinds=["trades", "ticker"])
    redis = aioredis.Redis.from_url(redis_url)
    try:
        async with followers(redis_url) as subs, running_tail(redis_url) as tail:
            async with Producer(config) as producer:

                async def trades_written(count: int) -> bool:
                    return int(await redis.xlen(BTC_TRADES)) >= count

                await wait_until(lambda: trades_written(20), DEADLINE_S, "the producer's trades")
                first_run = producer.run_id

                async def tail_subscribed() -> bool:
                    return int(await redis.execute_command("PUBSUB", "NUMPAT")) > 0

                await wait_until(tail_subscribed, DEADLINE_S, "tail to subscribe")
                run, seq = await tail_id(redis, BTC_TRADES)
                published_junk = await publish_everything(redis, run, seq)

                # XADD onto the producer's streams.
                for payload in (b"x", DEEP_JSON, DEEP_MSGPACK, b"", HUGE):
                    await redis.xadd(BTC_TRADES, {"d": payload})  # foreign '*' ids
                await redis.xadd(ETH_TRADES, {"not d": b"x"})
                await xadd_above(redis, ETH_TRADES, lambda r, s: ticker("ETH/USDT", r, s), 1000)
                # A valid message of this feed at a later run is what a real second
                # producer writes (the producer fences on it). The forgery meant here is
                # a seq the producer never handed out in its own run: forge it once the
                # producer has written past the '*' entries above, in its new run.
                await wait_until(
                    lambda: producer_on_top(redis, BTC_TRADES), DEADLINE_S, "BTC trades past '*'"
                )
                await xadd_above(
                    redis, BTC_TRADES, lambda r, s: trades("BTC/USDT", r, s, "forged"), 1_000_000
                )
                await redis.xadd(
                    ETH_TICKER, {"d": ticker("ETH/USDT", FUTURE_RUN, 1)}, id=f"{FUTURE_RUN}-1"
                )
                await redis.xadd(STATUS, {"d": DEEP_JSON})

                # The producer announces what it found and writes on past it.
                async def announced() -> bool:
                    found = set()
                    for _, fields in await redis.xrange(STATUS):
                        try:
                            m = decode(fields.get(b"d", b""))
                        except ContractError:
                            continue
                        if isinstance(m, Status) and m.event == "error" and m.feed:
                            found.add(m.feed)
                    return {BTC_TRADES, ETH_TICKER} <= found

                await wait_until(announced, DEADLINE_S, "the foreign entries announced")
                assert producer.run_id > first_run
                count = int(await redis.xlen(BTC_TRADES))
                await wait_until(lambda: trades_written(count + 20), DEADLINE_S, "trades after")
                status = await asyncio.to_thread(run_status, redis_url)
                assert status.returncode == 0, status.stderr
                assert "Traceback" not in status.stderr
                assert "undecodable or foreign stream entries" in status.stdout, status.stdout

                await redis.delete(ETH_TICKER)  # the operator's fix for the future entry

                async def ticker_again() -> bool:
                    return int(await redis.xlen(ETH_TICKER)) > 0

                await wait_until(ticker_again, DEADLINE_S, "the ETH ticker after DEL")
                assert producer.failure is None, producer.failure
                assert tail.proc.returncode is None, "tail died"
            # The producer stopped (flushed): the streams are final.
            truth = {
                feed: stream_truth(await redis.xrange(feed), feed)
                for feed in (BTC_TRADES, ETH_TRADES)
            }
            assert "forged" in truth[BTC_TRADES]

            rewritten = dict(producer.publisher.rewritten)
            batch = max(len(m.trades) for m in await real_trades(redis, truth))
            made = {str(t.id) for s in SYMBOLS for t in binance_sim.market.trades(s)} | {"forged"}

            def delivered() -> bool:
                return all(
                    set(f.trade_ids.get(feed, [])) == set(ids)
                    for f in subs
                    for feed, ids in truth.items()
                )

            try:
                await wait_until(delivered, DEADLINE_S, "every stream trade at every subscriber")
            except AssertionError as timeout:
                raise AssertionError(f"{timeout}: {differences(subs, truth)}") from None
            for f in subs:
                for feed in truth:
                    got = f.trade_ids[feed]
                    assert set(got) <= made, f"{f.name} delivered a trade nobody made"
                    # Only a message the producer wrote again after a foreign entry refused
                    # it may arrive twice (live at its old id, then from the new run).
                    twice = len(got) - len(set(got))
                    assert twice <= rewritten.get(feed, 0) * batch, (f.name, feed, twice)
            for f in subs:
                stats = f.sub.stats
                assert f.sub.trades("binance", "BTC/USDT") is not None  # not failed
                assert f.tickers > 0
                assert stats.undecodable >= 5, (f.name, stats)
                assert stats.rejected >= 1, (f.name, stats)
                assert stats.suspect >= 2, (f.name, stats)
            assert tail.proc.returncode is None, "tail died"
            assert tail.undecodable() == published_junk, [
                line for line in tail.lines if line.startswith("UNDECODABLE")
            ]
            tail.proc.send_signal(signal.SIGINT)
            assert await asyncio.wait_for(tail.proc.wait(), DEADLINE_S) == 0
    finally:
        await redis.aclose()


async def test_a_stream_entry_of_another_symbol_is_not_delivered(redis_url: str) -> None:
    redis = aioredis.Redis.from_url(redis_url)
    got: list[Trades] = []
    try:
        await redis.xadd(ETH_TRADES, {"d": trades("ETH/USDT", 5, 1, "1")}, id="5-1")
        async with Subscriber(redis_url, backoff=FAST, on_message=got.append) as sub:  # type: ignore[arg-type]
            await sub.subscribe(ETH_TRADES)
            await redis.xadd(ETH_TRADES, {"d": trades("BTC/USDT", 5, 2, "other")}, id="5-2")
            await redis.publish(ETH_TRADES, trades("ETH/USDT", 5, 3, "3"))  # a jump: repair
            await redis.xadd(ETH_TRADES, {"d": trades("ETH/USDT", 5, 3, "3")}, id="5-3")
            await wait_until(lambda: sub.stats.applied >= 2 or sub.stats.rejected >= 1, DEADLINE_S)
            await wait_until(lambda: any(t.id == "3" for m in got for t in m.trades), DEADLINE_S)
        assert all(m.symbol == "ETH/USDT" for m in got), got
    finally:
        await redis.aclose()
