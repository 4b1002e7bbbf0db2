"""Target 2: messages/s received, decoded into typed Structs and applied to buffers.

Method: the subscriber subscribes and is ready (empty streams, every feed live), then
its event loop is blocked while another thread publishes N messages, which Redis holds
for it (the bench server has no pubsub output-buffer limit). The clock runs from the
loop's release to the N-th message applied, so the figure is the subscriber's own
throughput, not the publisher's. Payloads are real SPEC candles (JSON), each one newer
than the last of its feed, so every message is applied (none dropped as old).

Rows:
- real Subscriber: the consumer SDK as a strategy runs it, ``Subscriber(url)`` (its
  default fast transport) with one `CandleBuffer` per feed, no listener, vs the
  baseline: redis-py ``PubSub.get_message`` + `codecs.decode` + `CandleBuffer.apply`;
- real Subscriber, both transports: the same Subscriber on ``transport="redis-py"``;
- transport ceiling: `SubscriberConnection` callback + `codecs.decode` +
  `CandleBuffer.apply` (no Engine), vs the same redis-py baseline;
- with a listener: the real Subscriber calling a strategy's ``on_message`` for every
  update, with the default queued delivery (mailbox + listener task) and with
  ``delivery="inline"``, vs the same redis-py baseline (whose loop is the callback).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable, Iterable

import msgspec
import redis.asyncio as aioredis

from bench.report import Row
from bench.workload import RUN, Workload
from marketbus.consumers import BufferSizes, Subscriber, Update
from marketbus.consumers.buffers import CandleBuffer
from marketbus.consumers.options import DeliveryMode, TransportKind
from marketbus.shared.codecs import decode, encoder_for
from marketbus.shared.config import RedisConfig
from marketbus.shared.resp import FeedCommands
from marketbus.shared.schema import OHLCV
from marketbus.shared.transport import PipelineWriter, PubSubMessage, SubscriberConnection

DEADLINE_S = 120.0


def payloads(work: Workload) -> list[tuple[str, bytes]]:
    """``(feed, payload)`` stamped with run/seq, as the producer would publish them."""
    names = work.feed_names()
    encode = encoder_for("json").encode
    seqs = [0] * len(names)
    out = []
    for index, message in work.messages():
        seqs[index] += 1
        stamped = msgspec.structs.replace(message, run=RUN, seq=seqs[index])
        out.append((names[index], encode(stamped)))
    return out


async def publish_all(url: str, items: Iterable[tuple[str, bytes]]) -> None:
    """PUBLISH each ``(channel, payload)``, pipelined (no XADD: live messages only)."""
    writer = await PipelineWriter.open(RedisConfig(url=url))
    commands: dict[str, FeedCommands] = {}
    out: list[bytes] = []
    for feed, payload in items:
        cmd = commands.get(feed) or commands.setdefault(feed, FeedCommands(feed, 1))
        cmd.append_publish(out, payload)
        if len(out) >= 4096:
            writer.send_parts(out, len(out) // 4)
            out.clear()
            await writer.drain()
    writer.send_parts(out, len(out) // 4)
    await writer.flush()
    await writer.aclose()


def publish_while_blocked(url: str, items: list[tuple[str, bytes]]) -> None:
    """Publish *items* from another thread while this thread's event loop waits: the
    subscriber cannot read meanwhile, so Redis holds the whole backlog for it."""
    failure: list[BaseException] = []

    def target() -> None:
        try:
            asyncio.run(publish_all(url, items))
        except BaseException as exc:  # re-raised in the caller's thread
            failure.append(exc)

    thread = threading.Thread(target=target, name="bench-publisher")
    thread.start()
    thread.join(DEADLINE_S)  # blocks the loop on purpose
    if thread.is_alive() or failure:
        raise RuntimeError(f"publisher failed: {failure[0] if failure else 'timed out'}")


async def until(condition: Callable[[], bool]) -> None:
    """Wait for *condition*, checked every ms: a counter polled, because a listener
    would add its own cost to the path measured."""
    async with asyncio.timeout(DEADLINE_S):
        while not condition():  # noqa: ASYNC110
            await asyncio.sleep(0.001)


async def timed_backlog(
    url: str, items: list[tuple[str, bytes]], done: Callable[[], bool | Awaitable[None]]
) -> float:
    """msg/s: publish *items* while blocked, then time until *done*."""
    publish_while_blocked(url, items)
    start = time.perf_counter()
    result = done()
    if not isinstance(result, bool):
        await result
    return len(items) / (time.perf_counter() - start)


async def subscriber_rate(
    url: str,
    work: Workload,
    items: list[tuple[str, bytes]],
    transport: TransportKind = "fast",
    delivery: DeliveryMode | None = None,
) -> float:
    """The real consumer SDK: Subscriber -> Engine -> CandleBuffer per feed; with a
    *delivery*, also an ``on_message`` listener (counting updates) delivered that way."""
    admin = aioredis.Redis.from_url(url)
    await admin.flushall()  # empty streams: each feed is ready at once
    await admin.aclose()
    delivered = 0

    def on_message(update: Update) -> None:
        nonlocal delivered
        delivered += 1

    sizes = BufferSizes(candles=1_000, stale_after_s=None)
    async with Subscriber(
        url,
        sizes=sizes,
        transport=transport,
        on_message=None if delivery is None else on_message,
        delivery=delivery or "queued",
    ) as sub:
        await sub.subscribe(*work.feed_names())
        target = sub.stats.applied + len(items)

        def done() -> bool:
            if delivery is not None:
                return delivered >= len(items)
            return sub.stats.applied >= target

        rate = await timed_backlog(url, items, lambda: until(done))
        stats = sub.stats
        assert stats.applied == target and stats.gaps == 0 and stats.reconnects == 0, stats
        assert delivery is None or delivered == len(items), delivered
    return rate


async def connection_rate(url: str, work: Workload, items: list[tuple[str, bytes]]) -> float:
    """The transport ceiling: socket callback -> decode -> CandleBuffer, no Engine."""
    buffers = {name.encode(): CandleBuffer(1_000, "1m") for name in work.feed_names()}
    applied = 0

    def on_batch(batch: list[PubSubMessage]) -> None:
        nonlocal applied
        for channel, _pattern, payload in batch:
            message = decode(payload)
            assert isinstance(message, OHLCV)
            buffers[channel].apply(message)
        applied += len(batch)

    sub = await SubscriberConnection.open(RedisConfig(url=url), on_batch=on_batch)
    try:
        await sub.subscribe(*buffers)
        return await timed_backlog(url, items, lambda: until(lambda: applied >= len(items)))
    finally:
        await sub.aclose()


async def redispy_rate(url: str, work: Workload, items: list[tuple[str, bytes]]) -> float:
    """The baseline: redis-py PubSub.get_message -> decode -> CandleBuffer."""
    buffers = {name: CandleBuffer(1_000, "1m") for name in work.feed_names()}
    redis = aioredis.Redis.from_url(url)
    pubsub = redis.pubsub(ignore_subscribe_messages=True)
    await pubsub.subscribe(*buffers)

    async def consume() -> None:
        applied = 0
        async with asyncio.timeout(DEADLINE_S):
            while applied < len(items):
                got = await pubsub.get_message(timeout=1.0)
                if got is None:
                    continue
                message = decode(got["data"])
                assert isinstance(message, OHLCV)
                buffers[got["channel"].decode()].apply(message)
                applied += 1

    try:
        return await timed_backlog(url, items, consume)
    finally:
        await pubsub.aclose()  # type: ignore[no-untyped-call]
        await redis.aclose()


async def run(url: str, runs: int, count: int) -> list[Row]:
    sdk = Row(
        "subscribe, real Subscriber -> Engine -> CandleBuffer",
        "msg/s",
        baseline_name="redis-py PubSub.get_message + decode + apply",
        target=">= 300k msg/s and >= 6x",
    )
    transports = Row(
        "subscribe, real Subscriber: fast vs redis-py transport",
        "msg/s",
        baseline_name='Subscriber(transport="redis-py")',
    )
    ceiling = Row(
        "subscribe, transport ceiling: callback + decode + apply",
        "msg/s",
        baseline_name="redis-py PubSub.get_message + decode + apply",
    )
    listeners = {
        delivery: Row(
            f"subscribe, real Subscriber + on_message listener, {label}",
            "msg/s",
            baseline_name="redis-py PubSub.get_message + decode + apply",
        )
        for delivery, label in (("queued", "default (queued)"), ("inline", 'delivery="inline"'))
    }
    work, base = Workload(count), Workload(max(count // 5, 1_000))
    items, base_items = payloads(work), payloads(base)
    for _ in range(runs):
        sdk.marketbus.append(await subscriber_rate(url, work, items, "fast"))
        sdk.baseline.append(await redispy_rate(url, base, base_items))
        transports.baseline.append(await subscriber_rate(url, base, base_items, "redis-py"))
        ceiling.marketbus.append(await connection_rate(url, work, items))
        for delivery, row in listeners.items():
            row.marketbus.append(await subscriber_rate(url, work, items, delivery=delivery))
    transports.marketbus = sdk.marketbus
    ceiling.baseline = sdk.baseline
    for row in listeners.values():
        row.baseline = sdk.baseline
    return [sdk, transports, ceiling, *listeners.values()]
