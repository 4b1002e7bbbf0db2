"""A deterministic synthetic market: the simulator's single source of truth.

Per symbol a seeded random walk makes trades; the candles of every tracked timeframe
are aggregated from exactly those trades, the order book moves with the walk (the
trades take liquidity from its best levels), and the ticker's 24 h statistics come
from the same trades. Time is whatever the caller passes in (`now_ms`): no wall clock
is read here, so a unit test that drives the clock gets exact, repeatable values.

Each call returns the `MarketEvent`s it caused; the protocol modules turn those into
exchange frames. Histories are bounded (`history` closed candles per timeframe, as
many recent trades).
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Literal

from marketbus.shared.names import timeframe_ms
from marketbus.sim.contracts import inverse_spec
from marketbus.sim.instruments import Instrument, parse_instrument
from marketbus.sim.timeframes import DEFAULT_TIMEFRAMES, check_timeframe, period_start

Side = Literal["buy", "sell"]
Level = tuple[float, float]

_DAY_MS = 86_400_000
_MINUTE_MS = 60_000
_STEP_LEVELS = (-2, -1, -1, 0, 0, 0, 1, 1, 2)


@dataclass(frozen=True, slots=True)
class Trade:
    """One trade; `side` is the taker's."""

    id: int
    ts_ms: int
    price: float
    amount: float
    side: Side


@dataclass(frozen=True, slots=True)
class Candle:
    """OHLCV of one period; `closed` once the clock has passed its end."""

    timeframe: str
    ts_ms: int
    open: float
    high: float
    low: float
    close: float
    volume: float
    quote_volume: float
    trades: int
    first_trade_id: int | None
    last_trade_id: int | None
    closed: bool
    contracts_volume: int | None = None
    """Whole contracts traded, on inverse swaps (whose `volume` is their base value
    summed trade by trade); None elsewhere."""

    @property
    def close_ms(self) -> int:
        """Last ms inside the period (binance's kline close time `T`)."""
        return self.ts_ms + timeframe_ms(self.timeframe) - 1


@dataclass(frozen=True, slots=True)
class BookSnapshot:
    """The whole book after update `update_id`, best levels first."""

    ts_ms: int
    update_id: int
    bids: tuple[Level, ...]
    asks: tuple[Level, ...]


@dataclass(frozen=True, slots=True)
class BookDelta:
    """Levels changed by updates `first_update_id..last_update_id`; amount 0 removes."""

    ts_ms: int
    prev_update_id: int
    first_update_id: int
    last_update_id: int
    bids: tuple[Level, ...]
    asks: tuple[Level, ...]


@dataclass(frozen=True, slots=True)
class Ticker:
    """Best bid/ask, last trade, and statistics over the trades of the last 24 h."""

    ts_ms: int
    bid: float
    bid_size: float
    ask: float
    ask_size: float
    last: float
    last_size: float
    last_side: Side
    open: float
    high: float
    low: float
    base_volume: float
    quote_volume: float
    open_ms: int
    first_trade_id: int | None
    last_trade_id: int | None
    count: int
    contracts_volume: int | None = None
    """Whole contracts traded in the window, on inverse swaps; None elsewhere."""

    @property
    def change(self) -> float:
        return self.last - self.open


@dataclass(frozen=True, slots=True)
class TradeEvent:
    symbol: str
    trade: Trade


@dataclass(frozen=True, slots=True)
class CandleEvent:
    """The forming candle changed, or a candle closed (`candle.closed`), at `event_ms`."""

    symbol: str
    candle: Candle
    event_ms: int


@dataclass(frozen=True, slots=True)
class BookEvent:
    """The book changed by `delta`, leaving it as `book` (venues that push snapshots
    or checksums need the whole book as of this very change)."""

    symbol: str
    delta: BookDelta
    book: BookSnapshot


@dataclass(frozen=True, slots=True)
class TickerEvent:
    symbol: str
    ticker: Ticker


MarketEvent = TradeEvent | CandleEvent | BookEvent | TickerEvent


class _CandleBuilder:
    """A forming candle in integer ticks and lots (and, for inverse swaps, the exact
    decimal sum of its trades' base amounts)."""

    __slots__ = (
        "base",
        "close",
        "count",
        "first_id",
        "high",
        "last_id",
        "low",
        "open",
        "quote",
        "ts_ms",
        "volume",
    )

    def __init__(self, ts_ms: int, price_ticks: int) -> None:
        self.ts_ms = ts_ms
        self.open = self.high = self.low = self.close = price_ticks
        self.volume = 0
        self.quote = 0
        self.base = Decimal(0)
        self.count = 0
        self.first_id: int | None = None
        self.last_id: int | None = None

    def add(self, trade_id: int, ticks: int, lots: int, base: float) -> None:
        if self.count == 0:
            self.open = self.high = self.low = ticks
            self.first_id = trade_id
        self.high = max(self.high, ticks)
        self.low = min(self.low, ticks)
        self.close = ticks
        self.volume += lots
        self.quote += ticks * lots
        self.base += Decimal(repr(base))
        self.count += 1
        self.last_id = trade_id

    def freeze(self, instrument: Instrument, timeframe: str, closed: bool) -> Candle:
        inverse = instrument.inverse
        return Candle(
            timeframe=timeframe,
            ts_ms=self.ts_ms,
            open=instrument.price(self.open),
            high=instrument.price(self.high),
            low=instrument.price(self.low),
            close=instrument.price(self.close),
            volume=float(self.base) if inverse else instrument.amount(self.volume),
            quote_volume=(
                _inverse_quote(instrument, self.volume)
                if inverse
                else instrument.notional(self.quote)
            ),
            trades=self.count,
            first_trade_id=self.first_id,
            last_trade_id=self.last_id,
            closed=closed,
            contracts_volume=self.volume if inverse else None,
        )


def _inverse_quote(instrument: Instrument, contracts: int) -> float:
    """The quote value of whole inverse contracts (each is `size` quote units)."""
    return float(contracts * inverse_spec(instrument.base).size)


class _SymbolMarket:
    """Random walk, candles, book and 24 h statistics of one symbol."""

    def __init__(
        self,
        instrument: Instrument,
        rng: random.Random,
        timeframes: Sequence[str],
        depth: int,
        history: int,
        start_ms: int,
    ) -> None:
        self.instrument = instrument
        self._rng = rng
        self._depth = depth
        self._history = history
        self.now_ms = start_ms
        price = instrument.initial_price_ticks
        self._level_step = max(1, price // 200_000)
        self._step = instrument.amount_step_lots  # every amount is a multiple (whole contracts)
        # up to 2 (a level: 20) base units a trade; inverse: up to 200 (2000) contracts
        scale = 100 if instrument.inverse else 1
        self._max_trade_steps = max(1, 2 * scale * 10**instrument.amount_decimals // self._step)
        self._max_level_steps = max(2, 20 * scale * 10**instrument.amount_decimals // self._step)
        self._best_bid = price
        self._bids: dict[int, int] = {}
        self._asks: dict[int, int] = {}
        self._rebuild_book()
        self.update_id = rng.randrange(1_000_000, 9_000_000)
        self._next_trade_id = rng.randrange(100_000, 900_000)
        self._last_ticks = price
        self._last_lots = 0
        self._last_side: Side = "buy"
        self._timeframes = tuple(timeframes)
        self._forming = {
            tf: _CandleBuilder(period_start(start_ms, tf), price) for tf in self._timeframes
        }
        self._closed: dict[str, deque[Candle]] = {
            tf: deque(maxlen=history) for tf in self._timeframes
        }
        self._trades: deque[Trade] = deque(maxlen=history)
        self._minute = _CandleBuilder(period_start(start_ms, "1m"), price)
        self._minutes: deque[_CandleBuilder] = deque(maxlen=_DAY_MS // _MINUTE_MS)

    # -- clock --------------------------------------------------------------

    def advance(self, now_ms: int) -> list[MarketEvent]:
        """Move the clock to `now_ms`, closing every candle that ended by then."""
        if now_ms < self.now_ms:
            raise ValueError(f"clock went backwards: {now_ms} < {self.now_ms}")
        self.now_ms = now_ms
        events: list[MarketEvent] = []
        symbol = self.instrument.symbol
        for tf in self._timeframes:
            builder = self._forming[tf]
            length = timeframe_ms(tf)
            if now_ms < builder.ts_ms + length:
                continue
            closed = self._closed[tf]
            candle = builder.freeze(self.instrument, tf, closed=True)
            closed.append(candle)
            events.append(CandleEvent(symbol, candle, now_ms))
            current = period_start(now_ms, tf)
            gap_start = max(builder.ts_ms + length, current - self._history * length)
            for ts in range(gap_start, current, length):
                empty = _CandleBuilder(ts, builder.close).freeze(self.instrument, tf, closed=True)
                closed.append(empty)
                events.append(CandleEvent(symbol, empty, now_ms))
            forming = _CandleBuilder(current, builder.close)
            self._forming[tf] = forming
            events.append(
                CandleEvent(symbol, forming.freeze(self.instrument, tf, closed=False), now_ms)
            )
        if now_ms >= self._minute.ts_ms + _MINUTE_MS:
            self._minutes.append(self._minute)
            self._minute = _CandleBuilder(period_start(now_ms, "1m"), self._minute.close)
        return events

    # -- one trade ------------------------------------------------------------

    def step(self, now_ms: int) -> list[MarketEvent]:
        """Advance the clock, then make one trade and move the book."""
        events = self.advance(now_ms)
        rng = self._rng
        symbol = self.instrument.symbol
        side: Side = "buy" if rng.random() < 0.5 else "sell"
        best_ask = self._best_bid + self._level_step
        ticks = best_ask if side == "buy" else self._best_bid
        lots = rng.randint(1, self._max_trade_steps) * self._step
        trade_id = self._next_trade_id
        self._next_trade_id += 1
        amount = self.instrument.base_amount(lots, ticks)
        trade = Trade(trade_id, now_ms, self.instrument.price(ticks), amount, side)
        self._trades.append(trade)
        self._last_ticks, self._last_lots, self._last_side = ticks, lots, side
        events.append(TradeEvent(symbol, trade))
        for tf in self._timeframes:
            builder = self._forming[tf]
            builder.add(trade_id, ticks, lots, amount)
            events.append(
                CandleEvent(symbol, builder.freeze(self.instrument, tf, closed=False), now_ms)
            )
        self._minute.add(trade_id, ticks, lots, amount)
        events.append(BookEvent(symbol, self._move_book(now_ms, side, ticks, lots), self.book()))
        events.append(TickerEvent(symbol, self.ticker()))
        return events

    def _rebuild_book(self) -> None:
        """Lay `depth` levels each side around the best bid, keeping known amounts."""
        step = self._level_step
        best_ask = self._best_bid + step
        self._bids = {
            self._best_bid - i * step: self._bids.get(self._best_bid - i * step)
            or self._random_level()
            for i in range(self._depth)
        }
        self._asks = {
            best_ask + i * step: self._asks.get(best_ask + i * step) or self._random_level()
            for i in range(self._depth)
        }

    def _random_level(self) -> int:
        return self._rng.randint(1, self._max_level_steps) * self._step

    def _move_book(self, now_ms: int, side: Side, ticks: int, lots: int) -> BookDelta:
        old_bids, old_asks = dict(self._bids), dict(self._asks)
        taken = self._asks if side == "buy" else self._bids
        taken[ticks] = max(self._step, taken[ticks] - lots)
        lowest_move = self._depth - self._best_bid // self._level_step  # keeps every bid above zero
        move = max(self._rng.choice(_STEP_LEVELS), lowest_move)
        self._best_bid += move * self._level_step
        self._rebuild_book()
        for _ in range(self._rng.randint(1, 3)):
            book = self._bids if self._rng.random() < 0.5 else self._asks
            price = self._rng.choice(list(book))
            amount = self._random_level()
            book[price] = (
                amount
                if amount != book[price]
                else amount % (self._max_level_steps * self._step) + self._step
            )
        bids = _diff(old_bids, self._bids, self.instrument, reverse=True)
        asks = _diff(old_asks, self._asks, self.instrument, reverse=False)
        prev = self.update_id
        self.update_id += max(1, len(bids) + len(asks))
        return BookDelta(now_ms, prev, prev + 1, self.update_id, bids, asks)

    # -- queries ----------------------------------------------------------------

    def candles(self, timeframe: str) -> list[Candle]:
        forming = self._forming[timeframe].freeze(self.instrument, timeframe, closed=False)
        return [*self._closed[timeframe], forming]

    def trades(self) -> list[Trade]:
        return list(self._trades)

    def book(self, depth: int | None = None) -> BookSnapshot:
        inst = self.instrument
        bids = sorted(self._bids.items(), reverse=True)[:depth]
        asks = sorted(self._asks.items())[:depth]
        return BookSnapshot(
            ts_ms=self.now_ms,
            update_id=self.update_id,
            bids=tuple((inst.price(p), inst.base_amount(a, p)) for p, a in bids),
            asks=tuple((inst.price(p), inst.base_amount(a, p)) for p, a in asks),
        )

    def ticker(self) -> Ticker:
        inst = self.instrument
        since = self.now_ms - _DAY_MS
        window = [b for b in (*self._minutes, self._minute) if b.ts_ms > since and b.count]
        best_bid = self._best_bid
        best_ask = best_bid + self._level_step
        last = self._last_ticks
        contracts = sum(b.volume for b in window)
        inverse = inst.inverse
        return Ticker(
            ts_ms=self.now_ms,
            bid=inst.price(best_bid),
            bid_size=inst.base_amount(self._bids[best_bid], best_bid),
            ask=inst.price(best_ask),
            ask_size=inst.base_amount(self._asks[best_ask], best_ask),
            last=inst.price(last),
            last_size=inst.base_amount(self._last_lots, last),
            last_side=self._last_side,
            open=inst.price(window[0].open if window else last),
            high=inst.price(max((b.high for b in window), default=last)),
            low=inst.price(min((b.low for b in window), default=last)),
            base_volume=(
                float(sum((b.base for b in window), Decimal(0)))
                if inverse
                else inst.amount(contracts)
            ),
            quote_volume=(
                _inverse_quote(inst, contracts)
                if inverse
                else inst.notional(sum(b.quote for b in window))
            ),
            open_ms=max(since, window[0].ts_ms) if window else self.now_ms,
            first_trade_id=window[0].first_id if window else None,
            last_trade_id=window[-1].last_id if window else None,
            count=sum(b.count for b in window),
            contracts_volume=contracts if inverse else None,
        )


def _diff(
    old: dict[int, int], new: dict[int, int], inst: Instrument, *, reverse: bool
) -> tuple[Level, ...]:
    changed = sorted(
        (p for p in old.keys() | new.keys() if old.get(p) != new.get(p)), reverse=reverse
    )
    return tuple((inst.price(p), inst.base_amount(new.get(p, 0), p)) for p in changed)


class SyntheticMarket:
    """The simulated markets of a set of symbols, driven by an injected clock.

    `seed` fixes everything: two markets with the same seed, symbols and call
    sequence produce identical trades, candles and books. Each symbol has its own
    random stream, so one symbol's values do not depend on how calls for other
    symbols interleave.

    Everything here is in BASE units: it is the truth a test compares a client's
    output with (`trades` with their ids, `book` levels, `candles` (closed ones have
    `closed`), `ticker` volumes). Venues print swap amounts in their own contracts
    (`Instrument.contract(exchange_id)`, see `sim.contracts`); swap amounts are whole
    multiples of every venue's contract unless `unit_contracts`. Inverse swaps trade
    whole contracts: a trade's or level's amount is their base value at its own price,
    a candle's or ticker's volume the exact decimal sum of its trades' amounts (with the
    contracts in `contracts_volume`).
    """

    def __init__(
        self,
        symbols: Iterable[str],
        *,
        seed: int,
        start_ms: int,
        timeframes: Sequence[str] = DEFAULT_TIMEFRAMES,
        depth: int = 20,
        history: int = 5000,
        unit_contracts: bool = False,
    ) -> None:
        for tf in timeframes:
            check_timeframe(tf)
        if depth < 1 or history < 1:
            raise ValueError("depth and history must be positive")
        self.timeframes = tuple(timeframes)
        self.depth = depth
        self._markets = {
            symbol: _SymbolMarket(
                parse_instrument(symbol, unit_contracts=unit_contracts),
                random.Random(f"{seed}:{symbol}"),
                self.timeframes,
                depth,
                history,
                start_ms,
            )
            for symbol in symbols
        }
        if not self._markets:
            raise ValueError("at least one symbol is required")

    @property
    def symbols(self) -> tuple[str, ...]:
        return tuple(self._markets)

    def instrument(self, symbol: str) -> Instrument:
        return self._get(symbol).instrument

    def instruments(self) -> list[Instrument]:
        return [m.instrument for m in self._markets.values()]

    def now_ms(self, symbol: str) -> int:
        return self._get(symbol).now_ms

    def step(self, symbol: str, now_ms: int) -> list[MarketEvent]:
        """One trade on `symbol` at `now_ms`, with the candle, book and ticker changes."""
        return self._get(symbol).step(now_ms)

    def advance(self, now_ms: int) -> list[MarketEvent]:
        """Move every symbol's clock to `now_ms`, closing candles that ended."""
        events: list[MarketEvent] = []
        for market in self._markets.values():
            events.extend(market.advance(now_ms))
        return events

    def replay(self, until_ms: int, every_ms: int) -> None:
        """Trade every symbol once per `every_ms` up to `until_ms`, discarding events.

        Gives a fresh market a history (closed candles for `fetch_ohlcv`) before it
        goes live.
        """
        if every_ms <= 0:
            raise ValueError("every_ms must be positive")
        for market in self._markets.values():
            for ts in range(market.now_ms + every_ms, until_ms + 1, every_ms):
                market.step(ts)
            market.advance(until_ms)

    def candles(self, symbol: str, timeframe: str) -> list[Candle]:
        """Closed candles (oldest first, at most `history`) and then the forming one."""
        market = self._get(symbol)
        if timeframe not in self.timeframes:
            raise KeyError(f"timeframe {timeframe!r} is not simulated (have {self.timeframes})")
        return market.candles(timeframe)

    def trades(self, symbol: str) -> list[Trade]:
        """The most recent trades, oldest first (at most `history`)."""
        return self._get(symbol).trades()

    def book(self, symbol: str, depth: int | None = None) -> BookSnapshot:
        return self._get(symbol).book(depth)

    def ticker(self, symbol: str) -> Ticker:
        return self._get(symbol).ticker()

    def _get(self, symbol: str) -> _SymbolMarket:
        try:
            return self._markets[symbol]
        except KeyError:
            raise KeyError(f"symbol {symbol!r} is not simulated (have {self.symbols})") from None
