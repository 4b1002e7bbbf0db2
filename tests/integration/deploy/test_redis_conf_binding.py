"""deploy/redis.conf on a real redis-server: the shipped file alone listens on loopback
only, and with the compose service's command-line options it listens on every address
while the ACL users get in and anonymous clients still do not. Which addresses the
server listens on is read from the kernel's socket table (/proc/net/tcp): no test sends
traffic anywhere but loopback. (Docker does not run here: this is the compose service's
command line run directly; static checks are in tests/unit/deploy/test_redis_conf_binding.py.)"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from redis.exceptions import AuthenticationError, ResponseError

from marketbus.shared.config import RedisConfig
from marketbus.shared.connection import connect
from tests.integration.deploy.test_acl_and_redis_conf import conf_for_tests
from tests.support.redis_process import RedisProcess, free_port
from tests.unit.deploy.files import PRODUCER, password_for
from tests.unit.deploy.test_redis_conf_binding import compose_redis_command

PROC_NET_TCP = Path("/proc/net/tcp")
LISTEN = "0A"
pytestmark = pytest.mark.skipif(not PROC_NET_TCP.exists(), reason="no /proc/net/tcp here")


def listening_ipv4(port: int) -> set[str]:
    """The IPv4 addresses a socket listens on at *port*, from the kernel's table."""
    addresses = set()
    for line in PROC_NET_TCP.read_text().splitlines()[1:]:
        fields = line.split()
        local, state = fields[1], fields[3]
        address, port_hex = local.split(":")
        if state == LISTEN and int(port_hex, 16) == port:
            addresses.add(socket.inet_ntoa(bytes.fromhex(address)[::-1]))
    return addresses


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
    return f"redis://{credentials}127.0.0.1:{server.port}/0"


async def test_the_shipped_conf_listens_on_loopback_only(shipped: RedisProcess) -> None:
    assert listening_ipv4(shipped.port) == {"127.0.0.1"}
    local = await connect(RedisConfig(url=_url(shipped, PRODUCER)))
    assert await local.ping()
    await local.aclose()


async def test_the_compose_command_line_listens_on_every_address_for_acl_users(
    compose: RedisProcess,
) -> None:
    assert listening_ipv4(compose.port) == {"0.0.0.0"}
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
