"""The read path: its connections (`open_connections`) and `ReadLoop`, which keeps
pub/sub connected and hands what it reads to the engine, and ticks the engine's
health checks (staleness of quiet feeds).

The pub/sub transport is `FastPubSubTransport` (SUBSCRIBE/PSUBSCRIBE on one server,
messages applied straight from the socket handler), `PubSubTransport` with
``transport="redis-py"``, or, with ``RedisConfig.cluster``, `ShardedPubSubTransport`
(SSUBSCRIBE on a Redis Cluster, whose `RedisCluster` client then serves the stream and
catalog reads too).

It is the transport's `FrameSink`: every batch of messages and every subscription
confirmation goes to the `Engine`, and right after, the I/O the engine asked for is
started (stream reads to the `StreamReader`; subscriptions of status channels to the
loop, which sends them). `ReadLoop.run` is the supervised task: a connection error
is retried with capped, jittered exponential backoff, and reported to the engine
(`Engine.on_reconnected`); the new connection's confirmations make every feed resume
from its stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence

import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster

from marketbus.consumers.engine import Engine, Live
from marketbus.consumers.options import SubscriberOptions
from marketbus.consumers.streams import StreamReader
from marketbus.consumers.supervisor import raise_if_cancelled
from marketbus.consumers.transport import (
    TRANSIENT_ERRORS,
    FastPubSubTransport,
    FrameSink,
    PubSubTransport,
    ShardedPubSubTransport,
    Transport,
)
from marketbus.shared.backoff import Backoff
from marketbus.shared.cluster import connect_cluster
from marketbus.shared.config import RedisConfig
from marketbus.shared.connection import connect
from marketbus.shared.errors import ConfigError
from marketbus.shared.urls import redact

log = logging.getLogger("marketbus.consumers")

Redis = aioredis.Redis | RedisCluster


async def open_connections(
    config: RedisConfig,
    options: SubscriberOptions,
    namespace: str,
    sink: FrameSink,
    *,
    has_sharded_pubsub: Callable[[RedisCluster], bool],
) -> tuple[Redis, Transport]:
    """The command client (stream and catalog reads) and the connected pub/sub
    transport handing what it reads to *sink*. RedisUnavailableError says why not; in
    cluster mode ConfigError if *has_sharded_pubsub* says the servers lack it."""
    if config.cluster:
        cluster = await connect_cluster(config)
        if not has_sharded_pubsub(cluster):
            await cluster.aclose()
            raise ConfigError(
                f"redis.cluster is set but the cluster at {redact(config.url)} has no "
                "sharded pub/sub (SSUBSCRIBE needs Redis 7 or later)"
            )
        sharded = ShardedPubSubTransport(
            config, cluster, namespace=namespace, sink=sink, rescan_s=options.rescan_s
        )
        return cluster, sharded
    redis = await connect(config)
    if options.transport == "redis-py":
        return redis, PubSubTransport(redis, sink)
    fast = FastPubSubTransport(config, sink)
    try:
        await fast.connect()
    except BaseException:
        with contextlib.suppress(*TRANSIENT_ERRORS):
            await redis.aclose()
        raise
    return redis, fast


class ReadLoop:
    """The read path of one subscriber (see the module). `attach` the transport it
    is the sink of before `run`."""

    def __init__(
        self, engine: Engine, streams: StreamReader, *, backoff: Backoff, poll_s: float
    ) -> None:
        self._engine = engine
        self._streams = streams
        self._backoff = backoff
        self._poll_s = poll_s
        self._transport: Transport | None = None
        self._unsent: list[str] = []
        """Channels the engine asked for whose SUBSCRIBE failed: sent again next time."""
        self._connected = False

    @property
    def connected(self) -> bool:
        """True while the pub/sub connection is up."""
        return self._connected

    def attach(self, transport: Transport) -> None:
        """Read from *transport* (connected) from now on."""
        self._transport = transport
        self._connected = True

    async def close(self) -> None:
        """Close the transport (the loop task is cancelled by its supervisor)."""
        transport, self._transport = self._transport, None
        self._connected = False
        if transport is not None:
            with contextlib.suppress(*TRANSIENT_ERRORS):
                await transport.close()

    async def run(self) -> None:
        """Keeps pub/sub connected while the transport hands frames to the engine.

        Outages are retried with backoff; the backoff starts over only once the
        connection has stayed up for ``backoff.maximum_s``, so a link that drops again
        right away (e.g. one cluster node refusing us) is retried less and less often
        instead of in a tight loop."""
        transport, backoff = self._transport, self._backoff
        assert transport is not None, "attach a transport first"
        failures = 0
        up_since = 0.0
        while True:
            raise_if_cancelled()
            try:
                await self.subscribe_requested()
                await transport.pump(self._poll_s)
            except TRANSIENT_ERRORS as exc:
                failures += 1
                if self._connected:
                    self._engine.on_reconnected()
                    self._connected = False
                    log.warning(
                        "pub/sub connection lost (%s: %s); reconnecting", type(exc).__name__, exc
                    )
                await asyncio.sleep(backoff.delay(failures))
                continue
            if failures:
                now = time.monotonic()
                if not self._connected:
                    log.info("pub/sub connection back after %d attempt(s)", failures)
                    self._connected = True
                    up_since = now
                elif now - up_since >= backoff.maximum_s:
                    failures = 0

    async def tick_health(self) -> None:
        """Re-evaluates quiet thresholds: staleness of feeds that stopped talking."""
        while True:
            await asyncio.sleep(self._engine.health_period)
            self._engine.check_health()

    async def subscribe_requested(self) -> None:
        """Subscribe to the channels the engine asked for (kept for a retry on error)."""
        channels = list(dict.fromkeys(self._unsent + self._engine.take_subscriptions()))
        if not channels or self._transport is None:
            self._unsent = channels
            return
        self._unsent = []
        try:
            await self._transport.subscribe(channels)
        except TRANSIENT_ERRORS:
            self._unsent = channels
            raise

    def _after_frames(self) -> None:
        """After the engine took frames: start the I/O it asked for."""
        self._streams.pump()
        if self._engine.wants_subscriptions and self._transport is not None:
            self._transport.wake()  # the loop subscribes them

    # -- the transport's FrameSink -----------------------------------------------------

    def on_live_batch(self, batch: Sequence[Live]) -> None:
        self._engine.on_live_batch(batch)
        self._after_frames()

    def on_subscribed(self, channel: str) -> None:
        self._engine.on_subscribed(channel)
        self._after_frames()

    def on_psubscribed(self, pattern: str) -> None:
        self._engine.on_psubscribed(pattern)
        self._after_frames()
