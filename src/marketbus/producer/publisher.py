"""The writer: stamps run/seq, encodes once, and writes pipelined batches to Redis.

Watch loops call `Publisher.submit` (never blocks, never awaits); the single writer
task (`Publisher.run`) takes batches out of the `Outbox`, stamps and encodes each
message once, and hands the batch to the `Transport`. While Redis is unreachable the
writer retries the same stamped batch with backoff and the outbox absorbs new data
by its policy (conflate state, bound history, count drops); dropped seq ranges are
announced as ``gap`` status events once the writer gets going again.

With a `LeaseKeeper` the writer asks it before every attempt whether it may write
(`LeaseKeeper.ready`), tells it when the Redis link failed (the lease must then be
confirmed again), and stops with FencedError when the lease is lost. Each written
message's latency (ccxt handed it over -> Redis acknowledged it) goes into `latency`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence

import msgspec
from redis.exceptions import BusyLoadingError, ReadOnlyError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from marketbus.producer.lease import LeaseKeeper
from marketbus.producer.outbox import Entry, Outbox
from marketbus.producer.sequencing import Sequencer, entry_id, parse_entry_id
from marketbus.producer.stats import FeedCounters, LatencyHistogram
from marketbus.producer.transport import Outgoing, Transport
from marketbus.shared.backoff import BackoffState
from marketbus.shared.codecs import Encoding, encoder_for
from marketbus.shared.config import StreamCaps
from marketbus.shared.errors import FencedError
from marketbus.shared.names import Feed, is_status_name, status_name
from marketbus.shared.schema import Message, Status

__all__ = ["RETRYABLE", "FeedCounters", "Publisher"]

log = logging.getLogger(__name__)

RETRYABLE = (RedisConnectionError, RedisTimeoutError, OSError)
"""Link failures: retry the batch (BusyLoadingError, i.e. LOADING, is a ConnectionError)."""

STALE_CONNECTION_RETRIES = 2
"""Failures retried at once, unlogged, while the link was healthy: after a Redis restart
each idle pooled connection fails once on first use."""

QUIET_GATE_S = 0.5
"""After a link failure, how long the lease may take to be confirmed before the writer
counts as failed (a restart's stale pooled connections are confirmed within ms)."""

_ID_TOO_SMALL = "equal or smaller than the target stream top item"


class Publisher:
    """Owns the outbox, the sequencer and the writer task of one producer run."""

    def __init__(
        self,
        transport: Transport,
        *,
        namespace: str,
        run: int,
        encoding: Encoding,
        caps: StreamCaps,
        batch_size: int,
        queue_max_messages: int,
        backoff: BackoffState,
        counters: Callable[[str], FeedCounters],
        lease: LeaseKeeper | None = None,
    ) -> None:
        self._transport = transport
        self._ns = namespace
        self._caps = caps
        self._maxlen: dict[str, int] = {}
        self._encoder = encoder_for(encoding)
        self._batch_size = batch_size
        self._backoff = backoff
        self._counters = counters
        self._lease = lease
        self.sequencer = Sequencer(run)
        self.outbox = Outbox(queue_max_messages)
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._dropping: set[str] = set()
        self.redis_ok = True
        self.batches = 0
        self.latency = LatencyHistogram()

    @property
    def run_id(self) -> int:
        return self.sequencer.run

    def submit(self, feed: str, message: Message) -> None:
        """Queue *message* for *feed*; returns at once (see `Outbox` for the policy)."""
        if not self.outbox.put(feed, message):
            self._counters(feed).dropped += 1
            if feed not in self._dropping:
                self._dropping.add(feed)
                log.warning(
                    "dropping %s messages: writer backlog reached queue_max_messages=%d "
                    "(Redis slow or down); the gap will be announced on the status stream",
                    feed,
                    self.outbox.capacity,
                )
        self._idle.clear()
        self._wake.set()

    async def run(self) -> None:
        """The writer task: runs until cancelled; raises FencedError on an ID collision."""
        while True:
            if not self.outbox:
                self._idle.set()
                self._wake.clear()
                await self._wake.wait()
                continue
            entries = self.outbox.take(self._batch_size)
            await self._write(self._stamp(entries), entries)

    async def flush(self, timeout_s: float) -> bool:
        """Wait until everything queued is written, announcing pending drops; False on timeout."""
        try:
            async with asyncio.timeout(timeout_s):
                await self._idle.wait()
                for feed, count in self.outbox.take_pending_skips().items():
                    first = self.sequencer.reserve(feed, count)
                    self.submit(self._status_feed_of(feed), self._gap(feed, first, count))
                await asyncio.sleep(0)
                await self._idle.wait()
        except TimeoutError:
            return False
        return True

    def _status_feed_of(self, feed: str) -> str:
        exchange = feed.split(":", 2)[1]
        return status_name(self._ns, exchange)

    def _gap(self, feed: str, first: int, count: int) -> Status:
        last = first + count - 1
        return Status(
            exchange=feed.split(":", 2)[1],
            ts_ms=None,
            recv_ns=time.time_ns(),
            event="gap",
            feed=feed,
            detail=(
                f"dropped {count} message(s) of {feed}: seq {first}..{last} of run "
                f"{self.sequencer.run} (writer backlog over queue_max_messages while Redis "
                "was slow or unreachable)"
            ),
        )

    def _stamp(self, entries: list[Entry]) -> list[Outgoing]:
        """Run/seq and encoding for *entries*, in order. A message after drops is preceded
        by the ``gap`` event announcing them; seqs are taken in write order, so even when
        the dropped feed is the status feed itself its stream IDs only go up."""
        run = self.sequencer.run
        out: list[Outgoing] = []
        for entry in entries:
            if entry.skip:
                self._dropping.discard(entry.feed)
                first = self.sequencer.reserve(entry.feed, entry.skip)
                gap = self._gap(entry.feed, first, entry.skip)
                out.append(self._outgoing(self._status_feed_of(entry.feed), gap, True, run))
            out.append(self._outgoing(entry.feed, entry.message, entry.stream, run))
        return out

    def _outgoing(
        self, feed: str, message: Message, stream: bool, run: int, seq: int | None = None
    ) -> Outgoing:
        if seq is None:
            seq = self.sequencer.next(feed)
        payload = self._encoder.encode(msgspec.structs.replace(message, run=run, seq=seq))
        return Outgoing(
            feed, payload, feed if stream else None, entry_id(run, seq), self._cap(feed)
        )

    def _cap(self, feed: str) -> int:
        cap = self._maxlen.get(feed)
        if cap is None:
            kind = "status" if is_status_name(feed) else Feed.parse(feed).kind
            cap = self._maxlen[feed] = self._caps.for_kind(kind)
        return cap

    async def _write(self, batch: list[Outgoing], entries: Sequence[Entry] = ()) -> None:
        """Write *batch* until Redis takes it; only FencedError or cancellation end it."""
        quiet = 0
        failure: str | None = None
        while True:
            await self._gate(failure)
            try:
                errors = await self._transport.write(batch)
            except RETRYABLE as exc:
                failure = f"{type(exc).__name__}: {exc}"
                if self._lease is not None:
                    self._lease.suspect()  # Redis may have restarted: confirm the lease first
                if self.redis_ok and quiet < STALE_CONNECTION_RETRIES:
                    quiet += 1  # a pooled connection Redis closed while idle: retry at once
                    continue
                await self._failed(failure)
                continue
            transient = next(
                (e for e in errors if isinstance(e, ReadOnlyError | BusyLoadingError)), None
            )
            if transient is not None:
                # Failover (READONLY: we reached a replica) or a restart (LOADING): retry.
                await self._failed(f"{type(transient).__name__}: {transient}")
                continue
            break
        if not self.redis_ok:
            self.redis_ok = True
            self._backoff.success(time.monotonic())
            log.warning("Redis writes work again; continuing run %d", self.sequencer.run)
        self.batches += 1
        now_ns = time.time_ns()
        now_ms = now_ns // 1_000_000
        observe = self.latency.observe
        for entry in entries:
            observe((now_ns - entry.message.recv_ns) / 1e9)
        for item, error in zip(batch, errors, strict=True):
            counters = self._counters(item.channel)
            if error is not None:
                if _ID_TOO_SMALL not in str(error):
                    counters.errors += 1
                    log.error("XADD %s %s failed: %s", item.stream, item.entry_id, error)
                    continue
                assert item.stream is not None
                top_run = await self._top_run(item.stream)
                if top_run != self.sequencer.run:
                    raise FencedError(
                        f"XADD {item.stream} {item.entry_id} was refused ({error}): another "
                        f"producer writes this feed with run {top_run}, newer than ours. Run "
                        "one producer per exchange: a second one waits as standby."
                    )
                # Our own entry: an earlier attempt at this batch got in, its reply did not.
            counters.published += 1
            counters.last_message_ms = now_ms

    async def _top_run(self, stream: str) -> int | None:
        """The run of *stream*'s newest entry (tells our earlier attempt from a rival)."""
        while True:
            try:
                last = await self._transport.last_entry(stream)
            except RETRYABLE as exc:
                await self._failed(f"{type(exc).__name__}: {exc}")
                continue
            return None if last is None else parse_entry_id(last[0])[0]

    async def _gate(self, failure: str | None) -> None:
        """Wait until the lease lets us write. After a link *failure* a gate that stays
        shut (the lease cannot be confirmed: Redis is down) counts as the writer failing."""
        lease = self._lease
        if lease is None:
            return
        if failure is not None and self.redis_ok and not lease.valid():
            try:
                async with asyncio.timeout(QUIET_GATE_S):
                    await lease.ready()
                return
            except TimeoutError:
                self._down(failure)
        await lease.ready()

    def _down(self, why: str) -> None:
        if self.redis_ok:
            self.redis_ok = False
            log.error(
                "Redis write failed (%s); retrying with backoff, buffering up to %d messages",
                why,
                self.outbox.capacity,
            )

    async def _failed(self, why: str) -> None:
        self._down(why)
        await asyncio.sleep(self._backoff.failure())
