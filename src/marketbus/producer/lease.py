"""Fencing: one producer writes an exchange's feeds; a second one waits as hot standby.

The lease is the string key ``{ns}:{exchange}:lease`` (`lease_key`) whose value names
the holder: JSON ``{"holder": "<host>/<pid>/<random>", "run": <run or null>,
"since_ms": <epoch ms>}`` (readable with ``GET`` in redis-cli).

- **Acquire**: ``SET key value NX PX ttl``. If another producer holds it, either wait
  as hot standby (markets already loaded) and try again every ``ttl / 5`` until its
  lease expires, or raise `FencedError` naming the holder (``on_conflict = "exit"``).
- **Renew** every ``ttl / 3`` with a compare-and-renew script: still ours -> ``PX ttl``
  again; gone (it expired while Redis was unreachable, or Redis restarted empty) ->
  taken back, nobody else holds it; someone else's -> **lost**: `FencedError`, and the
  writer stops before its next batch.
- **Writer gate** (`LeaseKeeper.ready`, before every batch): every lease must be valid
  by this process's own clock, i.e. renewed less than ``0.9 x ttl`` ago counted from
  when the renew was *sent*; Redis expires the key later than that, so a leader that
  cannot renew (partitioned, paused) stops writing before a standby can take over.
  After any Redis link failure the lease must be confirmed by a renew before writing
  resumes, so a leader never writes into a Redis that restarted and handed the lease
  to its standby.
- **Release** on a clean stop (compare-and-delete), so a standby takes over at once.

Even in the window the gate cannot close (a batch already on the wire) the streams stay
fenced: the new leader's run is larger than every run in them, so an old leader's XADD
is refused and it stops with FencedError.

`LeaseState` and the value codec are pure; `LeaseKeeper` is the asyncio shell and only
talks to Redis through a `LeaseStore`.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import socket
import time
from collections.abc import Callable, Iterable
from typing import Final, Literal, Protocol

import msgspec
from redis.exceptions import RedisError

from marketbus.shared.errors import FencedError
from marketbus.shared.names import lease_key, standby_key

log = logging.getLogger(__name__)

VALID_FRACTION: Final = 0.9
"""A lease counts as ours for this fraction of its TTL after the renew was sent."""
RENEW_FRACTION: Final = 1 / 3
"""Renew this often (fraction of the TTL): two renews may fail before it lapses."""
POLL_FRACTION: Final = 1 / 5
"""A standby tries to take the lease this often (fraction of the TTL, at most 1 s)."""

Renewal = Literal["renewed", "reacquired"]


class LeaseValue(msgspec.Struct, frozen=True, kw_only=True):
    """What the lease key holds."""

    holder: str
    run: int | None = None
    since_ms: int


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(LeaseValue)


def new_holder_id() -> str:
    """A producer instance id unique across hosts and restarts: ``host/pid/random``."""
    return f"{socket.gethostname()}/{os.getpid()}/{secrets.token_hex(4)}"


def encode_value(value: LeaseValue) -> bytes:
    return _encoder.encode(value)


def describe(raw: bytes) -> str:
    """A holder as people read it: ``host/pid/abcd (run 1700000000000)``."""
    try:
        value = _decoder.decode(raw)
    except msgspec.DecodeError:
        return repr(raw[:120])
    run = "starting" if value.run is None else f"run {value.run}"
    return f"{value.holder} ({run})"


class LeaseStore(Protocol):
    """The Redis commands a lease needs (`lease_store.RedisLeaseStore` implements them)."""

    async def lease_acquire(self, key: str, value: bytes, ttl_ms: int) -> bytes | None:
        """``SET key value NX PX ttl_ms``: None if set, else the current holder's value."""
        ...

    async def lease_renew(
        self, key: str, expected: bytes, value: bytes, ttl_ms: int
    ) -> Renewal | bytes:
        """If *key* holds *expected* (or nothing), set *value* with ``PX ttl_ms``;
        else return the value it holds."""
        ...

    async def lease_release(self, key: str, value: bytes) -> bool:
        """Delete *key* if it holds *value*."""
        ...

    async def standby_announce(self, key: str, value: bytes, ttl_ms: int) -> None:
        """``SET key value PX ttl_ms``: this producer waits as standby (see `standby_key`)."""
        ...

    async def standby_withdraw(self, key: str) -> None:
        """``DEL key``: no longer waiting."""
        ...


class LeaseState:
    """One exchange's lease as this process sees it (pure: callers pass the time)."""

    __slots__ = ("confirmed", "exchange", "key", "lost", "ttl_s", "valid_until", "value")

    def __init__(self, key: str, exchange: str, ttl_s: float) -> None:
        self.key = key
        self.exchange = exchange
        self.ttl_s = ttl_s
        self.value: bytes | None = None
        self.valid_until = float("-inf")
        self.confirmed = False
        self.lost: str | None = None

    def granted(self, value: bytes, sent_at: float) -> None:
        """Redis set *value* for us by a command sent at monotonic *sent_at*."""
        self.value = value
        self.valid_until = sent_at + VALID_FRACTION * self.ttl_s
        self.confirmed = True

    def valid(self, now: float) -> bool:
        """Whether this process may write under the lease at monotonic *now*."""
        return self.lost is None and self.confirmed and now < self.valid_until

    def lose(self, holder: str) -> FencedError:
        self.lost = holder
        self.value = None
        return FencedError(
            f"lost the lease {self.key} to {holder}: another producer now writes "
            f"{self.exchange}; this one stopped writing"
        )


class LeaseKeeper:
    """Acquires, renews and releases the leases of one producer's exchanges."""

    def __init__(
        self,
        store: LeaseStore,
        namespace: str,
        exchanges: Iterable[str],
        *,
        ttl_s: float,
        on_conflict: Literal["standby", "exit"],
        holder: str | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self.holder = holder or new_holder_id()
        self.on_conflict = on_conflict
        self.ttl_s = ttl_s
        self.ttl_ms = max(1, int(ttl_s * 1000))
        self.renew_s = ttl_s * RENEW_FRACTION
        self.poll_s = min(1.0, ttl_s * POLL_FRACTION)
        self._clock = clock
        self.leases = [LeaseState(lease_key(namespace, ex), ex, ttl_s) for ex in sorted(exchanges)]
        self._standby_keys = {
            lease.exchange: standby_key(namespace, lease.exchange, self.holder)
            for lease in self.leases
        }
        self.run: int | None = None
        self.since_ms = time.time_ns() // 1_000_000
        self.previous: dict[str, str] = {}
        """Per exchange: the holder this producer waited for as standby."""
        self._wake = asyncio.Event()
        self._changed = asyncio.Event()
        self._lock = asyncio.Lock()
        self._failing = False

    @property
    def value(self) -> bytes:
        return encode_value(LeaseValue(holder=self.holder, run=self.run, since_ms=self.since_ms))

    # -- acquiring ---------------------------------------------------------------------

    async def acquire(self) -> None:
        """Hold every lease: at once, after standing by, or FencedError (exit mode).

        Leases are taken in exchange order, so two producers of overlapping exchange
        sets cannot each hold one the other waits for.
        """
        announced: dict[str, bytes] = {}
        standing_by: set[str] = set()
        while True:
            waiting = False
            for lease in self.leases:
                try:
                    if lease.value is not None:
                        await self._renew(lease)  # keep what we hold while waiting for the rest
                        continue
                    sent = self._clock()
                    value = self.value
                    holder = await self.store.lease_acquire(lease.key, value, self.ttl_ms)
                except FencedError:
                    waiting = True  # someone took a lease we held: wait for it again
                    lease.lost = None
                    continue
                except (RedisError, OSError) as exc:
                    self._link_failed(f"{type(exc).__name__}: {exc}")
                    waiting = True
                    continue
                self._link_ok()
                if holder is None:
                    lease.granted(value, sent)
                    log.info(
                        "%s: holding the lease %s as %s", lease.exchange, lease.key, self.holder
                    )
                    continue
                who = describe(holder)
                if self.on_conflict == "exit":
                    raise FencedError(
                        f"{lease.key} is held by {who}: another producer already runs "
                        f"{lease.exchange} (producer.on_conflict = 'exit'; set it to "
                        "'standby' to wait and take over when that producer stops)"
                    )
                waiting = True
                self.previous[lease.exchange] = who
                standing_by.add(lease.exchange)
                await self._stand_by(lease.exchange, value)
                if announced.get(lease.exchange) != holder:
                    announced[lease.exchange] = holder
                    log.warning(
                        "%s: standing by: the lease %s is held by %s; taking over when it "
                        "expires (lease_ttl_s=%g) or is released",
                        lease.exchange,
                        lease.key,
                        who,
                        self.ttl_s,
                    )
            if not waiting:
                for exchange in standing_by:
                    await self._stand_by(exchange, None)
                return
            await asyncio.sleep(self.poll_s)

    async def _stand_by(self, exchange: str, value: bytes | None) -> None:
        """Show (*value*) or withdraw (None) this producer's standby key for *exchange*, so
        ``marketbus status`` lists it. Best effort: the lease, not this key, decides."""
        key = self._standby_keys[exchange]
        try:
            if value is None:
                await self.store.standby_withdraw(key)
            else:
                await self.store.standby_announce(key, value, self.ttl_ms)
        except (RedisError, OSError) as exc:
            log.debug("%s: standby key %s not updated: %s", exchange, key, exc)

    async def set_run(self, run: int) -> None:
        """Write this producer's run into every lease value (FencedError if lost)."""
        self.run = run
        for lease in self.leases:
            await self._renew(lease)

    # -- holding -------------------------------------------------------------------------

    async def keep(self) -> None:
        """Renew every lease until cancelled; FencedError as soon as one is lost."""
        while True:
            interval = min(self.renew_s, 0.1) if self._failing else self.renew_s
            try:
                async with asyncio.timeout(interval):
                    await self._wake.wait()
            except TimeoutError:
                pass
            self._wake.clear()
            try:
                for lease in self.leases:
                    await self._renew(lease)
            except (RedisError, OSError) as exc:
                self._link_failed(f"{type(exc).__name__}: {exc}")
            else:
                self._link_ok()
            finally:
                self._changed.set()

    def valid(self) -> bool:
        now = self._clock()
        return all(lease.valid(now) for lease in self.leases)

    async def ready(self) -> None:
        """Return when the writer may write; FencedError if a lease was lost."""
        while True:
            now = self._clock()
            ok = True
            for lease in self.leases:
                if lease.lost is not None:
                    raise FencedError(
                        f"the lease {lease.key} was lost to {lease.lost}: not writing"
                    )
                ok = ok and lease.valid(now)
            if ok:
                return
            self._changed.clear()
            self._wake.set()
            await self._changed.wait()

    def suspect(self) -> None:
        """The Redis link failed: confirm the leases before writing again."""
        for lease in self.leases:
            lease.confirmed = False
        self._wake.set()

    async def release(self) -> None:
        """Give the leases back (clean stop) so a standby takes over at once."""
        for lease in self.leases:
            if lease.value is None or lease.lost is not None:
                continue
            try:
                if await self.store.lease_release(lease.key, lease.value):
                    log.info("%s: released the lease %s", lease.exchange, lease.key)
            except (RedisError, OSError) as exc:
                log.warning(
                    "%s: could not release the lease %s (it expires in %gs): %s",
                    lease.exchange,
                    lease.key,
                    self.ttl_s,
                    exc,
                )
            lease.value = None

    # -- internals -------------------------------------------------------------------------

    async def _renew(self, lease: LeaseState) -> None:
        async with self._lock:  # each renew compares with the value the previous one set
            if lease.value is None:
                return  # lost or released meanwhile
            sent = self._clock()
            value = self.value
            reply = await self.store.lease_renew(lease.key, lease.value, value, self.ttl_ms)
            if reply == "renewed":
                lease.granted(value, sent)
                return
            if reply == "reacquired":
                lease.granted(value, sent)
                log.warning(
                    "%s: the lease %s had vanished (it expired while Redis was unreachable, "
                    "or Redis restarted empty); nobody else held it, taken back",
                    lease.exchange,
                    lease.key,
                )
                return
            error = lease.lose(describe(reply))
            self._changed.set()
            raise error

    def _link_failed(self, why: str) -> None:
        if not self._failing:
            self._failing = True
            log.error(
                "cannot reach Redis to renew the lease (%s); writes pause once it lapses "
                "(%gs after the last renew)",
                why,
                VALID_FRACTION * self.ttl_s,
            )

    def _link_ok(self) -> None:
        if self._failing:
            self._failing = False
            log.warning("lease renewed again; writes continue")
