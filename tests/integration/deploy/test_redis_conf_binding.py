"""deploy/redis.conf on a real redis-server, reached from a non-loopback address of
this host: the shipped file alone refuses such clients (loopback only), and with the
compose service's command-line options the ACL users get in while anonymous clients
still do not. (Docker does not run here: this is the compose service's command line
run directly; the static checks are in tests/unit/deploy/test_redis_conf_binding.py.)"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from redis.exceptions import AuthenticationError, ResponseError

from marketbus.shared.config import RedisConfig
from marketbus.shared.connection import connect
from marketbus.shared.errors import RedisUnavailableError
from tests.integration.deploy.test_acl_and_redis_conf import conf_for_tests
from tests.support.redis_process import RedisProcess, free_port
from tests.unit.deploy.files import PRODUCER, password_for
from tests.unit.deploy.test_redis_conf_binding import compose_redis_command


def _non_loopback_address() -> str | None:
    """This host's address on its default route (no packet is sent), if it has one."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        try:
            sock.connect(("10.255.255.255", 9))
        except OSError:
            return None
        address: str = sock.getsockname()[0]
    return None if address.startswith("127.") or address == "0.0.0.0" else address


HOST = _non_loopback_address()
pytestmark = pytest.mark.skipif(HOST is None, reason="this host has no non-loopback IPv4")


def _server(workdir: Path, options: list[str]) -> Iterator[RedisProcess]:
    """redis-server on the shipped conf (paths and port moved), then *options*."""
    workdir.mkdir()
    port = free_port()
    conf = conf_for_tests(workdir)
    moved = ["--port", str(port), "--logfile", str(workdir / "redis.log")]
    server = RedisProcess(workdir, port=port, extra_args=["--include", str(conf), *moved, *options])
    server.start()
    yield server
    server.stop()


@pytest.fixture
def shipped(tmp_path: Path) -> Iterator[RedisProcess]:
    yield from _server(tmp_path / "shipped", [])


@pytest.fixture
def compose(tmp_path: Path) -> Iterator[RedisProcess]:
    yield from _server(tmp_path / "compose", compose_redis_command()[2:])


def _url(server: RedisProcess, user: str | None = None) -> str:
    credentials = f"{user}:{password_for(user)}@" if user else ""
    return f"redis://{credentials}{HOST}:{server.port}/0"


async def test_the_shipped_conf_refuses_clients_from_other_addresses(
    shipped: RedisProcess,
) -> None:
    with pytest.raises(RedisUnavailableError, match="cannot reach Redis"):
        await connect(RedisConfig(url=_url(shipped, PRODUCER), connect_timeout_s=2))
    local = await connect(
        RedisConfig(url=f"redis://{PRODUCER}:{password_for(PRODUCER)}@127.0.0.1:{shipped.port}/0")
    )
    assert await local.ping()
    await local.aclose()


async def test_the_compose_command_line_lets_acl_users_in_from_other_addresses(
    compose: RedisProcess,
) -> None:
    redis = await connect(RedisConfig(url=_url(compose, PRODUCER), connect_timeout_s=2))
    assert await redis.ping()
    await redis.aclose()


async def test_the_compose_command_line_still_refuses_anonymous_clients(
    compose: RedisProcess,
) -> None:
    redis = aioredis.Redis.from_url(_url(compose), socket_connect_timeout=2)
    try:
        with pytest.raises((AuthenticationError, ResponseError), match=r"NOAUTH|authenticated"):
            await redis.ping()
    finally:
        await redis.aclose()
