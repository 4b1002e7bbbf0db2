"""The Redis boundary of the producer's writer: every command it sends goes through here.

`Transport` is the small protocol the writer and the process need: write batches
(`send` now, `Receipt.confirm` later, or `write` at once), read a stream's tail, check
an entry, write the catalog, close. Three implementations share the redis-py reads
(`RedisCommands`) and differ in how a batch is written:

- `RedisTransport`: one redis-py pipeline per batch (one server);
- `FastTransport`: a raw asyncio RESP connection (`PipelineWriter`, hiredis) that keeps
  a batch in flight while the writer prepares the next;
- `ClusterTransport`: one pipeline per cluster node (`publish_batch`).

The lease has its own store on the same client (`marketbus.producer.lease_store`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Protocol, TypeAlias

import msgspec
import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import BusyLoadingError, ReadOnlyError, ResponseError
from redis.exceptions import ConnectionError as RedisConnectionError

from marketbus.producer.cluster_publish import publish_batch
from marketbus.shared.cluster import has_sharded_pubsub
from marketbus.shared.config import RedisConfig
from marketbus.shared.errors import RedisUnavailableError
from marketbus.shared.names import STREAM_FIELD_BYTES
from marketbus.shared.resp import FeedCommands, pack_command
from marketbus.shared.transport import PipelineWriter

RedisClient: TypeAlias = aioredis.Redis | RedisCluster
"""A redis-py asyncio client: one server or a cluster."""
Tail: TypeAlias = tuple[bytes, bytes | None]
"""A stream's newest entry: its ID and its ``d`` field (None if it has none)."""


class Outgoing(msgspec.Struct, frozen=True):
    """One encoded message: PUBLISHed on ``channel``, XADDed as ``entry_id`` to ``stream``
    (capped ``MAXLEN ~ maxlen``) unless ``stream`` is None."""

    channel: str
    payload: bytes
    stream: str | None
    entry_id: str
    maxlen: int


ReplyErrors: TypeAlias = list[ResponseError | None]
"""Per batch item, the error Redis answered to its XADD (None if fine or no XADD)."""


class Receipt(Protocol):
    """A batch handed to `Transport.send`: `confirm` waits until Redis answered it."""

    async def confirm(self) -> ReplyErrors:
        """The batch's per-item errors, as `Transport.write` returns them. Raises redis
        ConnectionError/TimeoutError when the link failed before every reply came;
        then any prefix of this batch, and of batches sent after it, may be applied."""
        ...


class Transport(Protocol):
    """What the producer needs from Redis."""

    async def send(self, batch: Sequence[Outgoing]) -> Receipt:
        """Start writing *batch* (after every batch sent before it) and return at once
        or once the link has room; `Receipt.confirm` gives the result. A transport
        that cannot pipeline batches writes it in `confirm` instead."""
        ...

    async def write(self, batch: Sequence[Outgoing]) -> ReplyErrors:
        """PUBLISH (and XADD) every item in one pipelined round trip, in order.

        Returns, per item, the error Redis answered to its XADD (None if fine or no
        XADD). Raises redis ConnectionError/TimeoutError when the link fails; then any
        prefix of the batch may have been applied.
        """
        ...

    async def last_entry(self, stream: str) -> Tail | None:
        """ID and ``d`` field of the newest entry of *stream*, None if it is empty."""
        ...

    async def last_entries(self, streams: Sequence[str]) -> list[Tail | None]:
        """`last_entry` of every stream, pipelined (a producer starts with hundreds)."""
        ...

    async def has_entry(self, stream: str, entry_id: str) -> bool:
        """Whether *stream* holds the entry *entry_id*."""
        ...

    async def set_fields(self, key: str, fields: Mapping[str, bytes]) -> None:
        """HSET *fields* into hash *key* (the catalog)."""
        ...

    async def close(self) -> None: ...


class WriteOnConfirm:
    """The `Receipt` of a transport that writes one batch at a time: `confirm` writes."""

    __slots__ = ("_batch", "_write")

    def __init__(
        self,
        write: Callable[[Sequence[Outgoing]], Awaitable[ReplyErrors]],
        batch: Sequence[Outgoing],
    ) -> None:
        self._write = write
        self._batch = batch

    async def confirm(self) -> ReplyErrors:
        return await self._write(self._batch)


class RedisCommands:
    """The transports' commands other than the batch write, over a redis-py client
    (tails, entry lookups, the catalog; closing the client)."""

    def __init__(self, redis: RedisClient) -> None:
        self.redis = redis

    async def last_entry(self, stream: str) -> Tail | None:
        entries = await self.redis.xrevrange(stream, "+", "-", count=1)
        return _tail(entries)

    async def last_entries(self, streams: Sequence[str], chunk: int = 1000) -> list[Tail | None]:
        found: list[Tail | None] = []
        for start in range(0, len(streams), chunk):
            pipe = self.redis.pipeline(transaction=False)
            for stream in streams[start : start + chunk]:
                pipe.xrevrange(stream, "+", "-", count=1)
            found.extend(_tail(entries) for entries in await pipe.execute())
        return found

    async def has_entry(self, stream: str, entry_id: str) -> bool:
        return bool(await self.redis.xrange(stream, min=entry_id, max=entry_id, count=1))

    async def set_fields(self, key: str, fields: Mapping[str, bytes]) -> None:
        if fields:
            mapping: dict[str | bytes, bytes] = {k: v for k, v in fields.items()}
            await self.redis.hset(key, mapping=mapping)  # type: ignore[arg-type]

    async def close(self) -> None:
        await self.redis.aclose()


class RedisTransport(RedisCommands):
    """`Transport` over a redis-py client: one non-transactional pipeline per batch."""

    def __init__(self, redis: aioredis.Redis) -> None:
        super().__init__(redis)
        self._client = redis

    async def send(self, batch: Sequence[Outgoing]) -> Receipt:
        return WriteOnConfirm(self.write, batch)  # redis-py: one batch at a time

    async def write(self, batch: Sequence[Outgoing]) -> ReplyErrors:
        pipe = self._client.pipeline(transaction=False)
        for item in batch:
            pipe.publish(item.channel, item.payload)
            if item.stream is not None:
                pipe.xadd(
                    item.stream,
                    {STREAM_FIELD_BYTES: item.payload},
                    id=item.entry_id,
                    maxlen=item.maxlen,
                    approximate=True,
                )
        results = await pipe.execute(raise_on_error=False)
        errors: list[ResponseError | None] = []
        position = 0
        for item in batch:
            position += 1  # the PUBLISH reply
            error: ResponseError | None = None
            if item.stream is not None:
                reply = results[position]
                position += 1
                if isinstance(reply, ResponseError):
                    error = reply
            errors.append(error)
        return errors


def _as_bytes(value: bytes | str) -> bytes:
    return value if isinstance(value, bytes) else value.encode()


def _tail(entries: Sequence[tuple[Any, Mapping[Any, Any] | None]] | None) -> Tail | None:
    """The newest entry of an ``XREVRANGE ... COUNT 1`` reply as a `Tail`."""
    if not entries:
        return None
    entry_id, fields = entries[0]
    assert entry_id is not None
    payload = (fields or {}).get(STREAM_FIELD_BYTES)
    return _as_bytes(entry_id), None if payload is None else _as_bytes(payload)


def _response_error(message: str) -> ResponseError:
    """The redis-py class redis-py itself would raise for *message*, so the publisher
    tells READONLY (failover) and LOADING (restart) apart whichever transport ran."""
    if message.startswith("READONLY"):
        return ReadOnlyError(message)
    if message.startswith("LOADING"):
        return BusyLoadingError(message)  # type: ignore[return-value]
    return ResponseError(message)


class _Pending:
    """A batch on a `PipelineWriter`: its replies end at ``mark``."""

    __slots__ = ("_owner", "_size", "_writer", "mark")

    def __init__(self, writer: PipelineWriter, owner: list[int], size: int) -> None:
        self._writer = writer
        self._owner = owner
        self._size = size
        self.mark = writer.sent

    async def confirm(self) -> ReplyErrors:
        errors: ReplyErrors = [None] * self._size
        for failure in await self._writer.confirm(self.mark):
            if failure.tag is self._owner:
                errors[self._owner[failure.index]] = _response_error(failure.message)
        return errors


class FastTransport(RedisCommands):
    """`Transport` whose batches go over a `PipelineWriter` (asyncio + hiredis).

    Same contract: PUBLISH then XADD per item, in order, per-item errors returned,
    link failures raised as redis-py ``ConnectionError``. `send` only writes, so the
    writer can prepare the next batch while Redis works on this one; it never dials a
    new connection after one was lost, because a batch sent there could land before
    the lost connection's batches are written again (their XADDs would then be refused
    as if they had landed). `write`, the writer's one-batch retry path, reconnects.
    Everything else (tails, catalog) stays on redis-py.
    """

    def __init__(self, config: RedisConfig, redis: aioredis.Redis) -> None:
        super().__init__(redis)
        self._config = config
        self._writer: PipelineWriter | None = None
        self._feeds: dict[str, FeedCommands] = {}

    @property
    def writer(self) -> PipelineWriter | None:
        """The raw connection batches go over (None before the first batch)."""
        return self._writer

    async def _connected(self, reconnect: bool) -> PipelineWriter:
        writer = self._writer
        if writer is not None and writer.is_connected:
            return writer
        if writer is not None and not reconnect:
            # Batches sent on the lost connection may or may not have landed: the writer
            # writes them again, in order, before anything new may use a new connection.
            raise RedisConnectionError(
                f"connection to Redis at {writer.endpoint.display} lost with batches in flight"
            )
        try:
            self._writer = writer = await PipelineWriter.open(self._config)
        except RedisUnavailableError as exc:
            raise RedisConnectionError(str(exc)) from exc
        return writer

    async def send(self, batch: Sequence[Outgoing]) -> Receipt:
        """Pipelined: never on a new connection while one was lost (see `write`)."""
        return await self._send(batch, reconnect=False)

    async def write(self, batch: Sequence[Outgoing]) -> ReplyErrors:
        """One batch, reconnecting if needed: how the writer writes batches again."""
        return await (await self._send(batch, reconnect=True)).confirm()

    async def _send(self, batch: Sequence[Outgoing], *, reconnect: bool) -> Receipt:
        writer = await self._connected(reconnect)
        feeds = self._feeds
        out: list[bytes] = []
        owner: list[int] = []  # the batch item of each expected reply
        for index, item in enumerate(batch):
            commands = feeds.get(item.channel)
            if commands is None or commands.maxlen != item.maxlen:
                commands = feeds[item.channel] = FeedCommands(item.channel, item.maxlen)
            if item.stream == item.channel:
                commands.append_publish_xadd(out, item.entry_id.encode(), item.payload)
                owner += (index, index)
                continue
            commands.append_publish(out, item.payload)
            owner.append(index)
            if item.stream is not None:
                out.append(
                    pack_command(
                        "XADD",
                        item.stream,
                        "MAXLEN",
                        "~",
                        item.maxlen,
                        item.entry_id,
                        STREAM_FIELD_BYTES,
                        item.payload,
                    )
                )
                owner.append(index)
        writer.send_parts(out, len(owner), tag=owner)
        pending = _Pending(writer, owner, len(batch))
        await writer.push()
        return pending

    async def close(self) -> None:
        if self._writer is not None:
            await self._writer.aclose()
        await super().close()


class ClusterTransport(RedisCommands):
    """`Transport` over a Redis Cluster: each feed's channel and stream share one slot, so
    `publish_batch` sends one pipeline per node, SPUBLISH where the cluster has sharded
    pub/sub. Tails and catalog go through the same cluster client."""

    def __init__(self, cluster: RedisCluster) -> None:
        super().__init__(cluster)
        self._cluster = cluster
        self._sharded = has_sharded_pubsub(cluster)

    async def send(self, batch: Sequence[Outgoing]) -> Receipt:
        return WriteOnConfirm(self.write, batch)  # one round of pipelines at a time

    async def write(self, batch: Sequence[Outgoing]) -> ReplyErrors:
        return await publish_batch(self._cluster, batch, sharded=self._sharded)
