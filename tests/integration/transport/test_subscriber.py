"""SubscriberConnection against real private redis-server processes."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable

import pytest
import redis.asyncio as aioredis

from marketbus.shared.config import RedisConfig
from marketbus.shared.errors import ConnectionLostError, RedisUnavailableError
from marketbus.shared.resp import FeedCommands
from marketbus.shared.transport import PipelineWriter, PubSubMessage, SubscriberConnection
from marketbus.shared.transport.connection import FEED_SLICE_BYTES
from tests.support.redis_process import RedisProcess
from tests.support.waiting import wait_until

FEEDS = [f"md:binance:trades:C{i}/USDT" for i in range(10)]


async def publish(writer: PipelineWriter, count: int, feeds: list[str] = FEEDS) -> None:
    """*count* messages per feed, payload = b"{feed}|{seq}", in batches of 1000."""
    commands = [FeedCommands(feed, 100_000) for feed in feeds]
    out: list[bytes] = []
    for seq in range(1, count + 1):
        for feed in commands:
            feed.append_publish(out, b"%s|%d" % (feed.feed.encode(), seq))
        if len(out) >= 4_000:
            writer.send_parts(out, len(out) // 4)
            out.clear()
            await writer.drain()
    if out:
        writer.send_parts(out, len(out) // 4)
    await writer.flush()


def check_in_order(messages: list[PubSubMessage], count: int, feeds: list[str]) -> None:
    by_feed: dict[bytes, list[int]] = {}
    for channel, _pattern, payload in messages:
        name, _, seq = payload.partition(b"|")
        assert name == channel
        by_feed.setdefault(channel, []).append(int(seq))
    assert by_feed == {feed.encode(): list(range(1, count + 1)) for feed in feeds}


async def test_every_message_arrives_in_order_under_load(redis_url: str) -> None:
    config = RedisConfig(url=redis_url)
    got: list[PubSubMessage] = []
    sub = await SubscriberConnection.open(config, on_batch=got.extend)
    await sub.subscribe(*FEEDS)
    assert sub.channels == {feed.encode() for feed in FEEDS}
    writer = await PipelineWriter.open(config)
    await publish(writer, 5_000)
    await wait_until(lambda: len(got) >= 50_000, what="50k messages")
    check_in_order(got, 5_000, FEEDS)
    assert sub.received == 50_000
    await writer.aclose()
    await sub.aclose()
    await sub.wait_closed()  # a deliberate close is not an error


async def test_payloads_larger_than_a_parser_slice_arrive_whole(redis_url: str) -> None:
    """Reads are parsed in `FEED_SLICE_BYTES` slices: big messages (book snapshots) and
    small ones around them must come out whole and in order."""
    config = RedisConfig(url=redis_url)
    got: list[PubSubMessage] = []
    sub = await SubscriberConnection.open(config, on_batch=got.extend)
    await sub.subscribe(FEEDS[0])
    sizes = [1, FEED_SLICE_BYTES - 40, FEED_SLICE_BYTES, 3 * FEED_SLICE_BYTES + 7, 10, 200_000]
    payloads = [bytes([65 + i]) * size for i, size in enumerate(sizes * 20)]
    writer = await PipelineWriter.open(config)
    commands = FeedCommands(FEEDS[0], 1_000)
    out: list[bytes] = []
    for payload in payloads:
        commands.append_publish(out, payload)
    writer.send_parts(out, len(payloads))
    await writer.flush()
    await wait_until(lambda: len(got) >= len(payloads), what="every payload")
    assert [payload for _, _, payload in got] == payloads
    await writer.aclose()
    await sub.aclose()


async def test_psubscribe_reports_the_pattern(redis_url: str) -> None:
    config = RedisConfig(url=redis_url)
    sub = await SubscriberConnection.open(config)
    await sub.psubscribe("md:binance:*")
    writer = await PipelineWriter.open(config)
    await writer.execute("PUBLISH", "md:binance:ticker:BTC/USDT", b"t")
    await writer.execute("PUBLISH", "md:okx:ticker:BTC/USDT", b"not matched")
    assert await asyncio.wait_for(sub.get(), 5) == [
        (b"md:binance:ticker:BTC/USDT", b"md:binance:*", b"t")
    ]
    await sub.punsubscribe()
    assert sub.patterns == frozenset()
    await writer.aclose()
    await sub.aclose()


async def test_queue_mode_pauses_reading_at_its_bound_and_loses_nothing(redis_url: str) -> None:
    config = RedisConfig(url=redis_url)
    sub = await SubscriberConnection.open(config, max_queued=500)
    await sub.subscribe(*FEEDS)
    writer = await PipelineWriter.open(config)
    await publish(writer, 2_000)
    await wait_until(lambda: sub.reading_paused, what="reading paused at the bound")
    queued_at_pause = sub.queued
    got: list[PubSubMessage] = []
    async with asyncio.timeout(10):
        async for batch in sub:
            got.extend(batch)
            if len(got) >= 20_000:
                break
    # The bound is checked per socket read (at most 256 KiB, i.e. under 20k messages here).
    assert 500 <= queued_at_pause < 500 + 20_000
    assert sub.reading_paused is False
    check_in_order(got, 2_000, FEEDS)
    await writer.aclose()
    await sub.aclose()


async def test_unsubscribe_stops_delivery(redis_url: str) -> None:
    config = RedisConfig(url=redis_url)
    sub = await SubscriberConnection.open(config)
    await sub.subscribe("a", "b")
    await sub.unsubscribe("a")
    assert sub.channels == {b"b"}
    writer = await PipelineWriter.open(config)
    await writer.execute("PUBLISH", "a", b"1")
    await writer.execute("PUBLISH", "b", b"2")
    assert await asyncio.wait_for(sub.get(), 5) == [(b"b", None, b"2")]
    await sub.unsubscribe()
    assert sub.channels == frozenset()
    await writer.aclose()
    await sub.aclose()


async def test_client_kill_is_detected_at_once(redis_url: str) -> None:
    sub = await SubscriberConnection.open(RedisConfig(url=redis_url), on_batch=lambda b: None)
    await sub.subscribe("x")
    admin = aioredis.Redis.from_url(redis_url)
    await admin.execute_command("CLIENT", "KILL", "TYPE", "pubsub")
    await admin.aclose()
    with pytest.raises(ConnectionLostError, match="lost"):
        await asyncio.wait_for(sub.wait_closed(), 5)


async def test_queue_reader_sees_loss_after_the_queued_messages(
    make_redis_server: Callable[..., RedisProcess],
) -> None:
    server = make_redis_server()
    config = RedisConfig(url=server.url)
    sub = await SubscriberConnection.open(config)
    await sub.subscribe("x")
    writer = await PipelineWriter.open(config)
    await writer.execute("PUBLISH", "x", b"last words")
    await wait_until(lambda: sub.received == 1, what="the message")
    server.kill()
    assert await sub.get() == [(b"x", None, b"last words")]
    with pytest.raises(ConnectionLostError):
        await asyncio.wait_for(sub.get(), 5)


async def test_silent_server_is_detected_by_the_health_check(
    make_redis_server: Callable[..., RedisProcess],
) -> None:
    server = make_redis_server()
    sub = await SubscriberConnection.open(
        RedisConfig(url=server.url), on_batch=lambda b: None, health_check_s=0.1
    )
    await sub.subscribe("x")
    assert server.proc is not None
    server.proc.send_signal(signal.SIGSTOP)  # sockets stay open, nothing answers
    try:
        with pytest.raises(ConnectionLostError, match="not even a PONG"):
            await asyncio.wait_for(sub.wait_closed(), 5)
    finally:
        server.proc.send_signal(signal.SIGCONT)


async def test_idle_healthy_connection_stays_up(redis_url: str) -> None:
    sub = await SubscriberConnection.open(
        RedisConfig(url=redis_url), on_batch=lambda b: None, health_check_s=0.05
    )
    await sub.subscribe("quiet")
    pings = 0

    def count_pings() -> bool:
        nonlocal pings
        pings += sub.pinged
        return pings >= 3

    await wait_until(count_pings, what="a few health-check PINGs", poll_s=0.05)
    assert sub.is_connected
    await sub.aclose()


async def test_callback_error_closes_and_is_reraised(redis_url: str) -> None:
    def broken(batch: list[PubSubMessage]) -> None:
        raise KeyError("bug in the consumer")

    config = RedisConfig(url=redis_url)
    sub = await SubscriberConnection.open(config, on_batch=broken)
    await sub.subscribe("x")
    writer = await PipelineWriter.open(config)
    await writer.execute("PUBLISH", "x", b"boom")
    with pytest.raises(KeyError, match="bug in the consumer"):
        await asyncio.wait_for(sub.wait_closed(), 5)
    await writer.aclose()


async def test_subscriber_logs_in_and_refuses_bad_credentials(
    make_redis_server: Callable[..., RedisProcess],
) -> None:
    server = make_redis_server(["--requirepass", "pw"])
    with pytest.raises(RedisUnavailableError, match="refused the credentials"):
        await SubscriberConnection.open(RedisConfig(url=f"redis://:nope@127.0.0.1:{server.port}"))
    sub = await SubscriberConnection.open(RedisConfig(url=f"redis://:pw@127.0.0.1:{server.port}"))
    await sub.subscribe("x")
    assert sub.channels == {b"x"}
    await sub.aclose()
