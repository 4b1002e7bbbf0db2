"""What the SDK tells a strategy besides market data: gaps, staleness, counters.

Events are frozen msgspec Structs, like the wire messages, so a callback can keep them.
"""

from __future__ import annotations

from typing import Literal, TypeAlias

import msgspec

from marketbus.shared.schema import OHLCV, Book, Ticker, Trades

GapReason: TypeAlias = Literal["evicted", "missing", "producer", "delivery", "unreadable"]


class Gap(msgspec.Struct, frozen=True, kw_only=True):
    """Data of *feed* that this consumer does not have and cannot get back.

    ``first_seq .. last_seq`` (inclusive, within ``run``) is the missing range when it is
    known (a producer report carries it since wire contract v1.1 when the producer
    dropped messages); both are None when only the fact is known.

    ``reason``:
    - ``evicted``: the stream cap removed the entries before they could be read;
    - ``missing``: the entries were never in the stream (e.g. the producer skipped them);
    - ``producer``: the producer announced lost data on its status channel (``detail``);
    - ``delivery``: buffers are complete but a slow listener missed these messages
      (they were evicted before it could read them back from the stream, or the read
      back failed: ``detail`` says which);
    - ``unreadable``: the feed's stream could not be read (Redis refused the read, e.g.
      NOPERM, or it kept failing): the feed went on live without that history
      (``detail`` has the error).
    """

    feed: str
    run: int
    first_seq: int | None
    last_seq: int | None
    reason: GapReason
    detail: str = ""
    from_ms: int | None = None
    """``producer`` gaps of exchange data (e.g. trades beyond the exchange's REST window):
    the exchange time of the last trade published before the hole; what is missing lies
    strictly between ``from_ms`` and ``to_ms``. None when not known (older producers)."""
    to_ms: int | None = None
    """... and of the first trade published after it."""

    @property
    def count(self) -> int | None:
        """How many messages are missing, when known."""
        if self.first_seq is None or self.last_seq is None:
            return None
        return self.last_seq - self.first_seq + 1


class Staleness(msgspec.Struct, frozen=True, kw_only=True):
    """A feed became stale or fresh again.

    ``reason`` for stale: ``quiet`` (nothing for longer than the threshold),
    ``disconnected`` / ``stale`` / ``error`` / ``stopped`` (reported by the producer on
    ``{ns}:{exchange}:status``). Empty when the feed is fresh again.
    """

    feed: str
    stale: bool
    reason: str
    age_s: float | None
    """Seconds since the feed's last message (None if it never had one)."""
    detail: str = ""


Update: TypeAlias = OHLCV | Ticker | Trades | Book
"""A market-data message as delivered to listeners."""

Event: TypeAlias = OHLCV | Ticker | Trades | Book | Gap | Staleness
"""What ``async for event in subscriber`` yields."""


class Stats(msgspec.Struct, kw_only=True):
    """Counters of one subscriber since it started (a copy; see `Subscriber.stats`)."""

    received: int = 0
    """Live messages read from pub/sub."""
    applied: int = 0
    """Messages applied to buffers (live and from streams)."""
    backfilled: int = 0
    """Of those, messages read from streams (backfill, repair, resume)."""
    duplicates: int = 0
    """Messages dropped as not newer than the last applied one (rule 2)."""
    repairs: int = 0
    """Seq jumps and new runs repaired from a stream (rule 3)."""
    resumes: int = 0
    """Per-feed resumes after a (re)subscription (rule 4)."""
    gaps: int = 0
    """Gap events: data reported lost."""
    missing: int = 0
    """Messages known lost (sum of the gap ranges that have one)."""
    undecodable: int = 0
    """Payloads that did not decode (rule 5), skipped."""
    rejected: int = 0
    """Decoded messages that do not fit their feed (wrong type, no candle time)."""
    suspect: int = 0
    """Live messages dropped because the stream does not back them: a jump to a
    ``(run, seq)`` the stream has no entry at, or a run far in the future (forged or
    buggy); the feed's position did not move (see docs/wire-contract.md)."""
    held_dropped: int = 0
    """Live messages dropped while their feed was syncing (refetched from the stream)."""
    reconnects: int = 0
    """Times the pub/sub connection was lost and re-established."""
    conflated: int = 0
    """State updates (ticker, book, forming candle) listeners skipped for a newer one."""
    refetched: int = 0
    """Messages slow listeners read back from streams instead of memory."""
    ignored: int = 0
    """Messages on channels no subscription or pattern covers, skipped."""
    refused: int = 0
    """Messages on new channels a pattern covers but not kept: ``max_pattern_feeds``
    channels found through patterns are kept already."""
    read_errors: int = 0
    """Stream reads given up (refused by Redis, or failing beyond the retry bound); each
    is reported as a `Gap` of the feed."""
    callback_errors: int = 0
    """Exceptions raised by listener callbacks under ``on_error="log"`` (each logged;
    the update was skipped for that listener and the subscriber kept running)."""
