"""The subscriber's listeners: who gets updates and events, and how.

A `Listener` is what one ``on_message(...)`` registration asked for. `Listeners` keeps
them: registrations made before the subscriber starts wait until it does; then each
becomes an engine sink, a `Mailbox` read by its own task (``delivery="queued"``) or an
`InlineListener` called from the read path (``delivery="inline"``). ``async for``
readers of `Subscriber.events` get a mailbox of their own, released when they stop.

A callback that raises follows its listener's `ErrorPolicy`: ``raise`` stops the
subscriber (through *stop*), ``log`` counts it in ``stats.callback_errors`` and logs
the 1st, 1001st, ... one.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from dataclasses import dataclass
from typing import Any, Final, TypeAlias

from marketbus.consumers.delivery import InlineListener, Mailbox, ReadBack, check_inline
from marketbus.consumers.engine import Engine
from marketbus.consumers.events import Event, Gap, Staleness, Update
from marketbus.consumers.options import (
    DeliveryMode,
    ErrorPolicy,
    OptionKeywords,
    SubscriberOptions,
    resolve_options,
)

log = logging.getLogger("marketbus.consumers")

MessageCallback: TypeAlias = Callable[[Update], Awaitable[None] | None]
GapCallback: TypeAlias = Callable[[Gap], Awaitable[None] | None]
StaleCallback: TypeAlias = Callable[[Staleness], Awaitable[None] | None]
Spawn: TypeAlias = Callable[[Coroutine[Any, Any, None], str], object]
"""Runs a coroutine as a supervised task of the subscriber (`Supervisor.spawn`)."""

LOG_EVERY: Final = 1000
"""Callback errors under ``on_error="log"`` are logged on the 1st, 1001st, ... one."""


@dataclass(frozen=True, slots=True)
class Listener:
    """One registration: its callbacks, the feeds it wants (None: all), what an error
    in a callback does, and how the callbacks are called.

    ConfigError when made with a coroutine function for inline delivery: refused when
    registered, not when the subscriber starts.
    """

    on_message: MessageCallback | None
    on_gap: GapCallback | None
    on_stale: StaleCallback | None
    feeds: frozenset[str] | None
    on_error: ErrorPolicy
    delivery: DeliveryMode

    def __post_init__(self) -> None:
        if self.delivery == "inline":
            check_inline(self.on_message, self.on_gap, self.on_stale)

    @classmethod
    def make(
        cls,
        on_message: MessageCallback | None,
        on_gap: GapCallback | None,
        on_stale: StaleCallback | None,
        *,
        defaults: SubscriberOptions,
        feeds: Iterable[str] | None = None,
        on_error: ErrorPolicy | None = None,
        delivery: DeliveryMode | None = None,
    ) -> Listener:
        """A listener of *feeds* (None: all); *on_error* and *delivery* default to
        those of *defaults* and are validated (ConfigError naming the bad one)."""
        chosen: OptionKeywords = {}
        if on_error is not None:
            chosen["on_error"] = on_error
        if delivery is not None:
            chosen["delivery"] = delivery
        options = resolve_options(defaults, chosen) if chosen else defaults
        selected = frozenset(feeds) if feeds is not None else None
        return cls(on_message, on_gap, on_stale, selected, options.on_error, options.delivery)


class Listeners:
    """The registry of one subscriber's listeners and their mailboxes (see the module).

    *stop* is called with the error of an ``on_error="raise"`` callback that ran inline
    (a queued one raises from its task, which stops the subscriber likewise).
    """

    def __init__(
        self,
        engine: Engine,
        *,
        max_pending: int,
        stop: Callable[[BaseException], None],
    ) -> None:
        self._engine = engine
        self._max_pending = max_pending
        self._stop = stop
        self._waiting: list[Listener] = []
        self._mailboxes: list[Mailbox] = []
        self._inline: list[InlineListener] = []
        self._read_back: ReadBack | None = None
        self._spawn: Spawn | None = None
        self._closed = False

    @property
    def mailboxes(self) -> int:
        """Mailboxes open (queued listeners and ``async for`` readers)."""
        return len(self._mailboxes)

    @property
    def inline(self) -> int:
        """Inline listeners registered."""
        return len(self._inline)

    @property
    def waiting(self) -> int:
        """Listeners registered before `start`, not running yet."""
        return len(self._waiting)

    def start(self, read_back: ReadBack, spawn: Spawn) -> None:
        """Run every listener registered so far, and the later ones at once."""
        self._read_back, self._spawn = read_back, spawn
        waiting, self._waiting = self._waiting, []
        for listener in waiting:
            self._run(listener)

    def add(self, listener: Listener) -> None:
        """Register *listener* (it runs once the registry is started)."""
        if self._spawn is None:
            self._waiting.append(listener)
        else:
            self._run(listener)

    def open_mailbox(self, feeds: frozenset[str] | None) -> Mailbox:
        """A mailbox the engine delivers to from now on, until `close_mailbox`."""
        assert self._read_back is not None, "the registry is not started"
        mailbox = Mailbox(
            self._read_back, self._engine.stats, max_pending=self._max_pending, feeds=feeds
        )
        self._mailboxes.append(mailbox)
        self._engine.add_sink(mailbox)
        if self._closed:
            mailbox.close()
        return mailbox

    def close_mailbox(self, mailbox: Mailbox) -> None:
        if mailbox in self._mailboxes:
            self._mailboxes.remove(mailbox)
            self._engine.remove_sink(mailbox)

    def close(self) -> None:
        """Wake every reader (their mailboxes end) and call no inline callback any more."""
        self._closed = True
        for mailbox in self._mailboxes:
            mailbox.close()
        for listener in self._inline:
            listener.close()

    def _run(self, listener: Listener) -> None:
        if listener.delivery == "inline":
            failed = self._failed if listener.on_error == "log" else self._raised
            inline = InlineListener(
                listener.on_message,
                listener.on_gap,
                listener.on_stale,
                failed=failed,
                feeds=listener.feeds,
            )
            self._inline.append(inline)
            self._engine.add_sink(inline)
            return
        assert self._spawn is not None
        mailbox = self.open_mailbox(listener.feeds)
        self._spawn(self._deliver(mailbox, listener), "listener")

    async def _deliver(self, mailbox: Mailbox, listener: Listener) -> None:
        """A queued listener's task: hands it what its mailbox holds, in order."""
        on_message, on_gap, on_stale = listener.on_message, listener.on_gap, listener.on_stale
        keep_going = listener.on_error == "log"
        get_nowait = mailbox.get_nowait
        try:
            while True:
                item = get_nowait()  # what is in memory, without a coroutine per item
                if item is None:
                    item = await mailbox.get()  # waits, or reads back from a stream
                    if item is None:
                        return
                try:
                    result: Awaitable[None] | None = None
                    if isinstance(item, Gap):
                        if on_gap is not None:
                            result = on_gap(item)
                    elif isinstance(item, Staleness):
                        if on_stale is not None:
                            result = on_stale(item)
                    elif on_message is not None:
                        result = on_message(item)
                    if result is not None and inspect.isawaitable(result):
                        await result
                except Exception as exc:  # the strategy's own code: its policy decides
                    if not keep_going:
                        raise
                    self._failed(item, exc)
        finally:
            self.close_mailbox(mailbox)

    def _raised(self, item: Event, exc: Exception) -> None:
        """An inline callback raised under ``on_error="raise"``: stop, as a failed
        listener task does (the error is raised from the next ``await``)."""
        if self._closed:
            return
        log.error(
            "inline callback failed on a %s; stopping (on_error='raise')",
            type(item).__name__,
            exc_info=exc,
        )
        self._stop(exc)

    def _failed(self, item: Event, exc: Exception) -> None:
        stats = self._engine.stats
        stats.callback_errors += 1
        if stats.callback_errors % LOG_EVERY == 1:
            if isinstance(item, Gap | Staleness):
                feed = item.feed
            else:
                feed = f"{item.exchange} {item.symbol}"
            log.error(
                "callback failed on a %s of %s (%d callback error(s) so far; on_error='log' "
                "keeps the subscriber running)",
                type(item).__name__,
                feed,
                stats.callback_errors,
                exc_info=exc,
            )
