"""Which stream read next, page by page, and when to give up (pure: no Redis, no await).

The engine asks for stream reads (`Fetch`); the shell (`marketbus.consumers.streams`)
performs them. Everything it decides is here:

- `FetchQueue`: at most one waiting read per feed, the newest request winning (a resync
  supersedes a repair), and never two reads of one feed at once;
- `first_range` / `next_range`: the XRANGE or XREVRANGE calls of one `Fetch`. A count
  (``count`` set) is one XREVRANGE of the newest entries; an open range is read with
  XRANGE in pages of `PAGE`, each after the last ID of the previous one, until a page
  comes back short;
- `Attempts`: the one retry policy of every stream read (backfill, repair, resume, a
  slow listener's read-back): connection errors are retried with backoff up to
  `MAX_ATTEMPTS` times; an error reply (e.g. NOPERM) is not retried. A read given up
  is reported for its feed, never raised into the subscriber.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence
from typing import Final

import msgspec

from marketbus.consumers.engine import Entry, Fetch
from marketbus.shared.backoff import Backoff
from marketbus.shared.names import entry_id

PAGE: Final = 1000
"""Stream entries per XRANGE round trip."""
MAX_ATTEMPTS: Final = 10
"""Connection failures of one stream read before it is given up (with the default
`Backoff`, about half a minute of retrying)."""


class Range(msgspec.Struct, frozen=True):
    """One stream read: ``XRANGE feed low high COUNT count``, or ``XREVRANGE feed high
    low COUNT count`` when *newest_first*. Bounds are Redis range bounds (``-``, ``+``
    or ``(`` and an entry ID: exclusive)."""

    low: str
    high: str
    count: int
    newest_first: bool


def first_range(fetch: Fetch) -> Range:
    """The first read of *fetch*."""
    low = "-" if fetch.after is None else "(" + entry_id(*fetch.after)
    if fetch.confirm is not None:  # up to and including the message to confirm
        high = entry_id(*fetch.confirm)
    else:
        high = "+" if fetch.before is None else "(" + entry_id(*fetch.before)
    if fetch.count is not None:
        return Range(low, high, fetch.count, newest_first=True)
    return Range(low, high, PAGE, newest_first=False)


def next_range(current: Range, page: Sequence[Entry]) -> Range | None:
    """The read after *current* returned *page* (oldest first); None when it was the last."""
    if current.newest_first or len(page) < current.count:
        return None
    last = page[-1][0]
    after = last.decode() if isinstance(last, bytes) else last
    return Range("(" + after, current.high, current.count, newest_first=False)


class FetchQueue:
    """Stream reads waiting for a worker, one per feed, and the feeds being read."""

    __slots__ = ("_inflight", "_pending")

    def __init__(self) -> None:
        self._pending: dict[str, Fetch] = {}
        self._inflight: set[str] = set()

    def put(self, fetches: Iterable[Fetch]) -> bool:
        """Queue *fetches*, each replacing a waiting read of its feed; True if any."""
        added = False
        for fetch in fetches:
            self._pending[fetch.feed] = fetch
            added = True
        return added

    def take(self) -> Fetch | None:
        """The oldest waiting read of a feed not being read (now being read), or None."""
        for feed, fetch in self._pending.items():
            if feed not in self._inflight:
                del self._pending[feed]
                self._inflight.add(feed)
                return fetch
        return None

    def done(self, fetch: Fetch) -> None:
        """*fetch* ended (applied, given up or abandoned): its feed may be read again."""
        self._inflight.discard(fetch.feed)

    def superseded(self, fetch: Fetch) -> bool:
        """True when a newer read of *fetch*'s feed waits (this one can stop)."""
        return fetch.feed in self._pending

    @property
    def waiting(self) -> int:
        """Reads waiting for a worker."""
        return len(self._pending)

    @property
    def reading(self) -> frozenset[str]:
        """Feeds being read now."""
        return frozenset(self._inflight)


class Attempts:
    """The connection failures of one stream read under the retry bound."""

    __slots__ = ("_backoff", "_failures", "_limit", "_rng")

    def __init__(
        self, backoff: Backoff, *, limit: int = MAX_ATTEMPTS, rng: random.Random | None = None
    ) -> None:
        self._backoff = backoff
        self._limit = limit
        self._rng = rng
        self._failures = 0

    @property
    def failures(self) -> int:
        return self._failures

    def failed(self) -> float | None:
        """Count a connection failure: seconds to wait before the next try, or None
        when the read is to be given up."""
        self._failures += 1
        if self._failures >= self._limit:
            return None
        return self._backoff.delay(self._failures, self._rng)
