"""The hot receive loop's only I/O: pub/sub frames off the socket, in batches.

This is the one component to swap for speed (e.g. a raw asyncio protocol feeding a
``hiredis.Reader``): it reads, it does not decode or apply. Subscription confirmations
are passed on, not swallowed: after redis-py silently reconnects and re-subscribes,
they are how the subscriber learns that live data had a hole and resumes from streams.

Two implementations of `Transport`:

- `PubSubTransport`: SUBSCRIBE/PSUBSCRIBE on one Redis server;
- `ShardedPubSubTransport`: SSUBSCRIBE on a Redis Cluster (``RedisConfig.cluster``),
  where patterns are expanded against the catalog.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Callable
from fnmatch import fnmatchcase
from typing import Final, Literal, Protocol, TypeAlias

import redis.asyncio as aioredis
from redis.asyncio.client import PubSub
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import ClusterDownError, RedisClusterException, TryAgainError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from marketbus.shared.cluster import ShardedSubscriber, ShardMessage, feeds_matching
from marketbus.shared.config import RedisConfig
from marketbus.shared.errors import RedisUnavailableError

log = logging.getLogger("marketbus.consumers")

DATA: Final = 0
SUBSCRIBED: Final = 1
PSUBSCRIBED: Final = 2

Frame: TypeAlias = tuple[Literal[0, 1, 2], str, bytes]
"""``(DATA, channel, payload)``, ``(SUBSCRIBED, channel, b"")`` or
``(PSUBSCRIBED, pattern, b"")``, in socket order."""

TRANSIENT_ERRORS: Final = (
    RedisConnectionError,
    RedisTimeoutError,
    OSError,
    ClusterDownError,
    TryAgainError,
    RedisClusterException,
    RedisUnavailableError,
)
"""What a lost, restarting or reconfiguring Redis raises: retried with backoff.

Besides connection errors: CLUSTERDOWN while a cluster votes a failover, TRYAGAIN
during a slot migration, a slot map that cannot be loaded (`RedisClusterException`),
and a cluster node's sharded subscription lost for good (`RedisUnavailableError`)."""


class Transport(Protocol):
    """What the subscriber's read loop needs from pub/sub.

    Errors in `TRANSIENT_ERRORS` mean the connection is (being) lost: the next `read`
    reconnects, and every channel is confirmed again (SUBSCRIBED/PSUBSCRIBED frames).
    """

    async def subscribe(self, channels: list[str]) -> None: ...

    async def psubscribe(self, patterns: list[str]) -> None: ...

    async def unsubscribe(self, channels: list[str]) -> None: ...

    async def read(self, timeout_s: float) -> list[Frame]:
        """Frames available within *timeout_s* (a bounded batch; [] if none)."""
        ...

    async def close(self) -> None: ...


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


class PubSubTransport:
    """Reads pub/sub frames with redis-py; the connection errors of redis-py propagate.

    After an error the next `read` reconnects, and redis-py re-subscribes everything
    (which shows up as SUBSCRIBED/PSUBSCRIBED frames).
    """

    def __init__(self, redis: aioredis.Redis, *, max_batch: int = 4096) -> None:
        self._pubsub: PubSub = redis.pubsub()
        self._max_batch = max_batch
        self._active = asyncio.Event()

    async def subscribe(self, channels: list[str]) -> None:
        if channels:
            await self._pubsub.subscribe(*channels)
            self._active.set()

    async def psubscribe(self, patterns: list[str]) -> None:
        if patterns:
            await self._pubsub.psubscribe(*patterns)
            self._active.set()

    async def unsubscribe(self, channels: list[str]) -> None:
        if channels:
            await self._pubsub.unsubscribe(*channels)

    async def read(self, timeout_s: float) -> list[Frame]:
        """Frames available within *timeout_s* (at most ``max_batch``; [] if none)."""
        if not self._active.is_set():
            try:
                await asyncio.wait_for(self._active.wait(), timeout_s)
            except TimeoutError:
                return []
        pubsub = self._pubsub
        frames: list[Frame] = []
        message = await pubsub.get_message(timeout=timeout_s)
        while message is not None:
            kind = message["type"]
            if kind == "message" or kind == "pmessage":
                frames.append((DATA, _text(message["channel"]), message["data"]))
            elif kind == "subscribe":
                frames.append((SUBSCRIBED, _text(message["channel"]), b""))
            elif kind == "psubscribe":
                frames.append((PSUBSCRIBED, _text(message["channel"]), b""))
            if len(frames) >= self._max_batch:
                break
            message = await pubsub.get_message(timeout=0)
        return frames

    async def close(self) -> None:
        await self._pubsub.aclose()  # type: ignore[no-untyped-call]


class ShardedPubSubTransport:
    """Reads sharded pub/sub (SSUBSCRIBE) of a Redis Cluster with `ShardedSubscriber`.

    - `subscribe` / `unsubscribe`: on the nodes that own the channels' slots.
    - `psubscribe`: sharded channels have no pattern subscribe, so a pattern is
      expanded against the catalog (`feeds_matching`) now and every *rescan_s*
      seconds, and the matches are subscribed to by name. Their confirmations arrive
      as SUBSCRIBED frames of channels the caller may not know yet. A channel given to
      `unsubscribe` is not brought back by a pattern until `subscribe` names it again.
    - `read`: a `ShardMessage` is a DATA frame, a `Subscribed` a SUBSCRIBED frame, also
      when redis-py re-subscribed after a reconnect or the channel's slot moved to
      another node: the caller then resumes from the stream. When a node's subscription
      is lost for good, `read` raises RedisUnavailableError; the next `read` reloads the
      slot map and subscribes every channel anew, on a new `ShardedSubscriber` (every
      channel is confirmed again), and raises a `TRANSIENT_ERRORS` error while it cannot.
    """

    def __init__(
        self,
        config: RedisConfig,
        cluster: RedisCluster,
        *,
        namespace: str,
        max_batch: int = 4096,
        rescan_s: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._config = config
        self._cluster = cluster
        self._namespace = namespace
        self._max_batch = max_batch
        self._rescan_s = rescan_s
        self._clock = clock
        self._sub: ShardedSubscriber | None = ShardedSubscriber(config, cluster)
        """None while lost: the next `read` makes a new one."""
        self._channels: set[str] = set()
        """Every channel wanted: named by `subscribe` or matched by a pattern."""
        self._patterns: list[str] = []
        self._excluded: set[str] = set()
        """Unsubscribed from: patterns do not subscribe to them again."""
        self._next_scan = math.inf

    @property
    def channels(self) -> frozenset[str]:
        """The channels subscribed to (or to be, once a lost node is back)."""
        return frozenset(self._channels)

    async def subscribe(self, channels: list[str]) -> None:
        self._excluded.difference_update(channels)
        self._channels.update(channels)
        await self._apply(channels, subscribe=True)

    async def psubscribe(self, patterns: list[str]) -> None:
        for pattern in patterns:
            if pattern not in self._patterns:
                self._patterns.append(pattern)
        await self._rescan()

    async def unsubscribe(self, channels: list[str]) -> None:
        self._channels.difference_update(channels)
        self._excluded.update(channels)
        await self._apply(channels, subscribe=False)

    async def _apply(self, channels: list[str], *, subscribe: bool) -> None:
        """(Un)subscribe on the live subscriber. A failure loses it, and the next `read`
        makes a new one from ``self._channels``, so nothing is raised here."""
        sub = self._sub
        if sub is None or not channels:
            return
        try:
            if subscribe:
                await sub.subscribe(channels)
            else:
                await sub.unsubscribe(channels)
        except TRANSIENT_ERRORS as exc:
            what = "SSUBSCRIBE" if subscribe else "SUNSUBSCRIBE"
            log.warning("%s failed (%s: %s); subscribing anew", what, type(exc).__name__, exc)
            await self._lose()

    async def _rescan(self) -> None:
        """Subscribe to catalogued channels that match a pattern and are new to us."""
        try:
            catalog = await feeds_matching(self._cluster, self._namespace, "*")
        except TRANSIENT_ERRORS as exc:
            log.warning(
                "cannot expand patterns against the catalog (%s: %s); retrying",
                type(exc).__name__,
                exc,
            )
            self._next_scan = self._clock() + min(self._rescan_s, 1.0)
            return
        self._next_scan = self._clock() + self._rescan_s
        new = [
            name
            for name in catalog
            if name not in self._channels
            and name not in self._excluded
            and any(fnmatchcase(name, pattern) for pattern in self._patterns)
        ]
        if new:
            log.info("patterns now cover %d more channel(s), e.g. %s", len(new), new[0])
            self._channels.update(new)
            await self._apply(new, subscribe=True)

    async def read(self, timeout_s: float) -> list[Frame]:
        """Frames available within *timeout_s* (at most ``max_batch``; [] if none)."""
        if self._sub is None:
            await self._reconnect()
        if self._clock() >= self._next_scan:
            await self._rescan()
        sub = self._sub
        if sub is None:  # the rescan lost it
            return []
        try:
            deliveries = await sub.get_batch(timeout_s, self._max_batch)
        except RedisUnavailableError:
            await self._lose()
            raise
        return [
            (DATA, item.feed, item.payload)
            if type(item) is ShardMessage
            else (SUBSCRIBED, item.feed, b"")
            for item in deliveries
        ]

    async def _reconnect(self) -> None:
        await self._cluster.nodes_manager.initialize()  # the lost node's slots may have moved
        sub = ShardedSubscriber(self._config, self._cluster)
        try:
            await sub.subscribe(sorted(self._channels))
        except BaseException:
            with contextlib.suppress(*TRANSIENT_ERRORS):
                await sub.aclose()
            raise
        self._sub = sub
        if self._patterns:
            self._next_scan = self._clock()  # feeds may have appeared meanwhile
        log.info("sharded pub/sub back: %d channel(s) resubscribed", len(self._channels))

    async def _lose(self) -> None:
        sub, self._sub = self._sub, None
        if sub is not None:
            with contextlib.suppress(*TRANSIENT_ERRORS):
                await sub.aclose()

    async def close(self) -> None:
        self._patterns.clear()
        self._next_scan = math.inf
        await self._lose()
