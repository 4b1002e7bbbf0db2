"""Per-feed state between ccxt and the outbox (pure): one `FeedHandler` per feed.

Every kind (ticker, trades, book, ohlcv) implements the same interface, and the shell
(the watch loop, the process at start-up, the clock) drives each one the same way:

- **in**: `FeedHandler.on_start` (the stream's newest message, before the first watch),
  `on_data` (this feed's part of one watch result), `on_clock` (time passed),
  `on_down` (the socket the feed was on failed: what it carried meanwhile is lost),
  `on_rest` / `on_trades` (the result of REST work the handler asked for);
- **out**: the messages each call returns (run/seq unset), and, when `pending` says
  so, `take_requests` (REST work to do, as data) and `take_notices` (what to log,
  count and publish as status events), each returning and clearing its list.

REST work is the seam for everything the socket cannot tell. A handler never calls
ccxt: it asks with a `RestRequest` (e.g. `FetchCandles`), the shell makes the call
(`watch.serve`) and hands back the rows or a `RestFailed`, and the handler turns them
into messages and notices. A request raised by `on_data` holds that data back until
its answer is in, so the stream stays in order. Today candles use it to fill what the
socket skipped (reconnects, the start-up race) and to backfill at start-up. Two
features fit behind the same seam without changing the shell's side much:

- candle reconciliation (done): once candles closed, the ohlcv handler asks for them
  over REST (``FetchCandles(purpose="reconcile")``, batched and spread by a
  `ReconcileSchedule`) and sends a correction, closed, where the exchange's final
  values differ (`CandleTracker.reconcile`). A request raised by `on_clock` waits for
  the shell's next call after data of that feed (`pending`);
- trade recovery (done): when trades flow again after `on_down`, or first flow after
  a predecessor's last trade (`on_start`), the trades handler holds the live batch and
  asks for the trades since the last one published (`FetchTrades`, answered through
  `on_trades`); it sends the recovered trades first (deduplicated by `TradeIds`), and
  a ``gap`` notice with ``from_ms``/``to_ms`` only for what the exchange's REST window
  no longer held, or for the whole window if the fetch failed.

Nothing here awaits or reads a clock.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, TypeAlias

from marketbus.producer import normalize
from marketbus.producer.candles import CLOSED_MEMORY, CandleTracker
from marketbus.producer.normalize import Row
from marketbus.producer.reconcile import (
    MAX_UNCHECKED,
    Check,
    ReconcilePolicy,
    ReconcileSchedule,
    phase_of,
)
from marketbus.producer.units import Conversion
from marketbus.shared.names import Feed, timeframe_ms
from marketbus.shared.schema import OHLCV, Book, MarketMessage, StatusEvent, Trade, Trades

TRADE_ID_MEMORY = 10_000
"""Recent trade ids remembered per feed to drop trades ccxt repeats after a reconnect."""


@dataclass(frozen=True, slots=True)
class FetchCandles:
    """REST work: the feed's closed candles opened after ``after_ms`` (None: the latest
    page) and ended by ``until_ms``, over ``fetch_ohlcv``. ``purpose`` is for the
    handler that asked: the shell makes the same call whatever it is."""

    after_ms: int | None
    until_ms: int
    purpose: Literal["backfill", "missed", "reconcile"]
    limit: int | None = None
    """How many of the newest candles the first page needs (None: a full page)."""


RestRequest: TypeAlias = FetchCandles
"""What a candle handler may ask the shell to fetch over REST (answered by `on_rest`)."""


@dataclass(frozen=True, slots=True)
class FetchTrades:
    """REST work: the feed's trades since ``since_ms`` (exchange time, inclusive), as
    far back as the exchange's REST window reaches, over ``fetch_trades``; None: the
    latest page. Answered with `FetchedTrades` or `RestFailed` through `on_trades`."""

    since_ms: int | None


@dataclass(frozen=True, slots=True)
class FetchedTrades:
    """The answer to `FetchTrades`: the trades the exchange still had, oldest first."""

    trades: tuple[Trade, ...]


RestWork: TypeAlias = FetchCandles | FetchTrades
"""Every kind of REST work a handler may ask for (`take_requests`)."""


@dataclass(frozen=True, slots=True)
class RestFailed:
    """The answer to a `RestRequest` the shell could not do: why, and whether the
    exchange has no such call at all (``unsupported``)."""

    reason: str
    unsupported: bool = False


RestResult: TypeAlias = Sequence[Row] | RestFailed
"""The answer to a `RestRequest`: the rows it asked for (copied, checked) or why not."""


@dataclass(frozen=True, slots=True)
class Notice:
    """Something about a feed for the shell to report: logged (as an error when
    ``error``, which also counts it in the feed's errors; else as a warning when it has an
    ``event``, else as information) and, with an ``event``, published on the exchange's
    status stream."""

    detail: str
    event: StatusEvent | None = None
    error: bool = False
    from_ms: int | None = None
    """A ``gap`` of exchange data: the exchange time of the last trade published before it."""
    to_ms: int | None = None
    """... and of the first trade published after it."""


class FeedHandler:
    """The one interface of every feed's state; this base class is a kind with no REST
    work, no notices and nothing due by the clock (`on_data` is the only must).

    ``units`` turns the market's contract figures into base units (None: they are base
    already); every kind hands it to `normalize` with ccxt's data and REST answers."""

    def __init__(self, feed: Feed, *, units: Conversion | None = None) -> None:
        self.feed = feed
        self.units = units
        self._requests: list[RestWork] = []
        self._notices: list[Notice] = []

    @property
    def pending(self) -> bool:
        """Whether `take_requests` or `take_notices` has something (checked by the shell
        after each call in)."""
        return bool(self._requests or self._notices)

    def on_start(self, last: MarketMessage | None, now_ms: int) -> None:
        """Before the first watch: *last* is the newest message already in the feed's
        stream (None if it is empty or unreadable)."""

    def on_data(self, data: Any, now_ms: int, recv_ns: int) -> Sequence[MarketMessage]:
        """Messages for *data* (this feed's part of one watch result)."""
        raise NotImplementedError

    def on_clock(self, now_ms: int, recv_ns: int) -> Sequence[MarketMessage]:
        """Messages due because time passed."""
        return []

    def on_down(self) -> None:
        """The socket this feed was on failed (or was replaced): data was lost with it."""

    def on_quiet(self) -> None:
        """No data for the staleness deadline while the socket stayed up: the feed may
        only be quiet, or its subscription may be stuck behind a live socket. Only a
        handler that can check over REST what it may have missed acts on it."""

    def on_rest(
        self, request: RestRequest, result: RestResult, recv_ns: int
    ) -> Sequence[MarketMessage]:
        """The answer to *request* (taken with `take_requests`), *recv_ns* when it came;
        the messages it completes (data held back for it keeps its own times)."""
        raise ValueError(f"{self.feed.name}: {request!r} was not asked for by this handler")

    def on_trades(
        self, request: FetchTrades, result: FetchedTrades | RestFailed, recv_ns: int
    ) -> Sequence[MarketMessage]:
        """The answer to a `FetchTrades` request, like `on_rest`."""
        raise ValueError(f"{self.feed.name}: {request!r} was not asked for by this handler")

    def take_requests(self) -> list[RestWork]:
        """REST work to do now, in order; each answer goes back through `on_rest`."""
        requests, self._requests = self._requests, []
        return requests

    def take_notices(self) -> list[Notice]:
        """What to report about the feed since the last call."""
        notices, self._notices = self._notices, []
        return notices


@dataclass(frozen=True, slots=True)
class _Held:
    """A watch result's rows waiting for the candles it skipped, fetched over REST."""

    rows: list[Row]
    now_ms: int
    recv_ns: int


class OhlcvHandler(FeedHandler):
    """Candles: copies ccxt's rows and infers closes with a `CandleTracker`.

    Periods the socket skipped (`CandleTracker.missing`: a reconnect, the start-up race)
    are asked for over REST before the rows that revealed them are applied; closed
    candles over REST are final and win over ccxt's rows. While the socket is down
    (`on_down` until data flows again) the clock closes nothing: the forming candle's
    last updates are missing, and its final values are fetched with the skipped ones.

    With a *reconcile* policy every candle sent closed is checked once more over REST
    when its `ReconcileSchedule` says so; `corrections` counts what those checks sent.

    The clock closes nothing while REST work is in flight (taken with `take_requests`,
    not all answered): the shell publishes what `on_data` and `on_rest` returned only
    once the whole round is answered, while what `on_clock` returns goes out at once. A
    candle the clock closed meanwhile would go out before the older candles of that
    round, a period first sent after a newer one. Holding the clock keeps first sends
    in open-time order and loses nothing (a skipped period found over REST is sent
    before any newer one); it closes at its first call after the round.
    """

    def __init__(
        self,
        feed: Feed,
        close_grace_ms: int,
        reconcile: ReconcilePolicy | None = None,
        *,
        units: Conversion | None = None,
    ) -> None:
        timeframe = feed.timeframe
        if timeframe is None:
            raise ValueError(f"{feed.name} is not an ohlcv feed")
        super().__init__(feed, units=units)
        self._schedule: ReconcileSchedule | None = None
        memory = CLOSED_MEMORY
        if reconcile is not None:
            self._schedule = ReconcileSchedule(reconcile, phase_of(feed.name, reconcile.every_ms))
            memory = max(memory, _candles_within(reconcile, timeframe))
        self._tracker = CandleTracker(
            feed.exchange, feed.symbol, timeframe, close_grace_ms, memory=memory
        )
        self._live = True
        self._where = f"{feed.name} ohlcv"
        self._held: _Held | None = None
        self._awaiting = 0
        self._fetched: dict[int, Row] = {}
        self._stream_newest: Row | None = None
        self._checks: dict[FetchCandles, Check] = {}
        self._in_flight = 0
        self.corrections = 0
        """Candles re-sent closed because the exchange's REST values differed."""

    @property
    def tracker(self) -> CandleTracker:
        return self._tracker

    @property
    def schedule(self) -> ReconcileSchedule | None:
        """When this feed's closed candles are checked (None: reconciliation is off)."""
        return self._schedule

    @property
    def live(self) -> bool:
        """False from `on_down` until data flows again."""
        return self._live

    def on_start(self, last: MarketMessage | None, now_ms: int) -> None:
        """Backfill: the closed candles after the stream's newest one, up to now. The
        newest one seeds the tracker too (once the answer says REST works), so a candle
        that closed between the previous run and this one's first row is a hole."""
        newest = _row_of(last)
        self._stream_newest = newest
        after = None if newest is None else newest[0]
        self._requests.append(FetchCandles(after, now_ms, "backfill"))

    def on_data(self, data: Any, now_ms: int, recv_ns: int) -> Sequence[MarketMessage]:
        rows = normalize.ohlcv_rows(data, self._where, self.units)  # copied: ccxt mutates them
        missed = self._tracker.missing(rows, refetch_forming=not self._live)
        if not missed:
            self._held, self._awaiting = None, 0
            messages = self._apply(rows, now_ms, recv_ns)
            self._check_due(now_ms)
            return messages
        period = self._tracker.period_ms
        self._held = _Held(rows, now_ms, recv_ns)
        self._fetched = {}
        self._requests = [
            r for r in self._requests if isinstance(r, FetchCandles) and r.purpose == "reconcile"
        ]
        self._requests += [FetchCandles(start - period, end, "missed") for start, end in missed]
        self._awaiting = len(missed)
        return []

    @property
    def in_flight(self) -> int:
        """REST requests taken and not answered yet: the clock waits for them."""
        return self._in_flight

    def take_requests(self) -> list[RestWork]:
        """As `FeedHandler.take_requests`; each one taken is in flight until answered.
        The shell serves one round at a time, so a new round means the last is over."""
        requests = super().take_requests()
        self._in_flight = len(requests)
        return requests

    def on_clock(self, now_ms: int, recv_ns: int) -> Sequence[MarketMessage]:
        if not self._live or self._in_flight:
            return []  # in flight: what the round returns is not published yet
        messages = self._tracker.tick(now_ms, recv_ns)
        self._schedule_closes(messages, now_ms)
        self._check_due(now_ms)
        return messages

    def on_down(self) -> None:
        self._live = False
        self._in_flight = 0  # the shell's round is over (it reports a failed socket after)

    def on_rest(
        self, request: RestRequest, result: RestResult, recv_ns: int
    ) -> Sequence[MarketMessage]:
        self._in_flight = max(0, self._in_flight - 1)
        if self.units is not None and not isinstance(result, RestFailed):
            result = normalize.rows_in_base(list(result), self.units)  # REST rows, like live
        if request.purpose == "backfill":
            return self._backfilled(result, recv_ns)
        if request.purpose == "reconcile":
            return self._reconciled(request, result, recv_ns)
        held = self._held
        if held is None or self._awaiting == 0:
            return super().on_rest(request, result, recv_ns)
        self._missed_fetched(request, result)
        self._awaiting -= 1
        if self._awaiting:
            return []
        fetched, self._fetched, self._held = self._fetched, {}, None
        rows = [r for r in held.rows if r[0] not in fetched] + list(fetched.values())
        return self._apply(rows, held.now_ms, held.recv_ns, final=fetched.keys())

    def _apply(
        self, rows: list[Row], now_ms: int, recv_ns: int, final: Collection[int] = ()
    ) -> list[OHLCV]:
        messages = self._tracker.update(rows, now_ms, recv_ns, final=final)
        self._live = True
        self._schedule_closes(messages, now_ms)
        return messages

    def _schedule_closes(self, messages: Sequence[OHLCV], now_ms: int) -> None:
        """Every candle sent closed (first close, or REST values fetched just after its
        end, maybe not final yet) waits for its check."""
        schedule = self._schedule
        if schedule is None:
            return
        for message in messages:
            if message.closed and message.ts_ms is not None:
                schedule.closed(message.ts_ms, now_ms)

    def _check_due(self, now_ms: int) -> None:
        """Ask for the due check, if any: one fetch of the candles it covers."""
        schedule = self._schedule
        if schedule is None or self._held is not None:
            return  # candles held for skipped periods: check once they are applied
        check = schedule.due(now_ms)
        if check is None:
            return
        period = self._tracker.period_ms
        forming = self._tracker.forming
        newest = max(check.last_ms, forming[0] if forming is not None else check.last_ms)
        # The first page (the newest candles, forming one included) reaches the oldest.
        limit = min(MAX_UNCHECKED, (newest - check.first_ms) // period + 2)
        request = FetchCandles(check.first_ms - period, check.last_ms + period, "reconcile", limit)
        self._checks[request] = check
        self._requests.append(request)

    def _reconciled(
        self, request: FetchCandles, result: RestResult, recv_ns: int
    ) -> Sequence[MarketMessage]:
        check = self._checks.pop(request, None)
        schedule = self._schedule
        if check is None or schedule is None:
            return super().on_rest(request, result, recv_ns)
        if isinstance(result, RestFailed):
            schedule.answered(check, ok=result.unsupported)
            if not result.unsupported:
                detail = f"candle check failed, retried at the next slot: {result.reason}"
                self._notices.append(Notice(detail))
            return []
        schedule.answered(check, ok=True)
        corrections = self._tracker.reconcile(result, check.covers, recv_ns)
        self.corrections += len(corrections)
        if corrections:
            stamps = ", ".join(str(c.ts_ms) for c in corrections)
            self._notices.append(
                Notice(f"corrected {len(corrections)} closed candle(s) from REST: {stamps}")
            )
        return corrections

    def _backfilled(self, result: RestResult, recv_ns: int) -> Sequence[MarketMessage]:
        if isinstance(result, RestFailed):
            if result.unsupported:
                return []  # no REST history on this exchange: nothing to seed or fill
            detail = f"candle backfill failed, history may have a hole: {result.reason}"
            self._notices.append(Notice(detail, error=True))
            result = []
        newest = self._stream_newest
        if newest is not None:
            self._tracker.seed_closed([newest])
        messages = self._tracker.fill(result, recv_ns)
        if result:
            self._notices.append(Notice(f"backfilled {len(result)} closed candle(s)"))
        return messages

    def _missed_fetched(self, request: FetchCandles, result: RestResult) -> None:
        """Keep the fetched candles of one skipped range; notices for what is missing."""
        period = self._tracker.period_ms
        assert request.after_ms is not None
        start, end = request.after_ms + period, request.until_ms
        if isinstance(result, RestFailed):
            detail = f"candles {start}..{end - period} missed and not fetched: {result.reason}"
            self._notices.append(Notice(detail, "error", error=True))
            return
        got = [r for r in result if start <= r[0] < end]
        expected = (end - start) // period
        self._notices.append(
            Notice(
                f"candles {start}..{end - period} missed by the socket: "
                f"{len(got)} of {expected} fetched over REST"
            )
        )
        if len(got) < expected:
            detail = (
                f"candles {start}..{end - period}: the socket skipped {expected}, "
                f"REST had {len(got)}: the stream has a hole"
            )
            self._notices.append(Notice(detail, "error", error=True))
        for row in got:
            self._fetched[row[0]] = row


def _candles_within(policy: ReconcilePolicy, timeframe: str) -> int:
    """How many closed candles can wait for their check at most: those of `after_ms` plus
    two `every_ms` (a slot just missed), capped at what a check may cover."""
    period = timeframe_ms(timeframe)
    return min(MAX_UNCHECKED, (policy.after_ms + 2 * policy.every_ms) // period + 2)


def _row_of(message: MarketMessage | None) -> Row | None:
    """The candle in *message* as a row, None if it is not one."""
    if not isinstance(message, OHLCV):
        return None
    ts = message.ts_ms
    if ts is None:
        return None
    m = message
    return (ts, m.open, m.high, m.low, m.close, m.volume)


class TickerHandler(FeedHandler):
    """Tickers: one message per ccxt ticker."""

    def on_data(self, data: Any, now_ms: int, recv_ns: int) -> Sequence[MarketMessage]:
        return [normalize.ticker(self.feed.exchange, self.feed.symbol, data, recv_ns, self.units)]


class TradeIds:
    """A bounded memory of recent trade ids: a set plus a FIFO for eviction."""

    def __init__(self, capacity: int = TRADE_ID_MEMORY) -> None:
        self.capacity = capacity
        self._seen: set[str] = set()
        self._order: deque[str] = deque()

    def __len__(self) -> int:
        return len(self._seen)

    def __contains__(self, trade_id: object) -> bool:
        return trade_id in self._seen

    def fresh(self, trades: tuple[Trade, ...]) -> tuple[Trade, ...]:
        """The trades not seen before (trades without an id are always kept)."""
        kept: list[Trade] = []
        for trade in trades:
            if trade.id is None:
                kept.append(trade)
                continue
            if trade.id in self._seen:
                continue
            self._seen.add(trade.id)
            self._order.append(trade.id)
            if len(self._order) > self.capacity:
                self._seen.discard(self._order.popleft())
            kept.append(trade)
        return tuple(kept)


RECOVERED_PER_MESSAGE = 1000
"""Recovered trades are published in messages of at most this many, oldest first."""


def after_last(trade: Trade, last_ms: int | None, last_id: str | None) -> bool:
    """Whether *trade* comes after the last published one (exchange time *last_ms*, id
    *last_id*) in exchange order: a later time, or the same millisecond and a larger
    numeric id (exchanges number trades in order; a non-numeric id at the same
    millisecond counts as later and is left to `TradeIds` to drop if it was seen)."""
    if last_ms is None or trade.ts_ms is None:
        return True
    if trade.ts_ms != last_ms:
        return trade.ts_ms > last_ms
    if last_id is None or trade.id is None:
        return trade.id is not None  # an id-less trade at that very ms may be the last one
    if trade.id.isdigit() and last_id.isdigit():
        return int(trade.id) > int(last_id)
    return trade.id != last_id


def exchange_order(trade: Trade) -> tuple[int, int, str]:
    """Sort key of exchange order: time, then numeric id (exchanges number trades in
    order), then the id as text."""
    tid = trade.id or ""
    return (trade.ts_ms or 0, int(tid) if tid.isdigit() else 0, tid)


class TradesHandler(FeedHandler):
    """Trades: one message per ccxt batch, every trade kept once (deduplicated by id),
    and what the socket missed recovered over REST.

    The socket loses the trades made while it was down (`on_down`), and a new producer
    starts after the last trade its predecessor published (`on_start`). Either way the
    next live batch is held and the trades since the last published one are asked for
    (`FetchTrades`); on the answer (`on_trades`) the ones that come after it (by time,
    then id: `after_last`) and were not published yet (`TradeIds`) go out first, in
    exchange order, then the held batch. Only what lies beyond the exchange's REST
    window is announced, as a ``gap`` notice with the exchange times around the hole
    (``from_ms``/``to_ms``): the window is known to reach back far enough when it holds
    the last published trade or one before it.
    """

    def __init__(
        self, feed: Feed, memory: int = TRADE_ID_MEMORY, *, units: Conversion | None = None
    ) -> None:
        super().__init__(feed, units=units)
        self.ids = TradeIds(memory)
        self.duplicates = 0
        self.recovered = 0
        """Trades published from REST answers."""
        self._live = True
        self._held: list[Trades] = []
        self.newest_ms: int | None = None
        """Exchange time of the newest trade published."""
        self.newest_id: str | None = None
        """Id of the newest trade published (None if it had none)."""

    @property
    def live(self) -> bool:
        """False from `on_down` (or a start after a predecessor) until trades flow again."""
        return self._live

    def on_start(self, last: MarketMessage | None, now_ms: int) -> None:
        """Continue after the stream's newest batch: its trades count as published, and
        the next live batch waits for the ones made since (the hand-over window)."""
        if not isinstance(last, Trades) or not last.trades:
            return
        self.ids.fresh(last.trades)
        self._published(last.trades)
        self._live = False

    def on_down(self) -> None:
        self._live = False

    def on_quiet(self) -> None:
        """Trades the exchange printed while the feed was silent are fetched over REST
        when data flows again, as after `on_down` (for a merely quiet feed the answer
        holds nothing new, and nothing is published twice)."""
        self._live = False

    def on_data(self, data: Any, now_ms: int, recv_ns: int) -> Sequence[MarketMessage]:
        batch = normalize.trades(self.feed.exchange, self.feed.symbol, data, recv_ns, self.units)
        if not self._live and self.newest_ms is None:
            self._live = True  # nothing published yet to continue from: nothing to fetch
            self._gap(_first_ts(batch.trades), "nothing to recover them from")
        if self._held or not self._live:
            if not self._held:
                self._requests.append(FetchTrades(self.newest_ms))
            self._held.append(batch)
            return []
        return self._fresh(batch)

    def on_trades(
        self, request: FetchTrades, result: FetchedTrades | RestFailed, recv_ns: int
    ) -> Sequence[MarketMessage]:
        held, self._held = self._held, []
        if not held:
            return super().on_trades(request, result, recv_ns)
        self._live = True
        last_ms, last_id = self.newest_ms, self.newest_id
        unseen = [t for b in held for t in b.trades if after_last(t, last_ms, last_id)]
        first_live = min(unseen, key=exchange_order, default=None)
        out: list[MarketMessage] = []
        if isinstance(result, RestFailed):
            to_ms = None if first_live is None else first_live.ts_ms
            self._gap(to_ms, f"not re-fetched ({result.reason})")
        else:
            fetched = normalize.trades_in_base(result.trades, self.units)  # REST: as live
            out += self._recovered(fetched, first_live, recv_ns)
        for batch in held:
            out += self._fresh(batch)
        return out

    def _recovered(
        self, fetched: tuple[Trade, ...], first_live: Trade | None, recv_ns: int
    ) -> list[MarketMessage]:
        """Messages of the fetched trades between the last published one and the first
        held live one (later ones arrive live); a gap notice for what the REST window
        no longer held."""
        last_ms, last_id = self.newest_ms, self.newest_id
        reaches = last_ms is None or any(
            (last_id is not None and t.id == last_id) or (t.ts_ms is not None and t.ts_ms < last_ms)
            for t in fetched
        )
        live_ms = None if first_live is None else first_live.ts_ms
        live_id = None if first_live is None else first_live.id
        later = tuple(
            t
            for t in fetched
            if after_last(t, last_ms, last_id)
            and (first_live is None or not (t.id == live_id or after_last(t, live_ms, live_id)))
            and (t.id is not None or live_ms is None or (t.ts_ms or 0) < live_ms)
        )
        fresh = self.ids.fresh(later)
        if not reaches:
            first = _first_ts(fresh)
            self._gap(live_ms if first is None else first, "beyond the exchange's REST window")
        self.recovered += len(fresh)
        if fresh:
            self._notices.append(
                Notice(f"recovered {len(fresh)} trade(s) the socket missed, over REST")
            )
        self._published(fresh)
        ex, symbol = self.feed.exchange, self.feed.symbol
        return [
            normalize.trades_message(ex, symbol, fresh[i : i + RECOVERED_PER_MESSAGE], recv_ns)
            for i in range(0, len(fresh), RECOVERED_PER_MESSAGE)
        ]

    def _gap(self, to_ms: int | None, why: str) -> None:
        last = self.newest_ms
        since = "the last trade published" if last is None else f"{last} (the last one published)"
        until = "the first one after" if to_ms is None else f"{to_ms} (the first one after)"
        detail = f"trades between {since} and {until}, exchange time in ms, may be missing: {why}"
        self._notices.append(Notice(detail, "gap", from_ms=self.newest_ms, to_ms=to_ms))

    def _fresh(self, batch: Trades) -> list[MarketMessage]:
        """*batch* without the trades already published."""
        fresh = self.ids.fresh(batch.trades)
        self.duplicates += len(batch.trades) - len(fresh)
        if not fresh:
            return []
        if len(fresh) != len(batch.trades):
            batch = normalize.trades_message(
                self.feed.exchange, self.feed.symbol, fresh, batch.recv_ns
            )
        self._published(fresh)
        return [batch]

    def _published(self, trades: tuple[Trade, ...]) -> None:
        """Remember the newest of *trades* (exchange order) as the last one published."""
        for trade in trades:
            ts = trade.ts_ms
            if ts is not None and (self.newest_ms is None or ts >= self.newest_ms):
                self.newest_ms, self.newest_id = ts, trade.id


def _first_ts(trades: Iterable[Trade]) -> int | None:
    """The earliest exchange time among *trades*."""
    return min((t.ts_ms for t in trades if t.ts_ms is not None), default=None)


class BookHandler(FeedHandler):
    """Top-N books, at most one per ``interval_ms`` (0: every update); the newest wins and
    a held one is released by the clock."""

    def __init__(
        self, feed: Feed, depth: int, interval_ms: int, *, units: Conversion | None = None
    ) -> None:
        super().__init__(feed, units=units)
        self.depth = depth
        self.interval_ms = interval_ms
        self._last_sent_ms: int | None = None
        self._held: Book | None = None

    def on_data(self, data: Any, now_ms: int, recv_ns: int) -> Sequence[MarketMessage]:
        book = normalize.book(
            self.feed.exchange, self.feed.symbol, data, self.depth, recv_ns, self.units
        )
        if self._due(now_ms):
            self._held = None
            self._last_sent_ms = now_ms
            return [book]
        self._held = book
        return []

    def on_clock(self, now_ms: int, recv_ns: int) -> Sequence[MarketMessage]:
        if self._held is None or not self._due(now_ms):
            return []
        held, self._held = self._held, None
        self._last_sent_ms = now_ms
        return [held]

    def on_resync(self) -> None:
        """The exchange's book broke and is being rebuilt: a book held back is from the
        broken one (dropped), and the first fresh book goes out at once."""
        self._held = None
        self._last_sent_ms = None

    def _due(self, now_ms: int) -> bool:
        last = self._last_sent_ms
        return self.interval_ms == 0 or last is None or now_ms - last >= self.interval_ms


def handler_for(
    feed: Feed,
    *,
    close_grace_ms: int,
    book_depth: int,
    book_interval_ms: int,
    reconcile: ReconcilePolicy | None = None,
    units: Conversion | None = None,
) -> FeedHandler:
    """The handler for *feed*'s kind (*reconcile*: how candles are checked, None: off;
    *units*: how its market's contract figures become base units, None: they are)."""
    if feed.timeframe is not None:
        return OhlcvHandler(feed, close_grace_ms, reconcile, units=units)
    if feed.kind == "ticker":
        return TickerHandler(feed, units=units)
    if feed.kind == "trades":
        return TradesHandler(feed, units=units)
    return BookHandler(feed, book_depth, book_interval_ms, units=units)
