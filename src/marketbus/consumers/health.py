"""Is a feed fresh enough to trade on? Staleness of one feed, without I/O or clocks.

A feed is stale when nothing arrived for longer than its threshold (``quiet``) or when
its producer said so on ``{ns}:{exchange}:status`` (``disconnected``, ``stale``,
``error``, ``stopped``). Fresh data, or a ``connected``/``started`` event, clears it.
Callers pass the monotonic time in; each method returns the transition, if any.

Beyond both, the reader's own link: a subscriber that lost its pub/sub connection, or
stopped, cannot know whether a feed is live, so every feed is stale with that reason
(``disconnected from Redis``, ``subscriber stopped: ...``) until the link is back and
the feed resynced. While the link is down, nothing else clears it.
"""

from __future__ import annotations

from typing import Final

from marketbus.consumers.events import Staleness

PRODUCER_STALE_EVENTS: Final = frozenset({"disconnected", "stale", "error", "stopped"})
PRODUCER_FRESH_EVENTS: Final = frozenset({"connected", "started"})


class FeedHealth:
    """Staleness state of one feed; reports only transitions."""

    __slots__ = (
        "_link",
        "_producer",
        "_producer_detail",
        "_since",
        "feed",
        "last_data",
        "quiet_after_s",
        "stale",
    )

    def __init__(self, feed: str, quiet_after_s: float | None, now: float) -> None:
        self.feed = feed
        self.quiet_after_s = quiet_after_s
        self.last_data: float | None = None
        self._since = now
        self._producer: str | None = None
        self._producer_detail = ""
        self._link: str | None = None
        """Why the reader cannot vouch for this feed now (None: it can)."""
        self.stale = False

    def _age(self, now: float) -> float | None:
        return None if self.last_data is None else now - self.last_data

    def _set(self, stale: bool, reason: str, now: float, detail: str = "") -> Staleness | None:
        if stale == self.stale:
            return None
        self.stale = stale
        return Staleness(
            feed=self.feed, stale=stale, reason=reason, age_s=self._age(now), detail=detail
        )

    @property
    def reason(self) -> str:
        """Why the feed is stale now ('' when fresh)."""
        if not self.stale:
            return ""
        return self._link or self._producer or "quiet"

    @property
    def link(self) -> str | None:
        """Why the reader's own link is down (None when it is up)."""
        return self._link

    def on_data(self, now: float) -> Staleness | None:
        """A message was applied: the feed (and its producer) are alive."""
        self.last_data = now
        self._producer = None
        if self._link is not None:
            return None
        return self._set(False, "", now) if self.stale else None

    def on_link_down(self, reason: str, now: float) -> Staleness | None:
        """The reader lost its link (or stopped): stale for *reason*, reported even when
        the feed was stale for another reason already."""
        if self._link == reason:
            return None
        self._link = reason
        self.stale = True
        return Staleness(feed=self.feed, stale=True, reason=reason, age_s=self._age(now))

    def on_link_up(self, now: float) -> Staleness | None:
        """The link is back and the feed resynced: judged on its own again."""
        if self._link is None:
            return None
        self._link = None
        if self._producer is not None:
            return Staleness(
                feed=self.feed,
                stale=True,
                reason=self._producer,
                age_s=self._age(now),
                detail=self._producer_detail,
            )
        self.stale = False  # so check() reports the transition it finds
        fresh = self.check(now)
        if fresh is None:
            return Staleness(feed=self.feed, stale=False, reason="", age_s=self._age(now))
        self.stale = True
        return fresh

    def on_producer(self, event: str, detail: str, now: float) -> Staleness | None:
        """The producer reported *event* for this feed (or its whole exchange)."""
        if event in PRODUCER_STALE_EVENTS:
            self._producer = event
            self._producer_detail = detail
            if self.stale:
                return None
            return self._set(True, event, now, detail)
        if event in PRODUCER_FRESH_EVENTS and self._producer is not None:
            self._producer = None
            return self.check(now)
        return None

    def check(self, now: float) -> Staleness | None:
        """Re-evaluate the quiet threshold at *now*."""
        if self._producer is not None or self._link is not None:
            return None
        if self.quiet_after_s is None:
            return self._set(False, "", now) if self.stale else None
        reference = self.last_data if self.last_data is not None else self._since
        quiet = now - reference > self.quiet_after_s
        return self._set(quiet, "quiet" if quiet else "", now)
