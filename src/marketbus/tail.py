"""`marketbus tail PATTERN`: print live messages of matching channels, one line each.

It reads the wire as it is (pub/sub only, no backfill), so what it prints is exactly
what live readers receive. A payload that does not decode (garbage, a hostile nesting)
costs one ``UNDECODABLE`` line and is counted; the count is printed when tail stops.

During a Redis outage it waits between reconnects as the SDK does
(`marketbus.shared.backoff`, `RECONNECT`), prints one line when the connection is lost
and one when it is back, then carries on: no busy loop, no flood of lines.

On a Redis Cluster (``--cluster``) channels are sharded and have no pattern subscribe:
the pattern is matched against the catalog ``{ns}:feeds`` (and each catalogued
exchange's status channel), re-read every few seconds, and the matches are read with
SSUBSCRIBE on the nodes that own them.
"""

from __future__ import annotations

import asyncio
import sys
import time
from typing import Final, TextIO

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoPermissionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from marketbus.display import line
from marketbus.shared.backoff import Backoff, BackoffState
from marketbus.shared.codecs import decode
from marketbus.shared.config import RedisConfig
from marketbus.shared.connection import connect
from marketbus.shared.errors import ConfigError, ContractError, MarketbusError
from marketbus.shared.urls import redact

RECONNECT: Final = Backoff(initial_s=0.1, maximum_s=5.0)
"""Waits between reconnect attempts: 0.1 s doubling up to 5 s, jittered."""
LOST_ERRORS: Final = (RedisConnectionError, RedisTimeoutError, OSError)
"""What a read raises while Redis is away (the cluster path uses the transport's own)."""


class Outage:
    """Tells a Redis outage once when it starts and once when it ends (pure: the caller
    passes the monotonic clock and prints the lines it gets)."""

    __slots__ = ("_backoff", "_failures", "_since")

    def __init__(self, policy: Backoff = RECONNECT) -> None:
        self._backoff = BackoffState(policy.initial_s, policy.maximum_s)
        self._since: float | None = None
        self._failures = 0

    @property
    def ongoing(self) -> bool:
        return self._since is not None

    def lost(self, error: BaseException, now_s: float) -> tuple[str | None, float]:
        """A failed read: the line to print (first failure only) and the seconds to wait."""
        self._failures += 1
        said = None
        if self._since is None:
            self._since = now_s
            said = f"# Redis connection lost ({error}); reconnecting with backoff"
        return said, self._backoff.failure()

    def read(self, now_s: float) -> str | None:
        """A successful read: the line to print if it ends an outage. The backoff resets
        only after `Backoff.maximum_s` of good reads, so a flapping server stays slow."""
        self._backoff.success(now_s)
        if self._since is None:
            return None
        said = (
            f"# Redis connection restored after {now_s - self._since:.1f}s "
            f"({self._failures} failed attempt(s)); tailing again"
        )
        self._since = None
        self._failures = 0
        return said


async def tail(
    config: RedisConfig,
    pattern: str,
    *,
    limit: int | None = None,
    out: TextIO = sys.stdout,
) -> int:
    """Print messages on channels matching *pattern* until *limit* (or forever).

    Returns the number of undecodable payloads seen. MarketbusError if the Redis user
    may not subscribe to *pattern*.
    """
    if config.cluster:
        return await _tail_cluster(config, pattern, limit=limit, out=out)
    redis = await connect(config)
    pubsub = redis.pubsub(ignore_subscribe_messages=True)
    outage = Outage()
    seen = skipped = 0
    try:
        await pubsub.psubscribe(pattern)
        print(f"# tailing {pattern!r} (Ctrl-C to stop)", file=out, flush=True)
        while limit is None or seen < limit:
            try:
                raw = await pubsub.get_message(timeout=1.0)
            except LOST_ERRORS as exc:
                said, wait_s = outage.lost(exc, time.monotonic())
                _say(said, out)
                await asyncio.sleep(wait_s)
                continue
            except NoPermissionError as exc:
                raise _refused(pattern, exc) from None
            _say(outage.read(time.monotonic()), out)
            if raw is None:
                continue
            seen += 1
            channel = raw["channel"].decode(errors="replace")
            skipped += _print(channel, raw["data"], skipped, out)
    finally:
        _say(_skipped_line(skipped), out)
        await pubsub.aclose()  # type: ignore[no-untyped-call]
        await redis.aclose()
    return skipped


def _refused(pattern: str, exc: NoPermissionError) -> MarketbusError:
    return MarketbusError(
        f"Redis refused to let this user PSUBSCRIBE {pattern!r} ({exc}); tail a pattern "
        "the user's ACL channels (&...) allow"
    )


def _say(text: str | None, out: TextIO) -> None:
    if text is not None:
        print(text, file=out, flush=True)


def _skipped_line(skipped: int) -> str | None:
    return f"# skipped {skipped} undecodable payload(s)" if skipped else None


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
    outage = Outage()
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
                    said, wait_s = outage.lost(exc, time.monotonic())
                    _say(said, out)
                    await asyncio.sleep(wait_s)
                    continue
                _say(outage.read(time.monotonic()), out)
                for kind, channel, payload in frames:
                    if kind == DATA and (limit is None or seen < limit):
                        seen += 1
                        skipped += _print(channel, payload, skipped, out)
        finally:
            await transport.close()
    finally:
        _say(_skipped_line(skipped), out)
        await cluster.aclose()
    return skipped
