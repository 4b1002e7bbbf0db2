"""Handing updates to one listener: at its own pace (`Mailbox`) or at once (`InlineListener`).

A listener slower than the feed must never slow the read loop (Redis would drop the
pub/sub connection at its output-buffer limit) nor grow memory without bound. Each
listener owns a `Mailbox` with this policy, per feed and in feed order:

- state updates (ticker, book, forming candle) are conflated: only the newest waits;
- updates that must not be skipped (trades, closed candles) are queued up to
  ``max_pending`` in total; beyond that the feed switches to *read-back*: the mailbox
  only remembers the range of positions it skipped and, when the listener gets there,
  reads them back from the feed's stream. What the stream has evicted meanwhile, or
  what cannot be read back (`ReadBackError`), is reported as a `Gap` (reason
  ``delivery``), never skipped silently;
- events (gaps, staleness) come first; at most ``max_events`` wait, the oldest
  staleness flips are dropped first (the current state is in `Subscriber.is_stale`).

Feeds take turns: the feeds with something waiting form a ring, and each turn hands over
at most ``turn`` (`TURN`) updates of one feed, then the newest state update if its
must-deliver ones are done, before the next feed's turn. So one flooded feed cannot
starve the others: with N feeds waiting, each gets a turn within N turns. A feed that
reads back starts its turn by looking at its stream when its in-memory backlog will not
be delivered within the turn (a *probe*: one entry): what the stream evicted is then
reported at that turn, before the backlog, not when the listener gets through it.

A listener that asked for ``delivery="inline"`` has no mailbox: `InlineListener` calls
its plain callbacks right in the read path, before the next update is applied, with
no task switch. It never falls behind by construction; a slow inline callback holds
up the socket instead (see `InlineListener`).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any, TypeAlias

from marketbus.consumers.events import Event, Gap, Staleness, Stats, Update
from marketbus.consumers.sequencing import Position
from marketbus.shared.errors import ConfigError, SubscriberError
from marketbus.shared.schema import OHLCV

log = logging.getLogger("marketbus.consumers")

ReadBack: TypeAlias = Callable[[str, Position, Position, int], Awaitable[list[Update]]]
"""``(feed, after, upto, count)`` -> at most *count* messages of *feed* with
``after < position <= upto`` from its stream, oldest first; `ReadBackError` if the
stream cannot be read."""

READ_BACK_PAGE = 1000
TURN = 16
"""Updates of one feed handed over per turn (see the module docstring)."""

Failure: TypeAlias = Callable[[Event, Exception], None]
"""``(item, error)``: what to do when a callback raised on *item* (the error policy)."""


class ReadBackError(SubscriberError):
    """A `ReadBack` gave up (Redis refused the read, or it kept failing). The mailbox
    reports what it could not read back as a `Gap` of reason ``delivery``."""


class _FeedBox:
    __slots__ = (
        "feed",
        "forgotten",
        "items",
        "overflow",
        "probed",
        "queued",
        "skipped",
        "state",
    )

    def __init__(self, feed: str) -> None:
        self.feed = feed
        self.forgotten = False
        """The feed is not followed any more: the box goes once it is drained."""
        self.items: deque[Update] = deque()
        self.state: Update | None = None
        self.overflow: tuple[Position, Position] | None = None
        """``(after, upto)``: must-deliver updates to read back from the stream."""
        self.skipped = 0
        """Must-deliver updates not kept in memory in the current overflow."""
        self.queued = False
        """In the mailbox's ready queue."""
        self.probed = False
        """The stream was looked at for evictions during the current turn."""


class Mailbox:
    """One listener's bounded, conflating queue (see the module docstring).

    `push` runs in the read path, once per update: its common case (a must-deliver
    update, nothing conflated, no overflow) is a few attribute updates and no call.
    """

    def __init__(
        self,
        read_back: ReadBack,
        stats: Stats,
        *,
        max_pending: int = 100_000,
        max_events: int = 10_000,
        feeds: frozenset[str] | None = None,
        turn: int = TURN,
    ) -> None:
        if turn < 1:
            raise ValueError(f"turn must be >= 1, got {turn}")
        self._read_back = read_back
        self._stats = stats
        self._max_pending = max_pending
        self._feeds = feeds
        self._boxes: dict[str, _FeedBox] = {}
        self._ready: deque[_FeedBox] = deque()
        """Boxes with something to deliver: a ring, the head's turn is on."""
        self._turn = turn
        self._turn_left = turn
        """Updates the head box may still hand over in its turn."""
        self._pending = 0
        self._events: deque[Gap | Staleness] = deque()
        self._max_events = max_events
        self._waiter: asyncio.Future[None] | None = None
        """Set while `get` waits for something to arrive."""
        self._closed = False

    def close(self) -> None:
        """Wake the reader; `get` returns None from now on."""
        self._closed = True
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if not waiter.done():
                waiter.set_result(None)

    @property
    def pending(self) -> int:
        """Must-deliver updates waiting in memory."""
        return self._pending

    @property
    def feeds_held(self) -> int:
        """Feeds this mailbox keeps a box for (each goes once forgotten and drained)."""
        return len(self._boxes)

    def forget(self, feed: str) -> None:
        """*feed* is not followed any more: drop its box now if it is empty, else once
        what it holds is delivered."""
        box = self._boxes.get(feed)
        if box is None:
            return
        if box.queued:
            box.forgotten = True
        else:
            del self._boxes[feed]

    def push(self, feed: str, message: Update, must: bool) -> None:
        if self._feeds is not None and feed not in self._feeds:
            return
        box = self._boxes.get(feed)
        if box is None:
            box = self._boxes[feed] = _FeedBox(feed)
        if must and box.state is None and box.overflow is None:
            if self._pending < self._max_pending:
                box.items.append(message)
                self._pending += 1
            else:
                self._overflow(box, message)
        elif must:
            self._push_must(box, message)
        else:
            if box.state is not None:
                self._stats.conflated += 1
            box.state = message
        if not box.queued:
            box.queued = True
            self._ready.append(box)
        if self._waiter is not None:
            self._wake()

    def _push_must(self, box: _FeedBox, message: Update) -> None:
        """A must-deliver update after a conflated one, or while reading back."""
        if box.state is not None:  # older than this one: superseded
            box.state = None
            self._stats.conflated += 1
        if box.overflow is not None:
            box.overflow = (box.overflow[0], message.position)
            box.skipped += 1
        elif self._pending >= self._max_pending:
            self._overflow(box, message)
        else:
            box.items.append(message)
            self._pending += 1

    def _overflow(self, box: _FeedBox, message: Update) -> None:
        """Too many updates wait: *box*'s feed switches to reading back from its stream."""
        run, seq = message.position
        box.overflow = ((run, seq - 1), message.position)
        box.skipped = 1
        box.probed = False
        log.warning(
            "listener is %d updates behind: %s switches to reading back from its stream",
            self._pending,
            box.feed,
        )

    def push_event(self, event: Gap | Staleness) -> None:
        if (
            isinstance(event, Staleness)
            and self._feeds is not None
            and event.feed not in self._feeds
        ):
            return
        if len(self._events) >= self._max_events:
            for i, old in enumerate(self._events):
                if isinstance(old, Staleness):
                    del self._events[i]
                    break
            else:
                return  # a full queue of gaps: the counters and recent_gaps still have it
        self._events.append(event)
        self._wake()

    async def get(self) -> Event | None:
        """The next event or update, None once closed.

        Waits without a deadline: a listener waits for data until the subscriber closes.
        """
        while not self._closed:
            item = self.get_nowait()
            if item is not None:
                return item
            if self._ready:  # a feed reads back from its stream first
                box = self._ready[0]
                await self._refill(box.feed, box)
                continue
            waiter = self._waiter = asyncio.get_running_loop().create_future()
            try:
                await waiter
            finally:
                self._waiter = None
        return None

    def get_nowait(self) -> Event | None:
        """The next item held in memory, or None (does not read from streams: when the
        head feed needs that first, `get` does it)."""
        if self._events:
            return self._events.popleft()
        ready = self._ready
        while ready:
            box = ready[0]
            items = box.items
            left = self._turn_left
            if items and left and box.overflow is None:  # the common case first
                self._turn_left = left - 1
                self._pending -= 1
                return items.popleft()
            if left == 0:  # the head's turn is over: the next feed's begins
                self._turn_left = self._turn
                box.probed = False
                ready.rotate(-1)
                continue
            if box.overflow is not None:
                if not items or (not box.probed and len(items) > left):
                    return None  # a page to read back, or a probe for evictions first
                self._turn_left = left - 1
                self._pending -= 1
                return items.popleft()
            ready.popleft()
            box.queued = False
            self._turn_left = self._turn
            if box.forgotten and self._boxes.get(box.feed) is box:
                del self._boxes[box.feed]
            state = box.state
            if state is not None:
                box.state = None
                return state
        return None

    async def _refill(self, feed: str, box: _FeedBox) -> None:
        """Read the next page of an overflow range back into the box's items or, while
        the box still holds more than its turn, probe the range for evictions."""
        assert box.overflow is not None
        after, upto = box.overflow
        probe = bool(box.items)
        box.probed = True
        try:
            page = await self._read_back(feed, after, upto, 1 if probe else READ_BACK_PAGE)
        except ReadBackError as exc:
            if not probe:  # a probe only looks: the page read reports a failure
                self._end_overflow(box, upto, f"could not be read back from the stream ({exc})")
            return
        if box.overflow is None:
            return
        if probe:  # an empty page may be an undecodable entry: the page read decides
            if page and self._report_hole(box, after, page[0]):
                first = page[0]
                box.overflow = ((first.run, first.seq - 1), box.overflow[1])
            return
        expected = after
        for message in page:
            self._report_hole(box, expected, message)
            expected = message.position
            box.items.append(message)
            self._pending += 1
            box.skipped -= 1
            self._stats.refetched += 1
        if page:
            box.overflow = (page[-1].position, box.overflow[1])
        if not page or page[-1].position >= box.overflow[1]:
            self._end_overflow(
                box, upto, "evicted from the stream before this listener read them back"
            )

    def _end_overflow(self, box: _FeedBox, upto: Position, why: str) -> None:
        """The read-back of *box* is over: what it did not get back is a `Gap`."""
        if box.skipped > 0:
            self.push_event(
                Gap(
                    feed=box.feed,
                    run=upto[0],
                    first_seq=None,
                    last_seq=None,
                    reason="delivery",
                    detail=f"{box.skipped} update(s) {why}",
                )
            )
            self._stats.gaps += 1
            self._stats.missing += box.skipped
        box.overflow = None
        box.skipped = 0

    def _report_hole(self, box: _FeedBox, after: Position, message: Update) -> bool:
        """Report the updates of *box* between *after* and *message* that the stream no
        longer has (True if any). Exact for trades, whose every seq is in the stream;
        closed candles are counted when the read-back ends (`_end_overflow`)."""
        if isinstance(message, OHLCV):
            return False
        run, seq = message.position
        first = after[1] + 1 if run == after[0] else 1
        if seq <= first:
            return False
        self.push_event(
            Gap(feed=box.feed, run=run, first_seq=first, last_seq=seq - 1, reason="delivery")
        )
        self._stats.gaps += 1
        self._stats.missing += seq - first
        box.skipped -= seq - first
        return True


class InlineListener:
    """A listener whose plain callbacks run inline, as the engine applies each update.

    It is an engine sink like `Mailbox`, but `push` and `push_event` call the callback
    right away: on the transport's socket handler for live data (before the next update
    of the read is applied, and before the next socket read), on the fetch task for
    repaired history, on the health task for staleness. Nothing waits, so nothing is
    conflated or read back; a callback sees every update, and the buffer it reads is
    exactly at that update.

    The cost is the caller's: while a callback runs, nothing is read. A slow one backs
    up the socket until Redis drops the connection at its pub/sub output limit; the
    subscriber then reconnects and resumes from the streams, and whatever the streams
    evicted meanwhile is reported as a `Gap`. An exception from a callback goes to
    *failed* (the listener's error policy); after `close`, callbacks are not called.
    """

    __slots__ = ("_closed", "_failed", "_feeds", "_on_gap", "_on_message", "_on_stale")

    def __init__(
        self,
        on_message: Callable[[Update], Any] | None,
        on_gap: Callable[[Gap], Any] | None,
        on_stale: Callable[[Staleness], Any] | None,
        *,
        failed: Failure,
        feeds: frozenset[str] | None = None,
    ) -> None:
        check_inline(on_message, on_gap, on_stale)
        self._on_message = on_message
        self._on_gap = on_gap
        self._on_stale = on_stale
        self._feeds = feeds
        self._failed = failed
        self._closed = False

    def close(self) -> None:
        """No callback is called from now on."""
        self._closed = True

    def forget(self, feed: str) -> None:
        """Nothing is kept per feed."""

    def push(self, feed: str, message: Update, must: bool) -> None:
        callback = self._on_message
        if callback is None or self._closed:
            return
        if self._feeds is not None and feed not in self._feeds:
            return
        try:
            result = callback(message)
        except Exception as exc:  # the strategy's own code: its policy decides
            self._failed(message, exc)
            return
        if result is not None:
            self._returned(message, result)

    def push_event(self, event: Gap | Staleness) -> None:
        if self._closed:
            return
        if isinstance(event, Gap):
            callback: Callable[[Any], Any] | None = self._on_gap
        else:
            if self._feeds is not None and event.feed not in self._feeds:
                return  # as `Mailbox.push_event` filters
            callback = self._on_stale
        if callback is None:
            return
        try:
            result = callback(event)
        except Exception as exc:
            self._failed(event, exc)
            return
        if result is not None:
            self._returned(event, result)

    def _returned(self, item: Event, result: object) -> None:
        """A callback returned something: an awaitable would never run, so it is an error."""
        if not inspect.isawaitable(result):
            return
        if inspect.iscoroutine(result):
            result.close()  # never awaited, on purpose: no warning
        self._failed(
            item,
            TypeError(
                "an inline callback returned an awaitable, which inline delivery cannot "
                "await; register async callbacks with delivery='queued'"
            ),
        )


def check_inline(*callbacks: Callable[..., Any] | None) -> None:
    """ConfigError if a callback is a coroutine function (also behind
    ``functools.partial`` or as ``async __call__``): inline delivery cannot await it."""
    for callback in callbacks:
        if callback is not None and (
            inspect.iscoroutinefunction(callback)
            or inspect.iscoroutinefunction(type(callback).__call__)
        ):
            raise ConfigError(
                f"{callback!r} is a coroutine function: inline delivery calls plain "
                "functions only; register it with delivery='queued' instead"
            )
