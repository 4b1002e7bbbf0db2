"""deploy/strategy_example.py (the compose `strategy` service) runs as the shipped
consumer ACL user, with its URL from the environment as consumer.env gives it."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Callable
from pathlib import Path

import redis.asyncio as aioredis

from marketbus.shared.codecs import encode
from marketbus.shared.schema import Ticker
from tests.support.redis_process import RedisProcess
from tests.support.waiting import wait_until
from tests.unit.deploy.files import ADMIN, CONSUMER, DEPLOY, acl_file_for_tests, password_for

FEED = "md:binance:ticker:BTC/USDT"


async def test_example_strategy_prints_tickers_as_the_consumer_user(
    make_redis_server: Callable[..., RedisProcess], tmp_path: Path
) -> None:
    server = make_redis_server(["--aclfile", str(acl_file_for_tests(tmp_path))])
    base = f"127.0.0.1:{server.port}/0"
    env = os.environ | {
        "MARKETBUS__REDIS__URL": f"redis://{CONSUMER}:{password_for(CONSUMER)}@{base}"
    }
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(DEPLOY / "strategy_example.py"), "--pattern", "md:*", "--count", "2",
        env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    admin = aioredis.Redis.from_url(f"redis://{ADMIN}:{password_for(ADMIN)}@{base}")
    try:

        async def subscribed() -> bool:
            return int(await admin.execute_command("PUBSUB", "NUMPAT")) == 1

        await wait_until(subscribed, what="the strategy to PSUBSCRIBE")
        for seq in (1, 2):
            ticker = Ticker(exchange="binance", symbol="BTC/USDT", run=1, seq=seq, ts_ms=None,
                            recv_ns=1, bid=1.0, ask=2.0, last=1.5 + seq)  # fmt: skip
            await admin.publish(FEED, encode(ticker))
        stdout, stderr = await asyncio.wait_for(proc.communicate(), 10)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        await admin.aclose()
    assert proc.returncode == 0, stderr.decode()
    assert stdout.decode().splitlines() == [
        f"{FEED} last=2.5 bid=1.0 ask=2.0",
        f"{FEED} last=3.5 bid=1.0 ask=2.0",
    ]
    assert password_for(CONSUMER) not in stderr.decode()
