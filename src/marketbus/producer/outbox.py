"""The bounded queue between watch loops and the Redis writer, and its policy (pure).

Watch loops never wait for Redis. When the writer falls behind (Redis slow or down):

- state messages (the kinds `names.newest_wins` names, and the forming candle) are
  conflated: a newer one of the same feed replaces the one still queued, so a feed
  holds at most one and nothing a reader needs is lost (the latest state wins);
- history messages (every other kind: trades, closed candles, status events) are kept
  in order up to
  ``capacity``; beyond that new ones are dropped and counted per feed.

Sequence numbers are stamped when the writer takes messages out, so conflation leaves
no hole in ``seq``; a dropped message does: the next message of its feed carries
``skip`` = how many seqs to leave unused, and the writer announces that range as a
``gap`` status event. A queued state message is sealed behind any later history message
of its feed, so per-feed order is always preserved.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from marketbus.shared.names import newest_wins
from marketbus.shared.schema import MESSAGE_TYPES, OHLCV, Message


@dataclass(slots=True)
class Entry:
    """One queued message and what the writer needs to publish it."""

    feed: str
    message: Message
    stream: bool
    conflate: bool
    skip: int = 0


_NEWEST_WINS: dict[type, bool] = {
    cls: newest_wins(str(cls.__struct_config__.tag)) for cls in MESSAGE_TYPES
}
"""Per message class, whether its kind (the class's ``type`` tag) is newest-wins."""


def policy(message: Message) -> tuple[bool, bool]:
    """``(goes to the stream, may be conflated)`` for *message* (SPEC "Streams").

    Newest-wins kinds are conflated and streamed; a candle is state while it forms (not
    streamed, conflated) and history once closed; everything else is history.
    """
    if type(message) is OHLCV:
        return (message.closed, not message.closed)
    return (True, _NEWEST_WINS[type(message)])


class Outbox:
    """FIFO of `Entry` with conflation of state and a bound on history."""

    __slots__ = (
        "_entries",
        "_history",
        "_pending_skip",
        "_slots",
        "capacity",
        "conflated",
        "dropped",
    )

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError("outbox capacity must be at least 1")
        self.capacity = capacity
        self._entries: deque[Entry] = deque()
        self._slots: dict[str, Entry] = {}
        self._history = 0
        self._pending_skip: dict[str, int] = {}
        self.conflated = 0
        self.dropped: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def entries(self) -> tuple[Entry, ...]:
        """What is queued, oldest first (a snapshot: `take` is how entries leave)."""
        return tuple(self._entries)

    def put(self, feed: str, message: Message) -> bool:
        """Queue *message* of *feed*; False if it was dropped (history over capacity)."""
        stream, conflate = policy(message)
        if conflate:
            slot = self._slots.get(feed)
            if slot is not None:
                slot.message = message
                slot.stream = stream
                self.conflated += 1
                return True
            skip = self._pending_skip.pop(feed, 0) if self._pending_skip else 0
            entry = Entry(feed, message, stream, True, skip)
            self._slots[feed] = entry
            self._entries.append(entry)
            return True
        self._slots.pop(feed, None)  # seal: later state goes behind this message
        if self._history >= self.capacity:
            self._pending_skip[feed] = self._pending_skip.get(feed, 0) + 1
            self.dropped[feed] = self.dropped.get(feed, 0) + 1
            return False
        skip = self._pending_skip.pop(feed, 0) if self._pending_skip else 0
        self._entries.append(Entry(feed, message, stream, False, skip))
        self._history += 1
        return True

    def take(self, limit: int) -> list[Entry]:
        """Remove and return up to *limit* entries, oldest first."""
        batch: list[Entry] = []
        entries = self._entries
        while entries and len(batch) < limit:
            entry = entries.popleft()
            if entry.conflate:
                if self._slots.get(entry.feed) is entry:
                    del self._slots[entry.feed]
            else:
                self._history -= 1
            batch.append(entry)
        return batch

    def take_pending_skips(self) -> dict[str, int]:
        """Drops not yet followed by a message of their feed (announced at shutdown)."""
        pending, self._pending_skip = self._pending_skip, {}
        return pending
