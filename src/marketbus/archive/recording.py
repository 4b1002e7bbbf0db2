"""The recorder's core, without I/O: stream entries in, rows to write and positions out.

The shell (`marketbus.archive.recorder`) reads entries with XREAD and hands them to
`Recording.ingest`; it asks `due` which streams to write, takes their files with
`take` (partition, table, metadata per file, plus the positions they reach), commits
them, and reports `written`. Everything that decides something (which message type a
stream must carry, what is a hole, which rows go to which partition, what is due) lives
here and is unit-tested without Redis or files.
"""

from __future__ import annotations

import fnmatch
import logging
import time
from collections import defaultdict
from typing import Any

import msgspec
import pyarrow as pa

from marketbus.archive.batches import FlushPolicy, StreamBatch
from marketbus.archive.continuity import Position, hole, producer_gap
from marketbus.archive.options import RecordOptions
from marketbus.archive.partitions import GAP_KIND, Partition
from marketbus.archive.rows import GapRow, RowBuilder, gap_table, message_type
from marketbus.shared.codecs import decode
from marketbus.shared.errors import ContractError
from marketbus.shared.names import (
    STREAM_FIELD_BYTES,
    Feed,
    is_status_name,
    parse_entry_id,
    status_name,
)
from marketbus.shared.schema import MarketMessage, Message, Status

log = logging.getLogger(__name__)


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


class FileToWrite(msgspec.Struct, frozen=True):
    """One file of a commit: where it goes, its rows, its Parquet metadata."""

    partition: Partition
    table: pa.Table
    metadata: dict[str, str]


class Commit(msgspec.Struct, frozen=True):
    """The files of some streams and the positions they reach once written."""

    streams: list[str]
    files: list[FileToWrite]
    positions: dict[str, Position]


class _Stream:
    """One followed stream: its feed (None for a status stream) and its batch."""

    __slots__ = ("batch", "feed", "name", "type", "warned")

    def __init__(self, name: str, feed: Feed | None, durable: Position | None) -> None:
        self.name = name
        self.feed = feed
        self.type: type[Message] = message_type(feed.kind) if feed is not None else Status
        builder = RowBuilder(feed.kind) if feed is not None else None
        self.batch = StreamBatch(name, builder, durable)
        self.warned = False


class Recording:
    """The streams being recorded, their unwritten rows and their positions."""

    def __init__(self, options: RecordOptions, positions: dict[str, Position]) -> None:
        self.stats = RecorderStats()
        self._saved = dict(positions)
        self._policy = FlushPolicy(options)
        self._patterns = tuple(options.feeds)
        self._streams: dict[str, _Stream] = {}

    def __contains__(self, name: str) -> bool:
        return name in self._streams

    def __len__(self) -> int:
        return len(self._streams)

    def add_stream(self, name: str) -> Position | None:
        """Follow stream *name* from its saved position (returned; None: from its start).

        Raises ContractError when *name* is neither a feed nor a status stream.
        """
        feed = None if is_status_name(name) else Feed.parse(name)
        saved = self._saved.pop(name, None)
        self._streams[name] = _Stream(name, feed, saved)
        self.stats.streams += 1
        return saved

    def missing_status_streams(self) -> list[str]:
        """The status streams of recorded feeds' exchanges not followed yet: their
        producer ``gap`` events belong in the archive even when the patterns leave
        them out (``md:binance:trades:*``)."""
        wanted = {
            status_name(s.feed.ns, s.feed.exchange)
            for s in self._streams.values()
            if s.feed is not None
        }
        return sorted(wanted - self._streams.keys())

    def read_positions(self) -> dict[str, str]:
        """The entry ID to read each stream after (``0-0``: from its start), by name."""
        return {
            name: s.batch.last.entry_id if s.batch.last is not None else "0-0"
            for name, s in sorted(self._streams.items())
        }

    def hole_before(self, name: str, entry: Any) -> GapRow | None:
        """The hole between *name*'s last entry and *entry* (the first of a read), if
        any, as ``missing``; the shell asks Redis whether it was evicted (`note_gap`)."""
        stream = self._streams[name]
        last = stream.batch.last
        if last is None or stream.feed is None:
            return None
        run, seq = parse_entry_id(entry[0])
        message = _decoded(entry[1])
        nxt = Position(run, seq, message.ts_ms if message is not None else None)
        return hole(name, stream.feed.kind, last, nxt, evicted=False, recorded_ns=_now_ns())

    def note_gap(self, name: str, row: GapRow, now: float) -> None:
        """Record *row* among *name*'s rows (written with its next file)."""
        self.stats.gaps += 1
        where = f" after {row.after_entry_id}" if row.after_entry_id else ""
        log.warning("%s: %s (%s)%s; recorded as a gap row", row.feed, row.detail, row.reason, where)
        self._streams[name].batch.add_gap(row, now)

    def ingest(self, name: str, entries: list[Any], now: float) -> None:
        """Turn *name*'s stream entries ``[id, [field, value, ...]]`` (in order, after
        its last one) into rows; holes between them and bad entries become gap rows."""
        if not entries:
            return
        stream = self._streams[name]
        batch = stream.batch
        builder = batch.builder
        wanted = stream.type
        last = batch.last
        prev_run, prev_seq, prev_ts = (last.run, last.seq, last.ts_ms) if last else (-1, -1, None)
        first: Position | None = None
        rows = 0
        for raw_id, fields in entries:
            entry_text = raw_id.decode()
            run, seq = parse_entry_id(entry_text)
            message = _decoded(fields)
            if not isinstance(message, wanted):
                self._undecodable(stream, run, seq, entry_text, now)
                ts = prev_ts
            elif builder is not None:
                ts = message.ts_ms
                # the first entry's hole is `hole_before`'s job
                if first is not None and (run != prev_run or seq != prev_seq + 1):
                    self._check_hole(
                        stream, Position(prev_run, prev_seq, prev_ts), Position(run, seq, ts), now
                    )
                rows += builder.add(entry_text, _market(message))
            else:
                ts = message.ts_ms
                if isinstance(message, Status):
                    gap = producer_gap(message, _now_ns())
                    if gap is not None and self._recorded(gap.feed):
                        self.note_gap(name, gap, now)
            if first is None:
                first = Position(run, seq, ts)
            prev_run, prev_seq, prev_ts = run, seq, ts
        assert first is not None
        batch.consumed(first, Position(prev_run, prev_seq, prev_ts), len(entries), now)
        self.stats.rows += rows
        self.stats.entries += len(entries)

    def _check_hole(self, stream: _Stream, last: Position, nxt: Position, now: float) -> None:
        assert stream.feed is not None
        row = hole(stream.name, stream.feed.kind, last, nxt, evicted=False, recorded_ns=_now_ns())
        if row is not None:
            self.note_gap(stream.name, row, now)

    def _recorded(self, feed: str) -> bool:
        return any(fnmatch.fnmatchcase(feed, pattern) for pattern in self._patterns)

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
        row = GapRow(
            feed=feed,
            reason="undecodable",
            run=run,
            first_seq=seq,
            last_seq=seq,
            after_entry_id=entry,
            before_entry_id=entry,
            detail="undecodable entry",
            recorded_ns=_now_ns(),
        )
        stream.batch.add_gap(row, now)

    @property
    def buffered(self) -> int:
        """Rows waiting to be written, all streams together."""
        return sum(s.batch.rows for s in self._streams.values())

    def due(self, now: float) -> list[str]:
        """Streams whose rows should be written now (`FlushPolicy`)."""
        return self._policy.due({n: s.batch for n, s in self._streams.items()}, now)

    def pending(self) -> list[str]:
        """Every stream with something unwritten (for the final write)."""
        return sorted(n for n, s in self._streams.items() if s.batch.pending)

    def take(self, names: list[str]) -> Commit:
        """The files and positions of *names*' unwritten rows; their buffers are emptied
        (call `written` once the commit is durable)."""
        files: list[FileToWrite] = []
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
                    files.append(FileToWrite(part, table, meta))
            files += _gap_files(batch.take_gaps())
            if batch.last is not None:
                positions[name] = batch.last
        return Commit(list(names), files, positions)

    def written(self, commit: Commit) -> None:
        """*commit* is durable: its streams' positions are now the saved ones."""
        for name in commit.streams:
            self._streams[name].batch.written()
        self.stats.files += len(commit.files)
        self.stats.commits += 1


def _gap_files(rows: list[GapRow]) -> list[FileToWrite]:
    """Gap rows grouped by the partition of the feed each names, in path order."""
    groups: dict[Partition, list[GapRow]] = defaultdict(list)
    for row in rows:
        try:
            feed = Feed.parse(row.feed)
        except ContractError:
            log.warning("gap report names no valid feed (%r): %s", row.feed, row.detail)
            continue
        groups[Partition(feed.exchange, GAP_KIND, feed.symbol, row.day)].append(row)
    return [
        FileToWrite(part, gap_table(group), {"feed": group[0].feed})
        for part, group in sorted(groups.items(), key=lambda item: item[0].path)
    ]


def _decoded(fields: list[bytes]) -> Message | None:
    """The message in an entry's ``d`` field; None if absent or undecodable."""
    if len(fields) == 2 and fields[0] == STREAM_FIELD_BYTES:
        try:
            return decode(fields[1])
        except ContractError:
            return None
    for i in range(0, len(fields) - 1, 2):
        if fields[i] == STREAM_FIELD_BYTES:
            try:
                return decode(fields[i + 1])
            except ContractError:
                return None
    return None


def _market(message: Message) -> MarketMessage:
    assert not isinstance(message, Status)
    return message


def _now_ns() -> int:
    return time.time_ns()
