"""Two real producer processes for one exchange: one writes, the other stands by (or
exits), and a kill -9 of the writer hands the feeds over without interleaving."""

from __future__ import annotations

import asyncio
import io
import re
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis

from marketbus.producer import Producer
from marketbus.producer.lease import describe
from marketbus.shared.codecs import decode
from marketbus.shared.config import RedisConfig
from marketbus.shared.schema import Message, Status, Trades
from marketbus.sim import SimServer
from marketbus.status_report import print_status
from tests.integration.producer.conftest import (
    PROCESS_DEADLINE_S,
    ProducerProcess,
    messages,
    producer_config,
    write_toml,
)
from tests.support.waiting import wait_until

LEASE = "md:binance:lease"
TRADES = "md:binance:trades:BTC/USDT"
TTL_S = 1.0
HOLDER = r"holding the lease md:binance:lease as (\S+)"

Processes = Callable[[Path, str], ProducerProcess]


def config_file(redis_url: str, sim: SimServer, path: Path, **settings: Any) -> Path:
    config = producer_config(
        redis_url,
        sim,
        symbols=["BTC/USDT"],
        kinds=["trades", "ticker"],
        lease_ttl_s=TTL_S,
        **settings,
    )
    return write_toml(config, path)


async def test_a_second_producer_exits_naming_the_holder_or_stands_by_until_stopped(
    redis_url: str, binance_sim: SimServer, tmp_path: Path, producer_processes: Processes
) -> None:
    leader_config = producer_config(
        redis_url, binance_sim, symbols=["BTC/USDT"], kinds=["trades"], lease_ttl_s=TTL_S
    )
    redis = aioredis.Redis.from_url(redis_url)
    try:
        async with Producer(leader_config) as leader:  # in-process: it only has to hold
            holder = leader.holder
            assert holder is not None
            second, standby = await asyncio.gather(
                producer_processes(
                    config_file(redis_url, binance_sim, tmp_path / "x.toml", on_conflict="exit"),
                    "second",
                ).start(),
                producer_processes(
                    config_file(redis_url, binance_sim, tmp_path / "standby.toml"), "standby"
                ).start(),
            )
            assert await second.wait() == 1, second.stderr
            assert re.search(
                rf"FencedError: {LEASE} is held by {re.escape(holder)} \(run \d+\)", second.stderr
            ), second.stderr
            assert "Traceback" not in second.stderr
            # A standby stops at once on SIGTERM, without having written anything.
            await standby.wait_logged(f"standing by: .* held by {re.escape(holder)}")
            report = io.StringIO()
            await print_status(RedisConfig(url=redis_url), report)
            assert re.search(
                rf"lease held by {re.escape(holder)}; standby: "
                r"\S+ \(starting\)",
                report.getvalue(),
            ), report.getvalue()
            standby.signal(signal.SIGTERM)
            assert await standby.wait() == 0, standby.stderr
            runs = {m.run for m in await messages(redis, "md:binance:status")}
            assert runs == {leader.run_id}, "only the leader wrote"
            assert leader.failure is None
        assert await redis.get(LEASE) is None, "a clean stop releases the lease"
    finally:
        await redis.aclose()


async def test_the_standby_takes_over_after_kill_9_without_interleaving(
    redis_url: str, binance_sim: SimServer, tmp_path: Path, producer_processes: Processes
) -> None:
    redis = aioredis.Redis.from_url(redis_url)
    pubsub = redis.pubsub()
    await pubsub.subscribe(TRADES)
    live: list[Message] = []

    async def collect() -> None:
        async for item in pubsub.listen():
            if item["type"] == "message":
                live.append(decode(item["data"]))

    collector = asyncio.create_task(collect())
    try:
        # Both start at once: whichever takes the lease leads, the other stands by.
        first, second = await asyncio.gather(
            producer_processes(
                config_file(redis_url, binance_sim, tmp_path / "a.toml"), "a"
            ).start(),
            producer_processes(
                config_file(redis_url, binance_sim, tmp_path / "b.toml"), "b"
            ).start(),
        )
        await wait_until(
            lambda: bool(first.logged(HOLDER) or second.logged(HOLDER)),
            timeout_s=PROCESS_DEADLINE_S,
            what="one producer to take the lease",
        )
        leader, standby = (first, second) if first.logged(HOLDER) else (second, first)
        leader_id = (await leader.wait_logged(HOLDER)).group(1)
        await standby.wait_logged(rf"standing by: .* held by {re.escape(leader_id)}")
        assert standby.logged(HOLDER) is None

        async def leader_writing() -> bool:
            return int(await redis.xlen(TRADES)) >= 20

        await wait_until(leader_writing, what="the leader's trades")
        held = await redis.get(LEASE)
        assert isinstance(held, bytes) and describe(held).startswith(leader_id)
        leader_run = (await messages(redis, TRADES))[0].run

        leader.proc.kill()  # type: ignore[union-attr]  # kill -9: no release, no flush
        killed_at = time.monotonic()
        await leader.wait()

        async def taken_over() -> bool:
            events = await messages(redis, "md:binance:status")
            return any(
                isinstance(e, Status) and e.event == "started" and e.run != leader_run
                for e in events
            )

        await wait_until(taken_over, timeout_s=TTL_S + 5, what="the standby to take over")
        took_s = time.monotonic() - killed_at
        assert took_s < TTL_S + 2.5, f"takeover took {took_s:.1f}s"
        standby_id = (await standby.wait_logged(HOLDER)).group(1)
        started = [
            e
            for e in await messages(redis, "md:binance:status")
            if isinstance(e, Status) and e.event == "started"
        ]
        assert f"took over from {leader_id}" in started[-1].detail
        standby_run = started[-1].run
        assert standby_run > leader_run
        held = await redis.get(LEASE)
        assert isinstance(held, bytes) and describe(held) == f"{standby_id} (run {standby_run})"

        async def standby_writing() -> bool:
            return sum(1 for m in live if m.run == standby_run) >= 20

        await wait_until(standby_writing, what="the standby's trades")
        standby.signal(signal.SIGTERM)
        assert await standby.wait() == 0, standby.stderr
    finally:
        collector.cancel()
        await asyncio.gather(collector, return_exceptions=True)
        await pubsub.aclose()  # type: ignore[no-untyped-call]

    try:
        # The stream: the leader's run, then the standby's, each without a hole.
        entries = await messages(redis, TRADES)
        runs = [m.run for m in entries]
        assert runs == sorted(runs) and set(runs) == {leader_run, standby_run}
        for run in (leader_run, standby_run):
            seqs = [m.seq for m in entries if m.run == run]
            assert seqs == list(range(1, len(seqs) + 1)), f"run {run} has a hole"
        # The channel, as a subscriber saw it live: never a leader message after the
        # first of the standby, and each run's seqs consecutive.
        positions = [m.position for m in live]
        assert positions == sorted(positions), "the two producers interleaved"
        for run in (leader_run, standby_run):
            seqs = [seq for r, seq in positions if r == run]
            assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), f"run {run} skipped"
        trade_ids = [t.id for m in entries if isinstance(m, Trades) for t in m.trades]
        assert len(trade_ids) == len(set(trade_ids)), "a trade was written twice"
    finally:
        await redis.aclose()
