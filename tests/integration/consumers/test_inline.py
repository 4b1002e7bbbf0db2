"""``delivery="inline"`` against a private redis-server: callbacks in the read path,
in order, with gaps, both error policies, and Redis dropping a slow one (resumed)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable

import msgspec
import pytest
import redis
import redis.asyncio as aioredis

from marketbus.consumers import Backoff, Gap, Subscriber, SubscriberClosedError, SyncSubscriber
from marketbus.consumers.events import Update
from marketbus.consumers.options import TransportKind
from marketbus.shared.codecs import encode
from marketbus.shared.errors import ConfigError
from marketbus.shared.names import STREAM_FIELD, entry_id
from tests.support.redis_process import RedisProcess
from tests.support.waiting import wait_until
from tests.support.wire_writer import WireWriter

SYM = "BTC/USDT"
ETH = "ETH/USDT"
FAST = Backoff(initial_s=0.02, maximum_s=0.2)


@pytest.fixture
async def client(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    connection = aioredis.Redis.from_url(redis_url)
    yield connection
    await connection.aclose()


async def write_trades(writer: WireWriter, feed: str, symbol: str, first: int, last: int) -> None:
    for i in range(first, last + 1):
        await writer.write(feed, writer.trades(symbol, float(i), first_id=i))


async def test_callbacks_run_in_the_read_path_in_feed_order(
    redis_url: str, client: aioredis.Redis, transport: TransportKind
) -> None:
    writer = WireWriter(client, run=7)
    btc, eth = writer.feed("trades", SYM), writer.feed("trades", ETH)
    seen: dict[str, list[int]] = {btc: [], eth: []}
    queued: list[int] = []
    where: set[str] = set()
    ahead: list[tuple[str, int]] = []

    def on_message(update: Update) -> None:
        feed = btc if update.symbol == SYM else eth
        seen[feed].append(update.seq)
        task = asyncio.current_task()
        where.add("socket handler" if task is None else task.get_name())
        if sub.position(feed) != update.position:  # applied past it before calling back
            ahead.append((feed, update.seq))

    async with Subscriber(
        redis_url, on_message=on_message, delivery="inline", transport=transport
    ) as sub:
        sub.on_message(lambda u: queued.append(u.seq), feeds=[btc])  # a queued one too
        await sub.subscribe(btc, eth)
        for first in range(1, 60, 10):
            await write_trades(writer, btc, SYM, first, first + 9)
            await write_trades(writer, eth, ETH, first, first + 9)
        await wait_until(lambda: len(seen[btc]) == len(seen[eth]) == len(queued) == 60)
    assert seen[btc] == seen[eth] == queued == list(range(1, 61))
    assert ahead == []
    # fast transport: straight from the protocol's data_received, outside any task;
    # redis-py: within the read loop's task, as it hands a read to the engine
    expected = "socket handler" if transport == "fast" else "marketbus-subscriber-read-loop"
    assert where == {expected}


async def test_gaps_are_delivered_inline_between_updates(
    redis_url: str, client: aioredis.Redis
) -> None:
    writer = WireWriter(client, run=7)
    feed = writer.feed("trades", SYM)
    order: list[str] = []
    async with Subscriber(redis_url) as sub:
        sub.on_message(
            lambda u: order.append(f"update {u.seq}"),
            on_gap=lambda g: order.append(f"{g.reason} {g.first_seq}..{g.last_seq}"),
            delivery="inline",
        )
        await sub.subscribe(feed)
        await write_trades(writer, feed, SYM, 1, 1)
        # 2 never reaches Redis, 3 reaches only the stream: 4 triggers the repair
        await writer.write(feed, writer.trades(SYM, 2.0), publish=False, stream=False)
        await writer.write(feed, writer.trades(SYM, 3.0), publish=False)
        await write_trades(writer, feed, SYM, 4, 4)
        await wait_until(lambda: len(order) == 4, what="updates and the gap")
        assert order == ["update 1", "missing 2..2", "update 3", "update 4"]
        assert sub.gaps == [Gap(feed=feed, run=7, first_seq=2, last_seq=2, reason="missing")]


async def test_error_policy_log_counts_and_goes_on(redis_url: str, client: aioredis.Redis) -> None:
    writer = WireWriter(client, run=7)
    feed = writer.feed("trades", SYM)
    seen: list[int] = []

    def picky(update: Update) -> None:
        if update.seq % 2 == 0:
            raise ValueError(f"strategy bug on {update.seq}")
        seen.append(update.seq)

    async with Subscriber(redis_url, on_message=picky, delivery="inline", on_error="log") as sub:
        await sub.subscribe(feed)
        await write_trades(writer, feed, SYM, 1, 7)
        await wait_until(lambda: seen == [1, 3, 5, 7] and sub.stats.callback_errors == 3)
        assert sub.connected and sub.stats.reconnects == 0


async def test_error_policy_raise_stops_the_subscriber(
    redis_url: str, client: aioredis.Redis, transport: TransportKind
) -> None:
    writer = WireWriter(client, run=7)
    feed = writer.feed("trades", SYM)
    calls: list[int] = []

    def broken(update: Update) -> None:
        calls.append(update.seq)
        raise ValueError("strategy bug")

    with pytest.raises(SubscriberClosedError) as info:
        async with Subscriber(redis_url, transport=transport) as sub:
            sub.on_message(broken, delivery="inline")
            await sub.subscribe(feed)
            await write_trades(writer, feed, SYM, 1, 3)
            async with asyncio.timeout(5):
                async for _ in sub:  # ends, raising, once the callback stopped it
                    pass
    assert isinstance(info.value.__cause__, ValueError)
    assert calls == [1]  # not called again once it failed


async def test_coroutine_callbacks_and_unknown_modes_are_config_errors() -> None:
    async def later(update: Update) -> None:
        return None

    with pytest.raises(ConfigError, match="delivery='queued'"):
        Subscriber("redis://127.0.0.1:1/0", on_message=later, delivery="inline")
    sub = Subscriber("redis://127.0.0.1:1/0", delivery="inline")
    with pytest.raises(ConfigError, match="coroutine function"):
        sub.on_message(later)
    sub.on_message(later, delivery="queued")  # the per-listener choice wins
    with pytest.raises(ConfigError, match="delivery"):
        Subscriber("redis://127.0.0.1:1/0", delivery="eager")  # type: ignore[arg-type]


def _flood_until_dropped(url: str, writer: WireWriter, feed: str, last: list[int]) -> None:
    """From a thread (the subscriber's loop is held by its callback): write big trades
    messages after seq 1 until Redis has dropped the pub/sub client; *last* gets the
    last seq written."""
    sync = redis.Redis.from_url(url)
    seq = 1
    try:
        while sync.client_list(_type="pubsub"):
            if seq > 50_000:
                raise AssertionError("Redis never dropped the pub/sub client")
            with sync.pipeline(transaction=False) as pipe:
                for _ in range(500):
                    seq += 1
                    message = writer.trades(SYM, *[float(seq)] * 30, first_id=seq)
                    payload = encode(msgspec.structs.replace(message, run=7, seq=seq))
                    pipe.xadd(feed, {STREAM_FIELD: payload}, id=entry_id(7, seq))
                    pipe.publish(feed, payload)
                pipe.execute()
    finally:
        last.append(seq)
        sync.close()


async def test_a_slow_callback_is_dropped_by_redis_and_the_feed_resumes_from_its_stream(
    make_redis_server: Callable[..., RedisProcess],
) -> None:
    server = make_redis_server(["--client-output-buffer-limit", "pubsub 64kb 0 0"])
    client = aioredis.Redis.from_url(server.url)
    writer = WireWriter(client, run=7)
    feed = writer.feed("trades", SYM)
    last: list[int] = []
    seen: list[int] = []

    def slow(update: Update) -> None:
        """Seq 1 holds the loop (and the socket) until the flood got us dropped."""
        if update.seq == 1:
            flood = threading.Thread(
                target=_flood_until_dropped, args=(server.url, writer, feed, last)
            )
            flood.start()
            flood.join(60)
            assert last, "the flood thread did not finish"
        seen.append(update.seq)

    try:
        async with Subscriber(
            server.url, on_message=slow, delivery="inline", backoff=FAST, trades=60_000
        ) as sub:
            await sub.subscribe(feed)
            await write_trades(writer, feed, SYM, 1, 1)
            await wait_until(lambda: bool(last) and len(seen) == last[0], timeout_s=30)
            assert seen == list(range(1, last[0] + 1))
            stats = sub.stats
            assert stats.reconnects >= 1 and stats.resumes >= 1 and stats.gaps == 0
    finally:
        await client.aclose()


async def test_sync_subscriber_calls_inline_callbacks_on_its_thread(
    redis_url: str, client: aioredis.Redis
) -> None:
    writer = WireWriter(client, run=7)
    feed = writer.feed("trades", SYM)
    seen: list[tuple[int, str]] = []
    sub = SyncSubscriber(
        redis_url,
        on_message=lambda u: seen.append((u.seq, threading.current_thread().name)),
        delivery="inline",
    )
    try:
        await asyncio.to_thread(sub.start)
        await asyncio.to_thread(sub.subscribe, feed)
        await write_trades(writer, feed, SYM, 1, 3)
        await wait_until(lambda: len(seen) == 3)
        assert seen == [(seq, "marketbus-subscriber") for seq in (1, 2, 3)]
    finally:
        await asyncio.to_thread(sub.close)
