"""Run ids, per-feed sequence numbers and who wrote a stream's top entry (pure).

A run is the epoch ms when the producer started, made larger than every run already
in its streams: ``run = max(now_ms, last_run + 1)``. Within a run each feed counts
1, 2, 3... and the stream entry ID is ``{run}-{seq}``, so IDs never go backwards.

Anyone who can write a stream can put an entry above ours (``XADD feed '*' d x``).
When Redis refuses our ID, `classify_top` tells a real producer's later run (we are
fenced) from our own entry and from a foreign entry (we move to a run above it), and
a run further than `MAX_RUN_AHEAD_MS` ahead of the clock is never followed.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from typing import Final

from marketbus.shared.codecs import decode
from marketbus.shared.errors import ContractError
from marketbus.shared.names import (
    exchange_of,
    is_status_name,
    kind_and_symbol,
    ohlcv_kind,
    parse_entry_id,
)
from marketbus.shared.schema import OHLCV, Message, Status

MAX_RUN_AHEAD_MS: Final = 3_600_000
"""A run more than this far ahead of the clock is no producer's start time: readers
reject such runs (the SDK's ``max_run_ahead_s`` default, 3600 s), so a producer never
follows one (a forged ``9999999999999-1`` entry would otherwise drag it there for good)."""


def ahead(run: int, now_ms: int) -> bool:
    """True when *run* lies more than `MAX_RUN_AHEAD_MS` after *now_ms*: not a real run."""
    return run > now_ms + MAX_RUN_AHEAD_MS


def choose_run(now_ms: int, last_ids: Iterable[tuple[int, int] | None]) -> int:
    """The run of a starting producer: now, or one more than any run already written.
    Runs from the future (`ahead`) are ignored: their streams refuse our entries until an
    operator deletes them (docs/operations.md, "Foreign stream entries")."""
    runs = (ids[0] for ids in last_ids if ids is not None and not ahead(ids[0], now_ms))
    return max(now_ms, max(runs, default=0) + 1)


class Top(enum.Enum):
    """Who wrote the entry above the ID Redis just refused."""

    OURS = "ours"
    """Our run, a seq we handed out: an earlier attempt or a later entry of ours."""
    RIVAL = "rival"
    """A real message of this feed from a later, plausible run: another producer."""
    FOREIGN = "foreign"
    """Anything else (a ``*`` ID, junk, a message of another feed or a forged seq)."""
    FUTURE = "future"
    """A foreign entry (or rival) so far ahead that no run of ours may follow it."""


def classify_top(
    feed: str, top_id: bytes, payload: bytes | None, *, run: int, next_seq: int, now_ms: int
) -> Top:
    """Classify *feed*'s top entry for a producer at *run* whose next seq is *next_seq*."""
    try:
        top_run, top_seq = parse_entry_id(top_id)
    except ContractError:
        return Top.FOREIGN
    if top_run == run and top_seq < next_seq:
        return Top.OURS
    if ahead(top_run, now_ms):
        return Top.FUTURE
    if top_run <= run or payload is None:
        return Top.FOREIGN
    try:
        message = decode(payload)
    except ContractError:
        return Top.FOREIGN
    if (message.run, message.seq) != (top_run, top_seq) or not of_feed(message, feed):
        return Top.FOREIGN
    return Top.RIVAL


def of_feed(message: Message, feed: str) -> bool:
    """Whether *message* is one *feed* can carry (type, exchange, symbol, timeframe)."""
    if message.exchange != exchange_of(feed):
        return False
    if is_status_name(feed):
        return isinstance(message, Status)
    kind, symbol = kind_and_symbol(feed)
    if message.symbol != symbol:
        return False
    if isinstance(message, OHLCV):
        return kind == ohlcv_kind(message.timeframe)
    return kind == type(message).__struct_config__.tag


class Sequencer:
    """Hands out ``seq`` per feed within one run; a skip reserves seqs for dropped data."""

    __slots__ = ("_next", "run")

    def __init__(self, run: int) -> None:
        self.run = run
        self._next: dict[str, int] = {}

    def next(self, feed: str, skip: int = 0) -> int:
        """The seq of the next message of *feed*, after leaving *skip* seqs unused."""
        seq = self._next.get(feed, 1) + skip
        self._next[feed] = seq + 1
        return seq

    def reserve(self, feed: str, count: int) -> int:
        """Leave *count* seqs of *feed* unused (dropped data); the first of them."""
        first = self._next.get(feed, 1)
        self._next[feed] = first + count
        return first

    def peek(self, feed: str) -> int:
        """The seq the next message of *feed* would get."""
        return self._next.get(feed, 1)
