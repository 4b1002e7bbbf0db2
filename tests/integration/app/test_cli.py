"""The `marketbus` command as operators use it: clear errors, readable output."""

from __future__ import annotations

import asyncio
import re
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import redis.asyncio as aioredis

from marketbus.producer.stats import FeedCounters, heartbeat_detail
from marketbus.shared import codecs
from marketbus.shared.schema import FeedInfo, Status, Ticker
from tests.support.redis_process import RedisProcess, free_port
from tests.support.waiting import wait_until
from tests.unit.deploy.files import ADMIN, CONSUMER, acl_file_for_tests, password_for

CLI = [sys.executable, "-m", "marketbus.cli"]


def run_cli(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=timeout)


def test_bad_config_exits_2_naming_the_key(tmp_path: Path) -> None:
    config = tmp_path / "producer.toml"
    config.write_text('[[exchanges]]\nid = "binance"\nsymbols = []\n')
    result = run_cli("produce", "--config", str(config))
    assert result.returncode == 2
    assert "exchanges[0].symbols" in result.stderr
    assert "Traceback" not in result.stderr


def test_missing_config_file_is_clear(tmp_path: Path) -> None:
    result = run_cli("produce", "--config", str(tmp_path / "nope.toml"))
    assert result.returncode == 2
    assert "does not exist" in result.stderr


def test_unreachable_redis_is_clear_and_hides_password() -> None:
    url = f"redis://user:s3cret@127.0.0.1:{free_port()}/0"
    result = run_cli("status", "--redis", url)
    assert result.returncode == 1
    assert "cannot reach Redis" in result.stderr
    assert "s3cret" not in result.stderr + result.stdout
    assert "Traceback" not in result.stderr


async def test_tail_prints_messages_and_flags_garbage(redis_url: str) -> None:
    args = ("tail", "md:binance:*", "--count", "2", "--redis", redis_url)
    proc = await asyncio.create_subprocess_exec(
        *CLI, *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    redis = aioredis.Redis.from_url(redis_url)
    ticker = Ticker(
        exchange="binance",
        symbol="BTC/USDT",
        run=5,
        seq=9,
        ts_ms=1_700_000_000_000,
        recv_ns=1,
        bid=100.5,
        ask=100.75,
        last=100.5,
    )
    try:

        async def tail_subscribed() -> bool:
            result: int = await redis.execute_command("PUBSUB", "NUMPAT")
            return result > 0

        await wait_until(tail_subscribed, what="tail to subscribe")
        await redis.publish("md:binance:ticker:BTC/USDT", codecs.encode(ticker))
        await redis.publish("md:binance:ticker:BTC/USDT", b"\x00garbage")
        stdout, stderr = await asyncio.wait_for(proc.communicate(), timeout=20)
    finally:
        if proc.returncode is None:
            proc.kill()
        await redis.aclose()
    text = stdout.decode()
    assert proc.returncode == 0, stderr.decode()
    assert "5-9 ticker  binance BTC/USDT  bid=100.5 ask=100.75 last=100.5" in text
    assert "UNDECODABLE on md:binance:ticker:BTC/USDT (#1)" in text


async def test_status_shows_feeds_age_and_state(redis_url: str) -> None:
    redis = aioredis.Redis.from_url(redis_url)
    feed = "md:binance:ticker:BTC/USDT"
    info = FeedInfo(
        exchange="binance",
        symbol="BTC/USDT",
        kind="ticker",
        timeframe=None,
        run=7,
        stream_maxlen=100,
        updated_ms=1,
    )
    await redis.hset("md:feeds", feed, codecs.encode_feed_info(info))
    ticker = Ticker(exchange="binance", symbol="BTC/USDT", run=7, seq=1, ts_ms=None, recv_ns=1)
    await redis.xadd(feed, {"d": codecs.encode(ticker)}, id="7-1")
    for seq, event in enumerate(["started", "connected", "error"], start=1):
        status = Status(
            exchange="binance",
            run=7,
            seq=seq,
            ts_ms=None,
            recv_ns=1,
            event=event,  # type: ignore[arg-type]
            feed=feed if event != "started" else None,
        )
        await redis.xadd("md:binance:status", {"d": codecs.encode(status)}, id=f"7-{seq}")
    await redis.aclose()
    result = await asyncio.to_thread(run_cli, "status", "--redis", redis_url)
    assert result.returncode == 0, result.stderr
    header, row = result.stdout.splitlines()[:2]
    assert " ".join(header.split()) == "FEED RUN STREAM LAST STATE MSGS ERRORS RECONN DROPPED"
    assert row.split()[:3] == [feed, "7", "1"]
    # No heartbeat with stats (an older producer): state and errors from the events.
    assert row.split()[4:] == ["error", "-", "1", "-", "-"]
    assert "binance: no heartbeat" in result.stdout
    assert "1 feed(s)" in result.stdout

    # A heartbeat carries every feed's state and counters, and the lease holder.
    counters = FeedCounters()
    counters.state, counters.published, counters.errors = "stale", 42, 2
    counters.reconnects, counters.dropped, counters.last_message_ms = 3, 4, 1_000
    detail = heartbeat_detail(
        {feed: counters}, prefix="md:binance:", queued=5, now_ms=3_500, lease="host/12/abcd"
    )
    beat = Status(
        exchange="binance",
        run=7,
        seq=4,
        ts_ms=None,
        recv_ns=time.time_ns(),
        event="heartbeat",
        detail=detail,
    )
    redis = aioredis.Redis.from_url(redis_url)
    await redis.xadd("md:binance:status", {"d": codecs.encode(beat)}, id="7-4")
    await redis.aclose()
    result = await asyncio.to_thread(run_cli, "status", "--redis", redis_url)
    assert result.returncode == 0, result.stderr
    row = result.stdout.splitlines()[1]
    assert row.split()[4:] == ["stale", "42", "2", "3", "4"]
    assert re.search(
        r"binance: heartbeat \d+\.\ds ago, 5 queued, lease held by host/12/abcd", result.stdout
    ), result.stdout


def one_line_error(result: subprocess.CompletedProcess[str], code: int) -> str:
    """The one stderr line of a clean failure with exit *code* (no traceback)."""
    assert result.returncode == code, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


def test_repeated_exchange_is_a_usage_error(tmp_path: Path) -> None:
    config = tmp_path / "producer.toml"
    config.write_text('[[exchanges]]\nid = "binance"\nsymbols = ["BTC/USDT"]\n')
    result = run_cli(
        "produce", "--config", str(config), "--exchange", "binance", "--exchange", "binance"
    )
    assert "--exchange binance is given twice" in one_line_error(result, 2)


def test_namespace_with_a_colon_is_a_usage_error() -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"
    for command in (["status"], ["tail", "md:*"]):
        result = run_cli(*command, "--namespace", "md:x", "--redis", url)
        assert "namespace" in one_line_error(result, 2)


def test_sim_unknown_exchange_and_busy_port_are_one_line(tmp_path: Path) -> None:
    result = run_cli("sim", "nosuchx", "--port", str(free_port()))
    assert "'nosuchx' is not simulated" in one_line_error(result, 2)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = run_cli("sim", "binance", "--port", str(port))
    assert f"port {port} is in use" in one_line_error(result, 1)


async def test_acl_refusals_are_one_line(
    make_redis_server: Callable[..., RedisProcess], tmp_path: Path
) -> None:
    server = make_redis_server(["--aclfile", str(acl_file_for_tests(tmp_path))])
    admin = aioredis.Redis.from_url(
        f"redis://{ADMIN}:{password_for(ADMIN)}@127.0.0.1:{server.port}/0"
    )
    info = FeedInfo(
        exchange="binance",
        symbol="BTC/USDT",
        kind="ticker",
        timeframe=None,
        run=7,
        stream_maxlen=100,
        updated_ms=1,
    )
    await admin.hset("md:feeds", "md:binance:ticker:BTC/USDT", codecs.encode_feed_info(info))
    await admin.aclose()
    consumer = f"redis://{CONSUMER}:{password_for(CONSUMER)}@127.0.0.1:{server.port}/0"
    line = one_line_error(await asyncio.to_thread(run_cli, "status", "--redis", consumer), 1)
    assert "NOPERM" in line or "no permissions" in line, line
    assert password_for(CONSUMER) not in line
    tail = await asyncio.to_thread(run_cli, "tail", "other:*", "--redis", consumer)
    line = one_line_error(tail, 1)
    assert "other:*" in line and ("NOPERM" in line or "no permissions" in line), line
    assert password_for(CONSUMER) not in line
