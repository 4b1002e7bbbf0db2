"""Per-stream buffers of unwritten rows and the policy that decides what to write.

Pure: the recorder shell appends, asks `FlushPolicy.due` which streams to write, and
takes their rows. Memory is bounded by the total of buffered rows across streams.
"""

from __future__ import annotations

from collections.abc import Mapping

from marketbus.archive.continuity import Position
from marketbus.archive.options import RecordOptions
from marketbus.archive.rows import GapRow, RowBuilder


class StreamBatch:
    """The unwritten rows of one stream and how far they reach.

    ``durable`` is the position in the manifest; ``last`` the last entry consumed
    (rows buffered, or skipped as undecodable). ``since`` is the monotonic time the
    oldest unwritten entry was consumed (None when nothing waits).
    """

    __slots__ = ("builder", "durable", "entries", "first", "gaps", "last", "since", "stream")

    def __init__(self, stream: str, builder: RowBuilder | None, durable: Position | None):
        self.stream = stream
        self.builder = builder
        self.gaps: list[GapRow] = []
        self.durable = durable
        self.last = durable
        self.first: Position | None = None
        self.since: float | None = None
        self.entries = 0

    @property
    def rows(self) -> int:
        return (len(self.builder) if self.builder is not None else 0) + len(self.gaps)

    @property
    def pending(self) -> bool:
        """Entries were consumed since the last write (possibly with no rows)."""
        return self.entries > 0 or bool(self.gaps)

    def consumed(self, first: Position, last: Position, count: int, now: float) -> None:
        """*count* entries from *first* to *last* were read (their rows, if any, added)."""
        if self.since is None:
            self.since = now
        if self.first is None:
            self.first = first
        self.last = last
        self.entries += count

    def add_gap(self, row: GapRow, now: float) -> None:
        if self.since is None:
            self.since = now
        self.gaps.append(row)

    def take_gaps(self) -> list[GapRow]:
        gaps, self.gaps = self.gaps, []
        return gaps

    def written(self) -> None:
        """Everything consumed is now in committed files."""
        self.durable = self.last
        self.first = None
        self.since = None
        self.entries = 0


class FlushPolicy:
    """Which streams to write now: by size, by age, and by the total memory bound."""

    def __init__(self, options: RecordOptions) -> None:
        self.file_rows = options.file_rows
        self.roll_s = options.roll_s
        self.max_rows = options.max_buffered_rows

    def due(self, batches: Mapping[str, StreamBatch], now: float) -> list[str]:
        """Streams to write, in name order. Over the total bound, the largest streams
        are added until at most half the bound remains buffered."""
        due = {
            name
            for name, b in batches.items()
            if b.pending
            and (b.rows >= self.file_rows or (b.since is not None and now - b.since >= self.roll_s))
        }
        total = sum(b.rows for name, b in batches.items() if name not in due)
        if total >= self.max_rows:
            rest = sorted(
                (b for name, b in batches.items() if name not in due and b.rows),
                key=lambda b: (-b.rows, b.stream),
            )
            for batch in rest:
                if total <= self.max_rows // 2:
                    break
                due.add(batch.stream)
                total -= batch.rows
        return sorted(due)
