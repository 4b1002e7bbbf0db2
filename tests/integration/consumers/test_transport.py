"""FastPubSubTransport (the default single-server transport) against real redis-servers:
reconnect and re-subscribe, confirmations before data, ACL, TLS, db select."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from marketbus.consumers import Subscriber
from marketbus.consumers.engine import Live
from marketbus.consumers.transport import FastPubSubTransport, hand_over
from marketbus.shared.config import RedisConfig
from marketbus.shared.errors import CommandError, ConnectionLostError
from tests.integration.deploy.test_tls import Pki
from tests.support.redis_process import RedisProcess
from tests.support.waiting import wait_until
from tests.support.wire_writer import WireWriter
from tests.unit.deploy.files import ADMIN, CONSUMER, acl_file_for_tests, password_for

SYM = "BTC/USDT"
A, B = "md:binance:trades:A/USDT", "md:binance:trades:B/USDT"


class Recorder:
    """A `FrameSink` that records what it is handed, in order."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str]] = []

    def on_live_batch(self, batch: Sequence[Live]) -> None:
        for channel, _pattern, payload in batch:
            name = channel.decode() if isinstance(channel, bytes) else channel
            self.events.append((name, payload.decode()))

    def on_subscribed(self, channel: str) -> None:
        self.events.append((channel, "SUBSCRIBED"))

    def on_psubscribed(self, pattern: str) -> None:
        self.events.append((pattern, "PSUBSCRIBED"))


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(redis_url)
    yield client
    await client.aclose()


async def pump_until(
    transport: FastPubSubTransport, condition: Callable[[], bool], timeout_s: float = 5.0
) -> None:
    """Run the transport as the subscriber's read loop does until *condition* holds."""
    async with asyncio.timeout(timeout_s):
        while not condition():
            await transport.pump(0.02)


async def test_reconnect_confirms_every_channel_and_pattern_before_their_messages(
    redis_url: str, redis: aioredis.Redis
) -> None:
    sink = Recorder()
    transport = FastPubSubTransport(RedisConfig(url=redis_url), sink)
    try:
        await transport.connect()
        await transport.subscribe([A])
        await transport.psubscribe(["md:okx:*"])
        assert sink.events == [(A, "SUBSCRIBED"), ("md:okx:*", "PSUBSCRIBED")]
        await redis.publish(A, "1")
        await pump_until(transport, lambda: (A, "1") in sink.events)
        sink.events.clear()

        await redis.client_kill_filter(_type="pubsub")
        with pytest.raises(ConnectionLostError):
            await pump_until(transport, lambda: False)
        assert not transport.connected
        await transport.subscribe([B])  # while disconnected: kept for the reconnect
        await transport.pump(0.02)  # reconnects, re-subscribes and returns
        assert transport.connected
        assert sorted(sink.events) == [
            (A, "SUBSCRIBED"),
            (B, "SUBSCRIBED"),
            ("md:okx:*", "PSUBSCRIBED"),
        ]
        for channel in (A, B, "md:okx:trades:X"):
            await redis.publish(channel, "2")
        await pump_until(transport, lambda: len(sink.events) == 6)
        assert sink.events[3:] == [(A, "2"), (B, "2"), ("md:okx:trades:X", "2")]
    finally:
        await transport.close()


def test_a_message_in_the_same_read_as_its_confirmation_comes_after_it() -> None:
    """Redis sends a channel's confirmation before its first message; when both come in
    one socket read, the sink still gets the confirmation first (what
    `FastPubSubTransport` does with every socket read: `hand_over`)."""
    sink = Recorder()
    unreported = {A.encode(): A}  # as if SUBSCRIBE A were in flight
    hand_over([(A.encode(), None, b"1"), (B.encode(), None, b"x")], sink, unreported, {})
    assert sink.events == [(A, "SUBSCRIBED"), (A, "1"), (B, "x")]
    assert not unreported


async def test_wake_returns_a_waiting_pump_at_once(redis_url: str) -> None:
    transport = FastPubSubTransport(RedisConfig(url=redis_url), Recorder())
    try:
        await transport.connect()
        pump = asyncio.create_task(transport.pump(30.0))
        await wait_until(lambda: transport.pump_waiting, what="pump waiting")
        transport.wake()
        async with asyncio.timeout(2):
            await pump
        transport.wake()  # with no pump waiting, the next one returns at once
        async with asyncio.timeout(2):
            await transport.pump(30.0)
    finally:
        await transport.close()


async def test_an_error_of_the_sink_is_raised_by_pump_not_retried(
    redis_url: str, redis: aioredis.Redis
) -> None:
    class Broken(Recorder):
        def on_live_batch(self, batch: Sequence[Live]) -> None:
            raise ValueError("engine bug")

    transport = FastPubSubTransport(RedisConfig(url=redis_url), Broken())
    try:
        await transport.connect()
        await transport.subscribe([A])
        await redis.publish(A, "1")
        with pytest.raises(ValueError, match="engine bug"):
            await pump_until(transport, lambda: False)
    finally:
        await transport.close()


async def test_acl_refusal_is_raised_and_the_channel_forgotten(
    make_redis_server: Callable[..., RedisProcess], tmp_path: Path
) -> None:
    server = make_redis_server(["--aclfile", str(acl_file_for_tests(tmp_path))])
    base = f"127.0.0.1:{server.port}/0"
    url = f"redis://{CONSUMER}:{password_for(CONSUMER)}@{base}"
    admin = aioredis.Redis.from_url(f"redis://{ADMIN}:{password_for(ADMIN)}@{base}")
    sink = Recorder()
    transport = FastPubSubTransport(RedisConfig(url=url), sink)
    try:
        await transport.connect()
        with pytest.raises(CommandError, match="NOPERM"):
            await transport.subscribe(["other:binance:trades:X"])
        await transport.subscribe([A])
        await admin.client_kill_filter(_type="pubsub")
        with pytest.raises(ConnectionLostError):
            await pump_until(transport, lambda: False)
        sink.events.clear()
        await transport.pump(0.02)  # the refused channel is not asked for again
        assert sink.events == [(A, "SUBSCRIBED")]
    finally:
        await transport.close()
        await admin.aclose()


async def test_subscriber_over_tls_as_the_acl_consumer_user(
    tls_server: tuple[int, RedisProcess], pki: Pki
) -> None:
    port, server = tls_server
    admin = aioredis.Redis.from_url(
        f"redis://{ADMIN}:{password_for(ADMIN)}@127.0.0.1:{server.port}/0"
    )
    writer = WireWriter(admin, run=3)
    feed = writer.feed("trades", SYM)
    config = RedisConfig(
        url=f"rediss://{CONSUMER}:{password_for(CONSUMER)}@127.0.0.1:{port}/0",
        tls_ca_file=str(pki.ca),
        tls_cert_file=str(pki.client_cert),
        tls_key_file=str(pki.client_key),
    )
    try:
        await admin.delete(feed)
        await writer.write(feed, writer.trades(SYM, 1.0))
        async with Subscriber(config) as sub:
            await sub.subscribe(feed)
            assert [t.price for t in sub.trades("binance", SYM)] == [1.0]
            await writer.write(feed, writer.trades(SYM, 2.0))
            await wait_until(lambda: len(sub.trades("binance", SYM)) == 2)
            assert sub.stats.received == 1
    finally:
        await admin.aclose()


async def test_subscriber_on_another_db_reads_that_dbs_streams(redis_server: RedisProcess) -> None:
    url = f"{redis_server.url.rsplit('/', 1)[0]}/3"
    redis = aioredis.Redis.from_url(url)
    writer = WireWriter(redis, run=4)
    feed = writer.feed("trades", SYM)
    try:
        await redis.flushdb()
        await writer.write(feed, writer.trades(SYM, 1.0))  # in db 3 only
        async with Subscriber(url) as sub:
            await sub.subscribe(feed)
            assert len(sub.trades("binance", SYM)) == 1
            await writer.write(feed, writer.trades(SYM, 2.0))
            await wait_until(lambda: len(sub.trades("binance", SYM)) == 2)
    finally:
        await redis.flushdb()
        await redis.aclose()
