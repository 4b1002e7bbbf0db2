"""The fast transport behind the producer's and the consumer's own seams.

`FastTransport` implements `marketbus.producer.transport.Transport` and
`FastPubSubTransport` implements the interface of
`marketbus.consumers.transport.PubSubTransport`, so the real `Publisher` and the real
consumer read loop run unchanged on either transport. They live here until the
producer/consumer owners adopt them (see docs/benchmarks.md, "Wiring").
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence

import redis.asyncio as aioredis
from redis.exceptions import BusyLoadingError, ReadOnlyError, ResponseError

from marketbus.consumers.transport import DATA, PSUBSCRIBED, SUBSCRIBED, Frame
from marketbus.producer.transport import Outgoing, RedisTransport
from marketbus.shared.config import RedisConfig
from marketbus.shared.errors import CommandError, ConnectionLostError
from marketbus.shared.resp import FeedCommands, pack_command
from marketbus.shared.transport import PipelineWriter, SubscriberConnection


def response_error(message: str) -> ResponseError:
    """The redis-py class redis-py itself would raise for *message* (the ones the
    publisher tells apart: READONLY after a failover, LOADING after a restart)."""
    if message.startswith("READONLY"):
        return ReadOnlyError(message)
    if message.startswith("LOADING"):
        return BusyLoadingError(message)  # type: ignore[return-value]
    return ResponseError(message)


class FastTransport:
    """Producer `Transport`: hot `write` over a `PipelineWriter`, the rest via redis-py.

    Same semantics as `RedisTransport.write`: one round trip per batch, PUBLISH then
    XADD per item, per-item XADD errors returned, link failures raised as redis-py
    ``ConnectionError`` (`ConnectionLostError` is one), after which the next `write`
    reconnects.
    """

    def __init__(self, config: RedisConfig, redis: aioredis.Redis) -> None:
        self._config = config
        self._slow = RedisTransport(redis)
        self._writer: PipelineWriter | None = None
        self._feeds: dict[tuple[str, int], FeedCommands] = {}

    async def _connected(self) -> PipelineWriter:
        if self._writer is None or not self._writer.is_connected:
            self._writer = await PipelineWriter.open(self._config)
        return self._writer

    async def write(self, batch: Sequence[Outgoing]) -> list[ResponseError | None]:
        writer = await self._connected()
        out: list[bytes] = []
        owner: list[int] = []  # item index of each reply
        feeds = self._feeds
        for index, item in enumerate(batch):
            commands = feeds.get((item.channel, item.maxlen))
            if commands is None:
                commands = feeds[(item.channel, item.maxlen)] = FeedCommands(
                    item.channel, item.maxlen
                )
            commands.append_publish(out, item.payload)
            owner.append(index)
            if item.stream is None:
                continue
            if item.stream == item.channel:
                commands.append_xadd(out, item.entry_id.encode(), item.payload)
            else:
                out.append(
                    pack_command(
                        "XADD",
                        item.stream,
                        "MAXLEN",
                        "~",
                        item.maxlen,
                        item.entry_id,
                        "d",
                        item.payload,
                    )
                )
            owner.append(index)
        errors: list[ResponseError | None] = [None] * len(batch)
        writer.send_parts(out, len(owner), tag=owner)
        try:
            await writer.flush()
        except CommandError as exc:
            for failure in exc.failures:
                assert isinstance(failure.tag, list)
                errors[failure.tag[failure.index]] = response_error(failure.message)
        return errors

    async def last_entry(self, stream: str) -> tuple[bytes, bytes | None] | None:
        return await self._slow.last_entry(stream)

    async def set_fields(self, key: str, fields: Mapping[str, bytes]) -> None:
        await self._slow.set_fields(key, fields)

    async def close(self) -> None:
        if self._writer is not None:
            await self._writer.aclose()
        await self._slow.close()


class FastPubSubTransport:
    """Consumer pub/sub transport over a `SubscriberConnection` in queue mode.

    Like redis-py's PubSub it reconnects on the `read` after a loss and re-subscribes
    everything, which shows up as SUBSCRIBED/PSUBSCRIBED frames: the engine's cue to
    resume from the streams. The loss itself is raised once (ConnectionLostError is a
    redis-py ConnectionError), as redis-py does.
    """

    def __init__(self, config: RedisConfig, *, max_queued: int = 100_000) -> None:
        self._config = config
        self._max_queued = max_queued
        self._conn: SubscriberConnection | None = None
        self._channels: list[str] = []
        self._patterns: list[str] = []
        self._pending: list[Frame] = []
        self._names: dict[bytes, str] = {}

    async def _connection(self) -> SubscriberConnection:
        if self._conn is None or not self._conn.is_connected:
            self._conn = await SubscriberConnection.open(self._config, max_queued=self._max_queued)
            if self._channels:
                await self._conn.subscribe(*self._channels)
                self._pending += [(SUBSCRIBED, c, b"") for c in self._channels]
            if self._patterns:
                await self._conn.psubscribe(*self._patterns)
                self._pending += [(PSUBSCRIBED, p, b"") for p in self._patterns]
        return self._conn

    async def subscribe(self, channels: list[str]) -> None:
        if channels:
            new = [c for c in channels if c not in self._channels]
            self._channels += new
            conn = await self._connection()
            await conn.subscribe(*new)
            self._pending += [(SUBSCRIBED, c, b"") for c in new]

    async def psubscribe(self, patterns: list[str]) -> None:
        if patterns:
            new = [p for p in patterns if p not in self._patterns]
            self._patterns += new
            conn = await self._connection()
            await conn.psubscribe(*new)
            self._pending += [(PSUBSCRIBED, p, b"") for p in new]

    async def unsubscribe(self, channels: list[str]) -> None:
        self._channels = [c for c in self._channels if c not in channels]
        if channels and self._conn is not None and self._conn.is_connected:
            await self._conn.unsubscribe(*channels)

    def _name(self, channel: bytes) -> str:
        name = self._names.get(channel)
        if name is None:
            name = channel.decode()
            if len(self._names) < 100_000:
                self._names[channel] = name
        return name

    async def read(self, timeout_s: float) -> list[Frame]:
        """Frames available within *timeout_s* ([] if none)."""
        conn = await self._connection()
        frames, self._pending = self._pending, []
        if frames:
            return frames
        try:
            async with asyncio.timeout(timeout_s):
                batch = await conn.get()
        except TimeoutError:
            return []
        except ConnectionLostError:
            self._conn = None
            raise
        name = self._name
        return [(DATA, name(channel), payload) for channel, _pattern, payload in batch]

    async def close(self) -> None:
        if self._conn is not None:
            await self._conn.aclose()
