"""FastTransport against a private redis-server: a lost connection is never silently
replaced under batches in flight."""

from __future__ import annotations

import contextlib

import pytest
import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError

from marketbus.producer.transport import FastTransport, Outgoing
from marketbus.shared.config import RedisConfig
from tests.support.waiting import wait_until

FEED = "md:binance:trades:FT/USDT"


def item(seq: int) -> Outgoing:
    return Outgoing(FEED, b'{"seq":%d}' % seq, FEED, f"9-{seq}", 100)


async def test_send_refuses_a_new_connection_after_a_loss_and_write_reconnects(
    redis_url: str,
) -> None:
    admin = aioredis.Redis.from_url(redis_url)
    transport = FastTransport(RedisConfig(url=redis_url), aioredis.Redis.from_url(redis_url))
    try:
        assert await (await transport.send([item(1)])).confirm() == [None]
        writer = transport.writer
        assert writer is not None
        client_id = await writer.execute("CLIENT", "ID")
        receipt = await transport.send([item(2)])
        await admin.execute_command("CLIENT", "KILL", "ID", client_id)
        await wait_until(lambda: not writer.is_connected, what="the kill noticed")
        # Batch 2's fate is unknown: batch 3 must not go out on a new connection first.
        with pytest.raises(RedisConnectionError, match="lost with batches in flight"):
            await transport.send([item(3)])
        with contextlib.suppress(RedisConnectionError):  # its replies may have come first
            assert await receipt.confirm() == [None]
        # The writer's retry path writes them again in order, on a new connection.
        errors = await transport.write([item(2)])
        assert errors == [None] or "equal or smaller" in str(errors[0])
        assert await transport.write([item(3)]) == [None]
        ids = [entry_id for entry_id, _ in await admin.xrange(FEED)]
        assert ids == [b"9-1", b"9-2", b"9-3"]
    finally:
        await transport.close()
        await admin.delete(FEED)
        await admin.aclose()
