"""Reconnect delays for producer and consumer: capped exponential backoff with jitter (pure).

`Backoff` is the policy (a frozen config Struct users pass around); `BackoffState` tracks
one connection's consecutive failures and resets after a healthy period. The caller
passes the clock and the random source, so tests drive both.
"""

from __future__ import annotations

import random

import msgspec


class Backoff(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """After failure n wait ``uniform(c/2, c)`` s, ``c = min(maximum_s, initial_s * 2**(n-1))``.

    Half fixed, half random: never a zero delay, still spreads reconnect storms.
    """

    initial_s: float = 0.1
    maximum_s: float = 5.0

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        """Seconds to wait after *attempt* consecutive failures (attempt >= 1)."""
        ceiling = min(
            max(self.initial_s, self.maximum_s),
            self.initial_s * 2.0 ** min(max(attempt - 1, 0), 62),
        )
        return (rng or random).uniform(ceiling / 2, ceiling)


class BackoffState:
    """One connection's failures under a `Backoff`; resets once healthy long enough."""

    __slots__ = ("_attempt", "_healthy_since", "_rng", "healthy_after_s", "policy")

    def __init__(
        self,
        initial_s: float,
        maximum_s: float,
        *,
        healthy_after_s: float | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.policy = Backoff(initial_s, max(initial_s, maximum_s))
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
        self._attempt += 1
        return self.policy.delay(self._attempt, self._rng)

    def success(self, now_s: float) -> None:
        """Record good data at monotonic *now_s*; resets once healthy for long enough."""
        if self._attempt == 0:
            return
        if self._healthy_since is None:
            self._healthy_since = now_s
        elif now_s - self._healthy_since >= self.healthy_after_s:
            self._attempt = 0
            self._healthy_since = None
