"""Reconnect delays: capped exponential backoff with full jitter (pure).

(The producer has its own; both could move to ``marketbus.shared``.)
"""

from __future__ import annotations

import random

import msgspec


class Backoff(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """``uniform(0, min(maximum_s, initial_s * 2**attempt))`` seconds before attempt n+1."""

    initial_s: float = 0.1
    maximum_s: float = 5.0

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        """Seconds to wait after *attempt* consecutive failures (attempt >= 1)."""
        ceiling = min(self.maximum_s, self.initial_s * 2.0 ** min(max(attempt - 1, 0), 62))
        return (rng or random).uniform(ceiling / 2, ceiling)
