"""Deterministic SPEC messages for the benchmarks: candles over many feeds."""

from __future__ import annotations

from dataclasses import dataclass

from marketbus.shared.names import feed_name
from marketbus.shared.schema import OHLCV

RUN = 1_790_000_000_000
T0_MS = 1_790_000_000_000


@dataclass(frozen=True)
class Workload:
    """*count* closed 1m candles spread round-robin over *feeds* feeds.

    Closed candles are what the SPEC stores: each is one XADD + one PUBLISH, and the
    producer's outbox never conflates them, so every message reaches Redis.
    """

    count: int
    feeds: int = 100

    def feed_names(self) -> list[str]:
        return [feed_name("md", "binance", "ohlcv.1m", f"C{i}/USDT") for i in range(self.feeds)]

    def messages(self) -> list[tuple[int, OHLCV]]:
        """``(feed index, message)`` with run/seq unset (the publisher stamps them)."""
        out: list[tuple[int, OHLCV]] = []
        for n in range(self.count):
            feed = n % self.feeds
            step = n // self.feeds
            price = 100.0 + (step % 1000) * 0.25
            out.append(
                (
                    feed,
                    OHLCV(
                        exchange="binance",
                        symbol=f"C{feed}/USDT",
                        ts_ms=T0_MS + step * 60_000,
                        recv_ns=T0_MS * 1_000_000 + n,
                        timeframe="1m",
                        open=price,
                        high=price + 1.5,
                        low=price - 1.25,
                        close=price + 0.5,
                        volume=1234.5 + step,
                        closed=True,
                    ),
                )
            )
        return out
