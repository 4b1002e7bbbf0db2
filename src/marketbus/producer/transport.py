"""The Redis boundary of the producer: every command it sends goes through `Transport`.

`RedisTransport` is the redis-py implementation. A faster one (a raw asyncio RESP
protocol with hiredis) can replace it by implementing the same `Transport` protocol;
nothing else in the producer talks to Redis.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol

import msgspec
import redis.asyncio as aioredis
from redis.exceptions import ResponseError

STREAM_FIELD = b"d"


class Outgoing(msgspec.Struct, frozen=True):
    """One encoded message: PUBLISHed on ``channel``, XADDed as ``entry_id`` to ``stream``
    (capped ``MAXLEN ~ maxlen``) unless ``stream`` is None."""

    channel: str
    payload: bytes
    stream: str | None
    entry_id: str
    maxlen: int


class Transport(Protocol):
    """What the producer needs from Redis."""

    async def write(self, batch: Sequence[Outgoing]) -> list[ResponseError | None]:
        """PUBLISH (and XADD) every item in one pipelined round trip, in order.

        Returns, per item, the error Redis answered to its XADD (None if fine or no
        XADD). Raises redis ConnectionError/TimeoutError when the link fails; then any
        prefix of the batch may have been applied.
        """
        ...

    async def last_entry(self, stream: str) -> tuple[bytes, bytes | None] | None:
        """ID and ``d`` field of the newest entry of *stream*, None if it is empty."""
        ...

    async def set_fields(self, key: str, fields: Mapping[str, bytes]) -> None:
        """HSET *fields* into hash *key* (the catalog)."""
        ...

    async def close(self) -> None: ...


class RedisTransport:
    """`Transport` over a redis-py asyncio client (non-transactional pipelines)."""

    def __init__(self, redis: aioredis.Redis) -> None:
        self.redis = redis

    async def write(self, batch: Sequence[Outgoing]) -> list[ResponseError | None]:
        pipe = self.redis.pipeline(transaction=False)
        for item in batch:
            pipe.publish(item.channel, item.payload)
            if item.stream is not None:
                pipe.xadd(
                    item.stream,
                    {STREAM_FIELD: item.payload},
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

    async def last_entry(self, stream: str) -> tuple[bytes, bytes | None] | None:
        entries = await self.redis.xrevrange(stream, "+", "-", count=1)
        if not entries:
            return None
        entry_id, fields = entries[0]
        assert entry_id is not None
        payload = (fields or {}).get(STREAM_FIELD)
        return _as_bytes(entry_id), None if payload is None else _as_bytes(payload)

    async def set_fields(self, key: str, fields: Mapping[str, bytes]) -> None:
        if fields:
            mapping: dict[str | bytes, bytes] = {k: v for k, v in fields.items()}
            await self.redis.hset(key, mapping=mapping)  # type: ignore[arg-type]

    async def close(self) -> None:
        await self.redis.aclose()


def _as_bytes(value: bytes | str) -> bytes:
    return value if isinstance(value, bytes) else value.encode()
