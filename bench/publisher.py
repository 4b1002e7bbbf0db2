"""The producer's real `Publisher` as every benchmark runs it: JSON, batches of 512, an
outbox that never drops (bounded by the run's message count), counters per feed."""

from __future__ import annotations

from marketbus.producer.publisher import FeedCounters, Publisher
from marketbus.producer.transport import Transport
from marketbus.shared.backoff import BackoffState
from marketbus.shared.config import StreamCaps

CAP = 10_000
"""Stream MAXLEN of the benchmarks' candle feeds."""
BATCH = 512


def make_publisher(
    transport: Transport,
    *,
    run: int,
    queue_max: int,
    namespace: str = "md",
    caps: StreamCaps | None = None,
) -> tuple[Publisher, dict[str, FeedCounters]]:
    """A `Publisher` on *transport* and the counters it fills, by feed name."""
    counters: dict[str, FeedCounters] = {}
    publisher = Publisher(
        transport,
        namespace=namespace,
        run=run,
        encoding="json",
        caps=caps or StreamCaps(ohlcv=CAP),
        batch_size=BATCH,
        queue_max_messages=queue_max,
        backoff=BackoffState(0.1, 1.0),
        counters=lambda feed: counters.setdefault(feed, FeedCounters()),
    )
    return publisher, counters
