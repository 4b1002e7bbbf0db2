"""What the producer counts, and the heartbeat that carries it (pure, no ccxt, no I/O).

`FeedCounters` are the live per-feed counters (the watch loops and the writer bump
them); `LatencyHistogram` measures recv -> Redis acknowledged; `Heartbeat` is the JSON
a ``heartbeat`` status event carries in ``detail``, so ``marketbus status`` can show
every feed's state from Redis alone. The CLI imports this module on the light install.
"""

from __future__ import annotations

import bisect
from collections.abc import Mapping
from typing import Final, Literal, TypeAlias

import msgspec

FeedState: TypeAlias = Literal["starting", "connected", "stale", "disconnected", "error"]
"""Where a feed's watch loop is: ``starting`` until its first data, ``connected`` while
data arrives, else the kind of the last failure."""


class FeedCounters:
    """Mutable per-feed counters owned by the producer (snapshotted into `FeedStats`)."""

    __slots__ = (
        "corrections",
        "dropped",
        "errors",
        "last_message_ms",
        "published",
        "reconnects",
        "state",
    )

    def __init__(self) -> None:
        self.published = 0
        self.last_message_ms: int | None = None
        self.errors = 0
        self.reconnects = 0
        self.dropped = 0
        self.corrections = 0
        """Closed candles re-sent with the exchange's REST values (ohlcv feeds)."""
        self.state: FeedState = "starting"


class FeedStats(msgspec.Struct, frozen=True, kw_only=True):
    """A snapshot of one feed's counters (`Producer.stats`)."""

    state: FeedState
    published: int
    last_message_ms: int | None
    errors: int
    reconnects: int
    dropped: int
    corrections: int = 0


def snapshot(counters: FeedCounters) -> FeedStats:
    return FeedStats(
        state=counters.state,
        published=counters.published,
        last_message_ms=counters.last_message_ms,
        errors=counters.errors,
        reconnects=counters.reconnects,
        dropped=counters.dropped,
        corrections=counters.corrections,
    )


LATENCY_BOUNDS_S: Final = (
    0.0005,
    0.001,
    0.002,
    0.005,
    0.01,
    0.02,
    0.05,
    0.1,
    0.2,
    0.5,
    1.0,
    2.0,
    5.0,
    10.0,
)
"""Upper bounds of the latency buckets, seconds (the last bucket is +Inf)."""


class LatencyHistogram:
    """Cumulative-free bucket counts of latencies: one bisect per observation."""

    __slots__ = ("bounds", "count", "counts", "maximum", "sum")

    def __init__(self, bounds: tuple[float, ...] = LATENCY_BOUNDS_S) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.count = 0
        self.sum = 0.0
        self.maximum = 0.0

    def observe(self, seconds: float) -> None:
        self.observe_many([seconds])

    def observe_many(self, values: list[float]) -> None:
        """Count each of *values* (the writer calls this once per batch)."""
        if not values:
            return
        counts = self.counts
        bounds = self.bounds
        bisect_left = bisect.bisect_left
        for seconds in values:
            counts[bisect_left(bounds, seconds)] += 1
        self.count += len(values)
        self.sum += sum(values)
        self.maximum = max(self.maximum, max(values))

    def quantile(self, q: float) -> float | None:
        """The upper bound of the bucket holding quantile *q* (the maximum for the
        +Inf bucket); None before any observation."""
        if self.count == 0:
            return None
        rank = q * self.count
        seen = 0
        for bound, n in zip(self.bounds, self.counts, strict=False):
            seen += n
            if seen >= rank:
                return min(bound, self.maximum)
        return self.maximum


class FeedHeartbeat(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """One feed in a heartbeat. ``age_s``: seconds since its last message was written
    (null before the first one); ``corrections``: closed candles re-sent with the
    exchange's REST values."""

    state: str
    msgs: int = 0
    age_s: float | None = None
    errors: int = 0
    reconnects: int = 0
    dropped: int = 0
    corrections: int = 0


class Heartbeat(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """The ``detail`` of a ``heartbeat`` status event, as JSON.

    ``feeds`` is keyed by ``{kind}:{symbol}`` (the feed name without ``{ns}:{exchange}:``).
    ``queued``: messages waiting for Redis; ``lease``: this producer's lease holder id.
    """

    queued: int
    feeds: dict[str, FeedHeartbeat]
    lease: str | None = None


_heartbeat_encoder = msgspec.json.Encoder()
_heartbeat_decoder = msgspec.json.Decoder(Heartbeat)


def heartbeat_detail(
    counters: Mapping[str, FeedCounters],
    *,
    prefix: str,
    queued: int,
    now_ms: int,
    lease: str | None = None,
) -> str:
    """The heartbeat JSON of the feeds in *counters* whose names start with *prefix*
    (``{ns}:{exchange}:``)."""
    feeds: dict[str, FeedHeartbeat] = {}
    for name, c in counters.items():
        if not name.startswith(prefix):
            continue
        age = None if c.last_message_ms is None else round((now_ms - c.last_message_ms) / 1e3, 1)
        feeds[name[len(prefix) :]] = FeedHeartbeat(
            state=c.state,
            msgs=c.published,
            age_s=age,
            errors=c.errors,
            reconnects=c.reconnects,
            dropped=c.dropped,
            corrections=c.corrections,
        )
    beat = Heartbeat(queued=queued, feeds=feeds, lease=lease)
    return _heartbeat_encoder.encode(beat).decode()


def parse_heartbeat(detail: str) -> Heartbeat | None:
    """A heartbeat's detail, None if it is not one (older producers sent plain text)."""
    if not detail.startswith("{"):
        return None
    try:
        return _heartbeat_decoder.decode(detail)
    except msgspec.DecodeError:
        return None
