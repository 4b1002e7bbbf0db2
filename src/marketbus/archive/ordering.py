"""The order of a replay: exchange time across feeds, stream order within each feed.

Pure. A message's *event time* is when it became known in exchange time: its
``ts_ms``, except a candle, which is known when it closes (open time + timeframe); a
message without ``ts_ms`` uses the producer's ``recv_ns``. Feeds are merged by the
event time of their next message, ties broken by feed name, then ``(run, seq)``: a
total order, so two replays are identical. Each feed's own messages keep their stream
order ``(run, seq)`` even where their event times go back (a late correction), because
a stream only accepts growing entry IDs.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Iterator, Mapping

from marketbus.shared.names import timeframe_ms
from marketbus.shared.schema import OHLCV, MarketMessage


def event_ms(message: MarketMessage) -> int:
    """Exchange time (ms) at which *message* was known."""
    ts = message.ts_ms if message.ts_ms is not None else message.recv_ns // 1_000_000
    if isinstance(message, OHLCV):
        return ts + timeframe_ms(message.timeframe)
    return ts


def merge(feeds: Mapping[str, Iterable[MarketMessage]]) -> Iterator[tuple[str, MarketMessage]]:
    """``(feed, message)`` of all *feeds* (each in stream order) in replay order."""
    heads: list[tuple[int, str, int, int, MarketMessage, Iterator[MarketMessage]]] = []
    for name, messages in feeds.items():
        it = iter(messages)
        for m in it:
            heads.append((event_ms(m), name, m.run, m.seq, m, it))
            break
    heapq.heapify(heads)
    while heads:
        _, name, _, _, message, it = heads[0]
        yield name, message
        for m in it:
            heapq.heapreplace(heads, (event_ms(m), name, m.run, m.seq, m, it))
            break
        else:
            heapq.heappop(heads)


class Pace:
    """Replay at *speed* times exchange time: how long to wait before each message.

    The first message sets the origin; a message ``t`` ms of exchange time after it is
    due ``t / speed`` ms of wall time after the first was. None: never wait.
    """

    def __init__(self, speed: float | None) -> None:
        self.speed = speed
        self._origin: tuple[float, int] | None = None

    def wait_s(self, event: int, now: float) -> float:
        """Seconds to wait (>= 0) before publishing a message of event time *event*,
        *now* being the monotonic clock."""
        if self.speed is None:
            return 0.0
        if self._origin is None:
            self._origin = (now, event)
        wall, first = self._origin
        return max(0.0, wall + (event - first) / 1000 / self.speed - now)
