"""Redis URLs: schemes checked, TLS files only with rediss://, passwords never shown."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from marketbus.shared.cluster import connect_cluster
from marketbus.shared.config import RedisConfig
from marketbus.shared.connection import client, connect, connection_kwargs
from marketbus.shared.errors import ConfigError, RedisUnavailableError
from marketbus.shared.transport.endpoint import Endpoint
from tests.support.redis_process import free_port


def test_bad_scheme_is_a_config_error_without_password() -> None:
    with pytest.raises(ConfigError) as info:
        connection_kwargs(RedisConfig(url="http://u:s3cret@h/0"))
    assert "s3cret" not in str(info.value)


def test_tls_files_need_rediss() -> None:
    with pytest.raises(ConfigError, match="rediss://"):
        connection_kwargs(RedisConfig(url="redis://h/0", tls_ca_file="ca.pem"))
    kwargs = connection_kwargs(RedisConfig(url="rediss://h/0", tls_ca_file="ca.pem"))
    assert kwargs["ssl_ca_certs"] == "ca.pem"


@pytest.mark.parametrize("setting", ["tls_ca_file", "tls_cert_file", "tls_key_file"])
async def test_a_missing_tls_file_is_named_not_an_unreachable_redis(
    redis_url: str, tmp_path: Path, setting: str
) -> None:
    """It used to say "cannot reach Redis ... No such file or directory"."""
    files = {
        name: tmp_path / f"{name}.pem" for name in ("tls_ca_file", "tls_cert_file", "tls_key_file")
    }
    for path in files.values():
        path.write_text("present\n")
    files[setting].unlink()
    url = redis_url.replace("redis://", "rediss://u:s3cret@")
    config = RedisConfig(url=url, connect_timeout_s=1, **{k: str(v) for k, v in files.items()})
    expected = f"redis.{setting} {str(files[setting])!r} does not exist"
    with pytest.raises(ConfigError) as info:
        await connect(config)
    assert str(info.value) == expected
    # the cluster client and the fast transport open connections their own way
    with pytest.raises(ConfigError) as info:
        await connect_cluster(config)
    assert str(info.value) == expected
    with pytest.raises(ConfigError) as info:
        Endpoint.from_config(config)
    assert str(info.value) == expected


def test_a_tls_file_that_cannot_be_read_is_named(tmp_path: Path) -> None:
    config = RedisConfig(url="rediss://h/0", tls_ca_file=str(tmp_path))
    with pytest.raises(
        ConfigError, match=rf"^redis.tls_ca_file {re.escape(repr(str(tmp_path)))} cannot be read: "
    ):
        client(config)


def test_client_parses_user_password_and_db() -> None:
    redis = client(RedisConfig(url="redis://alice:pw@127.0.0.1:6400/3"))
    kwargs = redis.connection_pool.connection_kwargs
    assert (kwargs["username"], kwargs["password"], kwargs["db"]) == ("alice", "pw", 3)


async def test_unreachable_redis_is_a_clear_error() -> None:
    url = f"redis://u:s3cret@127.0.0.1:{free_port()}/0"
    with pytest.raises(RedisUnavailableError, match="cannot reach Redis") as info:
        await connect(RedisConfig(url=url, connect_timeout_s=1))
    assert "s3cret" not in str(info.value)


async def test_connect_to_private_server(redis_url: str) -> None:
    redis = await connect(RedisConfig(url=redis_url))
    assert await redis.ping()
    await redis.aclose()


async def test_a_non_numeric_database_never_reaches_db_0(redis_url: str) -> None:
    """On a real server, ``/abc`` used to connect to db 0 and write there."""
    with pytest.raises(ConfigError, match="the database must be a number, not 'abc'"):
        redis = await connect(RedisConfig(url=redis_url.rsplit("/", 1)[0] + "/abc"))
        await redis.set("written-to", "db 0")
        await redis.aclose()


def test_a_tls_key_without_its_certificate_is_a_config_error(tmp_path: Path) -> None:
    key = tmp_path / "client.key"
    key.write_text("present\n")
    with pytest.raises(ConfigError, match=r"tls_key_file is set without redis\.tls_cert_file"):
        client(RedisConfig(url="rediss://h/0", tls_key_file=str(key)))
