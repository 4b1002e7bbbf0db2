"""The lease keeper against an in-memory store with the Lua scripts' semantics."""

from __future__ import annotations

import asyncio
import time

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

from marketbus.producer.lease import (
    LeaseKeeper,
    LeaseState,
    LeaseValue,
    Renewal,
    describe,
    encode_value,
)
from marketbus.shared.errors import FencedError
from tests.support.waiting import wait_until

TTL_S = 0.3
KEY = "md:binance:lease"


class MemoryStore:
    """Lease keys with expiry; ``down`` makes every command fail like a dead link."""

    def __init__(self) -> None:
        self.keys: dict[str, tuple[bytes, float]] = {}
        self.down = False

    def get(self, key: str) -> bytes | None:
        entry = self.keys.get(key)
        if entry is None or entry[1] <= time.monotonic():
            self.keys.pop(key, None)
            return None
        return entry[0]

    def put(self, key: str, value: bytes, ttl_ms: int) -> None:
        self.keys[key] = (value, time.monotonic() + ttl_ms / 1000)

    def _check(self) -> None:
        if self.down:
            raise RedisConnectionError("Connection refused")

    async def lease_acquire(self, key: str, value: bytes, ttl_ms: int) -> bytes | None:
        self._check()
        current = self.get(key)
        if current is not None:
            return current
        self.put(key, value, ttl_ms)
        return None

    async def lease_renew(
        self, key: str, expected: bytes, value: bytes, ttl_ms: int
    ) -> Renewal | bytes:
        self._check()
        current = self.get(key)
        if current is None or current in (expected, value):
            self.put(key, value, ttl_ms)
            return "renewed" if current is not None else "reacquired"
        return current

    async def lease_release(self, key: str, value: bytes) -> bool:
        self._check()
        if self.get(key) == value:
            del self.keys[key]
            return True
        return False

    async def standby_announce(self, key: str, value: bytes, ttl_ms: int) -> None:
        self._check()
        self.put(key, value, ttl_ms)

    async def standby_withdraw(self, key: str) -> None:
        self._check()
        self.keys.pop(key, None)


def other(run: int = 7) -> bytes:
    return encode_value(LeaseValue(holder="elsewhere/1/abcd", run=run, since_ms=1))


def keeper(store: MemoryStore, on_conflict: str = "standby") -> LeaseKeeper:
    return LeaseKeeper(
        store,
        "md",
        ["binance"],
        ttl_s=TTL_S,
        on_conflict=on_conflict,  # type: ignore[arg-type]
        holder="here/2/ef01",
    )


def test_a_lease_is_valid_for_most_of_its_ttl_counted_from_the_send() -> None:
    lease = LeaseState(KEY, "binance", ttl_s=10)
    assert not lease.valid(0)
    lease.granted(b"v", sent_at=100)
    assert lease.valid(108.9) and not lease.valid(109.0)
    lease.confirmed = False
    assert not lease.valid(101)


def test_the_holder_is_described_for_people() -> None:
    assert describe(other()) == "elsewhere/1/abcd (run 7)"
    assert describe(b"garbage") == "b'garbage'"


async def test_exit_mode_names_the_holder() -> None:
    store = MemoryStore()
    store.put(KEY, other(), 10_000)
    with pytest.raises(
        FencedError, match=r"md:binance:lease is held by elsewhere/1/abcd \(run 7\)"
    ):
        await keeper(store, "exit").acquire()


async def test_a_standby_takes_over_when_the_holder_releases_and_names_it() -> None:
    store = MemoryStore()
    store.put(KEY, other(), 10_000)
    standby = keeper(store)
    acquiring = asyncio.create_task(standby.acquire())
    await asyncio.sleep(0.1)
    assert not acquiring.done()
    del store.keys[KEY]
    await asyncio.wait_for(acquiring, 2)
    assert standby.previous == {"binance": "elsewhere/1/abcd (run 7)"}
    await standby.set_run(42)
    assert describe(store.get(KEY) or b"") == "here/2/ef01 (run 42)"
    assert standby.valid()


async def test_a_standby_shows_itself_while_it_waits_and_not_after() -> None:
    store = MemoryStore()
    store.put(KEY, other(), 10_000)
    standby = keeper(store)
    acquiring = asyncio.create_task(standby.acquire())
    mine = "md:binance:standby:here/2/ef01"
    await wait_until(lambda: store.get(mine) is not None, timeout_s=2, what="standby key")
    assert describe(store.get(mine) or b"") == "here/2/ef01 (starting)"
    assert store.keys[mine][1] <= time.monotonic() + TTL_S, "expires with the lease TTL"
    del store.keys[KEY]
    await asyncio.wait_for(acquiring, 2)
    assert store.get(mine) is None, "withdrawn once it holds the lease"


async def test_a_standby_key_that_cannot_be_written_does_not_stop_the_wait() -> None:
    store = MemoryStore()
    store.put(KEY, other(), 300)

    async def refuse(key: str, value: bytes, ttl_ms: int) -> None:
        raise ResponseError("NOPERM this user has no permissions to run the 'set' command")

    store.standby_announce = refuse  # type: ignore[method-assign]
    await asyncio.wait_for(keeper(store).acquire(), 2)


async def test_a_standby_takes_over_when_the_lease_expires() -> None:
    store = MemoryStore()
    store.put(KEY, other(), 200)
    started = time.monotonic()
    await asyncio.wait_for(keeper(store).acquire(), 2)
    assert 0.15 < time.monotonic() - started < 0.2 + TTL_S


async def test_losing_the_lease_stops_the_writer_gate_and_the_keeper() -> None:
    store = MemoryStore()
    lease = keeper(store)
    await lease.acquire()
    keeping = asyncio.create_task(lease.keep())
    await lease.ready()
    store.put(KEY, other(), 10_000)  # another producer took it (e.g. after a long pause)
    with pytest.raises(FencedError, match="lost the lease md:binance:lease to elsewhere"):
        await asyncio.wait_for(keeping, 2)
    with pytest.raises(FencedError, match="not writing"):
        await lease.ready()
    await lease.release()
    assert store.get(KEY) == other()  # not ours: left alone


async def test_after_a_link_failure_writes_wait_for_a_confirming_renew() -> None:
    store = MemoryStore()
    lease = keeper(store)
    await lease.acquire()
    keeping = asyncio.create_task(lease.keep())
    try:
        store.down = True
        lease.suspect()
        ready = asyncio.create_task(lease.ready())
        await asyncio.sleep(TTL_S)
        assert not ready.done()
        store.down = False
        await asyncio.wait_for(ready, 2)
    finally:
        keeping.cancel()


async def test_a_lease_that_vanished_is_taken_back() -> None:
    store = MemoryStore()
    lease = keeper(store)
    await lease.acquire()
    keeping = asyncio.create_task(lease.keep())
    try:
        store.keys.clear()  # Redis restarted empty
        await wait_until(lambda: store.get(KEY) is not None, timeout_s=2, what="taken back")
        await lease.ready()
    finally:
        keeping.cancel()


async def test_a_run_change_racing_a_renew_is_not_mistaken_for_a_loss() -> None:
    store = MemoryStore()
    lease = keeper(store)
    await lease.acquire()
    lease.suspect()
    keeping = asyncio.create_task(lease.keep())
    try:
        await asyncio.gather(lease.set_run(5), lease.ready(), lease.set_run(6))
        assert describe(store.get(KEY) or b"") == "here/2/ef01 (run 6)"
    finally:
        keeping.cancel()


async def test_release_deletes_only_our_own_lease() -> None:
    store = MemoryStore()
    lease = keeper(store)
    await lease.acquire()
    await lease.release()
    assert store.get(KEY) is None
