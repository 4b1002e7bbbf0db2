"""The hot receive loop's only I/O: pub/sub frames off the socket, in batches.

This is the one component to swap for speed (e.g. a raw asyncio protocol feeding a
``hiredis.Reader``): it reads, it does not decode or apply. Subscription confirmations
are passed on, not swallowed: after redis-py silently reconnects and re-subscribes,
they are how the subscriber learns that live data had a hole and resumes from streams.
"""

from __future__ import annotations

import asyncio
from typing import Final, Literal, TypeAlias

import redis.asyncio as aioredis
from redis.asyncio.client import PubSub

DATA: Final = 0
SUBSCRIBED: Final = 1
PSUBSCRIBED: Final = 2

Frame: TypeAlias = tuple[Literal[0, 1, 2], str, bytes]
"""``(DATA, channel, payload)``, ``(SUBSCRIBED, channel, b"")`` or
``(PSUBSCRIBED, pattern, b"")``, in socket order."""


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
