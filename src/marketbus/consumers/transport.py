"""The consumer's only socket I/O: pub/sub messages off the wire, handed on in batches.

A transport reads; it does not decode or apply. It hands what it reads to a
`FrameSink` (the subscriber's engine) in socket order: batches of messages, and the
subscription confirmations, which are passed on, never swallowed: after a reconnect
every channel is confirmed again, and that is how the subscriber learns that live data
had a hole and resumes from the streams (SPEC consumer rule 4).

Three implementations of `Transport`:

- `FastPubSubTransport` (the default on one Redis server): SUBSCRIBE/PSUBSCRIBE over
  the fast RESP connection (`marketbus.shared.transport.SubscriberConnection`, asyncio
  protocol + hiredis) in callback mode: every socket read becomes one batch handed to
  the sink right in the protocol's ``data_received``, with no queue and no task switch;
- `PubSubTransport`: the same on redis-py's ``PubSub`` (``Subscriber(transport=
  "redis-py")``), read in batches with `PubSubTransport.read`;
- `ShardedPubSubTransport`: SSUBSCRIBE on a Redis Cluster (``RedisConfig.cluster``),
  where patterns are expanded against the catalog.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Callable, Sequence
from fnmatch import fnmatchcase
from typing import Final, Literal, Protocol, TypeAlias

import redis.asyncio as aioredis
from redis.asyncio.client import PubSub
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import ClusterDownError, RedisClusterException, TryAgainError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from marketbus.consumers.cluster import ShardedSubscriber, ShardMessage, feeds_matching
from marketbus.consumers.engine import Live
from marketbus.shared.config import RedisConfig
from marketbus.shared.errors import CommandError, ConnectionLostError, RedisUnavailableError
from marketbus.shared.transport import PubSubMessage, SubscriberConnection

log = logging.getLogger("marketbus.consumers")

DATA: Final = 0
SUBSCRIBED: Final = 1
PSUBSCRIBED: Final = 2

Frame: TypeAlias = tuple[Literal[0, 1, 2], str, bytes]
"""``(DATA, channel, payload)``, ``(SUBSCRIBED, channel, b"")`` or
``(PSUBSCRIBED, pattern, b"")``, in socket order (what `PubSubTransport.read` and
`ShardedPubSubTransport.read` return)."""

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

Besides connection errors (`ConnectionLostError` of the fast transport is one):
CLUSTERDOWN while a cluster votes a failover, TRYAGAIN during a slot migration, a slot
map that cannot be loaded (`RedisClusterException`), and a cluster node's sharded
subscription lost for good, or a server that cannot be reached (`RedisUnavailableError`)."""

DEFAULT_HEALTH_CHECK_S: Final = 2.0
"""Fast transport: PING after this long without traffic; lost after two more periods."""


class FrameSink(Protocol):
    """Where a transport hands what it reads, in socket order (the `Engine` is one).

    Called synchronously; an exception from a sink is a bug, not a lost connection:
    it propagates from `Transport.pump`.
    """

    def on_live_batch(self, batch: Sequence[Live]) -> None:
        """Messages, oldest first (channels as bytes or str)."""
        ...

    def on_subscribed(self, channel: str) -> None:
        """SUBSCRIBE of *channel* confirmed: before any message of it on this connection."""
        ...

    def on_psubscribed(self, pattern: str) -> None:
        """PSUBSCRIBE of *pattern* confirmed, likewise."""
        ...


class Transport(Protocol):
    """What the subscriber's read loop needs from pub/sub.

    Everything read goes to the transport's `FrameSink`. Errors in `TRANSIENT_ERRORS`
    mean the connection is (being) lost: the next `pump` reconnects, and every channel
    and pattern is confirmed to the sink again.
    """

    async def subscribe(self, channels: list[str]) -> None: ...

    async def psubscribe(self, patterns: list[str]) -> None: ...

    async def unsubscribe(self, channels: list[str]) -> None: ...

    async def pump(self, timeout_s: float) -> None:
        """Hand what arrives to the sink for at most *timeout_s*; may return sooner
        (after a batch, a reconnect, or `wake`)."""
        ...

    def wake(self) -> None:
        """Make a waiting `pump` return now (the caller has work for the loop)."""
        ...

    async def close(self) -> None: ...


def deliver(frames: list[Frame], sink: FrameSink) -> None:
    """Hand *frames* to *sink* in order: messages in batches, confirmations one by one."""
    batch: list[Live] = []
    for kind, name, payload in frames:
        if kind == DATA:
            batch.append((name, None, payload))
            continue
        if batch:
            sink.on_live_batch(batch)
            batch = []
        if kind == SUBSCRIBED:
            sink.on_subscribed(name)
        else:
            sink.on_psubscribed(name)
    if batch:
        sink.on_live_batch(batch)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


class FastPubSubTransport:
    """SUBSCRIBE/PSUBSCRIBE on one Redis server over a `SubscriberConnection` in
    callback mode: messages reach the sink straight from the socket handler.

    - `connect` opens the connection (RedisUnavailableError says why not: refused
      credentials, TLS, unreachable) and subscribes to everything wanted so far.
    - `subscribe` / `psubscribe` remember what is wanted and, when connected, send it
      and wait for Redis to confirm (error replies, e.g. an ACL refusal, are raised).
      Without a connection they only remember it: the next `pump` subscribes it.
    - `pump` reconnects a lost connection (the caller's backoff spaces the attempts),
      re-subscribes everything and reports every confirmation to the sink, then
      returns; on a live connection it waits until the connection is lost (raises
      `ConnectionLostError`), *timeout_s* passes or `wake` is called.

    Confirmations reach the sink before any message of their channel (or pattern) on
    the new connection, as with redis-py: a message of a channel whose confirmation
    is not reported yet reports it first. Liveness: a PING after ``health_check_s``
    without traffic, the connection declared lost after two more silent periods.
    """

    def __init__(
        self,
        config: RedisConfig,
        sink: FrameSink,
        *,
        health_check_s: float = DEFAULT_HEALTH_CHECK_S,
    ) -> None:
        self._config = config
        self._sink = sink
        self._health_check_s = health_check_s
        self._conn: SubscriberConnection | None = None
        self._ended: asyncio.Task[None] | None = None
        """`SubscriberConnection.wait_closed` of the connection: done once it is gone."""
        self._channels: dict[str, None] = {}
        self._patterns: dict[str, None] = {}
        self._unreported: dict[bytes, str] = {}
        """Channels subscribed on this connection whose confirmation the sink lacks."""
        self._unreported_patterns: dict[bytes, str] = {}
        self._lock = asyncio.Lock()
        """Serializes connecting and (un)subscribing."""
        self._waiter: asyncio.Future[None] | None = None
        self._woken = False
        self._closed = False

    @property
    def connected(self) -> bool:
        return self._conn is not None and self._conn.is_connected

    async def connect(self) -> None:
        """Connect now if not connected (RedisUnavailableError says why not)."""
        async with self._lock:
            await self._ensure()

    async def _ensure(self) -> bool:
        """Connect and subscribe to everything wanted, under the lock; True if it had to."""
        if self._closed:
            raise ConnectionLostError("the pub/sub transport is closed")
        if self.connected:
            return False
        ended, self._ended = self._ended, None
        self._forget_connection()
        if ended is not None:
            # Dropped, it ends within a loop iteration or two (the deadline is a bound).
            await asyncio.wait((ended,), timeout=1.0)
            if ended.done():
                ended.result()  # how the last connection ended, raised once
        conn = await SubscriberConnection.open(
            self._config, on_batch=self._on_batch, health_check_s=self._health_check_s
        )
        self._conn = conn
        ended = self._ended = asyncio.ensure_future(conn.wait_closed())
        ended.add_done_callback(_retrieve)
        try:
            if self._channels:
                await self._subscribe_on(conn, list(self._channels), patterns=False)
            if self._patterns:
                await self._subscribe_on(conn, list(self._patterns), patterns=True)
        except BaseException:
            self._forget_connection()
            await conn.aclose()
            raise
        return True

    async def _subscribe_on(
        self, conn: SubscriberConnection, names: list[str], *, patterns: bool
    ) -> None:
        """(P)SUBSCRIBE *names*; report each confirmation not reported by `_on_batch`."""
        wanted = {name.encode(): name for name in names}
        unreported = self._unreported_patterns if patterns else self._unreported
        unreported.update(wanted)
        if patterns:
            await conn.psubscribe(*wanted)
        else:
            await conn.subscribe(*wanted)
        sink = self._sink
        for key, name in wanted.items():
            if unreported.pop(key, None) is not None:
                if patterns:
                    sink.on_psubscribed(name)
                else:
                    sink.on_subscribed(name)

    def _on_batch(self, batch: list[PubSubMessage]) -> None:
        """Called by the connection for every socket read that held messages."""
        hand_over(batch, self._sink, self._unreported, self._unreported_patterns)

    @property
    def unreported(self) -> frozenset[str]:
        """Channels and patterns subscribed on this connection whose confirmation the
        sink has not had yet."""
        return frozenset(self._unreported.values()) | frozenset(self._unreported_patterns.values())

    @property
    def pump_waiting(self) -> bool:
        """True while a `pump` waits for traffic (`wake` ends the wait)."""
        return self._waiter is not None

    async def subscribe(self, channels: list[str]) -> None:
        new = [c for c in dict.fromkeys(channels) if c not in self._channels]
        if new:
            self._channels.update(dict.fromkeys(new))
            await self._send(new, patterns=False)

    async def psubscribe(self, patterns: list[str]) -> None:
        new = [p for p in dict.fromkeys(patterns) if p not in self._patterns]
        if new:
            self._patterns.update(dict.fromkeys(new))
            await self._send(new, patterns=True)

    async def _send(self, names: list[str], *, patterns: bool) -> None:
        async with self._lock:
            conn = self._conn
            if conn is None or not conn.is_connected:
                return  # the next pump connects and subscribes everything wanted
            try:
                await self._subscribe_on(conn, names, patterns=patterns)
            except ConnectionLostError:
                return  # likewise
            except CommandError:  # refused (e.g. NOPERM): not wanted any more
                wanted = self._patterns if patterns else self._channels
                unreported = self._unreported_patterns if patterns else self._unreported
                for name in names:
                    wanted.pop(name, None)
                    unreported.pop(name.encode(), None)
                raise

    async def unsubscribe(self, channels: list[str]) -> None:
        gone = [c for c in dict.fromkeys(channels) if c in self._channels]
        for channel in gone:
            del self._channels[channel]
            self._unreported.pop(channel.encode(), None)
        if not gone:
            return
        async with self._lock:
            conn = self._conn
            if conn is not None and conn.is_connected:
                with contextlib.suppress(ConnectionLostError):  # a new one won't have them
                    await conn.unsubscribe(*gone)

    async def pump(self, timeout_s: float) -> None:
        """See the class doc: reconnect, or wait for loss, *timeout_s* or `wake`."""
        async with self._lock:
            if await self._ensure():
                return
        ended = self._ended
        assert ended is not None
        if self._woken:
            self._woken = False
            return
        waiter = self._waiter = asyncio.get_running_loop().create_future()
        try:
            await asyncio.wait(
                (ended, waiter), timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            self._waiter = None
            self._woken = False
        if ended.done():
            self._ended = None
            self._forget_connection()
            ended.result()  # ConnectionLostError, or what the sink raised

    def wake(self) -> None:
        waiter = self._waiter
        if waiter is None:
            self._woken = True
        elif not waiter.done():
            waiter.set_result(None)

    def _forget_connection(self) -> None:
        self._conn = None
        self._unreported.clear()
        self._unreported_patterns.clear()

    async def close(self) -> None:
        self._closed = True
        conn, self._conn = self._conn, None
        self.wake()
        if conn is not None:
            await conn.aclose()


def hand_over(
    batch: list[PubSubMessage],
    sink: FrameSink,
    unreported: dict[bytes, str],
    unreported_patterns: dict[bytes, str],
) -> None:
    """Hand *batch* (one socket read) to *sink*, after the confirmations Redis sent
    before its messages: a message of a channel (or pattern) in *unreported* (or
    *unreported_patterns*) reports that confirmation first, once (it is removed)."""
    if unreported or unreported_patterns:
        for channel, pattern, _ in batch:
            if pattern is None:
                name = unreported.pop(channel, None)
                if name is not None:
                    sink.on_subscribed(name)
            else:
                name = unreported_patterns.pop(pattern, None)
                if name is not None:
                    sink.on_psubscribed(name)
    sink.on_live_batch(batch)


def _retrieve(task: asyncio.Task[None]) -> None:
    """Mark the outcome of a connection's end as seen (`pump` raises it if it waits)."""
    if not task.cancelled():
        task.exception()


class PubSubTransport:
    """Reads pub/sub frames with redis-py; the connection errors of redis-py propagate.

    After an error the next `read` reconnects, and redis-py re-subscribes everything
    (which shows up as SUBSCRIBED/PSUBSCRIBED frames). `pump` hands what `read`
    returns to *sink* (needed only for `pump`).
    """

    def __init__(
        self, redis: aioredis.Redis, sink: FrameSink | None = None, *, max_batch: int = 4096
    ) -> None:
        self._pubsub: PubSub = redis.pubsub()
        self._sink = sink
        self._max_batch = max_batch
        self._active = asyncio.Event()

    async def pump(self, timeout_s: float) -> None:
        """One `read` (a batch, or nothing within *timeout_s*) handed to the sink."""
        assert self._sink is not None, "pump needs the sink given to the constructor"
        deliver(await self.read(timeout_s), self._sink)

    def wake(self) -> None:
        """Nothing to do: `pump` returns after every batch anyway."""

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
    - `pump`: `read` handed to *sink* (needed only for `pump`).
    """

    def __init__(
        self,
        config: RedisConfig,
        cluster: RedisCluster,
        *,
        namespace: str,
        sink: FrameSink | None = None,
        max_batch: int = 4096,
        rescan_s: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._config = config
        self._sink = sink
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
        """Unsubscribed from while a pattern covered them: patterns do not subscribe to
        them again. Only channels a pattern covers are kept (the others could not come
        back anyway), so this does not grow as feeds come and go."""
        self._next_scan = math.inf

    @property
    def channels(self) -> frozenset[str]:
        """The channels subscribed to (or to be, once a lost node is back)."""
        return frozenset(self._channels)

    @property
    def excluded(self) -> frozenset[str]:
        """Channels unsubscribed from that a pattern would otherwise bring back."""
        return frozenset(self._excluded)

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
        self._excluded.update(
            c for c in channels if any(fnmatchcase(c, pattern) for pattern in self._patterns)
        )
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

    async def pump(self, timeout_s: float) -> None:
        """One `read` handed to the sink given to the constructor."""
        assert self._sink is not None, "pump needs the sink given to the constructor"
        deliver(await self.read(timeout_s), self._sink)

    def wake(self) -> None:
        """Nothing to do: `pump` returns after every batch anyway."""

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
