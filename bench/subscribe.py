"""Target 2: messages/s received, decoded into typed Structs and applied to buffers.

Method: the subscriber subscribes, stops reading, and N messages are published; Redis
holds them for it (the bench server has no pubsub output-buffer limit). The clock runs
from "start reading" to the N-th message applied, so the figure is the subscriber's
own throughput, not the publisher's. Payloads are real SPEC candles (JSON), each one
newer than the last of its feed, so every message is applied (none dropped as old).

Rows:
- decode + CandleBuffer: `SubscriberConnection` (callback mode) vs redis-py
  ``PubSub.get_message``, both decoding with `marketbus.shared.codecs.decode` and
  applying to the consumer's real `CandleBuffer` (one per feed);
- consumer Engine: the consumer SDK's read seam `PubSubTransport.read` (redis-py) vs
  `FastPubSubTransport.read`, both feeding the real sans-I/O `Engine.on_live_batch`.
"""

from __future__ import annotations

import asyncio
import time

import msgspec
import redis.asyncio as aioredis

from bench.adapters import FastPubSubTransport
from bench.report import Row
from bench.workload import RUN, Workload
from marketbus.consumers.buffers import CandleBuffer
from marketbus.consumers.engine import BufferSizes, Engine
from marketbus.consumers.transport import DATA, PubSubTransport
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


async def publish_all(url: str, items: list[tuple[str, bytes]]) -> None:
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


def candle_buffers(work: Workload) -> dict[str, CandleBuffer]:
    return {name: CandleBuffer(1_000, "1m") for name in work.feed_names()}


async def fast_rate(url: str, work: Workload, items: list[tuple[str, bytes]]) -> float:
    buffers = {name.encode(): buf for name, buf in candle_buffers(work).items()}
    applied = 0
    done = asyncio.get_running_loop().create_future()

    def on_batch(batch: list[PubSubMessage]) -> None:
        nonlocal applied
        for channel, _pattern, payload in batch:
            message = decode(payload)
            assert isinstance(message, OHLCV)
            buffers[channel].apply(message)
        applied += len(batch)
        if applied >= len(items) and not done.done():
            done.set_result(None)

    sub = await SubscriberConnection.open(
        RedisConfig(url=url), on_batch=on_batch, health_check_s=60
    )
    await sub.subscribe(*buffers)
    assert sub._transport is not None
    sub._transport.pause_reading()  # let Redis hold the backlog (bench only)
    await publish_all(url, items)
    start = time.perf_counter()
    sub._transport.resume_reading()
    await asyncio.wait_for(done, DEADLINE_S)
    elapsed = time.perf_counter() - start
    await sub.aclose()
    return len(items) / elapsed


async def redispy_rate(url: str, work: Workload, items: list[tuple[str, bytes]]) -> float:
    buffers = candle_buffers(work)
    redis = aioredis.Redis.from_url(url)
    pubsub = redis.pubsub(ignore_subscribe_messages=True)
    await pubsub.subscribe(*buffers)
    await publish_all(url, items)  # redis-py reads only when asked
    start = time.perf_counter()
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
    elapsed = time.perf_counter() - start
    await pubsub.aclose()  # type: ignore[no-untyped-call]
    await redis.aclose()
    return len(items) / elapsed


async def engine_rate(
    url: str,
    work: Workload,
    items: list[tuple[str, bytes]],
    transport: PubSubTransport | FastPubSubTransport,
) -> float:
    engine = Engine()
    names = work.feed_names()
    for name in names:
        engine.track(name, BufferSizes(candles=1_000))
    await transport.subscribe(names)
    # Confirmations -> resync -> empty history: every feed is live and ready.
    while len(engine.fetches) < len(names):
        for kind, channel, _ in await transport.read(1.0):
            if kind != DATA:
                engine.on_subscribed(channel)
    for fetch in engine.fetches:
        engine.on_history(fetch, [], done=True, stream_first=None)
    engine.fetches.clear()
    socket = None
    if isinstance(transport, FastPubSubTransport):
        assert transport._conn is not None
        socket = transport._conn._transport
        assert socket is not None
        socket.pause_reading()  # bench only, see module doc
    await publish_all(url, items)
    start = time.perf_counter()
    if socket is not None:
        socket.resume_reading()
    async with asyncio.timeout(DEADLINE_S):
        while engine.stats.received < len(items):
            frames = await transport.read(1.0)
            engine.on_live_batch(
                (channel, payload) for kind, channel, payload in frames if kind == DATA
            )
    elapsed = time.perf_counter() - start
    assert engine.stats.received == len(items)
    await transport.close()
    return len(items) / elapsed


async def run(url: str, runs: int, count: int) -> list[Row]:
    direct = Row(
        "subscribe, decode + CandleBuffer.apply",
        "msg/s",
        baseline_name="redis-py PubSub.get_message",
        target=">= 300k msg/s and >= 6x",
    )
    engine = Row(
        "subscribe, real consumer Engine",
        "msg/s",
        baseline_name="Engine on PubSubTransport (redis-py)",
        target="(same path as the consumer SDK)",
    )
    work, base = Workload(count), Workload(max(count // 5, 1_000))
    items, base_items = payloads(work), payloads(base)
    config = RedisConfig(url=url)
    for _ in range(runs):
        direct.marketbus.append(await fast_rate(url, work, items))
        direct.baseline.append(await redispy_rate(url, base, base_items))
        engine.marketbus.append(await engine_rate(url, work, items, FastPubSubTransport(config)))
        slow = PubSubTransport(aioredis.Redis.from_url(url))
        engine.baseline.append(await engine_rate(url, base, base_items, slow))
    return [direct, engine]
