"""The fast transport behind the producer's own seam (bench only).

`FastTransport` implements `marketbus.producer.transport.Transport`, so the real
`Publisher` runs unchanged on either transport. It lives here until the producer adopts
it. (The consumer's fast transport is the SDK's default now:
`marketbus.consumers.transport.FastPubSubTransport`.)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import redis.asyncio as aioredis
from redis.exceptions import BusyLoadingError, ReadOnlyError, ResponseError

from marketbus.producer.transport import Outgoing, RedisTransport
from marketbus.shared.config import RedisConfig
from marketbus.shared.errors import CommandError
from marketbus.shared.resp import FeedCommands, pack_command
from marketbus.shared.transport import PipelineWriter


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
