"""Which feeds a subscriber follows: those a subscribe names, or the catalog lists.

`requested` turns the arguments of `Subscriber.subscribe` into feed names (pure).
Producers list every feed they write in one hash, the catalog ``{ns}:feeds`` (field:
the feed name, value: its JSON `FeedInfo`). `read_catalog` returns the names of the
well-formed entries (the others are logged and skipped); `select` filters them (pure).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster

from marketbus.shared.codecs import decode_feed_info
from marketbus.shared.errors import ConfigError, ContractError
from marketbus.shared.names import (
    Feed,
    catalog_key,
    exchange_of,
    feed_name,
    kind_and_symbol,
    ohlcv_kind,
)

log = logging.getLogger("marketbus.consumers")


def requested(
    namespace: str,
    feeds: Iterable[str],
    *,
    exchange: str | None = None,
    symbol: str | None = None,
    kind: str | None = None,
    timeframe: str | None = None,
) -> list[str]:
    """*feeds*, plus the feed of *exchange*, *symbol* and *kind* (or *timeframe*) if
    given. ConfigError when that feed is given only in part, or no feed at all;
    FeedNameError for a malformed part."""
    names = list(feeds)
    if exchange is not None or symbol is not None or kind is not None or timeframe:
        if timeframe is not None:
            kind = ohlcv_kind(timeframe)
        if exchange is None or symbol is None or kind is None:
            raise ConfigError("subscribe: give exchange, symbol and kind (or timeframe)")
        names.append(feed_name(namespace, exchange, kind, symbol))
    if not names:
        raise ConfigError("subscribe: no feed given")
    return names


async def read_catalog(redis: aioredis.Redis | RedisCluster, namespace: str) -> list[str]:
    """The feed names the catalog of *namespace* lists, sorted."""
    raw = await redis.hgetall(catalog_key(namespace))
    names = []
    for field, value in raw.items():
        name = field.decode() if isinstance(field, bytes) else field
        try:
            decode_feed_info(value)
            Feed.parse(name)
        except ContractError as exc:
            log.warning("catalog entry %r skipped: %s", name, exc)
            continue
        names.append(name)
    return sorted(names)


def select(
    names: Iterable[str],
    *,
    exchange: str | None = None,
    kind: str | None = None,
    symbol: str | None = None,
) -> list[str]:
    """The feed names of *names* with the given exchange, kind and symbol (None: any).

    *names* are well-formed feed names (as `read_catalog` returns them).
    """
    selected = []
    for name in names:
        feed_kind, feed_symbol = kind_and_symbol(name)
        if (
            (exchange is None or exchange_of(name) == exchange)
            and (kind is None or feed_kind == kind)
            and (symbol is None or feed_symbol == symbol)
        ):
            selected.append(name)
    return selected
