"""Fixtures shared by every test: private redis-server processes, never the shared Redis."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from hypothesis import HealthCheck, settings

from tests.support.redis_process import RedisProcess

# Property tests judge correctness, never speed: on a shared 2-core machine a stalled
# second must not fail them (Hypothesis's per-example deadline and its "input generation
# is slow" check are timings). Loaded here, so every test module gets the profile.
settings.register_profile("marketbus", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("marketbus")


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisProcess]:
    """One private redis-server for the whole session (flushed per test by `redis_url`)."""
    server = RedisProcess(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
async def redis_url(redis_server: RedisProcess) -> AsyncIterator[str]:
    """URL of the session server, emptied before the test."""
    if not redis_server.ping():
        redis_server.start()
    client = aioredis.Redis.from_url(redis_server.url)
    await client.flushall()
    await client.aclose()
    yield redis_server.url


@pytest.fixture
def make_redis_server(tmp_path: Path) -> Iterator[Callable[..., RedisProcess]]:
    """A factory of extra private servers (fault tests kill and restart these)."""
    started: list[RedisProcess] = []

    def make(extra_args: list[str] | None = None) -> RedisProcess:
        server = RedisProcess(tmp_path / f"redis-{len(started)}", extra_args=extra_args)
        started.append(server)
        server.start()
        return server

    yield make
    for server in started:
        server.stop()
