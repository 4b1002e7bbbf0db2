"""Is the next stream entry the one after the last recorded? Pure rules, no I/O.

A feed's stream is read from the last recorded entry (``Position``). What lies between
it and the next entry read is a hole when the wire contract says something should be
there:

- trades, ticker, book: every message is in the stream, so within a run seqs are
  contiguous; a jump (or a new run that starts above seq 1) is a hole of known seqs;
- ``ohlcv.*``: the stream holds closed candles only (one per period) and forming
  updates take seqs too, so seq jumps are normal; a hole is a missing candle *period*,
  known by its exchange-time window.

A hole right after the last recorded entry is ``evicted`` when the stream no longer
starts at or before that entry (the cap trimmed past it); any other hole is
``missing`` (the producer never wrote it; its own ``gap`` event says why).
"""

from __future__ import annotations

import re
from typing import Final

import msgspec

from marketbus.archive.rows import GapRow
from marketbus.shared.names import entry_id, timeframe_ms, timeframe_of
from marketbus.shared.schema import Status


class Position(msgspec.Struct, frozen=True, array_like=True):
    """The last entry recorded from a stream: its ``(run, seq)`` and exchange time."""

    run: int
    seq: int
    ts_ms: int | None = None

    @property
    def entry_id(self) -> str:
        return entry_id(self.run, self.seq)


def hole(
    feed: str,
    kind: str,
    last: Position | None,
    nxt: Position,
    *,
    evicted: bool,
    recorded_ns: int,
) -> GapRow | None:
    """The gap between *last* (None: nothing recorded yet) and *nxt*, or None.

    *evicted* says whether the stream's first entry is now past *last*.
    """
    if last is None:
        return None
    timeframe = timeframe_of(kind)
    start_ms, end_ms = last.ts_ms, nxt.ts_ms
    run = first = last_seq = None
    if timeframe is not None:
        period = timeframe_ms(timeframe)
        if last.ts_ms is None or nxt.ts_ms is None or nxt.ts_ms <= last.ts_ms + period:
            return None
        start_ms = last.ts_ms + period
        detail = f"{(nxt.ts_ms - start_ms) // period} candle period(s) missing"
    else:
        if nxt.run == last.run and nxt.seq > last.seq + 1:
            first = last.seq + 1
        elif nxt.run != last.run and nxt.seq > 1:
            first = 1
        else:
            return None
        run, last_seq = nxt.run, nxt.seq - 1
        detail = f"{nxt.seq - first} message(s) missing"
    return GapRow(
        feed=feed,
        reason="evicted" if evicted else "missing",
        run=run,
        first_seq=first,
        last_seq=last_seq,
        after_entry_id=last.entry_id,
        before_entry_id=nxt.entry_id,
        start_ms=start_ms,
        end_ms=end_ms,
        detail=detail,
        recorded_ns=recorded_ns,
    )


_SEQ_RANGE: Final = re.compile(r"seq (\d+)\.\.(\d+) of run (\d+)")
_WINDOW: Final = re.compile(r"between (\d+) \(the last one published\) and (\d+)")


def producer_gap(status: Status, recorded_ns: int) -> GapRow | None:
    """A producer's ``gap`` status event as a gap row of the feed it names, else None.

    The seq range (``seq A..B of run R``) or exchange-time window (``between T1 ... and
    T2``) in its detail is parsed when present; the detail is kept verbatim.
    """
    if status.event != "gap" or not status.feed:
        return None
    run = first = last = start = end = None
    if match := _SEQ_RANGE.search(status.detail):
        first, last, run = (int(g) for g in match.groups())
    if match := _WINDOW.search(status.detail):
        start, end = (int(g) for g in match.groups())
    return GapRow(
        feed=status.feed,
        reason="producer",
        run=run,
        first_seq=first,
        last_seq=last,
        start_ms=start,
        end_ms=end,
        detail=status.detail,
        recorded_ns=recorded_ns,
    )
