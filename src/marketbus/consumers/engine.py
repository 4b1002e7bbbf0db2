"""The consumer's sans-I/O core: SPEC consumer rules 1-5 as a state machine.

Payloads go in (live ones from pub/sub, history from streams); out come updated buffers,
deliveries to listeners, gap/staleness events and `Fetch` requests: the stream reads
the asyncio shell (`subscriber.py`) must perform and hand back with `Engine.on_history`.
Nothing here awaits or touches Redis, so every ordering case is a plain unit test.

Per feed:
- after a subscription is confirmed (first time or after a reconnect), the feed holds
  its live messages and asks for history: the newest entries on first sight (rule 1),
  everything after the last applied position otherwise (rule 4);
- live messages are applied in ``(run, seq)`` order; older ones are duplicates (rule 2);
  a jump or a new run holds the feed and asks for the skipped range (rule 3); what the
  stream no longer has is reported as a `Gap`;
- state feeds (ticker, book) are the exception to rule 3's repair: their newest message
  replaces all earlier ones, so a jump reads only the stream's newest entry up to and
  including the held message (which confirms it, see below), and so does a resume;
- a payload that does not decode is counted and skipped (rule 5);
- a jump is applied only once the stream confirms it: the repair reads up to and
  including the held message's ``(run, seq)``, and a message the stream does not have,
  or one whose run is far in the future, is *suspect*: dropped and counted, and the
  feed's position does not move (`marketbus.consumers.trust`);
- a subscriber that lost its link or stopped makes every feed stale with the reason
  (`link_down`); a feed is judged on its own again once it resynced after the link
  came back.

`Engine.on_live_batch` is the hot path: a batch straight from the socket handler, one
module-level decoder call per message, the next-in-order case of a ready feed applied
inline (one dict lookup, one decode, one buffer write), everything else handed to the
general per-message path. Counters are added up once per batch.

Feeds found by a pattern (a message on an unknown channel, a subscribe confirmation
of one, or the catalog) bring their exchange's status channel along: the engine asks
the shell to subscribe to it (`Engine.take_subscriptions`) unless a pattern covers it.

What the engine asks of the shell goes out through methods that hand it over and clear
it (`take_fetches`, `take_subscriptions`, `take_older`), as websockets'
``data_to_send()`` does; what the shell learns goes in through methods (`on_history`,
`on_fetch_failed`, `on_older_candles`, `on_reconnected`, ...). The shell never writes
the engine's attributes.

With an archive (``fill_older``), a first backfill of a candle feed that found fewer
closed candles than the buffer holds asks for the older ones (`OlderCandles`); the feed
is ready once they are applied (`on_older_candles`) or could not be read.
"""

from __future__ import annotations

import fnmatch
import logging
import math
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Annotated, Final, Literal, Protocol, TypeAlias, TypeVar

import msgspec
from msgspec import Meta

from marketbus.consumers.buffers import BookState, CandleBuffer, TickerState, TradeBuffer
from marketbus.consumers.events import Gap, GapReason, Staleness, Stats, Update
from marketbus.consumers.health import FeedHealth
from marketbus.consumers.sequencing import Position, Verdict, classify, missing_seqs
from marketbus.consumers.trust import MAX_RUN_AHEAD_S, confirmable, confirmed, from_future
from marketbus.shared.codecs import DECODE_ERRORS, decode
from marketbus.shared.errors import ContractError, FeedNameError, NotSubscribedError
from marketbus.shared.names import (
    STREAM_FIELD_BYTES,
    Feed,
    exchange_of,
    is_status_name,
    kind_and_symbol,
    newest_wins,
    ns_of,
    status_name,
    timeframe_ms,
)
from marketbus.shared.schema import OHLCV, Book, Message, Status, Ticker, Trades

log = logging.getLogger("marketbus.consumers")

Kind: TypeAlias = Literal["ohlcv", "ticker", "trades", "book", "status"]
Buffer: TypeAlias = CandleBuffer | TradeBuffer | TickerState | BookState | None
Entry: TypeAlias = tuple[bytes | str, dict[bytes, bytes]]
"""One stream entry as redis-py returns it: ``(id, {STREAM_FIELD_BYTES: payload})``."""
Live: TypeAlias = tuple[str | bytes, bytes | str | None, bytes]
"""One pub/sub message: ``(channel, pattern, payload)``, the channel as bytes (as the
fast transport reads it) or str; the pattern (None for a named channel) is not used."""

_TYPE_OF_KIND: Final[dict[str, type[Message]]] = {
    "ohlcv": OHLCV,
    "ticker": Ticker,
    "trades": Trades,
    "book": Book,
    "status": Status,
}
_json_decode: Final = msgspec.json.Decoder(Message).decode
_msgpack_decode: Final = msgspec.msgpack.Decoder(Message).decode
"""The hot loop's decoders: `marketbus.shared.codecs.decode` without a call per message
(SPEC "Messages": ``{`` first is JSON, anything else MessagePack). A payload they reject
goes through ``codecs.decode`` for the error."""
_DECODE_ERRORS: Final = (*DECODE_ERRORS, IndexError)
"""What the hot loop's decoding raises for a bad payload: `codecs.DECODE_ERRORS` (a
hostile nesting depth too) and IndexError (an empty one)."""
_LOG_EVERY: Final = 1000
"""Undecodable/rejected payloads and messages on ignored channels are logged on the 1st,
1001st, ... occurrence."""
MAX_IGNORED: Final = 10_000
"""Channels remembered as matching no pattern, by default (beyond: looked up again each
time, not remembered)."""
MAX_PATTERN_FEEDS: Final = 10_000
"""Channels patterns may bring in, by default (`SubscriberOptions.max_pattern_feeds`)."""
_REFUSED_LOG_S: Final = 10.0
"""Channels refused beyond *max_pattern_feeds* are logged at most once per this long."""

B = TypeVar("B", CandleBuffer, TradeBuffer, TickerState, BookState)

PositiveInt = Annotated[int, Meta(gt=0)]
PositiveFloat = Annotated[float, Meta(gt=0)]


class BufferSizes(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Memory bounds and thresholds of one feed (set per subscriber or per subscribe).

    Memory per feed is about ``60 B x candles``, ``41 B x trades`` (+ the trade id
    strings), one book of ``book_depth`` levels, plus at most ``hold`` decoded messages
    while the feed syncs.
    """

    candles: PositiveInt = 500
    """Closed candles kept (plus the forming one); also the backfill count."""
    trades: PositiveInt = 10_000
    """Trades kept; the backfill reads at most this many trade batches."""
    book_depth: PositiveInt | None = None
    """Book levels kept per side (None: as many as the producer sends)."""
    hold: PositiveInt = 10_000
    """Live messages held per feed while it syncs from its stream; beyond that the oldest
    held message is dropped (it is read back from the stream, so nothing is lost)."""
    stale_after_s: PositiveFloat | None = 60.0
    """A feed with no message for this long is flagged stale (None: never)."""
    status_history: Annotated[int, Meta(ge=0)] = 100
    """Status events read on first sight of an exchange, to learn its producer's state."""


class Fetch(msgspec.Struct, frozen=True):
    """A stream read the shell performs for *feed*, then hands to `Engine.on_history`.

    - ``count`` set: the newest ``count`` entries below ``before`` and above ``after``
      (``XREVRANGE``), applied oldest first;
    - ``count`` None: every entry after ``after`` and below ``before`` (``XRANGE``,
      paged). Bounds are exclusive; None means open.
    """

    feed: str
    epoch: int
    after: Position | None
    before: Position | None
    count: int | None
    initial: bool
    """First sight of the feed: history fills buffers but is not delivered to
    listeners, holes in it are not reported, and old status events only set state."""
    confirm: Position | None = None
    """The held live message this read must confirm: the read goes up to and including
    its position (``before`` is then that position), and it is applied only if the
    stream has an entry there (see `marketbus.consumers.trust`)."""


class OlderCandles(msgspec.Struct, frozen=True):
    """Closed candles the shell is to read from the archive for *feed*: the newest
    *count* with open time before *before_ms* (None: the feed has none yet), then hand
    to `Engine.on_older_candles`. Asked for when a first backfill found fewer closed
    candles in the stream than the buffer holds and the subscriber has an archive."""

    feed: str
    before_ms: int | None
    count: int
    timeframe_ms: int


class Sink(Protocol):
    """Where the engine delivers applied updates and events: a listener's `Mailbox`, or an
    `InlineListener` that calls its callbacks right away (`marketbus.consumers.delivery`)."""

    def push(self, feed: str, message: Update, must: bool) -> None: ...

    def push_event(self, event: Gap | Staleness) -> None: ...

    def forget(self, feed: str) -> None:
        """*feed* is not followed any more: release what is kept for it (once delivered)."""
        ...


class FeedState:
    """Everything the engine keeps for one feed."""

    __slots__ = (
        "buffer",
        "confirmed",
        "epoch",
        "exchange",
        "health",
        "held",
        "kind",
        "live_type",
        "message_type",
        "name",
        "ready",
        "relinking",
        "run",
        "seq",
        "sizes",
        "symbol",
        "syncing",
        "timeframe",
        "timeframe_ms",
    )

    def __init__(
        self,
        name: str,
        exchange: str,
        kind: Kind,
        timeframe: str | None,
        sizes: BufferSizes,
        now: float,
    ) -> None:
        self.name = name
        self.exchange = exchange
        self.kind: Kind = kind
        self.message_type: type[Message] = _TYPE_OF_KIND[kind]
        self.live_type: type[Message] | None = None if kind == "status" else self.message_type
        """What `Engine.on_live_batch` may apply inline (status messages never)."""
        self.symbol: str | None = None if kind == "status" else kind_and_symbol(name)[1]
        self.timeframe = timeframe
        """With `exchange` and `symbol`: what a message must carry to belong on this feed
        (another symbol's message on this channel or in this stream is rejected)."""
        self.sizes = sizes
        self.timeframe_ms = timeframe_ms(timeframe) if timeframe else 0
        self.buffer: Buffer = _make_buffer(kind, timeframe, sizes)
        self.run = -1
        """Run of the last applied message (-1: none yet); see `last`."""
        self.seq = -1
        self.syncing = True
        """Live messages are held until the pending stream read is applied."""
        self.epoch = 0
        """Bumped per sync; only the read of the current epoch ends the sync."""
        self.held: deque[Message] = deque(maxlen=sizes.hold)
        self.ready = False
        """The first sync (backfill) is done."""
        self.confirmed: Message | None = None
        """The stream's entry at the position the current read must confirm, once met."""
        self.relinking = False
        """The current sync follows the link's return: it ends the link's staleness."""
        self.health = FeedHealth(name, None if kind == "status" else sizes.stale_after_s, now)

    @property
    def last(self) -> Position | None:
        """``(run, seq)`` of the last applied message (None before the first)."""
        return None if self.run < 0 else (self.run, self.seq)

    @last.setter
    def last(self, position: Position) -> None:
        self.run, self.seq = position

    @property
    def backfill_count(self) -> int:
        if self.kind == "ohlcv":
            return self.sizes.candles
        if self.kind == "trades":
            return self.sizes.trades
        if self.kind == "status":
            return self.sizes.status_history
        return 1


def _make_buffer(kind: Kind, timeframe: str | None, sizes: BufferSizes) -> Buffer:
    if kind == "ohlcv":
        return CandleBuffer(sizes.candles, timeframe)
    if kind == "trades":
        return TradeBuffer(sizes.trades)
    if kind == "ticker":
        return TickerState()
    if kind == "book":
        return BookState(sizes.book_depth)
    return None


def _status_of(state: FeedState) -> str:
    """The status channel of *state*'s exchange, in *state*'s namespace."""
    return status_name(ns_of(state.name), state.exchange)


def parse_channel(name: str) -> tuple[str, Kind, str | None]:
    """``(exchange, kind, timeframe)`` of a feed or status channel; FeedNameError if neither."""
    if is_status_name(name):
        return exchange_of(name), "status", None
    feed = Feed.parse(name)
    timeframe = feed.timeframe
    kind: Kind = "ohlcv" if timeframe else feed.kind  # type: ignore[assignment]
    return feed.exchange, kind, timeframe


class Engine:
    """All feeds of one subscriber: decode, order, apply, report (no I/O)."""

    def __init__(
        self,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        max_ignored: int = MAX_IGNORED,
        max_run_ahead_s: float = MAX_RUN_AHEAD_S,
        max_pattern_feeds: int = MAX_PATTERN_FEEDS,
        fill_older: bool = False,
    ) -> None:
        self._feeds: dict[str, FeedState] = {}
        self._index: dict[str | bytes, FeedState] = {}
        """`feeds` keyed by name both as str and as bytes: one lookup per live message
        whichever form the transport reads."""
        self._patterns: dict[str, BufferSizes] = {}
        """Patterns of `Subscriber.subscribe_pattern`; a new channel matching one becomes
        a feed (see `discover`)."""
        self._stats = Stats()
        self._fetches: list[Fetch] = []
        """Stream reads requested since the shell last took them (`take_fetches`)."""
        self._fill_older = fill_older
        self._older: list[OlderCandles] = []
        """Archive reads requested since the shell last took them (`take_older`); only
        with *fill_older* (the subscriber has an archive)."""
        self._subscriptions: list[str] = []
        """Channels the shell must subscribe to (status channels of feeds found by a
        pattern), requested since it last took them (`take_subscriptions`)."""
        self._sinks: list[Sink] = []
        self._recent_gaps: deque[Gap] = deque(maxlen=1000)
        self._ignored: set[str] = set()
        """Channels no pattern covers (at most *max_ignored*; cleared by a new pattern)."""
        self._max_ignored = max_ignored
        self._unremembered = 0
        """Channels found to match no pattern while `_ignored` was full."""
        self._dropped: set[str] = set()
        """Channels the user unsubscribed from while a pattern covered them: that pattern
        does not bring them back. Only channels a pattern covers are kept."""
        self._discovered: set[str] = set()
        """Channels `discover` brought in (feeds and their status channels), at most
        *max_pattern_feeds*: a flood of junk channel names cannot grow memory unbounded."""
        self._max_pattern_feeds = max_pattern_feeds
        self._refused_unlogged = 0
        self._refused_logged_at = -math.inf
        self._clock = clock
        self._wall_clock = wall_clock
        self._max_run_ahead_ms = max_run_ahead_s * 1000
        self._stopped: str | None = None
        """Why the subscriber stopped (None while it runs): no feed is fresh again."""

    # -- what the shell reads ----------------------------------------------------------

    @property
    def feeds(self) -> Mapping[str, FeedState]:
        """Every feed and status channel kept, by name (read-only: use `track`/`drop`)."""
        return self._feeds

    @property
    def stats(self) -> Stats:
        """The subscriber's counters. The engine adds to them, and so do the mailboxes
        and listeners it is handed at their construction; nobody else writes them."""
        return self._stats

    @property
    def recent_gaps(self) -> Sequence[Gap]:
        """The most recent gap events (up to 1000), oldest first."""
        return self._recent_gaps

    @property
    def sinks(self) -> tuple[Sink, ...]:
        """Where applied updates and events go (see `add_sink`)."""
        return tuple(self._sinks)

    @property
    def excluded(self) -> frozenset[str]:
        """Channels unsubscribed from that a pattern would otherwise bring back."""
        return frozenset(self._dropped)

    @property
    def ignored(self) -> int:
        """Channels remembered as matching no pattern (bounded)."""
        return len(self._ignored)

    def state_of(self, name: str) -> FeedState:
        """The state of feed *name*; NotSubscribedError if it is not kept."""
        state = self._feeds.get(name)
        if state is None:
            raise NotSubscribedError(f"not subscribed to {name!r}")
        return state

    def buffer_of(self, name: str, kind: type[B]) -> B:
        """The buffer of feed *name*, which must be a *kind*: NotSubscribedError if the
        feed is not kept, TypeError naming the feed's kind if its buffer is another."""
        state = self.state_of(name)
        buffer = state.buffer
        if not isinstance(buffer, kind):
            raise TypeError(
                f"feed {name!r} is a {state.kind} feed: its buffer is a "
                f"{type(buffer).__name__}, not a {kind.__name__}; read it with the "
                f"accessor of its kind, or with buffer({name!r})"
            )
        return buffer

    # -- what goes out, and what the shell reports -------------------------------------

    def take_fetches(self) -> list[Fetch]:
        """The stream reads requested since the last call (the shell performs them and
        hands the entries to `on_history`)."""
        fetches, self._fetches = self._fetches, []
        return fetches

    @property
    def wants_fetches(self) -> bool:
        """True when `take_fetches` has something."""
        return bool(self._fetches)

    def take_older(self) -> list[OlderCandles]:
        """The archive reads requested since the last call (the shell performs them and
        hands the candles to `on_older_candles`, or reports `on_older_failed`)."""
        older, self._older = self._older, []
        return older

    def take_subscriptions(self) -> list[str]:
        """Channels to subscribe to, requested since the last call (oldest first, once)."""
        channels, self._subscriptions = self._subscriptions, []
        return list(dict.fromkeys(channels))

    @property
    def wants_subscriptions(self) -> bool:
        """True when `take_subscriptions` has something."""
        return bool(self._subscriptions)

    def add_sink(self, sink: Sink) -> None:
        """Deliver applied updates and events to *sink* from now on."""
        self._sinks.append(sink)

    def remove_sink(self, sink: Sink) -> None:
        """Stop delivering to *sink* (no error if it is not a sink)."""
        if sink in self._sinks:
            self._sinks.remove(sink)

    def on_reconnected(self) -> None:
        """The shell lost the pub/sub connection (it reconnects; the confirmations of the
        new connection resync every feed)."""
        self._stats.reconnects += 1
        self.link_down("disconnected from Redis")

    def link_down(self, reason: str) -> list[Staleness]:
        """The reader cannot vouch for any feed now (*reason*: why): every market-data
        feed is stale at once, and stays so until it resynced after the link is back.
        Returns the events, also delivered to every sink."""
        now = self._clock()
        events = []
        for state in self._feeds.values():
            state.relinking = False  # a read under way started before: it does not count
            if state.kind != "status":
                event = state.health.on_link_down(reason, now)
                if event is not None:
                    events.append(event)
                    self._staleness(event)
        return events

    def on_stopped(self, reason: str) -> list[Staleness]:
        """The subscriber stopped (*reason*: why): every feed is stale for good, as
        `link_down` says; returns the events."""
        self._stopped = reason
        return self.link_down(reason)

    def is_stale(self, name: str) -> bool:
        """Whether feed *name* is stale now (its quiet threshold evaluated at this very
        moment); NotSubscribedError if it is not kept."""
        state = self.state_of(name)
        self._staleness(state.health.check(self._clock()))
        return state.health.stale

    # -- feeds -------------------------------------------------------------------------

    def track(self, name: str, sizes: BufferSizes) -> FeedState:
        """Start keeping *name* (a feed or status channel); idempotent.

        The feed syncs once its subscription is confirmed (`on_subscribed`).
        """
        state = self._feeds.get(name)
        if state is None:
            exchange, kind, timeframe = parse_channel(name)
            state = FeedState(name, exchange, kind, timeframe, sizes, self._clock())
            self._feeds[name] = state
            self._index[name] = self._index[name.encode()] = state
            self._dropped.discard(name)
        return state

    def follow(self, names: Iterable[str], sizes: BufferSizes) -> list[str]:
        """`track` feeds *names* and their exchanges' status channels; the channels
        not kept before (to subscribe to), status channels first."""
        channels: list[str] = []
        for name in names:
            exchange, _, _ = parse_channel(name)
            for channel in (status_name(ns_of(name), exchange), name):
                if channel not in self._feeds:
                    self.track(channel, sizes)
                    channels.append(channel)
        return channels

    def adopt(self, names: Iterable[str], pattern: str) -> list[str]:
        """Track and backfill the feeds of *names* (the catalog's) that *pattern* covers
        and that are not kept yet, as `discover` would on their first message."""
        found = []
        for name in names:
            fresh = fnmatch.fnmatchcase(name, pattern) and name not in self._feeds
            if fresh and self.discover(name) is not None:
                self.resync(name)
                found.append(name)
        return found

    def _forget(self, name: str) -> FeedState | None:
        self._discovered.discard(name)
        self._index.pop(name, None)
        self._index.pop(name.encode(), None)
        if self._sizes_for(name) is not None:
            self._dropped.add(name)  # else no pattern could bring it back anyway
        for sink in self._sinks:
            sink.forget(name)
        return self._feeds.pop(name, None)

    def add_pattern(self, pattern: str, sizes: BufferSizes) -> None:
        """Follow every channel matching the glob *pattern* as it is found."""
        self._patterns[pattern] = sizes
        self._ignored.clear()  # what matched no pattern so far may match this one

    def drop(self, names: Iterable[str]) -> list[str]:
        """Stop keeping *names* (patterns will not bring them back) and return the
        channels to unsubscribe from: *names*, plus the status channel of every exchange
        none of whose feeds is kept any more (unless a pattern covers it)."""
        channels: list[str] = []
        statuses: dict[str, None] = {}
        for name in dict.fromkeys(names):
            state = self._forget(name)
            channels.append(name)
            if state is not None and state.kind != "status":
                statuses[_status_of(state)] = None
        kept = {_status_of(s) for s in self._feeds.values() if s.kind != "status"}
        for status in statuses:
            if status in self._feeds and status not in kept and self._sizes_for(status) is None:
                self._forget(status)
                channels.append(status)
        return channels

    def on_subscribed(self, channel: str) -> None:
        """SUBSCRIBE confirmed (also after a silent reconnect): live is contiguous from
        here on, so the feed resyncs from its stream. An unknown channel that a pattern
        covers (a cluster subscriber subscribes to pattern matches by name) is tracked."""
        state = self._feeds.get(channel)
        if state is None and self._sizes_for(channel) is not None:
            state = self.discover(channel)
        if state is not None:
            self._resync(state)

    def on_psubscribed(self, pattern: str) -> None:
        """PSUBSCRIBE confirmed: every known feed the pattern covers resyncs."""
        for state in list(self._feeds.values()):
            if fnmatch.fnmatchcase(state.name, pattern):
                self._resync(state)

    def resync(self, name: str) -> None:
        """Resync *name* now (a feed discovered without a message, e.g. from the catalog)."""
        self._resync(self._feeds[name])

    def _resync(self, state: FeedState) -> None:
        state.syncing = True
        state.epoch += 1
        state.confirmed = None
        if state.health.link is not None and self._stopped is None:
            state.relinking = True
        first = state.held[0] if state.held else None
        before = first.position if first is not None else None
        confirm = before if first is not None and self._must_confirm(state, first) else None
        if state.last is None:
            count: int | None = state.backfill_count
            fetch = Fetch(state.name, state.epoch, None, before, count, True, confirm)
        else:
            self._stats.resumes += 1
            count = 1 if newest_wins(state.kind) else None
            fetch = Fetch(state.name, state.epoch, state.last, before, count, False, confirm)
        self._fetches.append(fetch)

    def _repair(self, state: FeedState, message: Message) -> None:
        """Read the stream up to the held *message* that jumps: everything skipped (a
        state feed: only the newest entry up to and including it, which confirms it)."""
        self._stats.repairs += 1
        state.syncing = True
        state.epoch += 1
        state.confirmed = None
        before = message.position
        confirm = before if self._must_confirm(state, message) else None
        count = 1 if newest_wins(state.kind) else None
        fetch = Fetch(state.name, state.epoch, state.last, before, count, False, confirm)
        self._fetches.append(fetch)

    @staticmethod
    def _must_confirm(state: FeedState, message: Message) -> bool:
        """Whether a held *message* is applied only once the stream confirms it: one
        the stream must hold that is not the next in order (or comes before anything
        is applied, when nothing says what is in order)."""
        if not confirmable(message):
            return False
        return state.last is None or classify(state.last, message.position) is not Verdict.APPLY

    # -- live --------------------------------------------------------------------------

    def on_live(self, channel: str | bytes, payload: bytes) -> None:
        """One message from pub/sub (see `on_live_batch`)."""
        self.on_live_batch(((channel, None, payload),))

    def on_live_batch(self, batch: Sequence[Live]) -> None:
        """Messages from pub/sub, in arrival order.

        The common case (a ready market-data feed, the next seq of the same run, the
        right type) is applied here; anything else takes `_on_message`.
        """
        self._stats.received += len(batch)
        get_state = self._index.get
        json_decode, msgpack_decode = _json_decode, _msgpack_decode
        sinks = self._sinks
        now = self._clock()
        applied = 0
        try:
            for channel, _pattern, payload in batch:
                state = get_state(channel)
                if state is None:
                    self._on_unknown(channel, payload)
                    continue
                try:  # "{" (123) first: JSON, else MessagePack (SPEC "Messages")
                    decoder = json_decode if payload[0] == 123 else msgpack_decode
                    message = decoder(payload)
                except _DECODE_ERRORS:
                    self._undecodable(state, payload)
                    continue
                if (
                    type(message) is not state.live_type
                    or message.seq != state.seq + 1
                    or message.run != state.run
                    or state.syncing
                    or message.symbol != state.symbol
                    or message.exchange != state.exchange
                ):
                    self._on_message(state, message)
                    continue
                # The next message of a ready feed: applied here (as `_apply`).
                if message.ts_ms is None and state.kind == "ohlcv":
                    self._on_message(state, message)  # rejected there
                    continue
                state.seq += 1
                state.buffer.apply(message)  # type: ignore[union-attr, arg-type]
                applied += 1
                health = state.health
                if health.stale:
                    self._staleness(health.on_data(now))
                else:
                    health.last_data = now
                if sinks:
                    kind = state.kind
                    must = message.closed if kind == "ohlcv" else kind == "trades"  # type: ignore[union-attr]
                    for sink in sinks:
                        sink.push(state.name, message, must)  # type: ignore[arg-type]
        finally:
            self._stats.applied += applied

    def _on_unknown(self, channel: str | bytes, payload: bytes) -> None:
        """A message on a channel not kept (yet): a pattern may cover it. The channel is
        kept only if its payload decodes and fits it: junk costs a counter, no state."""
        name = channel if isinstance(channel, str) else channel.decode("utf-8", "replace")
        try:
            message = decode(payload)
        except ContractError as exc:
            self._stats.undecodable += 1
            if self._stats.undecodable % _LOG_EVERY == 1:
                log.warning(
                    "channel %s: skipping undecodable payload (%d so far): %s",
                    name,
                    self._stats.undecodable,
                    exc,
                )
            return
        state = self.discover(name, message)
        if state is not None:
            self._hold(state, message)
            self._resync(state)  # backfill up to the message at hand

    def _on_message(self, state: FeedState, message: Message) -> None:
        """The general path of one decoded live message: checked, held or offered."""
        if not self._fits(state, message):
            return
        if state.syncing:
            self._hold(state, message)
        else:
            self._offer(state, message, None, None)

    def _sizes_for(self, channel: str) -> BufferSizes | None:
        """Buffer sizes of the first pattern covering *channel* (None: none does)."""
        return next((s for p, s in self._patterns.items() if fnmatch.fnmatchcase(channel, p)), None)

    def discover(self, channel: str, first: Message | None = None) -> FeedState | None:
        """Track *channel*, found through a pattern, maybe by its *first* message.

        None (skip it) if no pattern covers it, the user unsubscribed from it, it is not
        a feed name, *first* does not fit it (`stats.rejected`), or keeping it would pass
        *max_pattern_feeds* (`stats.refused`). Given *first*, a skipped message is
        counted (`stats.ignored` in the first three cases). A new feed brings its
        exchange's status channel along (see `subscriptions`).
        """
        counted = first is not None
        if channel in self._ignored or channel in self._dropped:
            self._stats.ignored += counted
            return None
        sizes = self._sizes_for(channel)
        try:
            if sizes is None:
                raise FeedNameError(f"{channel!r} matches no subscription")
            exchange, kind, _ = parse_channel(channel)
        except FeedNameError as exc:
            self._stats.ignored += counted
            self._ignore(channel, exc)
            return None
        if first is not None and not self._first_fits(channel, kind, first):
            return None
        status = None if kind == "status" else status_name(ns_of(channel), exchange)
        if channel not in self._feeds:
            new = 1 + (status is not None and status not in self._feeds)
            if len(self._discovered) + new > self._max_pattern_feeds:
                self._refuse(channel)
                return None
            self._discovered.add(channel)
        state = self.track(channel, sizes)
        if state.kind != "status":
            self._follow_status(state, sizes)
        return state

    def _first_fits(self, channel: str, kind: Kind, message: Message) -> bool:
        """True if *message* belongs on the new channel (else counted as rejected)."""
        if type(message) is _TYPE_OF_KIND[kind] and (kind != "ohlcv" or message.ts_ms is not None):
            return True
        self._stats.rejected += 1
        if self._stats.rejected % _LOG_EVERY == 1:
            log.warning(
                "channel %s: not following it, its first message is a %s that does not "
                "fit it (%d rejected so far)",
                channel,
                type(message).__name__,
                self._stats.rejected,
            )
        return False

    def _refuse(self, channel: str) -> None:
        """*channel* would pass *max_pattern_feeds*: counted, logged at a bounded rate."""
        self._stats.refused += 1
        self._refused_unlogged += 1
        now = self._clock()
        if now - self._refused_logged_at >= _REFUSED_LOG_S:
            log.warning(
                "not following %r: patterns brought in %d channels, the maximum "
                "(max_pattern_feeds); %d message(s) on new channels refused since the last "
                "report, %d in all",
                channel,
                len(self._discovered),
                self._refused_unlogged,
                self._stats.refused,
            )
            self._refused_logged_at = now
            self._refused_unlogged = 0

    def _ignore(self, channel: str, error: FeedNameError) -> None:
        """Remember that *channel* is not a feed of ours, logged once per channel; once
        too many are remembered, the others are logged on the 1st, 1001st, ... time."""
        if len(self._ignored) < self._max_ignored:
            self._ignored.add(channel)
            log.warning("ignoring channel %r: %s", channel, error)
            return
        self._unremembered += 1
        if self._unremembered % _LOG_EVERY == 1:
            log.warning(
                "ignoring channel %r: %s (and %d more times a channel too many to remember)",
                channel,
                error,
                self._unremembered - 1,
            )

    def _follow_status(self, state: FeedState, sizes: BufferSizes) -> None:
        """Keep the status channel of *state*'s exchange: staleness and producer gaps."""
        status = _status_of(state)
        if status in self._feeds:
            return
        status_state = self.track(status, sizes)
        self._discovered.add(status)
        if self._sizes_for(status) is not None:
            self._resync(status_state)  # a pattern delivers it already
        else:
            self._subscriptions.append(status)  # resyncs once the subscription is confirmed

    def _hold(self, state: FeedState, message: Message) -> None:
        if len(state.held) == state.held.maxlen:
            self._stats.held_dropped += 1
        state.held.append(message)

    def _decode(self, state: FeedState, payload: bytes) -> Message | None:
        """*payload* decoded, if it decodes and fits *state* (else counted: None)."""
        try:
            message = decode(payload)
        except ContractError as exc:
            self._undecodable(state, payload, exc)
            return None
        return message if self._fits(state, message) else None

    def _undecodable(
        self, state: FeedState, payload: bytes, error: ContractError | None = None
    ) -> None:
        self._stats.undecodable += 1
        if self._stats.undecodable % _LOG_EVERY == 1:
            if error is None:
                try:
                    decode(payload)
                except ContractError as exc:
                    error = exc
            log.warning(
                "feed %s: skipping undecodable payload (%d so far): %s",
                state.name,
                self._stats.undecodable,
                error,
            )

    def _fits(self, state: FeedState, message: Message) -> bool:
        """True if *message* belongs on *state*'s feed (else counted as rejected)."""
        if (
            type(message) is state.message_type
            and message.exchange == state.exchange
            and message.symbol == state.symbol
            and (
                state.kind != "ohlcv"
                or (message.ts_ms is not None and message.timeframe == state.timeframe)  # type: ignore[union-attr]
            )
        ):
            return True
        self._stats.rejected += 1
        if self._stats.rejected % _LOG_EVERY == 1:
            log.warning(
                "feed %s: skipping a %s message that does not fit the feed (%d so far)",
                state.name,
                type(message).__name__,
                self._stats.rejected,
            )
        return False

    def _offer(
        self,
        state: FeedState,
        message: Message,
        accept_up_to: Position | None,
        stream_first: Position | None,
    ) -> bool:
        """Apply *message* in order; False if the feed started a repair instead.

        Messages up to *accept_up_to* were just looked for in the stream: what is still
        missing before them is lost, so it is reported instead of read again.
        """
        position = message.position
        verdict = classify(state.last, position)
        if verdict is Verdict.DUPLICATE:
            self._stats.duplicates += 1
            return True
        if message.run != state.run and self._from_future(message.run):
            self._suspect(state, message, "its run is in the future")
            return True
        if verdict is not Verdict.APPLY or (state.last is None and newest_wins(state.kind)):
            if accept_up_to is not None and position <= accept_up_to:
                self._check_hole(state, message, stream_first)
            else:  # a jump, or a state feed's first message (the backfill found none):
                # held until the stream backs it (`marketbus.consumers.trust`)
                self._hold(state, message)
                self._repair(state, message)
                return False
        self._apply(state, message, deliver=True, historical=False)
        return True

    # -- history -----------------------------------------------------------------------

    def on_history(
        self, fetch: Fetch, entries: Iterable[Entry], *, done: bool, stream_first: Position | None
    ) -> None:
        """Stream entries for *fetch*, oldest first; *done* on the last page.

        *stream_first* is the oldest ID the stream still holds (None if empty): entries
        missing after it were never written, before it they may have been evicted.
        """
        state = self._feeds.get(fetch.feed)
        if state is None:
            return
        for entry_id, fields in entries:
            payload = fields.get(STREAM_FIELD_BYTES)
            if payload is None:
                self._stats.undecodable += 1
                log.warning(
                    "feed %s: stream entry %r has no %r field",
                    state.name,
                    entry_id,
                    STREAM_FIELD_BYTES,
                )
                continue
            message = self._decode(state, payload)
            if message is None:
                continue
            position = message.position
            if position == fetch.confirm:
                state.confirmed = message  # applied in the held message's place
                continue
            if state.last is not None and position <= state.last:
                continue
            if message.run != state.run and self._from_future(message.run):
                self._suspect(state, message, "its run is in the future")
                continue
            if not fetch.initial:
                self._check_hole(state, message, stream_first)
            self._stats.backfilled += 1
            self._apply(state, message, deliver=not fetch.initial, historical=fetch.initial)
        if done and fetch.epoch == state.epoch:
            self._finish_sync(state, fetch, stream_first, checked=True)
            if fetch.initial:
                self._want_older(state)

    def _want_older(self, state: FeedState) -> None:
        """After a first backfill: ask for the older candles the stream lacked, from the
        archive; the feed is ready once they are applied (or could not be read)."""
        buffer = state.buffer
        if not (self._fill_older and isinstance(buffer, CandleBuffer) and state.timeframe_ms):
            return
        closed = len(buffer) - buffer.has_forming
        if closed >= buffer.capacity:
            return
        before = buffer[0].ts_ms if len(buffer) else None
        state.ready = False
        self._older.append(
            OlderCandles(state.name, before, buffer.capacity - closed, state.timeframe_ms)
        )

    def on_older_candles(self, feed: str, candles: Sequence[OHLCV]) -> None:
        """Closed candles read from the archive for an `OlderCandles` request: those
        older than everything the buffer holds fill its older part (the stream's win)."""
        state = self._feeds.get(feed)
        if state is None:
            return
        if isinstance(state.buffer, CandleBuffer):
            state.buffer.fill_older(candles)
        state.ready = True

    def on_older_failed(self, feed: str, error: str) -> None:
        """The archive read of an `OlderCandles` request failed: logged, and the feed is
        ready with what the stream had."""
        log.error("feed %s: cannot read older candles from the archive: %s", feed, error)
        state = self._feeds.get(feed)
        if state is not None:
            state.ready = True

    def on_fetch_failed(self, fetch: Fetch, error: str) -> None:
        """The shell gave up on *fetch* (Redis refused it, or it kept failing): counted,
        reported as a `Gap` (reason ``unreadable``), and the feed goes on live without
        that history (what it held is applied, holes among it reported)."""
        self._stats.read_errors += 1
        state = self._feeds.get(fetch.feed)
        if state is None or fetch.epoch != state.epoch:
            return  # dropped or superseded meanwhile
        bound = fetch.before or fetch.after
        run = bound[0] if bound is not None else max(state.run, 0)
        gap = Gap(
            feed=state.name,
            run=run,
            first_seq=None,
            last_seq=None,
            reason="unreadable",
            detail=f"cannot read the stream ({error}); going on live without that history",
        )
        self._gap(gap, None)
        self._finish_sync(state, fetch, None, checked=False)

    def on_read_back_failed(self, feed: str, error: str) -> None:
        """A listener's read-back of *feed* was given up: counted (the listener's
        mailbox reports what it misses as a `Gap`)."""
        self._stats.read_errors += 1

    def read_back(self, entries: Iterable[Entry]) -> list[Update]:
        """Stream entries a slow listener reads back, decoded, oldest first; undecodable
        ones are counted and skipped, status events are not updates."""
        updates: list[Update] = []
        for _, fields in entries:
            try:
                message = decode(fields.get(STREAM_FIELD_BYTES, b""))
            except ContractError:
                self._stats.undecodable += 1
                continue
            if not isinstance(message, Status):
                updates.append(message)
        return updates

    def _finish_sync(
        self, state: FeedState, fetch: Fetch, stream_first: Position | None, *, checked: bool
    ) -> None:
        """The read of *fetch* is applied: offer what was held. *checked*: the read
        happened (False when it was given up: then nothing could be confirmed, and
        the held messages are trusted as before)."""
        state.syncing = False
        state.ready = True
        accept_up_to = fetch.before
        if fetch.confirm is not None and checked:
            accept_up_to = self._settle_claim(state, fetch.confirm)
        if state.relinking:
            state.relinking = False
            self._staleness(state.health.on_link_up(self._clock()))
        held = state.held
        while held:
            message = held.popleft()
            if not self._offer(state, message, accept_up_to, stream_first):
                # _offer re-held it at the end; it must stay first
                held.appendleft(held.pop())
                return

    def _settle_claim(self, state: FeedState, claimed: Position) -> Position | None:
        """The read meant to confirm the held message at *claimed* is done: put the
        stream's copy in its place, or drop it as suspect if the stream has none.
        Returns up to where held messages were looked for in the stream (None: the
        read proved nothing about them, a jump among them is repaired again)."""
        found, state.confirmed = state.confirmed, None
        if found is not None and confirmed(found.position, claimed):
            stream_copy = found
            state.held = deque(
                (stream_copy if m.position == claimed else m for m in state.held),
                maxlen=state.held.maxlen,
            )
            return claimed
        kept: deque[Message] = deque(maxlen=state.held.maxlen)
        for message in state.held:
            if message.position == claimed:
                self._suspect(state, message, "the stream has no entry at its ID")
            else:
                kept.append(message)
        state.held = kept
        return None

    def _from_future(self, run: int) -> bool:
        return from_future(run, self._wall_clock() * 1000, self._max_run_ahead_ms)

    def _suspect(self, state: FeedState, message: Message, why: str) -> None:
        """Drop *message*, which the stream does not back: counted, logged at a bounded
        rate; the feed's position does not move."""
        self._stats.suspect += 1
        if self._stats.suspect % _LOG_EVERY == 1:
            log.warning(
                "feed %s: dropping a suspect message at run=%d seq=%d: %s (%d so far)",
                state.name,
                message.run,
                message.seq,
                why,
                self._stats.suspect,
            )

    def _check_hole(
        self, state: FeedState, message: Message, stream_first: Position | None
    ) -> None:
        """Report what is missing between the last applied message and *message*."""
        kind = state.kind
        if newest_wins(kind):
            return
        last = state.last
        hole = missing_seqs(last, message.position)
        if hole is None:
            return
        evicted = stream_first is not None and stream_first > (message.run, hole[0])
        count: int | None = hole[1] - hole[0] + 1
        if kind == "ohlcv":
            # The stream holds closed candles only: a seq hole is normal unless candle
            # periods are missing between the newest held candle and this one.
            assert isinstance(state.buffer, CandleBuffer) and isinstance(message, OHLCV)
            newest = state.buffer.latest
            ts = message.ts_ms or 0
            if newest is None or ts <= newest.ts_ms + state.timeframe_ms:
                return
            count = (ts - newest.ts_ms) // state.timeframe_ms - 1
            evicted = stream_first is not None and last is not None and stream_first > last
        reason: GapReason = "evicted" if evicted else "missing"
        self._gap(
            Gap(
                feed=state.name,
                run=message.run,
                first_seq=hole[0],
                last_seq=hole[1],
                reason=reason,
                detail=f"{count} candle(s)" if kind == "ohlcv" else "",
            ),
            count,
        )

    def _gap(self, gap: Gap, count: int | None) -> None:
        self._stats.gaps += 1
        self._stats.missing += count or 0
        self._recent_gaps.append(gap)
        log.warning(
            "feed %s: gap run=%d seq %s..%s (%s) %s",
            gap.feed,
            gap.run,
            gap.first_seq,
            gap.last_seq,
            gap.reason,
            gap.detail,
        )
        for sink in self._sinks:
            sink.push_event(gap)

    def _staleness(self, event: Staleness | None) -> None:
        if event is not None:
            for sink in self._sinks:
                sink.push_event(event)

    # -- apply -------------------------------------------------------------------------

    def _apply(
        self, state: FeedState, message: Message, *, deliver: bool, historical: bool
    ) -> None:
        state.last = message.position
        self._stats.applied += 1
        kind = state.kind
        buffer = state.buffer
        must = True
        if kind == "ohlcv":
            assert isinstance(buffer, CandleBuffer) and isinstance(message, OHLCV)
            buffer.apply(message)
            must = message.closed
        elif kind == "trades":
            assert isinstance(buffer, TradeBuffer) and isinstance(message, Trades)
            buffer.apply(message)
        elif kind == "ticker":
            assert isinstance(buffer, TickerState) and isinstance(message, Ticker)
            buffer.apply(message)
            must = False
        elif kind == "book":
            assert isinstance(buffer, BookState) and isinstance(message, Book)
            buffer.apply(message)
            must = False
        else:
            assert isinstance(message, Status)
            self._on_status(state, message, historical)
            return
        if not historical:
            self._staleness(state.health.on_data(self._clock()))
        if deliver:
            for sink in self._sinks:
                sink.push(state.name, message, must)

    def _on_status(self, state: FeedState, message: Status, historical: bool) -> None:
        if message.event == "gap":
            if not historical:
                self._gap(
                    Gap(
                        feed=message.feed or state.name,
                        run=message.run,
                        first_seq=message.first_seq,
                        last_seq=message.last_seq,
                        reason="producer",
                        detail=message.detail,
                        from_ms=message.from_ms,
                        to_ms=message.to_ms,
                    ),
                    None,
                )
            return
        if message.feed is not None:
            target = self._feeds.get(message.feed)
            targets = [target] if target is not None else []
        else:
            targets = [
                s for s in self._feeds.values() if s.exchange == state.exchange and s is not state
            ]
        now = self._clock()
        for target in targets:
            self._staleness(target.health.on_producer(message.event, message.detail, now))

    @property
    def health_period(self) -> float:
        """Seconds between `check_health` calls: a quarter of the shortest quiet
        threshold, between 20 ms and 1 s."""
        thresholds = [
            s.sizes.stale_after_s for s in self._feeds.values() if s.sizes.stale_after_s is not None
        ]
        return min(1.0, max(0.02, min(thresholds, default=4.0) / 4))

    def check_health(self) -> None:
        """Re-evaluate quiet thresholds (the shell calls this periodically)."""
        now = self._clock()
        for state in self._feeds.values():
            self._staleness(state.health.check(now))
