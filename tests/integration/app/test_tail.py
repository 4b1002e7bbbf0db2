"""`marketbus tail` on a real Redis: hostile payloads cost one line each and are counted,
and an outage costs two lines and no CPU, after which it carries on."""

from __future__ import annotations

import asyncio
import os
import sys
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import redis.asyncio as aioredis

from tests.support.redis_process import RedisProcess
from tests.support.waiting import wait_until
from tests.support.wire_writer import WireWriter

CLI = [sys.executable, "-m", "marketbus.cli"]
HOSTILE = b'{"a":' * 1000
"""5 KB nested deeper than msgspec follows: it raises RecursionError."""
OUTAGE_WINDOW_S = 3.0
"""How long tail's output is watched while Redis is down."""


class Tail:
    """A running `marketbus tail` whose stdout lines are collected as they come."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.lines: list[str] = []

    async def collect(self) -> None:
        assert self.proc.stdout is not None
        async for raw in self.proc.stdout:
            self.lines.append(raw.decode(errors="replace").rstrip("\n"))

    def has(self, text: str) -> bool:
        return any(text in line for line in self.lines)

    def cpu_s(self) -> float:
        """User + system CPU seconds the process has used (Linux /proc)."""
        with open(f"/proc/{self.proc.pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@asynccontextmanager
async def running_tail(*args: str) -> AsyncIterator[Tail]:
    proc = await asyncio.create_subprocess_exec(
        *CLI, "tail", *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
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


async def subscribed(redis: aioredis.Redis) -> bool:
    try:
        count: int = await redis.execute_command("PUBSUB", "NUMPAT")
    except (ConnectionError, OSError):
        return False
    return count > 0


async def test_hostile_payloads_are_skipped_counted_and_tail_goes_on(redis_url: str) -> None:
    redis = aioredis.Redis.from_url(redis_url)
    writer = WireWriter(redis, exchange="binance", run=5)
    feed = writer.feed("ticker", "BTC/USDT")
    try:
        async with running_tail("md:binance:*", "--count", "3", "--redis", redis_url) as tail:
            await wait_until(lambda: subscribed(redis), what="tail to subscribe")
            await writer.raw(feed, HOSTILE, stream=False)
            await writer.raw(feed, b"\x00garbage", stream=False)
            await writer.write(feed, writer.ticker("BTC/USDT", 100.0))
            await asyncio.wait_for(tail.proc.wait(), timeout=30)
            assert tail.proc.stderr is not None
            stderr = (await tail.proc.stderr.read()).decode()
            assert tail.proc.returncode == 0, stderr
            assert "Traceback" not in stderr
    finally:
        await redis.aclose()
    assert any(line.startswith(f"UNDECODABLE on {feed} (#1)") for line in tail.lines)
    assert any(line.startswith(f"UNDECODABLE on {feed} (#2)") for line in tail.lines)
    assert tail.has("5-3 ticker  binance BTC/USDT"), tail.lines
    assert tail.lines[-1] == "# skipped 2 undecodable payload(s)", tail.lines


async def test_an_outage_costs_two_lines_and_no_busy_loop_then_tail_resumes(
    make_redis_server: Callable[..., RedisProcess],
) -> None:
    server = make_redis_server()
    redis = aioredis.Redis.from_url(server.url)
    writer = WireWriter(redis, exchange="binance", run=5)
    feed = writer.feed("ticker", "BTC/USDT")
    try:
        async with running_tail("md:binance:*", "--redis", server.url) as tail:
            await wait_until(lambda: subscribed(redis), what="tail to subscribe")
            await writer.write(feed, writer.ticker("BTC/USDT", 100.0))
            await wait_until(lambda: tail.has("5-1 ticker"), what="the first ticker line")

            server.kill()
            await wait_until(lambda: tail.has("connection lost"), what="the outage line")
            before_lines, before_cpu = len(tail.lines), tail.cpu_s()
            started = time.monotonic()
            await asyncio.sleep(OUTAGE_WINDOW_S)  # a measuring window, not a synchronisation
            window_s = time.monotonic() - started
            outage_lines = tail.lines[before_lines:]
            cpu_s = tail.cpu_s() - before_cpu
            assert len(outage_lines) <= 2, outage_lines
            assert cpu_s < 0.3 * window_s, f"{cpu_s:.2f}s CPU in {window_s:.1f}s of outage"
            assert sum("connection lost" in line for line in tail.lines) == 1, tail.lines

            server.start()
            await redis.aclose()
            redis = aioredis.Redis.from_url(server.url)
            writer.redis = redis
            await wait_until(lambda: subscribed(redis), 30, what="tail to subscribe again")
            await writer.write(feed, writer.ticker("BTC/USDT", 101.0))
            await wait_until(lambda: tail.has("5-2 ticker"), what="a ticker after the outage")
            assert sum("connection restored" in line for line in tail.lines) == 1, tail.lines
            assert tail.proc.returncode is None
    finally:
        await redis.aclose()
