"""Redis connections from a URL: redis://, rediss:// (TLS), unix://, user/password, db.

Credentials never reach logs: errors show a URL only through `marketbus.shared.urls.redact`.
TLS files are checked before connecting, so a missing one is named as such (not as an
unreachable server). This module imports `marketbus.shared.config` (for `RedisConfig`);
config never imports it.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import redis.asyncio as aioredis
from redis.exceptions import AuthenticationError, ResponseError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from marketbus.shared.config import RedisConfig
from marketbus.shared.errors import ConfigError, RedisUnavailableError
from marketbus.shared.urls import redact


def connection_kwargs(config: RedisConfig) -> dict[str, Any]:
    """Keyword arguments for `redis.asyncio.from_url` derived from *config*."""
    scheme = urlsplit(config.url).scheme  # RedisConfig has checked it (urls.check_url)
    kwargs: dict[str, Any] = {
        "socket_connect_timeout": config.connect_timeout_s,
        "health_check_interval": 15,
    }
    if scheme == "rediss":
        if config.tls_ca_file:
            kwargs["ssl_ca_certs"] = config.tls_ca_file
        if config.tls_cert_file:
            kwargs["ssl_certfile"] = config.tls_cert_file
        if config.tls_key_file:
            kwargs["ssl_keyfile"] = config.tls_key_file
    elif config.tls_ca_file or config.tls_cert_file or config.tls_key_file:
        raise ConfigError("redis.tls_* files are set but redis.url does not use rediss://")
    return kwargs


def check_tls_files(config: RedisConfig) -> None:
    """ConfigError naming the setting and path of a TLS file that is missing or cannot
    be read: otherwise the handshake fails with "cannot reach Redis ... No such file",
    which sends the operator looking at the server.

    Kept out of `connection_kwargs`, a pure mapping of settings that the cluster and
    fast-path clients share: whatever opens connections calls it (`client`, and so
    `connect`, do).
    """
    if config.tls_key_file and not config.tls_cert_file:
        raise ConfigError("redis.tls_key_file is set without redis.tls_cert_file")
    for setting, path in (
        ("tls_ca_file", config.tls_ca_file),
        ("tls_cert_file", config.tls_cert_file),
        ("tls_key_file", config.tls_key_file),
    ):
        if not path:
            continue
        try:
            with open(path, "rb"):
                pass
        except FileNotFoundError:
            raise ConfigError(f"redis.{setting} {path!r} does not exist") from None
        except OSError as exc:
            raise ConfigError(f"redis.{setting} {path!r} cannot be read: {exc.strerror}") from None


def client(config: RedisConfig, **overrides: Any) -> aioredis.Redis:
    """An asyncio Redis client for *config*; connects lazily on first command.

    ConfigError now, not at the first command, for a TLS file that cannot be read.
    """
    kwargs = connection_kwargs(config) | overrides
    check_tls_files(config)
    return aioredis.Redis.from_url(config.url, **kwargs)


async def connect(config: RedisConfig, **overrides: Any) -> aioredis.Redis:
    """A client that has answered PING; RedisUnavailableError says why not."""
    redis = client(config, **overrides)
    try:
        await redis.ping()
    except AuthenticationError as exc:
        await redis.aclose()
        raise RedisUnavailableError(
            f"Redis at {redact(config.url)} refused the credentials: {exc}"
        ) from None
    except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
        await redis.aclose()
        raise RedisUnavailableError(
            f"cannot reach Redis at {redact(config.url)}: {exc}. Is redis-server running "
            "and is redis.url (or --redis) right?"
        ) from None
    except ResponseError as exc:
        await redis.aclose()
        raise RedisUnavailableError(f"Redis at {redact(config.url)} refused PING: {exc}") from None
    return redis
