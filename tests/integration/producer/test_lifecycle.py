"""Process-level behaviour: SIGTERM flushes and exits 0, a shutdown is bounded even with
Redis gone, a second signal exits at once; Redis restarts are survived."""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Callable
from pathlib import Path

import redis.asyncio as aioredis

from marketbus.producer import Producer
from marketbus.shared.schema import Status
from marketbus.sim import SimServer
from tests.integration.producer.conftest import (
    ProducerProcess,
    messages,
    producer_config,
    write_toml,
)
from tests.support.redis_process import RedisProcess
from tests.support.waiting import wait_until

Processes = Callable[[Path, str], ProducerProcess]


async def test_sigterm_flushes_publishes_stopped_and_exits_zero(
    redis_url: str, binance_sim: SimServer, tmp_path: Path, producer_processes: Processes
) -> None:
    config = producer_config(
        redis_url, binance_sim, symbols=["BTC/USDT"], kinds=["ohlcv.1s", "trades"]
    )
    path = write_toml(config, tmp_path / "p.toml")
    producer = await producer_processes(path, "producer").start("--log-json")
    redis = aioredis.Redis.from_url(redis_url)
    try:

        async def trading() -> bool:
            return int(await redis.xlen("md:binance:trades:BTC/USDT")) > 5

        await wait_until(trading, timeout_s=15, what="the subprocess producing trades")
        producer.signal(signal.SIGTERM)
        assert await producer.wait() == 0, producer.stderr
        [status] = await messages(redis, "md:binance:status", newest=1)
        assert isinstance(status, Status) and status.event == "stopped"
    finally:
        await redis.aclose()
    records = [json.loads(line) for line in producer.lines]  # --log-json: every line
    assert {"ts", "level", "logger", "msg"} <= set(records[0])
    assert any("released the lease" in r["msg"] for r in records)


async def test_shutdown_is_bounded_without_redis_and_a_second_signal_exits_at_once(
    make_redis_server: Callable[..., RedisProcess],
    binance_sim: SimServer,
    tmp_path: Path,
    producer_processes: Processes,
) -> None:
    server = make_redis_server()
    kinds = ["trades"]
    bounded = producer_config(
        server.url, binance_sim, symbols=["BTC/USDT"], kinds=kinds, shutdown_timeout_s=1.0
    )
    patient = producer_config(
        server.url, binance_sim, symbols=["BTC/USDT"], kinds=kinds, shutdown_timeout_s=60.0
    )
    first = producer_processes(write_toml(bounded, tmp_path / "bounded.toml"), "bounded")
    await first.start()
    await first.wait_logged("receiving data")
    server.kill()
    await first.wait_logged("Redis write failed")

    # SIGTERM with Redis gone: gives up after shutdown_timeout_s, says what was lost.
    first.signal(signal.SIGTERM)
    started = time.monotonic()
    assert await first.wait() == 1, first.stderr
    assert time.monotonic() - started < 1.0 + 3.0
    assert first.logged(r"not written within shutdown_timeout_s=1; they are lost")

    server.start()
    second = producer_processes(write_toml(patient, tmp_path / "patient.toml"), "patient")
    await second.start()
    await second.wait_logged("receiving data")
    server.kill()
    await second.wait_logged("Redis write failed")
    second.signal(signal.SIGINT)
    await second.wait_logged("signal SIGINT: stopping")
    second.signal(signal.SIGINT)  # the flush would wait 60 s: the operator insists
    started = time.monotonic()
    assert await second.wait() == 130, second.stderr
    assert time.monotonic() - started < 2.0
    assert second.logged("second signal: exiting without flushing")


async def test_a_redis_restart_is_survived_with_the_same_run_and_growing_seqs(
    make_redis_server: Callable[..., RedisProcess], binance_sim: SimServer
) -> None:
    server = make_redis_server()
    config = producer_config(server.url, binance_sim, kinds=["trades"], symbols=["BTC/USDT"])
    feed = "md:binance:trades:BTC/USDT"
    async with Producer(config) as producer:
        run = producer.run_id
        await wait_until(lambda: producer.stats[feed].published > 5, what="trades before")
        server.restart()  # empty again: no persistence
        before = producer.stats[feed].published
        await wait_until(
            lambda: producer.stats[feed].published > before + 5, timeout_s=15, what="trades after"
        )
    redis = aioredis.Redis.from_url(server.url)
    try:
        written = await messages(redis, feed)
        assert written and all(m.run == run for m in written)
        seqs = [m.seq for m in written]
        assert seqs == sorted(seqs) and seqs[0] > 1, "seq continued after the restart"
    finally:
        await redis.aclose()
