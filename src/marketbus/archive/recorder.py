"""`Recorder`: the asyncio shell that follows streams with XREAD and writes the archive.

Why XREAD and not the SDK's live delivery (docs/recording.md has the long form): the
archive must hold every entry of every stream exactly once and resume exactly after
the last one written. The stream is the durable record (SPEC "Streams") and
``XREAD ... STREAMS key {run}-{seq}`` reads it from any position, in order, with
nothing conflated; the SDK keeps a strategy's buffers warm instead (backfill of the
newest entries, state feeds conflated to the newest).

The loop: discover matching streams (SCAN ... TYPE stream), XREAD them in groups from
the last consumed entry, hand the entries to the `Recording` core, and write what it
says is due through `ArchiveWriter`. Redis unreachable: the buffers are kept (and
written on schedule), the outage is logged once, reconnects back off, and every stream
resumes from its last consumed entry; what the cap evicted meanwhile becomes
``evicted`` gap rows.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from pathlib import Path
from typing import Any

import msgspec
import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from marketbus.archive.errors import ArchiveError
from marketbus.archive.options import RecordOptions
from marketbus.archive.recording import RecorderStats, Recording
from marketbus.archive.store import ArchiveWriter
from marketbus.shared.backoff import BackoffState
from marketbus.shared.config import RedisConfig
from marketbus.shared.connection import client
from marketbus.shared.errors import ConfigError, ContractError
from marketbus.shared.names import parse_entry_id
from marketbus.shared.urls import redact

log = logging.getLogger(__name__)

_REDIS_DOWN = (RedisConnectionError, RedisTimeoutError, OSError)


class Recorder:
    """Records the streams matching ``options.feeds`` of *redis* into ``options.out``."""

    def __init__(self, redis: RedisConfig, options: RecordOptions) -> None:
        if redis.cluster:
            raise ConfigError("marketbus record reads one Redis server, not a cluster")
        self.redis_config = redis
        self.options = options
        self._writer = ArchiveWriter(Path(options.out), options.namespace, fsync=options.fsync)
        self._recording = Recording(options, {})
        self._stopping = asyncio.Event()
        self._idle = False
        self._next_scan = 0.0

    @property
    def stats(self) -> RecorderStats:
        return self._recording.stats

    def stop(self) -> None:
        """Ask `run` to write everything buffered and return."""
        self._stopping.set()

    async def run(self, *, until_idle: bool = False) -> RecorderStats:
        """Record until `stop` (or, with *until_idle*, until a read finds nothing new)."""
        manifest = self._writer.open()
        self._recording = Recording(self.options, dict(manifest.positions))
        log.info(
            "recording %s from %s into %s (%d stream positions to resume)",
            ", ".join(self.options.feeds),
            redact(self.redis_config.url),
            self.options.out,
            len(manifest.positions),
        )
        backoff = BackoffState(self.options.backoff_initial_s, self.options.backoff_max_s)
        down_since: float | None = None
        try:
            while not self._stopping.is_set():
                redis = client(self.redis_config)
                redis.set_response_callback("XREAD", _as_parsed)
                redis.set_response_callback("XRANGE", _as_parsed)
                try:
                    await redis.ping()
                    if down_since is not None:
                        log.warning(
                            "Redis is back after %.1fs: every stream resumes after its last "
                            "recorded entry",
                            time.monotonic() - down_since,
                        )
                        down_since = None
                    self._next_scan = 0.0
                    await self._follow(redis, until_idle)
                except _REDIS_DOWN as exc:
                    if down_since is None:
                        down_since = time.monotonic()
                        self.stats.outages += 1
                        log.error(
                            "Redis at %s unreachable (%s): keeping %d buffered rows, retrying",
                            redact(self.redis_config.url),
                            exc,
                            self._recording.buffered,
                        )
                    self._write(self._recording.due(time.monotonic()))
                    await self._sleep(backoff.failure())
                finally:
                    await redis.aclose()
                if until_idle and self._idle:
                    break
        finally:
            try:
                self._write(self._recording.pending())
            finally:
                self._writer.close()
        return self.stats

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)

    async def _follow(self, redis: aioredis.Redis, until_idle: bool) -> None:
        while not self._stopping.is_set():
            if time.monotonic() >= self._next_scan:
                await self._discover(redis)
                self._next_scan = time.monotonic() + self.options.rescan_s
            got = await self._read_round(redis, block=not until_idle)
            self._write(self._recording.due(time.monotonic()))
            if not got:
                self._idle = True
                if until_idle:
                    return
                if self._groups() != 1:  # no BLOCK was used: poll
                    await self._sleep(min(self.options.block_ms / 1000, 0.05))

    async def _discover(self, redis: aioredis.Redis) -> None:
        for pattern in self.options.feeds:
            async for raw in redis.scan_iter(match=pattern, count=1000, _type="stream"):
                name = raw.decode() if isinstance(raw, bytes) else str(raw)
                if name not in self._recording:
                    self._add(name)
        for name in self._recording.missing_status_streams():
            self._add(name)

    def _add(self, name: str) -> None:
        try:
            saved = self._recording.add_stream(name)
        except ContractError as exc:
            log.warning("not recording stream %r: %s", name, exc)
            return
        where = f"after {saved.entry_id}" if saved else "from the start of the stream"
        log.info("recording %s %s", name, where)

    def _group_size(self) -> int:
        return max(1, self.options.read_entries // self.options.read_count)

    def _groups(self) -> int:
        return -(-len(self._recording) // self._group_size())

    async def _read_round(self, redis: aioredis.Redis, *, block: bool) -> int:
        """One XREAD per group of streams (with *block*, BLOCK when one call covers them
        all); returns the entries consumed."""
        positions = list(self._recording.read_positions().items())
        size = self._group_size()
        block_ms = self.options.block_ms if block and 0 < len(positions) <= size else None
        got = 0
        for start in range(0, len(positions), size):
            streams: dict[Any, Any] = dict(positions[start : start + size])
            reply: Any = await redis.xread(streams, count=self.options.read_count, block=block_ms)
            for raw_name, entries in _stream_replies(reply):
                name = raw_name.decode()
                await self._check_first(redis, name, entries[0])
                self._recording.ingest(name, entries, time.monotonic())
                got += len(entries)
        return got

    async def _check_first(self, redis: aioredis.Redis, name: str, entry: Any) -> None:
        """A hole before the first entry read: evicted if the stream starts past it."""
        row = self._recording.hole_before(name, entry)
        if row is None:
            return
        first: Any = await redis.xrange(name, "-", "+", count=1)
        if (
            first
            and row.after_entry_id
            and parse_entry_id(first[0][0]) > parse_entry_id(row.after_entry_id)
        ):
            row = msgspec.structs.replace(row, reason="evicted")
        self._recording.note_gap(name, row, time.monotonic())

    def _write(self, names: list[str]) -> None:
        """Write *names*' rows and commit their positions (one manifest write)."""
        if not names:
            return
        commit = self._recording.take(names)
        try:
            staged = [self._writer.stage(f.partition, f.table, f.metadata) for f in commit.files]
            self._writer.commit(commit.positions, staged)
        except OSError as exc:
            raise ArchiveError(
                f"cannot write the archive in {self.options.out}: {exc}. Nothing after the "
                "last commit is lost while the streams still hold it: fix the cause and "
                "restart the recorder"
            ) from exc
        self._recording.written(commit)


def _as_parsed(response: Any, **options: Any) -> Any:
    """Leave XREAD/XRANGE replies as hiredis parsed them (no per-entry dicts)."""
    return response


def _stream_replies(reply: Any) -> list[tuple[bytes, list[Any]]]:
    """XREAD's ``[[key, entries], ...]`` (RESP2) or ``{key: entries}`` (RESP3)."""
    if not reply:
        return []
    if isinstance(reply, dict):
        return list(reply.items())
    return [(key, entries) for key, entries in reply]
