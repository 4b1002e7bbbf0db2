"""ccxt timeframe strings ('1s', '5m', '4h', '1d', '1w') and their lengths in ms."""

from __future__ import annotations

_UNIT_MS = {"s": 1_000, "m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 604_800_000}

_MONDAY_OFFSET_MS = 4 * 86_400_000

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


def timeframe_ms(timeframe: str) -> int:
    """Length of one candle of `timeframe` in ms; months are not simulated."""
    count, unit = timeframe[:-1], timeframe[-1:]
    if unit not in _UNIT_MS or not count.isdigit() or int(count) <= 0:
        raise ValueError(f"unsupported timeframe: {timeframe!r}")
    return int(count) * _UNIT_MS[unit]


def period_start(ts_ms: int, timeframe: str) -> int:
    """Open time of the candle of `timeframe` holding `ts_ms`.

    Candles align to the epoch, except weeks, which open on Monday 00:00 UTC as on
    the exchanges (the epoch was a Thursday).
    """
    length = timeframe_ms(timeframe)
    offset = _MONDAY_OFFSET_MS if timeframe.endswith("w") else 0
    return ts_ms - (ts_ms - offset) % length
