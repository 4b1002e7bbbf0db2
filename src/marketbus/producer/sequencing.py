"""Run ids and per-feed sequence numbers (SPEC "Messages" and "Streams"; pure).

A run is the epoch ms when the producer started, made larger than every run already
in its streams: ``run = max(now_ms, last_run + 1)``. Within a run each feed counts
1, 2, 3... and the stream entry ID is ``{run}-{seq}``, so IDs never go backwards.
"""

from __future__ import annotations

from collections.abc import Iterable


def choose_run(now_ms: int, last_ids: Iterable[tuple[int, int] | None]) -> int:
    """The run of a starting producer: now, or one more than any run already written."""
    last_run = max((ids[0] for ids in last_ids if ids is not None), default=0)
    return max(now_ms, last_run + 1)


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
