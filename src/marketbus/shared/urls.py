"""Redis URLs: what marketbus accepts as one (`check_url`) and the only form it prints
one in (`redact`).

redis-py forgives too much: it reads ``redis://h/abc`` as db 0, silently, and reports a
bad port only when it connects. `check_url` rejects such URLs up front, naming the bad
part. Configs get logged and shown in tracebacks, and error messages name the server
they could not reach; credentials must appear in none of them. Here, below both
`marketbus.shared.config` (whose `RedisConfig` checks and redacts) and
`marketbus.shared.connection` (whose errors redact), so neither imports the other for it.
"""

from __future__ import annotations

import re
from typing import Final
from urllib.parse import parse_qs, urlsplit, urlunsplit

from redis.asyncio.connection import URL_QUERY_ARGUMENT_PARSERS

from marketbus.shared.errors import ConfigError

SCHEMES: Final = ("redis", "rediss", "unix")

_DB_PATH: Final = re.compile(r"/?[0-9]*")
_DIGITS: Final = re.compile(r"[0-9]+")
_SPACE_OR_CONTROL: Final = re.compile(r"[\x00-\x20\x7f]")


def check_url(url: str, *, where: str = "redis.url") -> None:
    """Raise ConfigError unless *url* is a Redis URL redis-py will read as written.

    Checks the scheme, the port (1..65535), the database (digits, in the path for
    redis:// and rediss://, or a ``db=`` query parameter), a unix socket's path, and the
    query parameters redis-py converts (``socket_timeout=abc`` would fail only at the
    first connection). The message starts with *where* (the setting or variable the URL
    came from) and shows the URL redacted.
    """

    def bad(problem: str) -> ConfigError:
        return ConfigError(f"{where} {redact(url)!r}: {problem}")

    if _SPACE_OR_CONTROL.search(url):
        raise bad("it contains a space or control character")
    try:
        parts = urlsplit(url)
    except ValueError as exc:
        raise bad(f"not a URL ({exc})") from None
    if parts.scheme not in SCHEMES:
        raise bad(f"scheme must be one of {', '.join(SCHEMES)}")
    query = parse_qs(parts.query)
    if parts.scheme == "unix":
        if not parts.path:
            raise bad("the socket path is missing (unix:///path/to/redis.sock)")
    else:
        port = parts.netloc.rpartition("@")[2].rpartition("]")[2].partition(":")[2]
        if port and not (_DIGITS.fullmatch(port) and 1 <= int(port) <= 65535):
            raise bad(f"the port must be a number from 1 to 65535, not {port!r}")
        if _DB_PATH.fullmatch(parts.path) is None:
            raise bad(f"the database must be a number, not {parts.path.lstrip('/')!r}")
    for db in query.get("db", []):
        if not _DIGITS.fullmatch(db):
            raise bad(f"the database must be a number, not {db!r}")
    for name, values in query.items():
        parser = URL_QUERY_ARGUMENT_PARSERS.get(name)
        try:
            if parser is not None:
                parser(values[0])
        except (TypeError, ValueError):
            raise bad(f"query parameter {name} {values[0]!r} is not valid") from None


def redact(url: str) -> str:
    """*url* with any password replaced by ``***`` (the username is kept).

    A ``password=`` query parameter (redis-py honours it too) is masked as well, and a
    URL too malformed to parse is shown as its scheme only, never verbatim.
    """
    base, sep, query = url.partition("?")
    try:
        parts = urlsplit(base)
        _ = parts.port  # raises ValueError on a bad port
    except ValueError:
        return f"{base.partition(':')[0]}://<unparseable>"
    if parts.password is not None:
        host_port = parts.netloc.rpartition("@")[2]
        base = urlunsplit(parts._replace(netloc=f"{parts.username or ''}:***@{host_port}"))
    if sep:
        query = "&".join(
            "password=***" if pair.lower().startswith("password=") else pair
            for pair in query.split("&")
        )
    return base + sep + query
