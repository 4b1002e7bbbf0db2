"""`marketbus tail PATTERN`: print live messages of matching channels, one line each.

It reads the wire as it is (pub/sub only, no backfill), so what it prints is exactly
what live readers receive. Undecodable payloads are printed as such and counted.
"""

from __future__ import annotations

import sys
from typing import TextIO

from redis.exceptions import ConnectionError as RedisConnectionError

from marketbus.display import line
from marketbus.shared.codecs import decode
from marketbus.shared.config import RedisConfig
from marketbus.shared.connection import connect
from marketbus.shared.errors import ContractError


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
            try:
                text = line(decode(raw["data"]))
            except ContractError as exc:
                skipped += 1
                text = f"UNDECODABLE on {channel} (#{skipped}): {exc}"
            print(text, file=out, flush=True)
    finally:
        await pubsub.aclose()
        await redis.aclose()
    return skipped
