"""The writer: stamps run/seq, encodes once, and writes pipelined batches to Redis.

Watch loops call `Publisher.submit` (never blocks, never awaits); the single writer
task (`Publisher.run`) takes batches out of the `Outbox`, stamps and encodes each
message once, and hands the batch to the `Transport`. While Redis is unreachable the
writer retries the same stamped batch with backoff and the outbox absorbs new data
by its policy (conflate state, bound history, count drops); dropped seq ranges are
announced as ``gap`` status events once the writer gets going again.

Up to `IN_FLIGHT` batches are on the wire at once: the writer stamps and sends the
next batch while Redis works on the previous one, then settles them in order. When the
link fails, every batch in flight is written again, oldest first, one at a time, so
stream IDs still only go up and nothing is counted before Redis acknowledged it.

With a `LeaseKeeper` the writer asks it before every attempt whether it may write
(`LeaseKeeper.ready`), tells it when the Redis link failed (the lease must then be
confirmed again), and stops with FencedError when the lease is lost or another
producer's message tops a stream; a foreign entry there (``XADD feed '*' d x``) moves
the producer to a new run instead (docs/operations.md). Each written
message's latency (ccxt handed it over -> Redis acknowledged it) goes into `latency`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable, Sequence

import msgspec
from redis.exceptions import BusyLoadingError, ReadOnlyError, ResponseError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from marketbus.producer.lease import LeaseKeeper
from marketbus.producer.outbox import Entry, Outbox
from marketbus.producer.sequencing import Sequencer, Top, classify_top
from marketbus.producer.stats import FeedCounters, LatencyHistogram
from marketbus.producer.transport import Outgoing, Receipt, ReplyErrors, Tail, Transport
from marketbus.shared.backoff import BackoffState
from marketbus.shared.codecs import Encoding, decode, encoder_for
from marketbus.shared.config import StreamCaps
from marketbus.shared.errors import FencedError
from marketbus.shared.names import (
    Feed,
    entry_id,
    exchange_of,
    is_status_name,
    parse_entry_id,
    status_name,
)
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

IN_FLIGHT = 2
"""Batches sent but not yet acknowledged: two keep Python and Redis busy at once."""

_ID_TOO_SMALL = "equal or smaller than the target stream top item"


class _Flight:
    """A stamped batch, the entries it came from, and its receipt once sent."""

    __slots__ = ("batch", "entries", "receipt")

    def __init__(self, batch: list[Outgoing], entries: list[Entry]) -> None:
        self.batch = batch
        self.entries = entries
        self.receipt: Receipt | None = None


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
        self._feed_counters: dict[str, FeedCounters] = {}
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
        self.foreign: dict[str, int] = {}
        """Foreign entries found above ours, per stream (one per refused XADD)."""
        self.rewritten: dict[str, int] = {}
        """Messages written again in a later run after a foreign entry refused them, per
        feed. Their first copy went out live: a reader that applied it sees them twice."""
        self._blocked: set[str] = set()
        """Streams whose top entry is from the future: they refuse us until deleted."""

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
        flights: deque[_Flight] = deque()
        while True:
            if self.outbox and len(flights) < IN_FLIGHT:
                entries = self.outbox.take(self._batch_size)
                flight = _Flight(self._stamp(entries), entries)
                flights.append(flight)
                await self._gate(None)
                try:
                    flight.receipt = await self._transport.send(flight.batch)
                except RETRYABLE as exc:
                    await self._write_again(flights, exc)
                continue
            if flights:
                flight = flights[0]
                assert flight.receipt is not None
                try:
                    errors = await flight.receipt.confirm()
                except RETRYABLE as exc:
                    await self._write_again(flights, exc)
                    continue
                transient = _transient(errors)
                if transient is not None:
                    await self._failed(f"{type(transient).__name__}: {transient}")
                    await self._write_again(flights, None)
                    continue
                flights.popleft()
                await self._settle(flight.batch, flight.entries, errors)
                continue
            self._idle.set()
            self._wake.clear()
            await self._wake.wait()

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
        return status_name(self._ns, exchange_of(feed))

    def _gap(self, feed: str, first: int, count: int) -> Status:
        last = first + count - 1
        return Status(
            exchange=exchange_of(feed),
            ts_ms=None,
            recv_ns=time.time_ns(),
            event="gap",
            feed=feed,
            first_seq=first,
            last_seq=last,
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
        next_seq = self.sequencer.next
        encode = self._encoder.encode
        replace = msgspec.structs.replace
        caps = self._maxlen
        out: list[Outgoing] = []
        for entry in entries:
            feed = entry.feed
            if entry.skip:
                self._dropping.discard(feed)
                first = self.sequencer.reserve(feed, entry.skip)
                out.append(
                    self._outgoing(self._status_feed_of(feed), self._gap(feed, first, entry.skip))
                )
            seq = next_seq(feed)
            out.append(
                Outgoing(
                    feed,
                    encode(replace(entry.message, run=run, seq=seq)),
                    feed if entry.stream else None,
                    f"{run}-{seq}",
                    caps.get(feed) or self._cap(feed),
                )
            )
        return out

    def _outgoing(self, feed: str, message: Message) -> Outgoing:
        """One stored message (a status event) stamped with the feed's next seq."""
        run = self.sequencer.run
        seq = self.sequencer.next(feed)
        payload = self._encoder.encode(msgspec.structs.replace(message, run=run, seq=seq))
        return Outgoing(feed, payload, feed, entry_id(run, seq), self._cap(feed))

    def _cap(self, feed: str) -> int:
        cap = self._maxlen.get(feed)
        if cap is None:
            kind = "status" if is_status_name(feed) else Feed.parse(feed).kind
            cap = self._maxlen[feed] = self._caps.for_kind(kind)
        return cap

    async def _write_again(self, flights: deque[_Flight], exc: Exception | None) -> None:
        """The link failed (*exc*) or Redis answered READONLY/LOADING with batches in
        flight: write each of them again, oldest first, one at a time."""
        failure = None if exc is None else f"{type(exc).__name__}: {exc}"
        if failure is not None and self._lease is not None:
            self._lease.suspect()  # Redis may have restarted: confirm the lease first
        while flights:
            flight = flights[0]
            await self._write(flight.batch, flight.entries, failure)
            flights.popleft()
            failure = None

    async def _write(
        self, batch: list[Outgoing], entries: Sequence[Entry] = (), failure: str | None = None
    ) -> None:
        """Write *batch* until Redis takes it; only FencedError or cancellation end it.
        *failure*: why the previous attempt at it failed, if there was one."""
        quiet = 0 if failure is None else 1
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
            transient = _transient(errors)
            if transient is not None:
                # Failover (READONLY: we reached a replica) or a restart (LOADING): retry.
                await self._failed(f"{type(transient).__name__}: {transient}")
                continue
            break
        await self._settle(batch, entries, errors)

    async def _settle(
        self, batch: list[Outgoing], entries: Sequence[Entry], errors: ReplyErrors
    ) -> None:
        """Count what Redis acknowledged; an XADD refused for its ID is our own earlier
        attempt (fine), a newer producer's run (FencedError) or a foreign entry (see
        `_refused`)."""
        if not self.redis_ok:
            self.redis_ok = True
            self._backoff.success(time.monotonic())
            log.warning("Redis writes work again; continuing run %d", self.sequencer.run)
        self.batches += 1
        now_ns = time.time_ns()
        now_ms = now_ns // 1_000_000
        self.latency.observe_many([(now_ns - entry.message.recv_ns) / 1e9 for entry in entries])
        known = self._feed_counters
        blocked = self._blocked
        for item, error in zip(batch, errors, strict=True):
            counters = known.get(item.channel)
            if counters is None:
                counters = known[item.channel] = self._counters(item.channel)
            if error is not None:
                if _ID_TOO_SMALL not in str(error):
                    counters.errors += 1
                    log.error("XADD %s %s failed: %s", item.stream, item.entry_id, error)
                    continue
                assert item.stream is not None
                if not await self._refused(item, counters):
                    continue
                # Our own entry: an earlier attempt at this batch got in, its reply did not.
            elif blocked and item.stream in blocked:
                blocked.discard(item.stream)
                log.warning("%s takes our entries again (%s)", item.stream, item.entry_id)
            counters.published += 1
            counters.last_message_ms = now_ms

    async def _refused(self, item: Outgoing, counters: FeedCounters) -> bool:
        """Redis refused *item*'s ID: the stream's top entry is at or above it. True when
        that top entry is *item* itself (an earlier attempt got in, its reply did not).

        A real message of a later run is another producer: FencedError. Anything else
        above us is foreign (counted in `foreign`, announced): we move the whole producer
        to a run above it and write *item* again; one too far in the future blocks the
        stream (its messages are counted as dropped) until an operator deletes it."""
        stream = item.stream
        assert stream is not None
        if stream in self._blocked:
            counters.dropped += 1
            return False
        run = parse_entry_id(item.entry_id)[0]
        if run < self.sequencer.run:  # stamped before we moved past a foreign entry
            await self._write([self._restamped(item)])
            return False
        top = await self._top(stream)
        if top is None:  # the stream was deleted meanwhile: it takes any ID again
            await self._write([self._restamped(item)])
            return False
        now_ms = time.time_ns() // 1_000_000
        verdict = classify_top(
            stream,
            top[0],
            top[1],
            run=run,
            next_seq=self.sequencer.peek(stream),
            now_ms=now_ms,
        )
        if verdict is Top.OURS:
            if await self._landed(stream, item.entry_id):
                return True
            self._lost_behind(item, counters)
            return False
        top_id = top[0].decode(errors="replace")
        if verdict is Top.RIVAL:
            raise FencedError(
                f"XADD {stream} {item.entry_id} was refused: another producer writes this "
                f"feed with run {parse_entry_id(top[0])[0]}, newer than ours (its entry "
                f"{top_id} is a message of this feed). Run one producer per exchange: a "
                "second one waits as standby."
            )
        counters.errors += 1
        if verdict is Top.FUTURE:
            counters.dropped += 1
            self.block(stream, top_id)
            return False
        new_run = max(now_ms, parse_entry_id(top[0])[0] + 1)
        if new_run > self.sequencer.run:
            await self._new_run(new_run)
        self.foreign[stream] = self.foreign.get(stream, 0) + 1
        self._announce(
            stream,
            f"{stream} holds a foreign entry {top_id} above our {item.entry_id}: not a "
            f"producer's message; writing on in run {self.sequencer.run}",
        )
        await self._write([self._restamped(item)])
        return False

    def block(self, stream: str, top_id: str) -> None:
        """*stream*'s top entry *top_id* is from the future (seen at start-up): announce
        it; its messages are dropped and counted until an operator deletes the stream."""
        self._blocked.add(stream)
        self.foreign[stream] = self.foreign.get(stream, 0) + 1
        self._announce(
            stream,
            f"{stream} holds a foreign entry {top_id} from the future: Redis refuses our "
            f"entries (run {self.sequencer.run}) there, so its messages are dropped until an "
            f"operator deletes the stream (DEL {stream}); other feeds carry on",
        )

    def _restamped(self, item: Outgoing) -> Outgoing:
        """*item* stamped again with the current run and its feed's next seq."""
        self.rewritten[item.channel] = self.rewritten.get(item.channel, 0) + 1
        return self._outgoing(item.channel, decode(item.payload))

    async def _new_run(self, run: int) -> None:
        """Move every feed to *run* (seqs restart at 1; readers follow a new run)."""
        log.warning(
            "moving from run %d to run %d past a foreign stream entry", self.sequencer.run, run
        )
        self.sequencer = Sequencer(run)
        if self._lease is not None:
            await self._lease.set_run(run)

    def _announce(self, stream: str, detail: str) -> None:
        """An ``error`` status event naming *stream* (logged too)."""
        log.error("%s", detail)
        feed = self._status_feed_of(stream)
        self.submit(
            feed,
            Status(
                exchange=exchange_of(stream),
                ts_ms=None,
                recv_ns=time.time_ns(),
                event="error",
                feed=stream,
                detail=detail,
            ),
        )

    async def _landed(self, stream: str, entry_id: str) -> bool:
        """Whether our refused entry is in the stream (an earlier attempt got in)."""
        while True:
            try:
                return await self._transport.has_entry(stream, entry_id)
            except RETRYABLE as exc:
                await self._failed(f"{type(exc).__name__}: {exc}")

    def _lost_behind(self, item: Outgoing, counters: FeedCounters) -> None:
        """A later entry of ours reached the stream before *item* (a batch in flight got
        in while an earlier one was refused, e.g. by a replica promoted in between): the
        stream cannot take it any more. Counted and announced as a ``gap``, never hidden."""
        run, seq = parse_entry_id(item.entry_id)
        counters.errors += 1
        counters.dropped += 1
        detail = (
            f"lost 1 message of {item.channel}: seq {seq}..{seq} of run {run} (a later "
            "message of the feed reached the stream first, so Redis refused it)"
        )
        log.error("%s", detail)
        gap = msgspec.structs.replace(self._gap(item.channel, seq, 1), detail=detail)
        self.submit(self._status_feed_of(item.channel), gap)

    async def _top(self, stream: str) -> Tail | None:
        """*stream*'s newest entry (tells our earlier attempt from a rival or a stranger)."""
        while True:
            try:
                return await self._transport.last_entry(stream)
            except RETRYABLE as exc:
                await self._failed(f"{type(exc).__name__}: {exc}")

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


def _transient(errors: ReplyErrors) -> ResponseError | None:
    """The first READONLY (failover: we reached a replica) or LOADING (restart) reply."""
    for error in errors:
        if error is not None and isinstance(error, ReadOnlyError | BusyLoadingError):
            return error
    return None
