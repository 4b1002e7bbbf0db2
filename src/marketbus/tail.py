"""`marketbus tail PATTERN`: print live messages of matching channels, one line each.

It reads the wire as it is (pub/sub only, no backfill), so what it prints is exactly
what live readers receive. Undecodable payloads are printed as such and counted.

On a Redis Cluster (``--cluster``) channels are sharded and have no pattern subscribe:
the pattern is matched against the catalog ``{ns}:feeds`` (and each catalogued
exchange's status channel), re-read every few seconds, and the matches are read with
SSUBSCRIBE on the nodes that own them.
"""

from __future__ import annotations

import asyncio
import sys
from typing import TextIO

from redis.exceptions import ConnectionError as RedisConnectionError

from marketbus.display import line
from marketbus.shared.codecs import decode
from marketbus.shared.config import RedisConfig
from marketbus.shared.connection import connect
from marketbus.shared.errors import ConfigError, ContractError
from marketbus.shared.urls import redact


async def tail(
    config: RedisConfig,
    pattern: str,
    *,
    limit: int | None = None,
    out: TextIO = sys.stdout,
) -> int:
    """Print messages on channels matching *pattern* until *limit* (or forever).

    Returns the number of undecodable payloads seen.
    """
    if config.cluster:
        return await _tail_cluster(config, pattern, limit=limit, out=out)
    redis = await connect(config)
    pubsub = redis.pubsub(ignore_subscribe_messages=True)
    seen = skipped = 0
    try:
        await pubsub.psubscribe(pattern)
        print(f"# tailing {pattern!r} (Ctrl-C to stop)", file=out, flush=True)
        while limit is None or seen < limit:
            try:
                raw = await pubsub.get_message(timeout=1.0)
            except RedisConnectionError as exc:
                print(f"# Redis connection lost ({exc}); reconnecting", file=out, flush=True)
                continue
            if raw is None:
                continue
            seen += 1
            channel = raw["channel"].decode(errors="replace")
            skipped += _print(channel, raw["data"], skipped, out)
    finally:
        await pubsub.aclose()  # type: ignore[no-untyped-call]
        await redis.aclose()
    return skipped


def _print(channel: str, payload: bytes, skipped: int, out: TextIO) -> int:
    """Print one message's line; 1 if it did not decode (the *skipped* + 1st), else 0."""
    try:
        text = line(decode(payload))
    except ContractError as exc:
        print(f"UNDECODABLE on {channel} (#{skipped + 1}): {exc}", file=out, flush=True)
        return 1
    print(text, file=out, flush=True)
    return 0


async def _tail_cluster(
    config: RedisConfig, pattern: str, *, limit: int | None, out: TextIO
) -> int:
    from marketbus.consumers.transport import DATA, TRANSIENT_ERRORS, ShardedPubSubTransport
    from marketbus.shared.cluster import connect_cluster, has_sharded_pubsub

    cluster = await connect_cluster(config)
    seen = skipped = 0
    try:
        if not has_sharded_pubsub(cluster):
            raise ConfigError(
                f"--cluster: the cluster at {redact(config.url)} has no sharded pub/sub "
                "(SSUBSCRIBE needs Redis 7 or later)"
            )
        transport = ShardedPubSubTransport(config, cluster, namespace=config.namespace)
        try:
            await transport.psubscribe([pattern])
            print(
                f"# tailing {pattern!r}: {len(transport.channels)} catalogued channel(s) on the "
                "cluster, sharded; new ones within 5 s (Ctrl-C to stop)",
                file=out,
                flush=True,
            )
            while limit is None or seen < limit:
                try:
                    frames = await transport.read(1.0)
                except TRANSIENT_ERRORS as exc:
                    print(f"# Redis connection lost ({exc}); reconnecting", file=out, flush=True)
                    await asyncio.sleep(1.0)  # backoff before the next read reconnects
                    continue
                for kind, channel, payload in frames:
                    if kind == DATA and (limit is None or seen < limit):
                        seen += 1
                        skipped += _print(channel, payload, skipped, out)
        finally:
            await transport.close()
    finally:
        await cluster.aclose()
    return skipped
