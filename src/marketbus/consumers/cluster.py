"""The consumer's sharded pub/sub on a Redis Cluster: SSUBSCRIBE, node by node.

A feed's sharded channel lives on the node that owns the feed's slot (see
`marketbus.shared.cluster`, which also makes the cluster client), so a cluster
consumer holds one connection per node that serves any of its feeds:

- `ShardedSubscriber`: SSUBSCRIBE to feeds on the nodes that own them, one connection
  per node, deliveries merged into one bounded queue, slot moves followed.
- `feeds_matching`: sharded channels have no pattern subscribe, so a cluster consumer
  expands its pattern against the catalog (``HSCAN {ns}:feeds``) and subscribes to
  feeds by name.

`marketbus.consumers.transport.ShardedPubSubTransport` turns these deliveries into the
frames the subscriber's engine reads.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Final, NamedTuple
from urllib.parse import urlsplit, urlunsplit

import redis.asyncio as aioredis
from redis.asyncio.client import PubSub
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from marketbus.shared.cluster import slot_of
from marketbus.shared.config import RedisConfig
from marketbus.shared.connection import connection_kwargs
from marketbus.shared.errors import RedisUnavailableError
from marketbus.shared.names import catalog_key, exchange_of, status_name

log = logging.getLogger(__name__)

DEFAULT_MAX_PENDING: Final = 10_000


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
        names.add(status_name(ns, exchange_of(feed)))
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


@dataclass(frozen=True, slots=True)
class _NodeFailed:
    """A node's reader ended for good; raised to the caller as RedisUnavailableError."""

    node: str
    error: BaseException

    def to_error(self) -> RedisUnavailableError:
        return RedisUnavailableError(
            f"lost the sharded pub/sub connection to cluster node {self.node}: {self.error}"
        )


Delivery = ShardMessage | Subscribed


def _closing_task_is_cancelled() -> bool:
    """True when the running task has been asked to cancel (`asyncio.Task.cancelling`)."""
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


class _NodeSubscription:
    """One connection to one node, SSUBSCRIBEd to the feeds that node owns."""

    def __init__(self, client: aioredis.Redis, name: str) -> None:
        self.client = client
        self.name = name
        self.pubsub: PubSub = client.pubsub()
        self.feeds: set[str] = set()
        self.reader: asyncio.Task[None] | None = None

    async def aclose(self) -> None:
        """Stop the reader and close the connection, also when the closing task is
        cancelled meanwhile; that cancellation is then raised, never swallowed."""
        try:
            if self.reader is not None:
                self.reader.cancel()
                try:
                    await self.reader
                except asyncio.CancelledError:
                    if _closing_task_is_cancelled():
                        raise
                except RedisError as exc:  # already reported through the queue
                    log.debug("reader of node %s ended with %s", self.name, exc)
        finally:
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
    reconnect attempts), once every delivery queued before the failure has been
    returned: the caller makes a new subscriber and resumes from streams.
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
        self._failed: _NodeFailed | None = None
        """A failure taken off the queue behind deliveries: raised by the next get."""
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

    @property
    def pending(self) -> int:
        """Items waiting to be taken by `get`/`get_batch`: deliveries, and a node's
        failure (at most *max_pending*)."""
        return self._queue.qsize() + (self._failed is not None)

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

    def _raise_failure(self) -> None:
        failed, self._failed = self._failed, None
        if failed is not None:
            raise failed.to_error()

    async def get(self) -> Delivery:
        """The next delivery; waits for one (bound the wait with ``asyncio.timeout``)."""
        self._raise_failure()
        item = await self._queue.get()
        if isinstance(item, _NodeFailed):
            raise item.to_error()
        return item

    async def get_batch(self, timeout_s: float, max_items: int = 4096) -> list[Delivery]:
        """Deliveries available within *timeout_s*: at most *max_items*, [] if none.

        The shape of the consumer's ``PubSubTransport.read``: wait for the first, then
        take whatever else is already queued without waiting. A node failure found
        behind deliveries ends the batch; the next call raises it, so nothing taken
        off the queue is lost.
        """
        self._raise_failure()
        try:
            first = await asyncio.wait_for(self._queue.get(), timeout_s)
        except TimeoutError:
            return []
        if isinstance(first, _NodeFailed):
            raise first.to_error()
        batch: list[Delivery] = [first]
        while len(batch) < max_items and not self._queue.empty():
            item = self._queue.get_nowait()
            if isinstance(item, _NodeFailed):
                self._failed = item
                break
            batch.append(item)
        return batch

    async def __aiter__(self) -> AsyncIterator[Delivery]:
        while True:
            yield await self.get()

    async def aclose(self) -> None:
        """Stop every reader and close every node connection.

        A cancellation of the closing task while it waits for a reader to stop does
        not stop the closing: it is raised once every node has been closed.
        """
        self._closed = True
        nodes, self._nodes = list(self._nodes.values()), {}
        self._feed_node.clear()
        cancelled: asyncio.CancelledError | None = None
        for sub in nodes:
            try:
                await sub.aclose()
            except asyncio.CancelledError as exc:
                cancelled = exc
        if cancelled is not None:
            raise cancelled

    async def __aenter__(self) -> ShardedSubscriber:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()
