"""Where and how to connect: a `RedisConfig` resolved into socket, TLS and login settings.

The URL is read by redis-py's own parser, so the fast transport and redis-py accept
exactly the same URLs (redis://, rediss://, unix://, ``user:password@``, ``/db`` or
``?db=``) and the same ``tls_*`` files.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from redis.asyncio.connection import parse_url

from marketbus.shared.config import RedisConfig
from marketbus.shared.connection import check_tls_files, connection_kwargs
from marketbus.shared.errors import ConfigError
from marketbus.shared.resp import pack_command
from marketbus.shared.urls import redact

DEFAULT_PORT = 6379


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One Redis server as the fast transport dials it.

    Exactly one of ``path`` (unix socket) and ``host`` is set. ``display`` is the URL
    with its password redacted: the only form that reaches messages and logs.
    """

    display: str
    host: str | None = None
    port: int = DEFAULT_PORT
    path: str | None = None
    username: str | None = None
    password: str | None = None
    db: int = 0
    ssl_context: ssl.SSLContext | None = None
    connect_timeout_s: float = 5.0

    def __repr__(self) -> str:
        return f"Endpoint({self.display!r})"

    @classmethod
    def from_config(cls, config: RedisConfig) -> Endpoint:
        """Resolve *config*; ConfigError for a bad scheme or stray TLS files."""
        connection_kwargs(config)  # validates scheme and tls_* exactly as redis-py's path
        try:
            parsed: dict[str, Any] = dict(parse_url(config.url))
        except ValueError as exc:
            raise ConfigError(f"redis.url {redact(config.url)!r}: {exc}") from None
        tls = urlsplit(config.url).scheme == "rediss"
        if tls:
            check_tls_files(config)
        return cls(
            display=redact(config.url),
            host=None if "path" in parsed else parsed.get("host", "localhost"),
            port=int(parsed.get("port") or DEFAULT_PORT),
            path=parsed.get("path"),
            username=parsed.get("username"),
            password=parsed.get("password"),
            db=int(parsed.get("db") or 0),
            ssl_context=tls_context(config) if tls else None,
            connect_timeout_s=config.connect_timeout_s,
        )

    def handshake(self) -> list[tuple[str | int, ...]]:
        """Commands that make a fresh connection ready: AUTH, SELECT, then PING.

        PING goes last so a server that wants a password says NOAUTH during setup,
        not at the first publish.
        """
        commands: list[tuple[str | int, ...]] = []
        if self.password is not None:
            if self.username:
                commands.append(("AUTH", self.username, self.password))
            else:
                commands.append(("AUTH", self.password))
        if self.db:
            commands.append(("SELECT", self.db))
        commands.append(("PING",))
        return commands

    def handshake_bytes(self) -> bytes:
        """`handshake` as one pipelined write."""
        return b"".join(pack_command(*command) for command in self.handshake())


def tls_context(config: RedisConfig) -> ssl.SSLContext:
    """Client TLS settings for rediss://: verify the server (against ``tls_ca_file`` or
    the system store) and its host name, and present ``tls_cert_file``/``tls_key_file``
    when the server asks for a client certificate (as redis-py does by default)."""
    try:
        context = ssl.create_default_context(cafile=config.tls_ca_file)
        if config.tls_cert_file:
            context.load_cert_chain(config.tls_cert_file, config.tls_key_file)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"redis.tls_*: cannot load TLS files: {exc}") from None
    return context
