"""The producer side of the latency benchmark, run as its own process.

``python -m bench.feeder URL RATE SECONDS MODE`` publishes SPEC candles (XADD +
PUBLISH) at RATE messages/s over `FEEDS` feeds for SECONDS. MODE:

- ``marketbus``: the real producer path, `marketbus.producer.publisher.Publisher` on
  `FastTransport` with its writer task (`Publisher.run`) running; the publish call is
  `Publisher.submit` (it stamps run/seq, encodes and writes in the writer task; its
  connection opens with the first batch, within the consumer's warm-up);
- ``writer``: the bare transport, `FeedCommands` + `PipelineWriter`, no Publisher (the
  latency floor's feeder: what the socket path alone costs);
- ``redis-py``: the baseline, one redis-py pipeline per tick;
- ``sockets``: a plain blocking socket, no asyncio (`bench.sockets`: the machine's floor).

Spacing: like a producer fed by websockets, the feeder sends in ~1 ms ticks whatever is
due by then, then sleeps; asyncio's timers have millisecond resolution (epoll), so finer
spacing would need a busy loop taking a core from Redis and the subscriber.
``recv_ns`` is the wall clock right before each message's publish call, so a message
that waits behind others of its tick is charged for it.
"""

from __future__ import annotations

import asyncio
import sys
import time

import msgspec
import redis.asyncio as aioredis

from bench import sockets
from bench.publisher import CAP, make_publisher
from bench.workload import RUN, Workload
from marketbus.producer.transport import FastTransport
from marketbus.shared.codecs import encoder_for
from marketbus.shared.config import RedisConfig
from marketbus.shared.names import STREAM_FIELD_BYTES, entry_id
from marketbus.shared.resp import FeedCommands
from marketbus.shared.transport import PipelineWriter

FEEDS = 10
TICK_S = 0.001
"""Send whatever is due, then yield for about 1 ms (see the module docstring)."""
MODES = ("marketbus", "writer", "redis-py", "sockets")


class _Behind:
    """Warns once per run when the feeder cannot keep its schedule."""

    def __init__(self, mode: str, rate: float, seconds: float) -> None:
        self.mode, self.rate, self.seconds = mode, rate, seconds
        self.start = time.perf_counter()

    def due(self, total: int) -> int:
        return min(total, int((time.perf_counter() - self.start) * self.rate) + 1)

    def report(self) -> None:
        behind = time.perf_counter() - self.start - self.seconds
        if behind > 0.1 * self.seconds + 0.05:
            print(
                f"feeder: {self.mode} at {self.rate:.0f}/s ran {behind:.2f}s behind schedule",
                file=sys.stderr,
            )


async def feed_publisher(url: str, work: Workload, rate: float, seconds: float) -> None:
    """The real producer: `Publisher.submit` per message, its writer task writing."""
    names = work.feed_names()
    messages = work.messages()
    replace = msgspec.structs.replace
    transport = FastTransport(RedisConfig(url=url), aioredis.Redis.from_url(url))
    publisher, counters = make_publisher(transport, run=RUN, queue_max=len(messages) + 1)
    writer = asyncio.create_task(publisher.run())
    submit = publisher.submit
    clock = _Behind("marketbus", rate, seconds)
    sent = 0
    try:
        while sent < len(messages):
            due = clock.due(len(messages))
            while sent < due:
                index, message = messages[sent]
                submit(names[index], replace(message, recv_ns=time.time_ns()))
                sent += 1
            await asyncio.sleep(TICK_S)
        clock.report()
        if not await publisher.flush(timeout_s=30.0):
            raise RuntimeError("feeder: the Publisher did not flush within 30 s")
    finally:
        writer.cancel()
        await asyncio.gather(writer, return_exceptions=True)
        await transport.close()
    published = sum(c.published for c in counters.values())
    if published != len(messages):
        raise RuntimeError(f"feeder: published {published} of {len(messages)} messages")


async def feed_direct(url: str, work: Workload, rate: float, seconds: float, mode: str) -> None:
    """The bare `PipelineWriter` (``writer``) or a redis-py pipeline per tick."""
    names = work.feed_names()
    encode = encoder_for("json").encode
    replace = msgspec.structs.replace
    messages = work.messages()
    commands = [FeedCommands(name, CAP) for name in names]
    writer = await PipelineWriter.open(RedisConfig(url=url)) if mode == "writer" else None
    redis = aioredis.Redis.from_url(url) if writer is None else None
    seqs = [0] * len(names)
    clock = _Behind(mode, rate, seconds)
    sent = 0
    out: list[bytes] = []
    while sent < len(messages):
        due = clock.due(len(messages))
        pipe = redis.pipeline(transaction=False) if redis is not None else None
        while sent < due:
            index, message = messages[sent]
            seq = seqs[index] = seqs[index] + 1
            payload = encode(replace(message, run=RUN, seq=seq, recv_ns=time.time_ns()))
            if pipe is not None:
                fields = {STREAM_FIELD_BYTES: payload}
                pipe.xadd(names[index], fields, id=entry_id(RUN, seq), maxlen=CAP, approximate=True)
                pipe.publish(names[index], payload)
            else:
                cmd = commands[index]
                cmd.append_publish_xadd(out, cmd.entry_id(RUN, seq), payload)
                assert writer is not None
                writer.send_parts(out, 2)
                out.clear()
            sent += 1
        if writer is not None:
            await writer.drain()
        elif pipe is not None and len(pipe):
            await pipe.execute()
        await asyncio.sleep(TICK_S)
    clock.report()
    if writer is not None:
        await writer.flush()
        await writer.aclose()
    if redis is not None:
        await redis.aclose()


async def feed(url: str, rate: float, seconds: float, mode: str) -> None:
    if mode not in MODES:
        raise ValueError(f"feeder mode must be one of {', '.join(MODES)}, not {mode!r}")
    work = Workload(int(rate * seconds) + 1, feeds=FEEDS)
    if mode == "marketbus":
        await feed_publisher(url, work, rate, seconds)
    elif mode == "sockets":
        clock = _Behind(mode, rate, seconds)
        sockets.feed(url, work, clock.due)
        clock.report()
    else:
        await feed_direct(url, work, rate, seconds, mode)


if __name__ == "__main__":
    url, rate, seconds, mode = sys.argv[1:5]
    asyncio.run(feed(url, float(rate), float(seconds), mode))
