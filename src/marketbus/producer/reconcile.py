"""When to confirm closed candles against the exchange's REST OHLCV (pure).

A candle closed by the clock during a stall, or by a newer candle whose own arrival
hid the old one's final update, can carry values the exchange later finalises
differently. Every candle the stream gets closed is therefore checked once over REST,
``after_ms`` after it closed (the exchange's REST has its final values by then). The
checks of one feed are batched: one fetch covers every candle closed since its last
check. They are spread: a feed checks at most once per ``every_ms``, at times of its
own phase within ``every_ms`` (from its name), so N feeds make about N requests per
``every_ms`` however short their timeframe, evenly over time rather than all at a
candle boundary (docs/operations.md has the budget per venue).

`ReconcileSchedule` holds one feed's unchecked candles and says when a check is due
and what it covers; what a check finds (correction or not) is the `CandleTracker`'s
call. Times are the producer's wall clock (ms) when the candle was sent closed, never
the exchange's candle times, so an exchange's clock running ahead or behind does not
move the schedule.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

MAX_UNCHECKED = 1000
"""Unchecked candles kept per feed (one REST page on every venue): beyond it, while
REST keeps failing, the oldest go unchecked and are counted in `dropped`."""


@dataclass(frozen=True, slots=True)
class ReconcilePolicy:
    """``after_ms``: wait after a candle closed before checking it; ``every_ms``: at
    most one check per feed per that many ms (the REST budget)."""

    after_ms: int
    every_ms: int


@dataclass(frozen=True, slots=True)
class Check:
    """One due check: the candles (open times, oldest first) it covers."""

    covers: tuple[int, ...]

    @property
    def first_ms(self) -> int:
        return self.covers[0]

    @property
    def last_ms(self) -> int:
        return self.covers[-1]


def phase_of(name: str, every_ms: int) -> int:
    """A feed's offset within ``every_ms``: stable across runs, spread over feeds."""
    return zlib.crc32(name.encode()) % every_ms


class ReconcileSchedule:
    """One feed's closed candles waiting for their check, and when it is due."""

    __slots__ = ("_checked_at", "_in_flight", "_unchecked", "dropped", "phase_ms", "policy")

    def __init__(self, policy: ReconcilePolicy, phase_ms: int = 0) -> None:
        self.policy = policy
        self.phase_ms = phase_ms % policy.every_ms
        self._unchecked: dict[int, int] = {}  # open time -> when it was sent closed
        self._in_flight: Check | None = None
        self._checked_at: int | None = None
        self.dropped = 0
        """Candles that went unchecked because `MAX_UNCHECKED` was reached."""

    @property
    def unchecked(self) -> list[int]:
        """Open times of the candles still to check, oldest first."""
        return sorted(self._unchecked)

    @property
    def in_flight(self) -> Check | None:
        return self._in_flight

    def closed(self, open_ms: int, now_ms: int) -> None:
        """The stream got candle *open_ms* closed at *now_ms* (its first close, or values
        that were not checked yet): check it `after_ms` from now."""
        self._unchecked.pop(open_ms, None)
        self._unchecked[open_ms] = now_ms
        while len(self._unchecked) > MAX_UNCHECKED:
            del self._unchecked[min(self._unchecked)]
            self.dropped += 1

    def next_slot(self, at_ms: int) -> int:
        """The first time at or after *at_ms* this feed may check (its phase)."""
        every = self.policy.every_ms
        return at_ms + (self.phase_ms - at_ms) % every

    def due_at(self) -> int | None:
        """When the next check is due (None: nothing to check, or one in flight)."""
        if self._in_flight is not None or not self._unchecked:
            return None
        ready = min(self._unchecked.values()) + self.policy.after_ms
        if self._checked_at is not None:
            ready = max(ready, self._checked_at + 1)
        return self.next_slot(ready)

    def due(self, now_ms: int) -> Check | None:
        """The check to make now, if due: every candle ready by now (closed at least
        `after_ms` ago). It is in flight until `answered`."""
        at = self.due_at()
        if at is None or now_ms < at:
            return None
        limit = now_ms - self.policy.after_ms
        covers = tuple(sorted(ts for ts, when in self._unchecked.items() if when <= limit))
        if not covers:
            return None
        self._in_flight = check = Check(covers)
        self._checked_at = now_ms
        return check

    def answered(self, check: Check, *, ok: bool) -> None:
        """The check's answer came: its candles are done (*ok*), or stay for the next
        slot (the fetch failed)."""
        if self._in_flight is check:
            self._in_flight = None
        if ok:
            for ts in check.covers:
                self._unchecked.pop(ts, None)
