"""The lease's Redis commands: `RedisLeaseStore` implements `lease.LeaseStore` over a
redis-py client, one server or a cluster (every lease and standby key is one key, so
each command goes to the node that owns it).

Acquiring is ``SET NX PX``; renewing and releasing are two small Lua scripts, so the
compare and the write happen in one step on the server. The store shares the client
of the producer's transport; whoever made the client closes it.
"""

from __future__ import annotations

from typing import Final, TypeAlias

import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster

from marketbus.producer.lease import Renewal

RedisClient: TypeAlias = aioredis.Redis | RedisCluster

RENEW_LEASE: Final = """
local current = redis.call('GET', KEYS[1])
if current == ARGV[1] or current == ARGV[2] or not current then
  redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
  if current then return 1 end
  return 2
end
return current
"""
"""Compare-and-renew: ours (the value we last set, or the new one when a renew's reply
was lost) or gone -> set the new value with a fresh TTL and answer 1 (renewed) or 2
(taken back); someone else's -> their value."""

RELEASE_LEASE: Final = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""
"""Compare-and-delete: 1 if the lease was ours and is gone, 0 otherwise."""

ACQUIRE_ATTEMPTS: Final = 3
"""SET NX then GET: how often to try again when the holder's key expires in between."""


class RedisLeaseStore:
    """`lease.LeaseStore` over a redis-py asyncio client (single server or cluster)."""

    def __init__(self, redis: RedisClient) -> None:
        self._redis = redis
        # redis-py loads a script again when Redis answers NOSCRIPT (restart, SCRIPT FLUSH).
        self._renew = redis.register_script(RENEW_LEASE)
        self._release = redis.register_script(RELEASE_LEASE)

    async def lease_acquire(self, key: str, value: bytes, ttl_ms: int) -> bytes | None:
        for _ in range(ACQUIRE_ATTEMPTS):
            if await self._redis.set(key, value, nx=True, px=ttl_ms):
                return None
            holder = await self._redis.get(key)
            if holder is not None:
                return _as_bytes(holder)
            # It expired between SET and GET: try again.
        return b"?"

    async def lease_renew(
        self, key: str, expected: bytes, value: bytes, ttl_ms: int
    ) -> Renewal | bytes:
        reply = await self._renew(keys=[key], args=[expected, value, ttl_ms])
        if reply == 1:
            return "renewed"
        if reply == 2:
            return "reacquired"
        return _as_bytes(reply)

    async def lease_release(self, key: str, value: bytes) -> bool:
        return bool(await self._release(keys=[key], args=[value]))

    async def standby_announce(self, key: str, value: bytes, ttl_ms: int) -> None:
        await self._redis.set(key, value, px=ttl_ms)

    async def standby_withdraw(self, key: str) -> None:
        await self._redis.delete(key)


def _as_bytes(value: bytes | str) -> bytes:
    return value if isinstance(value, bytes) else value.encode()
