"""Process-level behaviour: SIGTERM flushes and exits 0; Redis restarts are survived."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from collections.abc import Callable
from pathlib import Path

import redis.asyncio as aioredis

from marketbus.producer import Producer
from marketbus.shared.codecs import decode
from marketbus.shared.schema import Status
from marketbus.sim import SimServer
from tests.integration.producer.conftest import producer_config
from tests.support.redis_process import RedisProcess
from tests.support.waiting import wait_until


def _toml(value: object) -> str:
    if isinstance(value, dict):
        return "{" + ", ".join(f"{json.dumps(k)} = {_toml(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    if isinstance(value, bool):
        return "true" if value else "false"
    return json.dumps(value)


async def test_sigterm_flushes_publishes_stopped_and_exits_zero(
    redis_url: str, binance_sim: SimServer, tmp_path: Path
) -> None:
    ccxt_options = binance_sim.url_overrides("binance")
    config = tmp_path / "producer.toml"
    config.write_text(
        f'[redis]\nurl = "{redis_url}"\n[producer]\nclose_grace_ms = 300\nheartbeat_s = 0.5\n'
        f'[[exchanges]]\nid = "binance"\nsymbols = ["BTC/USDT"]\nkinds = ["ohlcv.1s", "trades"]\n'
        f"ccxt = {_toml(ccxt_options)}\n"
    )
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "marketbus.producer", "--config", str(config),
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    redis = aioredis.Redis.from_url(redis_url)
    try:

        async def trading() -> bool:
            return int(await redis.xlen("md:binance:trades:BTC/USDT")) > 5

        await wait_until(trading, timeout_s=15, what="the subprocess producing trades")
        proc.send_signal(signal.SIGTERM)
        _, stderr = await asyncio.wait_for(proc.communicate(), 15)
        assert proc.returncode == 0, stderr.decode()[-2000:]
        last = await redis.xrevrange("md:binance:status", count=1)
        status = decode(last[0][1][b"d"])
        assert isinstance(status, Status) and status.event == "stopped"
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        await redis.aclose()


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
        entries = await redis.xrange(feed)
        messages = [decode(fields[b"d"]) for _, fields in entries]
        assert messages and all(m.run == run for m in messages)
        seqs = [m.seq for m in messages]
        assert seqs == sorted(seqs) and seqs[0] > 1, "seq continued after the restart"
    finally:
        await redis.aclose()
