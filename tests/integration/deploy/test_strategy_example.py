"""deploy/strategy_example.py (the compose `strategy` service) runs the consumer SDK as
the shipped consumer ACL user, with its URL from the environment as consumer.env gives
it, and needs no command that user lacks."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Callable
from pathlib import Path

import redis.asyncio as aioredis

from tests.support.redis_process import RedisProcess
from tests.support.waiting import wait_until
from tests.support.wire_writer import WireWriter
from tests.unit.deploy.files import ADMIN, CONSUMER, DEPLOY, acl_file_for_tests, password_for

SYM = "BTC/USDT"


async def test_example_strategy_prints_tickers_as_the_consumer_user(
    make_redis_server: Callable[..., RedisProcess], tmp_path: Path
) -> None:
    server = make_redis_server(["--aclfile", str(acl_file_for_tests(tmp_path))])
    base = f"127.0.0.1:{server.port}/0"
    env = os.environ | {
        "MARKETBUS__REDIS__URL": f"redis://{CONSUMER}:{password_for(CONSUMER)}@{base}"
    }
    admin = aioredis.Redis.from_url(f"redis://{ADMIN}:{password_for(ADMIN)}@{base}")
    writer = WireWriter(admin, run=1)  # PUBLISH + XADD, as the producer writes
    feed = writer.feed("ticker", SYM)
    trades = writer.feed("trades", SYM)
    await writer.write(feed, writer.ticker(SYM, 1.5))  # history: backfilled, not printed
    args = (str(DEPLOY / "strategy_example.py"), "--pattern", "md:*", "--count", "2")
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        *args,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert proc.stdout is not None
    try:

        async def subscribed() -> bool:
            return await admin.pubsub_numpat() == 1

        await wait_until(subscribed, what="the strategy to PSUBSCRIBE")
        lines = []
        for last in (2.5, 3.5):  # one at a time: a strategy sees the newest ticker only
            await writer.write(feed, writer.ticker(SYM, last))
            await writer.write(trades, writer.trades(SYM, last))  # not a ticker: not printed
            lines.append(await asyncio.wait_for(proc.stdout.readline(), 10))
        stdout, stderr = await asyncio.wait_for(proc.communicate(), 10)
        log: list[dict[bytes, bytes]] = await admin.execute_command("ACL", "LOG")  # type: ignore[no-untyped-call]
        denied = {entry[b"object"].decode() for entry in log}
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        await admin.aclose()
    assert proc.returncode == 0, stderr.decode()
    assert [line.decode() for line in lines] + stdout.decode().splitlines() == [
        f"{feed} last=2.5 bid=2.0 ask=3.0\n",
        f"{feed} last=3.5 bid=3.0 ask=4.0\n",
    ]
    assert not denied, f"the SDK needs commands the consumer user lacks: {denied}"
    assert password_for(CONSUMER) not in stderr.decode()
