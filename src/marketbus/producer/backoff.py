"""Capped exponential backoff with full jitter, reset after a healthy period (pure).

The caller passes the clock and the random source, so tests drive both.
"""

from __future__ import annotations

import random


class Backoff:
    """Delays for reconnect attempts: initial * 2**n capped at maximum, jittered."""

    __slots__ = ("_attempt", "_healthy_since", "_rng", "healthy_after_s", "initial_s", "maximum_s")

    def __init__(
        self,
        initial_s: float,
        maximum_s: float,
        *,
        healthy_after_s: float | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.initial_s = initial_s
        self.maximum_s = max(initial_s, maximum_s)
        self.healthy_after_s = maximum_s if healthy_after_s is None else healthy_after_s
        self._rng = rng or random.Random()
        self._attempt = 0
        self._healthy_since: float | None = None

    @property
    def attempt(self) -> int:
        """Failures since the last reset."""
        return self._attempt

    def failure(self) -> float:
        """Record a failure; the seconds to wait before the next attempt."""
        self._healthy_since = None
        ceiling = min(self.maximum_s, self.initial_s * 2.0 ** min(self._attempt, 62))
        self._attempt += 1
        # Half fixed, half random: never a zero delay, still spreads reconnect storms.
        return ceiling / 2 + self._rng.uniform(0, ceiling / 2)

    def success(self, now_s: float) -> None:
        """Record good data at monotonic *now_s*; resets once healthy for long enough."""
        if self._attempt == 0:
            return
        if self._healthy_since is None:
            self._healthy_since = now_s
        elif now_s - self._healthy_since >= self.healthy_after_s:
            self._attempt = 0
            self._healthy_since = None
