"""Redis Cluster: what producers and consumers need to spread feeds over shards.

Feed names carry no ``{hashtag}``, so every feed hashes to its own slot and its stream
and its (sharded) channel live together on the node that owns that slot: the write of a
feed goes to one node, and the reader of a feed talks to the same node. Catalog, lease
and status keys are single keys too, so no command marketbus sends is cross-slot.

- `cluster_client` / `connect_cluster`: a `RedisCluster` from a `RedisConfig` with
  ``cluster = true`` (TLS and ACL credentials as for a single server).
- `publish_batch`: SPUBLISH (PUBLISH where the server has no sharded pub/sub) + XADD
  of many feeds in one round trip per node, errors aligned with the input; the
  contract of the producer's ``Transport.write``.
- `ShardedSubscriber`: SSUBSCRIBE to feeds on the nodes that own them, one connection
  per node, deliveries merged into one bounded queue, slot moves followed.
- `feeds_matching`: sharded channels have no pattern subscribe, so a cluster
  consumer expands its pattern against the catalog (``HSCAN {ns}:feeds``) and
  subscribes to feeds by name.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Iterable, Sequence
from fnmatch import fnmatchcase
from typing import Any, Final, NamedTuple, Protocol
from urllib.parse import urlsplit, urlunsplit

import redis.asyncio as aioredis
from redis.asyncio.client import PubSub
from redis.asyncio.cluster import RedisCluster
from redis.crc import key_slot
from redis.exceptions import (
    AuthenticationError,
    RedisClusterException,
    RedisError,
    ResponseError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from marketbus.shared.config import RedisConfig
from marketbus.shared.connection import connection_kwargs, redact
from marketbus.shared.errors import ConfigError, RedisUnavailableError
from marketbus.shared.names import STREAM_FIELD, catalog_key, status_name

log = logging.getLogger(__name__)

DEFAULT_MAX_PENDING: Final = 10_000


def is_cluster(config: RedisConfig) -> bool:
    """True when *config* points at a Redis Cluster (``redis.cluster = true``)."""
    return config.cluster


def slot_of(name: str) -> int:
    """The cluster hash slot of a feed, status or catalog name (0..16383)."""
    return key_slot(name.encode())


def _check_cluster_url(config: RedisConfig) -> None:
    parts = urlsplit(config.url)
    if parts.scheme not in ("redis", "rediss"):
        raise ConfigError(
            f"redis.url {redact(config.url)!r}: a cluster is reached over redis:// or "
            "rediss://, not a unix socket"
        )
    if parts.path.strip("/") not in ("", "0"):
        raise ConfigError(f"redis.url {redact(config.url)!r}: a cluster has only db 0")


def cluster_client(config: RedisConfig, **overrides: Any) -> RedisCluster:
    """A `RedisCluster` seeded from ``config.url``; discovers the nodes on first use.

    Uses the same TLS files and URL credentials as `connection.client`, and every node
    connection authenticates as that ACL user.
    """
    _check_cluster_url(config)
    kwargs = connection_kwargs(config) | overrides
    return RedisCluster.from_url(config.url, **kwargs)


async def connect_cluster(config: RedisConfig, **overrides: Any) -> RedisCluster:
    """A cluster client that has loaded the slot map; RedisUnavailableError says why not.

    The user needs ``CLUSTER SLOTS``/``CLUSTER SHARDS`` and ``COMMAND`` (see
    deploy/users.acl), which redis-py reads to route commands.
    """
    cluster = cluster_client(config, **overrides)
    where = redact(config.url)
    try:
        await cluster.initialize()
    except AuthenticationError as exc:
        await cluster.aclose()
        raise RedisUnavailableError(
            f"Redis Cluster at {where} refused the credentials: {exc}"
        ) from None
    except (RedisClusterException, RedisConnectionError, RedisTimeoutError, OSError) as exc:
        await cluster.aclose()
        raise RedisUnavailableError(
            f"cannot load the Redis Cluster slot map from {where}: {exc}. Is redis.url a "
            "node of a cluster whose state is ok, and may the user run CLUSTER SLOTS?"
        ) from None
    except ResponseError as exc:
        await cluster.aclose()
        raise RedisUnavailableError(f"Redis Cluster at {where} refused: {exc}") from None
    return cluster


def has_sharded_pubsub(cluster: RedisCluster) -> bool:
    """True when the (initialized) cluster's servers know SPUBLISH/SSUBSCRIBE (Redis 7+).

    Read from the command table redis-py loaded at `initialize`: no extra round trip.
    """
    return "spublish" in cluster.commands_parser.commands


class Write(Protocol):
    """One message to send, as the producer's ``Outgoing`` has it: PUBLISH *payload*
    on *channel* and, unless *stream* is None, XADD it as *entry_id* capped ``MAXLEN ~
    maxlen``. (A Protocol, so `marketbus.shared` need not import the producer.)"""

    @property
    def channel(self) -> str: ...
    @property
    def payload(self) -> bytes: ...
    @property
    def stream(self) -> str | None: ...
    @property
    def entry_id(self) -> str: ...
    @property
    def maxlen(self) -> int: ...


async def publish_batch(
    cluster: RedisCluster, batch: Sequence[Write], *, sharded: bool = True
) -> list[ResponseError | None]:
    """(S)PUBLISH then XADD every item: one pipelined round trip per node, in parallel.

    Same contract as the producer's ``Transport.write``: returns per item the error
    Redis answered (its XADD's, e.g. an ID not above the stream's last one, which
    means another producer writes the feed; else its publish's), None when fine.
    Per feed, order is kept: a feed's channel and stream share one slot, so all its
    commands go to one node, in input order, on one connection. *sharded* selects
    SPUBLISH (pass `has_sharded_pubsub`) or global PUBLISH. Link failures raise
    redis ``ConnectionError``/``TimeoutError``; any prefix of the batch (per node) may
    then have been applied, and re-sending is safe: an already written ID is refused
    and readers drop a duplicate publish by ``(run, seq)``.
    """
    if not batch:
        return []
    publish = "SPUBLISH" if sharded else "PUBLISH"
    pipe = cluster.pipeline(transaction=False)
    for item in batch:
        pipe.execute_command(publish, item.channel, item.payload)
        if item.stream is not None:
            pipe.execute_command(
                "XADD", item.stream, "MAXLEN", "~", item.maxlen, item.entry_id,
                STREAM_FIELD, item.payload,
            )  # fmt: skip
    replies = await pipe.execute(raise_on_error=False)
    errors: list[ResponseError | None] = []
    position = 0
    for item in batch:
        item_replies = replies[position : position + (1 if item.stream is None else 2)]
        position += len(item_replies)
        error: ResponseError | None = None
        for reply in reversed(item_replies):  # the XADD's error wins over the publish's
            if isinstance(reply, ResponseError):
                error = reply
            elif isinstance(reply, BaseException):
                raise reply
            if error is not None:
                break
        errors.append(error)
    return errors


async def feeds_matching(cluster: RedisCluster, ns: str, pattern: str) -> list[str]:
    """Feed and status names that a ``PSUBSCRIBE pattern`` would cover, from the catalog.

    Sharded pub/sub has no pattern subscribe, so a cluster consumer expands its
    pattern against ``HSCAN {ns}:feeds`` (plus each catalogued exchange's status
    channel) and re-runs this now and then to pick up new feeds. Matching is
    `fnmatch.fnmatchcase`, which agrees with Redis globs for ``*``, ``?`` and ``[...]``.
    """
    names: set[str] = set()
    async for field, _ in cluster.hscan_iter(catalog_key(ns)):
        feed = field.decode() if isinstance(field, bytes) else str(field)
        names.add(feed)
        names.add(status_name(ns, feed.split(":", 2)[1]))
    return sorted(name for name in names if fnmatchcase(name, pattern))


class ShardMessage(NamedTuple):
    """A message received on a feed's sharded channel."""

    feed: str
    payload: bytes


class Subscribed(NamedTuple):
    """The server confirmed a subscription to *feed* (SSUBSCRIBE reply).

    Sent for the first subscription and again whenever the subscription had to be made
    anew: after redis-py reconnected, or after the feed's slot moved to another node
    and the subscriber followed it. A repeated one means live messages may have been
    missed: the consumer resumes from the stream (SPEC consumer rule 4).
    """

    feed: str


class _NodeFailed(NamedTuple):
    node: str
    error: BaseException


Delivery = ShardMessage | Subscribed


class _NodeSubscription:
    """One connection to one node, SSUBSCRIBEd to the feeds that node owns."""

    def __init__(self, client: aioredis.Redis, name: str) -> None:
        self.client = client
        self.name = name
        self.pubsub: PubSub = client.pubsub()
        self.feeds: set[str] = set()
        self.reader: asyncio.Task[None] | None = None

    async def aclose(self) -> None:
        if self.reader is not None:
            self.reader.cancel()
            try:
                await self.reader
            except asyncio.CancelledError:
                pass
            except RedisError as exc:  # already reported through the queue
                log.debug("reader of node %s ended with %s", self.name, exc)
        await self.pubsub.aclose()  # type: ignore[no-untyped-call]
        await self.client.aclose()


class ShardedSubscriber:
    """SSUBSCRIBE to feeds across a Redis Cluster and receive them as one stream.

    One connection per node that owns a subscribed feed (not one per feed); each
    node's reader task puts deliveries into one queue of at most *max_pending* items.
    When the queue is full the readers stop reading, Redis buffers for this client
    and, past ``client-output-buffer-limit pubsub``, disconnects it: memory stays
    bounded on both sides and the loss surfaces as an error, never silently.

    Deliveries are `ShardMessage` and `Subscribed`, in socket order per node. When a
    feed's slot moves (resharding, failover) the server drops the subscription; the
    subscriber refreshes the slot map and subscribes on the new owner, whose
    confirmation arrives as a new `Subscribed`. `get`/`get_batch` raise
    RedisUnavailableError when a node connection fails for good (after redis-py's own
    reconnect attempts): the caller makes a new subscriber and resumes from streams.
    """

    def __init__(
        self,
        config: RedisConfig,
        cluster: RedisCluster,
        *,
        max_pending: int = DEFAULT_MAX_PENDING,
    ) -> None:
        if max_pending <= 0:
            raise ValueError("max_pending must be positive")
        self._config = config
        self._cluster = cluster
        self._queue: asyncio.Queue[Delivery | _NodeFailed] = asyncio.Queue(max_pending)
        self._nodes: dict[str, _NodeSubscription] = {}
        self._feed_node: dict[str, str] = {}
        self._closed = False

    @property
    def feeds(self) -> frozenset[str]:
        """The feeds currently subscribed to."""
        return frozenset(self._feed_node)

    @property
    def nodes(self) -> dict[str, frozenset[str]]:
        """Node name (``host:port``) -> the subscribed feeds it serves."""
        return {name: frozenset(node.feeds) for name, node in self._nodes.items() if node.feeds}

    def _node_url(self, host: str, port: int) -> str:
        """``config.url`` pointed at one node, keeping scheme and credentials."""
        parts = urlsplit(self._config.url)
        userinfo = parts.netloc.rpartition("@")[0]
        host_port = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        netloc = f"{userinfo}@{host_port}" if userinfo else host_port
        return urlunsplit(parts._replace(netloc=netloc, path="/0"))

    def _node_for(self, feed: str) -> _NodeSubscription:
        node = self._cluster.get_node_from_key(feed)
        if node is None:  # only possible for replica lookups; here for the type checker
            raise RedisUnavailableError(f"no cluster node owns the slot of {feed!r}")
        sub = self._nodes.get(node.name)
        if sub is None:
            client = aioredis.Redis.from_url(
                self._node_url(node.host, int(node.port)), **connection_kwargs(self._config)
            )
            sub = self._nodes[node.name] = _NodeSubscription(client, node.name)
        return sub

    async def subscribe(self, feeds: Iterable[str]) -> None:
        """SSUBSCRIBE to *feeds* on their owners (already subscribed ones are skipped).

        Returns once every SSUBSCRIBE is sent; each confirmation then arrives as a
        `Subscribed`, and messages flow from it on.
        """
        if self._closed:
            raise RuntimeError("subscriber is closed")
        by_node: dict[str, tuple[_NodeSubscription, list[str]]] = {}
        for feed in dict.fromkeys(feeds):
            if feed not in self._feed_node:
                sub = self._node_for(feed)
                by_node.setdefault(sub.name, (sub, []))[1].append(feed)
        for sub, node_feeds in by_node.values():
            await self._ssubscribe(sub, node_feeds)

    async def _ssubscribe(self, sub: _NodeSubscription, feeds: list[str]) -> None:
        by_slot: dict[int, list[str]] = {}
        for feed in feeds:
            by_slot.setdefault(slot_of(feed), []).append(feed)
        for feed in feeds:  # before sending: the reader may see the reply at once
            sub.feeds.add(feed)
            self._feed_node[feed] = sub.name
        try:
            for slot_feeds in by_slot.values():  # one SSUBSCRIBE may not span slots
                await sub.pubsub.ssubscribe(*slot_feeds)
        except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
            raise RedisUnavailableError(
                f"cannot SSUBSCRIBE on cluster node {sub.name}: {exc}"
            ) from None
        if sub.reader is None:
            sub.reader = asyncio.create_task(self._read(sub), name=f"ssubscribe {sub.name}")

    async def unsubscribe(self, feeds: Iterable[str]) -> None:
        """SUNSUBSCRIBE from *feeds*; deliveries already queued are still returned."""
        for feed in dict.fromkeys(feeds):
            name = self._feed_node.pop(feed, None)
            if name is not None:
                sub = self._nodes[name]
                sub.feeds.discard(feed)
                await sub.pubsub.sunsubscribe(feed)

    async def _read(self, sub: _NodeSubscription) -> None:
        """Reader task of one node: move its deliveries into the shared queue."""
        try:
            while True:
                message = await sub.pubsub.get_message(timeout=None)
                if message is None:
                    continue
                kind = message["type"]
                feed = message["channel"].decode()
                if kind == "smessage":
                    await self._queue.put(ShardMessage(feed, message["data"]))
                elif kind == "ssubscribe":
                    await self._queue.put(Subscribed(feed))
                elif kind == "sunsubscribe" and self._feed_node.get(feed) == sub.name:
                    # Not asked for: the server dropped the channel because its slot
                    # left this node (Redis 7 does so when a slot migrates).
                    await self._follow(sub, feed)
        except (RedisError, OSError) as exc:
            await self._queue.put(_NodeFailed(sub.name, exc))

    async def _follow(self, sub: _NodeSubscription, feed: str) -> None:
        """Subscribe *feed* again on the node that owns its slot now."""
        sub.feeds.discard(feed)
        del self._feed_node[feed]
        log.info("slot of %s left cluster node %s; following it", feed, sub.name)
        await self._cluster.nodes_manager.initialize()
        if not self._closed:  # aclose() may have begun while the slot map reloaded
            await self.subscribe([feed])

    def _unwrap(self, item: Delivery | _NodeFailed) -> Delivery:
        if isinstance(item, _NodeFailed):
            raise RedisUnavailableError(
                f"lost the sharded pub/sub connection to cluster node {item.node}: {item.error}"
            )
        return item

    async def get(self) -> Delivery:
        """The next delivery; waits for one (bound the wait with ``asyncio.timeout``)."""
        return self._unwrap(await self._queue.get())

    async def get_batch(self, timeout_s: float, max_items: int = 4096) -> list[Delivery]:
        """Deliveries available within *timeout_s*: at most *max_items*, [] if none.

        The shape of the consumer's ``PubSubTransport.read``: wait for the first, then
        take whatever else is already queued without waiting.
        """
        try:
            first = await asyncio.wait_for(self._queue.get(), timeout_s)
        except TimeoutError:
            return []
        batch = [self._unwrap(first)]
        while len(batch) < max_items and not self._queue.empty():
            batch.append(self._unwrap(self._queue.get_nowait()))
        return batch

    async def __aiter__(self) -> AsyncIterator[Delivery]:
        while True:
            yield await self.get()

    async def aclose(self) -> None:
        """Stop every reader and close every node connection."""
        self._closed = True
        nodes, self._nodes = list(self._nodes.values()), {}
        self._feed_node.clear()
        for sub in nodes:
            await sub.aclose()

    async def __aenter__(self) -> ShardedSubscriber:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()
