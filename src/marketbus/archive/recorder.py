"""`Recorder`: follow streams with XREAD from the archive's positions, write Parquet.

Why XREAD and not the SDK's live delivery: the archive must hold every entry of every
stream exactly once and resume exactly after the last one written. The stream is the
durable record (SPEC "Streams"), and ``XREAD ... STREAMS key {run}-{seq}`` reads it
from any position, in order, with nothing conflated; the SDK instead keeps buffers warm
(backfill of the newest entries, state feeds conflated to the newest), which is the
right thing for a strategy and the wrong one for an archive. The recorder still follows
the wire contract through `marketbus.shared` (names, codecs, entry IDs) and reports
what it could not get back as the SDK does (`Gap`-like rows, same reasons).

The loop: discover matching streams (SCAN ... TYPE stream), XREAD them in groups from
the last consumed entry, turn entries into rows (`RowBuilder`), check continuity
(`continuity.hole`), and write what `FlushPolicy` says is due (`ArchiveWriter`). When
Redis is unreachable the recorder keeps its buffers, retries with backoff, says so once,
and resumes every stream from its last consumed entry; what the cap evicted meanwhile
becomes ``evicted`` gap rows.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import msgspec
import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from marketbus.archive.batches import FlushPolicy, StreamBatch
from marketbus.archive.continuity import Position, hole, producer_gap
from marketbus.archive.manifest import Rename
from marketbus.archive.options import RecordOptions
from marketbus.archive.partitions import GAP_KIND, Partition
from marketbus.archive.rows import GapRow, RowBuilder, gap_table, message_type
from marketbus.archive.store import ArchiveWriter
from marketbus.shared.backoff import BackoffState
from marketbus.shared.codecs import decode
from marketbus.shared.config import RedisConfig
from marketbus.shared.connection import client, redact
from marketbus.shared.errors import ConfigError, ContractError
from marketbus.shared.names import STREAM_FIELD_BYTES, Feed, is_status_name, parse_entry_id
from marketbus.shared.schema import Status

log = logging.getLogger(__name__)

_REDIS_DOWN = (RedisConnectionError, RedisTimeoutError, OSError)


class RecorderStats(msgspec.Struct, kw_only=True):
    """Counters since the recorder started."""

    entries: int = 0
    """Stream entries consumed."""
    rows: int = 0
    files: int = 0
    commits: int = 0
    gaps: int = 0
    undecodable: int = 0
    outages: int = 0
    streams: int = 0


class _Stream:
    """One followed stream: its feed (None for a status stream) and its batch."""

    __slots__ = ("batch", "feed", "name", "type", "warned")

    def __init__(self, name: str, feed: Feed | None, durable: Position | None) -> None:
        self.name = name
        self.feed = feed
        self.type = message_type(feed.kind) if feed is not None else Status
        builder = RowBuilder(feed.kind) if feed is not None else None
        self.batch = StreamBatch(name, builder, durable)
        self.warned = False


class Recorder:
    """Records the streams matching ``options.feeds`` into ``options.out``."""

    def __init__(self, redis: RedisConfig, options: RecordOptions) -> None:
        if redis.cluster:
            raise ConfigError("marketbus record reads one Redis server, not a cluster")
        self.redis_config = redis
        self.options = options
        self.stats = RecorderStats()
        self._writer = ArchiveWriter(Path(options.out), options.namespace, fsync=options.fsync)
        self._policy = FlushPolicy(options)
        self._streams: dict[str, _Stream] = {}
        self._stopping = asyncio.Event()
        self._idle = False
        self._next_scan = 0.0

    def stop(self) -> None:
        """Ask `run` to write everything buffered and return."""
        self._stopping.set()

    async def run(self, *, until_idle: bool = False) -> RecorderStats:
        """Record until `stop` (or, with *until_idle*, until a read finds nothing new)."""
        manifest = self._writer.open()
        positions = dict(manifest.positions)
        log.info(
            "recording %s from %s into %s (%d stream positions to resume)",
            ", ".join(self.options.feeds),
            redact(self.redis_config.url),
            self.options.out,
            len(positions),
        )
        backoff = BackoffState(self.options.backoff_initial_s, self.options.backoff_max_s)
        down_since: float | None = None
        try:
            while not self._stopping.is_set():
                redis = client(self.redis_config)
                redis.set_response_callback("XREAD", _raw)
                redis.set_response_callback("XRANGE", _raw)
                try:
                    await redis.ping()
                    if down_since is not None:
                        log.warning(
                            "Redis is back after %.1fs: resuming %d streams from their last "
                            "recorded entries",
                            time.monotonic() - down_since,
                            len(self._streams),
                        )
                        down_since = None
                    self._next_scan = 0.0
                    await self._follow(redis, positions, until_idle)
                except _REDIS_DOWN as exc:
                    if down_since is None:
                        down_since = time.monotonic()
                        self.stats.outages += 1
                        log.error(
                            "Redis at %s unreachable (%s): keeping %d buffered rows and "
                            "retrying; streams resume where they stopped",
                            redact(self.redis_config.url),
                            exc,
                            self._buffered(),
                        )
                    self._flush(self._policy.due(self._batches(), time.monotonic()))
                    await self._sleep(backoff.failure())
                finally:
                    await redis.aclose()
                if until_idle and self._idle:
                    break
        finally:
            self._flush([name for name, s in self._streams.items() if s.batch.pending])
            self._writer.close()
        return self.stats

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)

    def _batches(self) -> dict[str, StreamBatch]:
        return {name: s.batch for name, s in self._streams.items()}

    def _buffered(self) -> int:
        return sum(s.batch.rows for s in self._streams.values())

    async def _follow(
        self, redis: aioredis.Redis, positions: dict[str, Position], until_idle: bool
    ) -> None:
        while not self._stopping.is_set():
            if time.monotonic() >= self._next_scan:
                await self._discover(redis, positions)
                self._next_scan = time.monotonic() + self.options.rescan_s
            got = await self._read_round(redis)
            self._flush(self._policy.due(self._batches(), time.monotonic()))
            if not got:
                self._idle = True
                if until_idle:
                    return
                if len(self._streams) > self._group_size() or not self._streams:
                    await self._sleep(min(self.options.block_ms / 1000, 0.05))

    async def _discover(self, redis: aioredis.Redis, positions: dict[str, Position]) -> None:
        for pattern in self.options.feeds:
            async for raw in redis.scan_iter(match=pattern, count=1000, _type="stream"):
                name = raw.decode() if isinstance(raw, bytes) else str(raw)
                if name in self._streams:
                    continue
                feed = None
                if not is_status_name(name):
                    try:
                        feed = Feed.parse(name)
                    except ContractError as exc:
                        log.warning("not recording stream %r: %s", name, exc)
                        continue
                self._streams[name] = _Stream(name, feed, positions.get(name))
                self.stats.streams += 1
                log.info("recording %s from %s", name, _after(positions.get(name)))

    def _group_size(self) -> int:
        return max(1, self.options.read_entries // self.options.read_count)

    async def _read_round(self, redis: aioredis.Redis) -> int:
        """One XREAD per group of streams; returns the entries consumed."""
        names = sorted(self._streams)
        size = self._group_size()
        block = self.options.block_ms if 0 < len(names) <= size else None
        got = 0
        for start in range(0, len(names), size):
            group = names[start : start + size]
            streams: dict[Any, Any] = {n: _after_id(self._streams[n].batch.last) for n in group}
            reply: Any = await redis.xread(streams, count=self.options.read_count, block=block)
            for raw_name, entries in _stream_replies(reply):
                stream = self._streams[raw_name.decode()]
                await self._check_first(redis, stream, entries[0])
                got += self._ingest(stream, entries)
        return got

    async def _check_first(self, redis: aioredis.Redis, stream: _Stream, entry: Any) -> None:
        """Before the first entry read after the last one: is anything missing between?"""
        last = stream.batch.last
        if last is None or stream.feed is None:
            return
        nxt = _position(entry, stream)
        row = hole(
            stream.name, stream.feed.kind, last, nxt, evicted=False, recorded_ns=time.time_ns()
        )
        if row is None:
            return
        first: Any = await redis.xrange(stream.name, "-", "+", count=1)
        if first and parse_entry_id(first[0][0]) > (last.run, last.seq):
            row = msgspec.structs.replace(row, reason="evicted")
        self._gap(stream, row)

    def _gap(self, stream: _Stream, row: GapRow) -> None:
        self.stats.gaps += 1
        log.warning("%s: %s (%s) after %s", stream.name, row.detail, row.reason, row.after_entry_id)
        stream.batch.add_gap(row, time.monotonic())

    def _ingest(self, stream: _Stream, entries: list[Any]) -> int:
        batch = stream.batch
        builder = batch.builder
        kind = stream.feed.kind if stream.feed is not None else ""
        now = time.monotonic()
        first = True
        for raw_id, fields in entries:
            entry_text = raw_id.decode()
            run, seq = parse_entry_id(entry_text)
            payload = _payload(fields)
            try:
                message = decode(payload) if payload is not None else None
            except ContractError:
                message = None
            if not isinstance(message, stream.type):
                self._undecodable(stream, run, seq, entry_text, now)
                batch.consumed(Position(run, seq, batch.last.ts_ms if batch.last else None), now)
                first = False
                continue
            position = Position(run, seq, message.ts_ms)
            if builder is not None:
                if not first and batch.last is not None:
                    row = hole(
                        stream.name,
                        kind,
                        batch.last,
                        position,
                        evicted=False,
                        recorded_ns=time.time_ns(),
                    )
                    if row is not None:
                        self._gap(stream, row)
                self.stats.rows += builder.add(entry_text, message)  # type: ignore[arg-type]
            else:
                assert isinstance(message, Status)
                row = producer_gap(message, time.time_ns())
                if row is not None:
                    self._gap(stream, row)
            batch.consumed(position, now)
            first = False
        self.stats.entries += len(entries)
        return len(entries)

    def _undecodable(self, stream: _Stream, run: int, seq: int, entry: str, now: float) -> None:
        self.stats.undecodable += 1
        if not stream.warned:
            stream.warned = True
            log.error(
                "%s: entry %s is not a valid %s message; recorded as a gap",
                stream.name,
                entry,
                stream.type.__name__,
            )
        feed = stream.feed.name if stream.feed is not None else stream.name
        stream.batch.add_gap(
            GapRow(
                feed=feed,
                reason="undecodable",
                run=run,
                first_seq=seq,
                last_seq=seq,
                after_entry_id=entry,
                before_entry_id=entry,
                detail="undecodable entry",
                recorded_ns=time.time_ns(),
            ),
            now,
        )

    def _flush(self, names: list[str]) -> None:
        """Write the rows of *names* and commit their positions (one manifest write)."""
        if not names:
            return
        staged: list[Rename] = []
        positions: dict[str, Position] = {}
        for name in names:
            stream = self._streams[name]
            batch = stream.batch
            if stream.feed is not None and batch.builder is not None:
                feed = stream.feed
                meta = {
                    "feed": feed.name,
                    "first_entry_id": batch.first.entry_id if batch.first else "",
                    "last_entry_id": batch.last.entry_id if batch.last else "",
                }
                for day, table in batch.builder.take():
                    part = Partition(feed.exchange, feed.kind, feed.symbol, day)
                    staged.append(self._writer.stage(part, table, meta))
            staged += self._stage_gaps(batch.take_gaps())
            if batch.last is not None:
                positions[name] = batch.last
        self._writer.commit(positions, staged)
        for name in names:
            self._streams[name].batch.written()
        self.stats.files += len(staged)
        self.stats.commits += 1

    def _stage_gaps(self, rows: list[GapRow]) -> list[Rename]:
        groups: dict[Partition, list[GapRow]] = defaultdict(list)
        for row in rows:
            try:
                feed = Feed.parse(row.feed)
            except ContractError:
                log.warning("gap report names no valid feed (%r): %s", row.feed, row.detail)
                continue
            groups[Partition(feed.exchange, GAP_KIND, feed.symbol, row.day)].append(row)
        return [
            self._writer.stage(part, gap_table(group), {"feed": group[0].feed})
            for part, group in sorted(groups.items(), key=lambda item: item[0].path)
        ]


def _raw(response: Any, **options: Any) -> Any:
    """Leave XREAD/XRANGE replies as hiredis parsed them (no per-entry dicts)."""
    return response


def _stream_replies(reply: Any) -> list[tuple[bytes, list[Any]]]:
    """XREAD's ``[[key, entries], ...]`` (RESP2) or ``{key: entries}`` (RESP3)."""
    if not reply:
        return []
    if isinstance(reply, dict):
        return list(reply.items())
    return [(key, entries) for key, entries in reply]


def _payload(fields: list[bytes]) -> bytes | None:
    for i in range(0, len(fields) - 1, 2):
        if fields[i] == STREAM_FIELD_BYTES:
            return fields[i + 1]
    return None


def _position(entry: Any, stream: _Stream) -> Position:
    run, seq = parse_entry_id(entry[0])
    payload = _payload(entry[1])
    try:
        message = decode(payload) if payload is not None else None
    except ContractError:
        message = None
    return Position(run, seq, message.ts_ms if message is not None else None)


def _after_id(position: Position | None) -> str:
    return position.entry_id if position is not None else "0-0"


def _after(position: Position | None) -> str:
    return f"after {position.entry_id}" if position is not None else "the start of the stream"
