"""Target 1: messages/s of SPEC messages (XADD + PUBLISH each) from one process.

Rows (same process, same server, same messages; run/seq stamping and msgspec encoding
included on both sides):
- transport: stamp + encode + XADD/PUBLISH, marketbus `FeedCommands` + `PipelineWriter`
  (batches of 512, no round-trip wait between batches) vs redis-py pipelines of 100
  (the plain redis-py baseline);
- Publisher: the real `marketbus.producer.publisher.Publisher` (outbox, sequencer,
  stamping, two batches of 512 in flight) on `FastTransport` vs on its redis-py
  `RedisTransport`;
- Publisher CPU per message when a quiet producer writes N messages per 1 ms tick (N =
  1, 10, 50): CPU time (``process_time``) of the ticks with submits minus the same ticks
  without, per message. This is the write-cycle cost that dominates the overhead rows
  at one exchange frame per ms, and how it falls as messages share a write.
"""

from __future__ import annotations

import time

import msgspec
import redis.asyncio as aioredis

from bench.publisher import BATCH, CAP, make_publisher
from bench.report import Row
from bench.workload import RUN, Workload
from marketbus.producer.transport import FastTransport, RedisTransport, Transport
from marketbus.shared.codecs import encoder_for
from marketbus.shared.config import RedisConfig
from marketbus.shared.names import STREAM_FIELD_BYTES, entry_id
from marketbus.shared.resp import FeedCommands
from marketbus.shared.transport import PipelineWriter

TICK_SIZES = (1, 10, 50)


async def fast_transport_rate(url: str, work: Workload, run: int) -> float:
    messages = work.messages()
    names = work.feed_names()
    encode = encoder_for("json").encode
    replace = msgspec.structs.replace
    writer = await PipelineWriter.open(RedisConfig(url=url))
    feeds = [FeedCommands(name, CAP) for name in names]
    seqs = [0] * len(names)
    out: list[bytes] = []
    start = time.perf_counter()
    pending = 0
    for index, message in messages:
        seq = seqs[index] = seqs[index] + 1
        commands = feeds[index]
        payload = encode(replace(message, run=run, seq=seq))
        commands.append_publish_xadd(out, commands.entry_id(run, seq), payload)
        pending += 1
        if pending == BATCH:
            writer.send_parts(out, 2 * pending)
            out.clear()
            pending = 0
            await writer.drain()
    writer.send_parts(out, 2 * pending)
    await writer.flush()
    elapsed = time.perf_counter() - start
    await writer.aclose()
    return len(messages) / elapsed


async def redispy_rate(url: str, work: Workload, run: int, batch: int = 100) -> float:
    messages = work.messages()
    names = work.feed_names()
    encode = encoder_for("json").encode
    replace = msgspec.structs.replace
    redis = aioredis.Redis.from_url(url)
    seqs = [0] * len(names)
    start = time.perf_counter()
    pipe = redis.pipeline(transaction=False)
    for index, message in messages:
        seq = seqs[index] = seqs[index] + 1
        payload = encode(replace(message, run=run, seq=seq))
        name = names[index]
        pipe.xadd(
            name, {STREAM_FIELD_BYTES: payload}, id=entry_id(run, seq), maxlen=CAP, approximate=True
        )
        pipe.publish(name, payload)
        if len(pipe) >= 2 * batch:
            await pipe.execute()
    await pipe.execute()
    elapsed = time.perf_counter() - start
    await redis.aclose()
    return len(messages) / elapsed


async def publisher_rate(transport: Transport, work: Workload, run: int) -> float:
    """The real Publisher: submit everything, then wait until the writer task is idle."""
    import asyncio

    publisher, counters = make_publisher(transport, run=run, queue_max=work.count + 1)
    messages = work.messages()
    names = work.feed_names()
    start = time.perf_counter()
    for index, message in messages:
        publisher.submit(names[index], message)
    task = asyncio.create_task(publisher.run())
    flushed = await publisher.flush(timeout_s=600)
    elapsed = time.perf_counter() - start
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert flushed, "publisher did not flush"
    published = sum(c.published for c in counters.values())
    assert published == work.count, (published, work.count)
    return work.count / elapsed


async def tick_cpu_us(transport: Transport, work: Workload, run: int, per_tick: int) -> float:
    """Publisher CPU per message at *per_tick* messages per 1 ms tick (see the module
    docstring): ticks with submits minus the same number of ticks without."""
    import asyncio

    publisher, _ = make_publisher(transport, run=run, queue_max=work.count + 1)
    messages = work.messages()
    names = work.feed_names()
    ticks = len(messages) // per_tick
    task = asyncio.create_task(publisher.run())
    await transport.write([])  # connected before the clock starts
    start = time.process_time()
    for _ in range(ticks):
        await asyncio.sleep(0.001)
    idle = time.process_time() - start
    start = time.process_time()
    for tick in range(ticks):
        for index, message in messages[tick * per_tick : (tick + 1) * per_tick]:
            publisher.submit(names[index], message)
        await asyncio.sleep(0.001)
    flushed = await publisher.flush(timeout_s=60)
    busy = time.process_time() - start
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert flushed, "publisher did not flush"
    return max(busy - idle, 0.0) / (ticks * per_tick) * 1e6


async def flush_server(url: str) -> None:
    redis = aioredis.Redis.from_url(url)
    await redis.flushall()
    await redis.aclose()


async def run(url: str, runs: int, count: int) -> list[Row]:
    raw = Row(
        "publish XADD+PUBLISH, transport",
        "msg/s",
        baseline_name="redis-py pipeline x100",
        target=">= 150k msg/s and >= 7x",
    )
    real = Row(
        "publish XADD+PUBLISH, real Publisher",
        "msg/s",
        baseline_name="Publisher on RedisTransport",
        target="(same path as the producer)",
    )
    per_tick = {
        n: Row(
            f"publish CPU per message, Publisher, {n} per 1 ms tick",
            "us CPU",
            higher_is_better=False,
            baseline_name="Publisher on RedisTransport",
        )
        for n in TICK_SIZES
    }
    base_count = max(count // 5, 1_000)
    for attempt in range(runs):
        work, base = Workload(count), Workload(base_count)
        # A fresh run id per attempt keeps entry IDs increasing without flushing streams.
        await flush_server(url)
        raw.marketbus.append(await fast_transport_rate(url, work, RUN + 10 * attempt))
        raw.baseline.append(await redispy_rate(url, base, RUN + 10 * attempt + 1))
        config = RedisConfig(url=url)
        fast = FastTransport(config, aioredis.Redis.from_url(url))
        real.marketbus.append(await publisher_rate(fast, work, RUN + 10 * attempt + 2))
        await fast.close()
        slow = RedisTransport(aioredis.Redis.from_url(url))
        real.baseline.append(await publisher_rate(slow, base, RUN + 10 * attempt + 3))
        await slow.close()
        for n, row in per_tick.items():
            ticked = Workload(n * (20 if count < 10_000 else 1_000))
            for side, transport in (
                (row.marketbus, FastTransport(config, aioredis.Redis.from_url(url))),
                (row.baseline, RedisTransport(aioredis.Redis.from_url(url))),
            ):
                await flush_server(url)
                side.append(await tick_cpu_us(transport, ticked, RUN + 10 * attempt + 4, n))
                await transport.close()
    return [raw, real, *per_tick.values()]
