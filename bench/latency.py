"""Target 3: latency from the producer's publish call to the consumer's callback.

A feeder process (`bench.feeder`, its docstring has the spacing) publishes at a fixed
rate, stamping ``recv_ns`` with the wall clock just before each publish call; this
process receives, decodes, applies to a `CandleBuffer` and records
``time.time_ns() - recv_ns`` in the callback. Both processes share the machine's clock.
The first 10% of samples are warm-up. Rows, interleaved run by run:

- marketbus, default: the real producer (`Publisher.submit` on `FastTransport`) -> the
  real SDK, ``Subscriber(url, on_message=...)`` (fast transport, Engine, the
  listener's mailbox and task: ``delivery="queued"``);
- marketbus, inline: the same with ``delivery="inline"`` (the callback is called from
  the socket handler as the Engine applies each message);
- baseline: redis-py pipeline per tick -> redis-py PubSub -> decode + apply;
- floor: bare `PipelineWriter` -> `SubscriberConnection` callback -> decode + apply (no
  Publisher, no Engine, no listener): what the asyncio socket path alone costs;
- machine floor: the same traffic, decode and apply over plain blocking sockets, no
  asyncio on either side (`bench.sockets`): what no Python client beats on this host.
"""

from __future__ import annotations

import asyncio
import os
import sys
import threading
import time
from pathlib import Path

import redis.asyncio as aioredis

from bench import sockets
from bench.feeder import FEEDS
from bench.report import Row
from bench.workload import Workload
from marketbus.consumers import BufferSizes, Subscriber, Update
from marketbus.consumers.buffers import CandleBuffer
from marketbus.consumers.options import DeliveryMode
from marketbus.shared.codecs import decode
from marketbus.shared.config import RedisConfig
from marketbus.shared.schema import OHLCV
from marketbus.shared.transport import PubSubMessage, SubscriberConnection

ROOT = Path(__file__).resolve().parent.parent
CONSUMERS = {
    "queued": "marketbus",
    "inline": "marketbus",
    "floor": "writer",
    "redis-py": "redis-py",
    "sockets": "sockets",
}
"""Consumer side of `measure` -> its feeder's mode (`bench.feeder.MODES`)."""


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


async def start_feeder(
    url: str, rate: float, seconds: float, mode: str
) -> asyncio.subprocess.Process:
    env = dict(
        os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])
    )
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bench.feeder", url, str(rate), str(seconds), mode, env=env
    )


async def measure(
    url: str, rate: float, seconds: float, consumer: str, feeder_mode: str | None = None
) -> list[float]:
    """Latencies in microseconds of every message of one feeder run.

    *consumer*: ``queued`` / ``inline`` (`Subscriber` with that delivery), ``floor``
    (bare `SubscriberConnection` callback) or ``redis-py``. *feeder_mode* defaults to
    the consumer's own (`CONSUMERS`).
    """
    if consumer not in CONSUMERS:
        raise ValueError(f"consumer must be one of {', '.join(CONSUMERS)}, not {consumer!r}")
    feeder_mode = feeder_mode or CONSUMERS[consumer]
    admin = aioredis.Redis.from_url(url)
    await admin.flushall()  # the feeder restarts its entry IDs at seq 1
    await admin.aclose()
    names = Workload(1, feeds=FEEDS).feed_names()
    buffers = {name.encode(): CandleBuffer(1_000, "1m") for name in names}
    expected = int(rate * seconds) + 1
    samples: list[float] = []
    complete = asyncio.Event()

    def take(channel: bytes, payload: bytes) -> bool:
        """Decode, apply and time one message; True once every message was taken."""
        message = decode(payload)
        assert isinstance(message, OHLCV)
        buffers[channel].apply(message)
        samples.append((time.time_ns() - message.recv_ns) / 1_000)
        return len(samples) >= expected

    deadline = seconds * 3 + 30
    if consumer in ("queued", "inline"):

        def on_message(update: Update) -> None:
            samples.append((time.time_ns() - update.recv_ns) / 1_000)
            if len(samples) >= expected:
                complete.set()

        sizes = BufferSizes(candles=1_000, stale_after_s=None)
        delivery: DeliveryMode = "inline" if consumer == "inline" else "queued"
        async with Subscriber(url, sizes=sizes, on_message=on_message, delivery=delivery) as sub:
            await sub.subscribe(*names)
            feeder = await start_feeder(url, rate, seconds, feeder_mode)
            async with asyncio.timeout(deadline):
                await feeder.wait()
                await complete.wait()
    elif consumer == "sockets":
        subscribed = threading.Event()
        reading = asyncio.create_task(
            asyncio.to_thread(sockets.subscribe, url, list(buffers), take, subscribed)
        )
        ready = asyncio.create_task(asyncio.to_thread(subscribed.wait, 10))
        await asyncio.wait((reading, ready), return_when=asyncio.FIRST_COMPLETED)
        if reading.done():
            await reading  # it ended before subscribing: raises why
        if not await ready:
            raise RuntimeError("the blocking subscriber did not subscribe within 10 s")
        feeder = await start_feeder(url, rate, seconds, feeder_mode)
        async with asyncio.timeout(deadline):
            await feeder.wait()
            await reading
    elif consumer == "floor":

        def on_batch(batch: list[PubSubMessage]) -> None:
            for channel, _pattern, payload in batch:
                if take(channel, payload):
                    complete.set()

        conn = await SubscriberConnection.open(RedisConfig(url=url), on_batch=on_batch)
        await conn.subscribe(*buffers)
        feeder = await start_feeder(url, rate, seconds, feeder_mode)
        try:
            async with asyncio.timeout(deadline):
                await feeder.wait()
                await complete.wait()
        finally:
            await conn.aclose()
    else:
        redis = aioredis.Redis.from_url(url)
        pubsub = redis.pubsub(ignore_subscribe_messages=True)
        await pubsub.subscribe(*buffers)
        feeder = await start_feeder(url, rate, seconds, feeder_mode)
        async with asyncio.timeout(deadline):
            while len(samples) < expected:
                got = await pubsub.get_message(timeout=1.0)
                if got is not None:
                    take(got["channel"], got["data"])
            await feeder.wait()
        await pubsub.aclose()  # type: ignore[no-untyped-call]
        await redis.aclose()
    if feeder.returncode:
        raise RuntimeError(f"feeder exited with {feeder.returncode}")
    return samples[len(samples) // 10 :]


def _rows(rate: int, label: str, target50: str, target99: str) -> tuple[Row, Row]:
    k = f"{rate // 1000}k" if rate >= 1000 else str(rate)
    base = "redis-py pipeline + PubSub"
    return (
        Row(
            f"latency p50 at {k} msg/s, {label}",
            "us",
            higher_is_better=False,
            baseline_name=base,
            target=target50,
        ),
        Row(
            f"latency p99 at {k} msg/s, {label}",
            "us",
            higher_is_better=False,
            baseline_name=base,
            target=target99,
        ),
    )


def _add(rows: tuple[Row, Row], samples: list[float], baseline: bool = False) -> None:
    p50, p99 = rows
    (p50.baseline if baseline else p50.marketbus).append(percentile(samples, 0.50))
    (p99.baseline if baseline else p99.marketbus).append(percentile(samples, 0.99))


async def run(
    url: str, runs: int, seconds: float, rates: tuple[int, ...] = (5_000, 50_000)
) -> list[Row]:
    """Per rate: the SDK's default (queued) and inline delivery next to redis-py, and at
    the first rate the floor.

    On a shared VM the figures drift from one second to the next as much as the two
    deliveries differ, so each run measures them in two
    halves in ABBA order (queued, inline, inline, queued) and pools each one's samples.
    """
    rows: list[Row] = []
    floor = _rows(rates[0], "floor: PipelineWriter -> SubscriberConnection callback", "", "")
    machine = _rows(rates[0], "machine floor: blocking sockets, no asyncio", "", "")
    for row in (*floor, *machine):
        row.baseline_name = ""
    for rate in rates:
        low = rate <= 5_000
        queued = _rows(
            rate,
            "Subscriber default (queued)",
            "<= 100 us" if low else "",
            "<= 500 us" if low else "<= 5 ms",
        )
        inline = _rows(rate, 'Subscriber delivery="inline"', queued[0].target, queued[1].target)
        for _ in range(runs):
            pooled: dict[str, list[float]] = {"queued": [], "inline": []}
            for consumer in ("queued", "inline", "inline", "queued"):
                pooled[consumer] += await measure(url, rate, seconds / 2, consumer)
            _add(queued, pooled["queued"])
            _add(inline, pooled["inline"])
            # redis-py saturates at the higher rates: its backlog only grows, so a
            # short run tells as much and keeps the benchmark bounded.
            span = min(seconds, 1.0) if rate > 20_000 else seconds
            samples = await measure(url, rate, span, "redis-py")
            _add(queued, samples, baseline=True)
            _add(inline, samples, baseline=True)
            if rate == rates[0]:
                _add(floor, await measure(url, rate, seconds, "floor"))
                _add(machine, await measure(url, rate, seconds, "sockets"))
        rows += [queued[0], inline[0], queued[1], inline[1]]
    return [*rows, *floor, *machine]
