"""deploy/redis.conf and deploy/users.acl on a private redis-server: the server starts
with them, the limits are the documented ones, and each ACL user can do its job and
nothing else. Credentials never show in errors, reprs or logs."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from redis.exceptions import AuthenticationError, NoPermissionError, ResponseError

from marketbus.shared.config import RedisConfig
from marketbus.shared.connection import client, connect
from marketbus.shared.errors import RedisUnavailableError
from tests.support.redis_process import RedisProcess, free_port
from tests.unit.deploy.files import (
    ADMIN,
    CONSUMER,
    OPS,
    PRODUCER,
    REDIS_CONF,
    acl_file_for_tests,
    documented_pubsub_limit,
    password_for,
    size_bytes,
)

FEED = "md:binance:ticker:BTC/USDT"
LEASE = "md:binance:lease"
NOPERM = r"NOPERM|no permissions|can't access"
RELEASE_LEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


def conf_for_tests(workdir: Path) -> Path:
    """deploy/redis.conf with only its host paths (``dir``, ``aclfile``) moved to
    *workdir*: Redis applies ``dir`` while reading, so /data must not be used here."""
    replaced = {"dir": str(workdir), "aclfile": str(acl_file_for_tests(workdir))}
    lines = []
    for line in REDIS_CONF.read_text().splitlines():
        name = line.split(" ", 1)[0]
        lines.append(f"{name} {replaced.pop(name)}" if name in replaced else line)
    assert not replaced, f"redis.conf lacks {sorted(replaced)}"
    path = workdir / "redis.conf"
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="module")
def bus_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisProcess]:
    """redis-server running deploy/redis.conf with users.acl (test passwords).

    Only paths, the port and the bind address are overridden; every other directive
    is the shipped one.
    """
    workdir = tmp_path_factory.mktemp("bus")
    port = free_port()
    server = RedisProcess(
        workdir,
        port=port,
        extra_args=[
            arg
            for option in {
                "--include": str(conf_for_tests(workdir)),
                "--port": str(port),
                "--bind": "127.0.0.1",
                "--logfile": str(workdir / "redis.log"),
            }.items()
            for arg in option
        ],
    )
    server.start()
    yield server
    server.stop()


def _url(server: RedisProcess, user: str, password: str | None = None) -> str:
    return f"redis://{user}:{password or password_for(user)}@127.0.0.1:{server.port}/0"


@pytest.fixture
async def admin(bus_server: RedisProcess) -> AsyncIterator[aioredis.Redis]:
    redis = await connect(RedisConfig(url=_url(bus_server, ADMIN)))
    await redis.flushall()
    yield redis
    await redis.aclose()


@pytest.fixture
async def producer(bus_server: RedisProcess) -> AsyncIterator[aioredis.Redis]:
    redis = await connect(RedisConfig(url=_url(bus_server, PRODUCER)))
    yield redis
    await redis.aclose()


@pytest.fixture
async def consumer(bus_server: RedisProcess) -> AsyncIterator[aioredis.Redis]:
    redis = await connect(RedisConfig(url=_url(bus_server, CONSUMER)))
    yield redis
    await redis.aclose()


# --- redis.conf ---------------------------------------------------------------------------


async def test_pubsub_output_buffer_limit_is_the_documented_one(
    admin: aioredis.Redis,
) -> None:
    limits = (await admin.config_get("client-output-buffer-limit"))["client-output-buffer-limit"]
    words = limits.split()
    by_class = {words[i]: words[i + 1 : i + 4] for i in range(0, len(words), 4)}
    hard, soft, seconds = documented_pubsub_limit()
    assert by_class["pubsub"] == [str(size_bytes(hard)), str(size_bytes(soft)), seconds]


async def test_shipped_memory_and_persistence_settings_are_in_force(
    admin: aioredis.Redis,
) -> None:
    config = await admin.config_get("*")
    assert config["maxmemory-policy"] == "noeviction"
    assert config["appendonly"] == "no"
    assert config["save"] == "300 1"
    assert int(config["maxmemory"]) == size_bytes("4gb")
    assert int(config["maxmemory-clients"]) == size_bytes("1gb")
    assert config["databases"] == "1"


async def test_anonymous_clients_are_refused(bus_server: RedisProcess) -> None:
    redis = aioredis.Redis.from_url(bus_server.url)
    try:
        with pytest.raises((AuthenticationError, ResponseError), match=r"NOAUTH|authenticated"):
            await redis.ping()
    finally:
        await redis.aclose()


# --- producer --------------------------------------------------------------------------------


async def test_producer_can_do_its_whole_job(
    admin: aioredis.Redis, producer: aioredis.Redis
) -> None:
    await producer.client_setname("marketbus-producer-binance")
    assert await producer.set(LEASE, "run-1", nx=True, px=10_000)
    assert await producer.get(LEASE) == b"run-1"
    assert await producer.pexpire(LEASE, 10_000)
    await producer.xadd(FEED, {"d": b"{}"}, id="1-1", maxlen=100, approximate=True)
    await producer.publish(FEED, b"{}")
    await producer.execute_command("SPUBLISH", FEED, b"{}")
    assert await producer.xrevrange(FEED, "+", "-", count=1)
    assert await producer.xrange(FEED, "-", "+")
    assert (await producer.xinfo_stream(FEED))["length"] == 1
    await producer.hset("md:feeds", FEED, b"{}")
    assert await producer.hgetall("md:feeds") == {FEED.encode(): b"{}"}
    release = producer.register_script(RELEASE_LEASE)
    assert await release(keys=[LEASE], args=["run-1"]) == 1
    sha = await producer.script_load(RELEASE_LEASE)
    assert await producer.evalsha(sha, 1, LEASE, "run-1") == 0


@pytest.mark.parametrize(
    "command",
    [
        ("SET", "other:key", "x"),
        ("XADD", "other:stream", "*", "d", "x"),
        ("PUBLISH", "other:channel", "x"),
        ("FLUSHALL",),
        ("KEYS", "*"),
        ("CONFIG", "GET", "maxmemory"),
        ("SUBSCRIBE", "md:x"),
        ("ACL", "LIST"),
        ("EVAL", "return redis.call('SET', 'other:key', 1)", "0"),
    ],
)
async def test_producer_cannot_step_outside_md(
    producer: aioredis.Redis, command: tuple[str, ...]
) -> None:
    with pytest.raises((NoPermissionError, ResponseError), match=NOPERM):
        await producer.execute_command(*command)


# --- consumer --------------------------------------------------------------------------------


async def test_consumer_can_subscribe_and_read_history(
    admin: aioredis.Redis, consumer: aioredis.Redis
) -> None:
    await admin.xadd(FEED, {"d": b"{}"}, id="1-1")
    await admin.hset("md:feeds", FEED, b"{}")
    assert await consumer.xrange(FEED, "-", "+") == [(b"1-1", {b"d": b"{}"})]
    assert await consumer.xrevrange(FEED, "+", "-", count=1)
    assert await consumer.hgetall("md:feeds") == {FEED.encode(): b"{}"}
    assert await consumer.hget("md:feeds", FEED) == b"{}"
    assert (await consumer.hscan("md:feeds"))[1] == {FEED.encode(): b"{}"}
    pubsub = consumer.pubsub()
    try:
        await pubsub.subscribe(FEED)
        await pubsub.psubscribe("md:*", "md:binance:*", "md:okx:*")
        await pubsub.ssubscribe(FEED)
        await pubsub.unsubscribe(FEED)
        await pubsub.punsubscribe("md:*")
        await pubsub.sunsubscribe(FEED)
        confirmations = []
        while (message := await pubsub.get_message(timeout=1)) is not None:
            confirmations.append(message["type"])
        assert confirmations.count("psubscribe") == 3
        assert "ssubscribe" in confirmations
    finally:
        await pubsub.aclose()


async def test_psubscribe_patterns_are_checked_literally(consumer: aioredis.Redis) -> None:
    """Redis 7 matches a PSUBSCRIBE pattern literally against the & rules: a pattern
    not listed in users.acl (here md:kraken:*) is refused although &md:* exists."""
    pubsub = consumer.pubsub()
    try:
        with pytest.raises((NoPermissionError, ResponseError), match=NOPERM):
            await pubsub.psubscribe("md:kraken:*")
            await pubsub.get_message(timeout=1)
    finally:
        await pubsub.aclose()


@pytest.mark.parametrize(
    "command",
    [
        ("PUBLISH", FEED, "x"),
        ("SPUBLISH", FEED, "x"),
        ("XADD", FEED, "*", "d", "x"),
        ("HSET", "md:feeds", FEED, "x"),
        ("SET", LEASE, "x"),
        ("DEL", FEED),
        ("EVAL", "return 1", "0"),
        ("XRANGE", "other:stream", "-", "+"),
        ("FLUSHALL",),
        ("KEYS", "*"),
        ("CONFIG", "GET", "maxmemory"),
        ("XINFO", "STREAM", FEED),
    ],
)
async def test_consumer_cannot_publish_write_or_leave_md(
    consumer: aioredis.Redis, command: tuple[str, ...]
) -> None:
    with pytest.raises((NoPermissionError, ResponseError), match=NOPERM):
        await consumer.execute_command(*command)


async def test_consumer_cannot_subscribe_outside_md(consumer: aioredis.Redis) -> None:
    pubsub = consumer.pubsub()
    try:
        with pytest.raises((NoPermissionError, ResponseError), match=NOPERM):
            await pubsub.subscribe("other:channel")
            await pubsub.get_message(timeout=1)
    finally:
        await pubsub.aclose()


# --- operators -------------------------------------------------------------------------------


async def test_ops_user_reads_everything_and_changes_nothing(
    admin: aioredis.Redis, bus_server: RedisProcess
) -> None:
    await admin.xadd(FEED, {"d": b"{}"}, id="1-1")
    ops = await connect(RedisConfig(url=_url(bus_server, OPS)))
    try:
        assert await ops.xlen(FEED) == 1
        assert [key async for key in ops.scan_iter("md:*")] == [FEED.encode()]
        assert "used_memory" in await ops.info("memory")
        assert await ops.memory_usage(FEED)
        assert await ops.client_list()
        for command in [
            ("XADD", FEED, "*", "d", "x"),
            ("PUBLISH", FEED, "x"),
            ("FLUSHALL",),
            ("CONFIG", "SET", "maxmemory", "1"),
            ("CLIENT", "KILL", "ID", "1"),
            ("KEYS", "*"),
            ("DEL", FEED),
        ]:
            with pytest.raises((NoPermissionError, ResponseError), match=NOPERM):
                await ops.execute_command(*command)
    finally:
        await ops.aclose()


# --- credentials -----------------------------------------------------------------------------


async def test_wrong_password_is_a_clear_error_that_hides_it(
    bus_server: RedisProcess, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    secret = "wrong-but-secret-9d1c"
    config = RedisConfig(url=_url(bus_server, CONSUMER, secret))
    with pytest.raises(RedisUnavailableError, match="refused the credentials") as info:
        await connect(config)
    shown = [str(info.value), repr(info.value), repr(config), caplog.text]
    assert CONSUMER in str(info.value)
    assert not [text for text in shown if secret in text]


async def test_credentials_never_appear_in_reprs_or_logs(
    bus_server: RedisProcess, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    secret = password_for(PRODUCER)
    config = RedisConfig(url=_url(bus_server, PRODUCER))
    redis = await connect(config)
    try:
        await redis.ping()
        pool = redis.connection_pool
        shown = [repr(config), str(config), repr(redis), repr(pool), caplog.text]
        shown += [repr(connection) for connection in pool._available_connections]
        assert not [text for text in shown if secret in text]
        assert "***" in repr(config)
    finally:
        await redis.aclose()


def test_client_for_an_acl_user_keeps_user_and_password_apart() -> None:
    redis = client(RedisConfig(url="redis://marketbus-consumer:pw@127.0.0.1:1/0"))
    kwargs = redis.connection_pool.connection_kwargs
    assert (kwargs["username"], kwargs["password"]) == ("marketbus-consumer", "pw")
