"""Which timeframes the simulator builds candles for, and where their periods open.

Timeframe lengths are `marketbus.shared.names.timeframe_ms`; what is the simulator's own
is the alignment: periods open on multiples of their length since the epoch, except
weeks, which open on Monday 00:00 UTC as on the exchanges. Months and years have no
fixed length, so they are not simulated.
"""

from __future__ import annotations

from marketbus.shared.names import timeframe_ms

_MONDAY_OFFSET_MS = 4 * 86_400_000
"""The epoch was a Thursday: weeks open four days after it."""
_FIXED_LENGTH_UNITS = frozenset("smhdw")

DEFAULT_TIMEFRAMES: tuple[str, ...] = (
    "1s",
    "1m",
    "3m",
    "5m",
    "15m",
    "30m",
    "1h",
    "2h",
    "4h",
    "1d",
)


def check_timeframe(timeframe: str) -> str:
    """Return `timeframe` if the simulator can build its candles, else raise ValueError."""
    timeframe_ms(timeframe)  # FeedNameError (a ValueError) if malformed
    if timeframe[-1] not in _FIXED_LENGTH_UNITS:
        raise ValueError(f"unsupported timeframe: {timeframe!r} (months and years vary in length)")
    return timeframe


def period_start(ts_ms: int, timeframe: str) -> int:
    """Open time of the candle of `timeframe` holding `ts_ms` (weeks open on Monday)."""
    length = timeframe_ms(timeframe)
    offset = _MONDAY_OFFSET_MS if timeframe.endswith("w") else 0
    return ts_ms - (ts_ms - offset) % length
