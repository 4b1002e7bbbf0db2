"""`StopNotice`: a failed subscriber's last word to its queued ``on_stale`` listeners.

When a subscriber fails, every feed goes stale with the reason (``subscriber stopped:
<error>``). Inline listeners hear it at once from the engine; a queued listener's task
is stopped with the rest by then, so the shutdown hands it the events directly: the
strategy learns that nothing it holds is live, instead of finding out at its next
``await``. An error in such a callback is logged, nothing more: the subscriber has
stopped already.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Iterable

from marketbus.consumers.events import Staleness
from marketbus.consumers.listeners import Listener

log = logging.getLogger("marketbus.consumers")


class StopNotice:
    """The queued listeners with an ``on_stale`` and the events to tell them."""

    __slots__ = ("_events", "_listeners")

    def __init__(self) -> None:
        self._listeners: list[Listener] = []
        self._events: list[Staleness] = []

    def add(self, listener: Listener) -> None:
        """Remember *listener* if it is queued and has an ``on_stale`` (else no-op)."""
        if listener.on_stale is not None and listener.delivery == "queued":
            self._listeners.append(listener)

    def record(self, events: Iterable[Staleness]) -> None:
        """The events of the failure, told by `deliver`."""
        self._events = list(events)

    async def deliver(self) -> None:
        """Call each listener's ``on_stale`` with the events of its feeds, once."""
        events, self._events = self._events, []
        for listener in self._listeners:
            callback = listener.on_stale
            assert callback is not None
            for event in events:
                if listener.feeds is not None and event.feed not in listener.feeds:
                    continue
                try:
                    result = callback(event)
                    if inspect.isawaitable(result):
                        await result
                except Exception:  # the strategy's own code, after the failure
                    log.exception("on_stale failed on %s while the subscriber stopped", event)
