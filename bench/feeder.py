"""The producer side of the latency benchmark, run as its own process.

``python -m bench.feeder URL RATE SECONDS MODE`` publishes SPEC candles (XADD +
PUBLISH) at RATE messages/s for SECONDS, in ~1 ms ticks, stamping each message's
``recv_ns`` with the wall clock right before its publish call. MODE is ``marketbus``
(PipelineWriter) or ``redis-py`` (a pipeline per tick).
"""

from __future__ import annotations

import asyncio
import sys
import time

import msgspec
import redis.asyncio as aioredis

from bench.workload import RUN, Workload
from marketbus.shared.codecs import encoder_for
from marketbus.shared.config import RedisConfig
from marketbus.shared.resp import FeedCommands
from marketbus.shared.transport import PipelineWriter

FEEDS = 10
TICK_S = 0.001
"""Like the producer's writer task, send whatever is due, then yield for about 1 ms."""


async def feed(url: str, rate: float, seconds: float, mode: str) -> None:
    work = Workload(int(rate * seconds) + 1, feeds=FEEDS)
    names = work.feed_names()
    encode = encoder_for("json").encode
    replace = msgspec.structs.replace
    messages = work.messages()
    commands = [FeedCommands(name, 10_000) for name in names]
    writer = await PipelineWriter.open(RedisConfig(url=url)) if mode == "marketbus" else None
    redis = aioredis.Redis.from_url(url) if writer is None else None
    seqs = [0] * FEEDS
    sent = 0
    start = time.perf_counter()
    while sent < len(messages):
        due = min(len(messages), int((time.perf_counter() - start) * rate) + 1)
        out: list[bytes] = []
        pipe = redis.pipeline(transaction=False) if redis is not None else None
        while sent < due:
            index, message = messages[sent]
            seq = seqs[index] = seqs[index] + 1
            payload = encode(replace(message, run=RUN, seq=seq, recv_ns=time.time_ns()))
            if pipe is not None:
                pipe.xadd(names[index], {b"d": payload}, id=f"{RUN}-{seq}", maxlen=10_000,
                          approximate=True)  # fmt: skip
                pipe.publish(names[index], payload)
            else:
                cmd = commands[index]
                cmd.append_xadd_publish(out, cmd.entry_id(RUN, seq), payload)
                assert writer is not None
                writer.send_parts(out, 2)
                out.clear()
            sent += 1
        if writer is not None:
            await writer.drain()
        elif pipe is not None and len(pipe):
            await pipe.execute()
        await asyncio.sleep(TICK_S)
    behind = time.perf_counter() - start - seconds
    if behind > 0.1 * seconds + 0.05:
        print(f"feeder: {mode} at {rate:.0f}/s ran {behind:.2f}s behind schedule", file=sys.stderr)
    if writer is not None:
        await writer.flush()
        await writer.aclose()
    if redis is not None:
        await redis.aclose()


if __name__ == "__main__":
    url, rate, seconds, mode = sys.argv[1:5]
    asyncio.run(feed(url, float(rate), float(seconds), mode))
