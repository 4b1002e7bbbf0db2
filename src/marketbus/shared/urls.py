"""Redis URLs as marketbus shows them: `redact` is the only form a URL is printed in.

Configs get logged and shown in tracebacks, and error messages name the server they
could not reach; credentials must appear in none of them. Here, below both
`marketbus.shared.config` (whose `RedisConfig` repr redacts) and
`marketbus.shared.connection` (whose errors do), so neither imports the other for it.
"""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit


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
