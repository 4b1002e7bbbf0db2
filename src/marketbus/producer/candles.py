"""Candle close inference: a pure state machine per OHLCV feed.

No exchange's "candle closed" flag survives ccxt, so the producer infers it: a candle
is closed once a newer candle is seen, or once the clock passes its end plus a grace
period. Each period is sent closed once. What the socket says about a period after
that is not sent as it comes. A candle the clock closed while the exchange was late
is settled once: when the socket shows the next period (the exchange has moved on),
its last values for the closed one are sent as a correction if they differ. Final
values fetched over REST correct a closed candle the same way (`reconcile`, and the
periods fetched after an outage): same open time, ``closed`` again.

Order: first sends are in open-time order; only a correction (same open time, closed
again) of a period already sent may come after newer ones. A skipped period is not
announced as a gap when it can be found: the rows that reveal it are held until it is
fetched (`missing`), so it goes out before any newer period; only if REST cannot
give it is it a hole. The handler keeps the clock from closing while such fetches are
in flight, as their messages are published only once the round is answered.

`CandleTracker` takes copied rows and the wall clock and returns `OHLCV` messages
(run/seq unset); it never awaits and never reads a clock itself.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from operator import itemgetter

from marketbus.producer.normalize import Row
from marketbus.shared.names import timeframe_ms
from marketbus.shared.schema import OHLCV

CLOSED_MEMORY = 64
"""How many recently closed candles are remembered to recognize duplicates vs corrections."""

_open_time = itemgetter(0)


class CandleTracker:
    """Turns ccxt OHLCV rows of one feed into forming and closed `OHLCV` messages."""

    __slots__ = (
        "_clock_closed",
        "_close_grace_ms",
        "_closed",
        "_forming",
        "_late",
        "_memory",
        "_newest",
        "_period_ms",
        "_provisional",
        "exchange",
        "symbol",
        "timeframe",
    )

    def __init__(
        self,
        exchange: str,
        symbol: str,
        timeframe: str,
        close_grace_ms: int,
        memory: int = CLOSED_MEMORY,
    ) -> None:
        self.exchange = exchange
        self.symbol = symbol
        self.timeframe = timeframe
        self._period_ms = timeframe_ms(timeframe)
        self._close_grace_ms = close_grace_ms
        self._memory = memory
        self._forming: Row | None = None
        self._clock_closed: int | None = None  # oldest candle the clock closed since data
        self._closed: dict[int, Row] = {}
        self._newest: int | None = None
        self._late = 0
        self._provisional: dict[int, Row | None] = {}
        """Candles the clock closed, until the socket shows a newer period: the socket's
        latest values for each since (None: nothing new)."""

    @property
    def late_updates(self) -> int:
        """Socket updates of periods already sent closed, not sent (the exchange lagged
        the clock, or repeated a candle): REST reconciliation has the final say."""
        return self._late

    @property
    def forming(self) -> Row | None:
        """The candle still open, as last seen (None before the first row)."""
        return self._forming

    @property
    def last_closed_ms(self) -> int | None:
        """Open time of the newest candle sent closed, if any."""
        return self._newest

    @property
    def period_ms(self) -> int:
        return self._period_ms

    def missing(
        self, rows: Sequence[Row], *, refetch_forming: bool = False
    ) -> list[tuple[int, int]]:
        """The periods *rows* would skip, as ``[start, end)`` ranges of open times: before
        the first row (after the newest candle seen) and between rows. The caller fetches
        them and passes them to `update` together with *rows*, so candles stay in order.
        This is the tracker's one way of telling what is missing: it keeps no list of
        holes, so asking again after `update` finds nothing left before those rows.

        With *refetch_forming* (the socket was down) it is one range from the candle that
        was forming up to the newest row: the forming candle's last updates were missed,
        and what ccxt hands over first after a reconnect may be its cache from before.
        """
        forming = self._forming
        if not refetch_forming:
            # The common case, checked without sorting: no row opens more than one period
            # after the newest candle seen, so nothing can be skipped.
            latest = forming[0] if forming is not None else self._newest
            if latest is not None:
                limit = latest + self._period_ms
                for row in rows:
                    if row[0] > limit:
                        break
                else:
                    return []
        stamps = sorted({r[0] for r in rows})
        if not stamps:
            return []
        if refetch_forming:
            # From the oldest candle whose final values the socket may not have delivered:
            # one the clock closed since the last data (the outage had begun unnoticed),
            # else the forming one, else the one after the newest closed.
            start: int | None
            if self._clock_closed is not None:
                start = self._clock_closed
            elif forming is not None:
                start = forming[0]
            else:
                start = None if self._newest is None else self._newest + self._period_ms
            return [(start, stamps[-1])] if start is not None and stamps[-1] > start else []
        latest = forming[0] if forming is not None else self._newest
        ranges: list[tuple[int, int]] = []
        for ts in stamps:
            if latest is not None and ts > latest + self._period_ms:
                ranges.append((latest + self._period_ms, ts))
            if latest is None or ts > latest:
                latest = ts
        return ranges

    def fill(self, rows: Iterable[Row], recv_ns: int) -> list[OHLCV]:
        """Closed candles fetched over REST (the start-up backfill): each is sent closed
        unless it was already sent as is or is not older than the forming candle."""
        out: list[OHLCV] = []
        for row in sorted(rows, key=_open_time):
            if self._closed.get(row[0]) != row and (
                self._forming is None or row[0] < self._forming[0]
            ):
                self._remember(row)
                out.append(self._message(row, closed=True, recv_ns=recv_ns))
        return out

    def seed_closed(self, rows: Iterable[Row]) -> None:
        """Remember candles already published closed (e.g. backfilled or in the stream),
        so seeing them again from the exchange is not a correction."""
        for row in sorted(rows, key=_open_time):
            self._remember(row)

    def update(
        self,
        rows: Iterable[Row],
        now_ms: int,
        recv_ns: int,
        *,
        final: Collection[int] = (),
    ) -> list[OHLCV]:
        """Apply rows (any order; usually the forming candle) then the clock. *final*:
        open times of rows fetched over REST (closed on the exchange): those correct a
        period already sent closed; the socket's rows for such a period are dropped."""
        out: list[OHLCV] = []
        for row in sorted(rows, key=_open_time):
            self._apply(row, now_ms, recv_ns, out, row[0] in final)
        self._clock_closed = None
        forming = self._forming
        if forming is not None and self._ended(forming[0], now_ms):
            out.extend(self.tick(now_ms, recv_ns))
        return out

    def tick(self, now_ms: int, recv_ns: int) -> list[OHLCV]:
        """Close the forming candle if the clock passed its end plus the grace period."""
        forming = self._forming
        if forming is None or not self._ended(forming[0], now_ms):
            return []
        self._forming = None
        self._remember(forming)
        self._provisional[forming[0]] = None
        if self._clock_closed is None:
            self._clock_closed = forming[0]
        return [self._message(forming, closed=True, recv_ns=recv_ns)]

    def _ended(self, open_ms: int, now_ms: int) -> bool:
        return now_ms >= open_ms + self._period_ms + self._close_grace_ms

    def reconcile(self, rows: Iterable[Row], covers: Collection[int], recv_ns: int) -> list[OHLCV]:
        """The exchange's final values (REST) of the closed candles *covers*: each one
        that differs from what was sent is sent again, closed (a correction); the rest
        of *rows* is ignored (not asked for, or a period this run never sent)."""
        out: list[OHLCV] = []
        for row in sorted(rows, key=_open_time):
            ts = row[0]
            sent = self._closed.get(ts)
            if ts in covers and sent is not None and sent != row:
                self._remember(row)
                out.append(self._message(row, closed=True, recv_ns=recv_ns))
        return out

    def _apply(
        self, row: Row, now_ms: int, recv_ns: int, out: list[OHLCV], final: bool = False
    ) -> None:
        ts = row[0]
        if self._provisional and not final:
            self._settle(ts, recv_ns, out)
        forming = self._forming
        if forming is not None and ts == forming[0]:
            self._forming = row
            out.append(self._message(row, closed=False, recv_ns=recv_ns))
            return
        last_closed = self.last_closed_ms
        if (forming is not None and ts < forming[0]) or (
            last_closed is not None and ts <= last_closed
        ):
            # A period already sent closed: held if the clock closed it, else dropped;
            # REST's final values correct it at once.
            if not final:
                self._late += 1
                if ts in self._provisional:
                    self._provisional[ts] = row
                return
            self._provisional.pop(ts, None)
            if self._closed.get(ts) != row:
                self._remember(row)
                out.append(self._message(row, closed=True, recv_ns=recv_ns))
            return
        # A newer candle: the forming one is final. (Periods skipped before it were asked
        # for with `missing` and applied first.)
        if forming is not None:
            self._remember(forming)
            out.append(self._message(forming, closed=True, recv_ns=recv_ns))
        if self._ended(ts, now_ms):
            self._forming = None
            self._remember(row)
            if not final:
                self._provisional[ts] = None  # over when first seen: closed as by the clock
            out.append(self._message(row, closed=True, recv_ns=recv_ns))
        else:
            self._forming = row
            out.append(self._message(row, closed=False, recv_ns=recv_ns))

    def _settle(self, ts: int, recv_ns: int, out: list[OHLCV]) -> None:
        """The socket shows period *ts*: each candle the clock closed before it is over
        on the exchange too; its latest socket values, if they differ, are sent once."""
        for open_ms in [p for p in self._provisional if p < ts]:
            late = self._provisional.pop(open_ms)
            if late is not None and self._closed.get(open_ms) not in (None, late):
                self._remember(late)
                out.append(self._message(late, closed=True, recv_ns=recv_ns))

    def _remember(self, row: Row) -> None:
        self._closed[row[0]] = row
        if self._newest is None or row[0] > self._newest:
            self._newest = row[0]
        while len(self._closed) > self._memory:
            oldest = min(self._closed)
            del self._closed[oldest]
            self._provisional.pop(oldest, None)

    def _message(self, row: Row, *, closed: bool, recv_ns: int) -> OHLCV:
        ts, o, h, low, c, v = row
        return OHLCV(
            exchange=self.exchange,
            symbol=self.symbol,
            ts_ms=ts,
            recv_ns=recv_ns,
            timeframe=self.timeframe,
            open=o,
            high=h,
            low=low,
            close=c,
            volume=v,
            closed=closed,
        )
