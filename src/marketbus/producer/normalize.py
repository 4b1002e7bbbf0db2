"""ccxt unified structures -> wire messages (pure, no I/O).

ccxt hands out its own cache objects (OHLCV rows, order books) and mutates them in
place later, so every function here copies what it reads at once and returns frozen
Structs. Anything that does not look like what ccxt documents raises `NormalizeError`
naming the feed and the bad field; the watch loop logs, counts and skips it.

Each function first tries one ``msgspec.convert`` into a strict shape (finite floats,
non-negative int ms, exact level and row widths): that copies and validates in C what
ccxt normally hands over, cheaper than checking field by field in Python (measured in
docs/benchmarks.md). It accepts only what the field-by-field path (`checked_ticker`,
`checked_trades`, `checked_book`) accepts, with the same result; anything it refuses
(strings as numbers, float timestamps, extra columns, and every bad value) goes the
field-by-field way, which coerces or raises the error naming the field. Each message
kind is built in one place (`_ticker_message`, `trades_message`, `_book_message`), and
the field-by-field paths share one preamble (`_checked`: where, dict, timestamp).

Units: every size that leaves here is in base units. Each entry point takes the feed's
`units.Conversion` (None: ccxt's figures are base already, e.g. spot) and converts
ccxt's contract figures after checking them (`trades_in_base`, `rows_in_base` convert
what REST hands the handlers the same way).
"""

from __future__ import annotations

import math
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Any

import msgspec

from marketbus.producer.units import Conversion
from marketbus.shared.errors import NormalizeError
from marketbus.shared.schema import Book, Level, Side, Ticker, Trade, Trades

_isfinite = math.isfinite
_convert = msgspec.convert
_replace = msgspec.structs.replace
_Invalid = msgspec.ValidationError

Row = tuple[int, float | None, float | None, float | None, float | None, float | None]
"""One OHLCV row copied out of ccxt: open time ms, open, high, low, close, volume."""

_Finite = Annotated[float, msgspec.Meta(ge=-sys.float_info.max, le=sys.float_info.max)]
"""A float that is not NaN or infinite (ints are taken as floats, bools are refused)."""
_Ms = Annotated[int, msgspec.Meta(ge=0)]
_MaybeFinite = _Finite | None


class _Rows(msgspec.Struct, array_like=True):
    """OHLCV rows of exactly six columns. One-field Structs wrap every shape given to
    ``convert``: msgspec caches a Struct's type information, not a bare ``list[...]``'s,
    which it would rebuild on every call (costlier than the conversion itself)."""

    rows: list[tuple[_Ms, _MaybeFinite, _MaybeFinite, _MaybeFinite, _MaybeFinite, _MaybeFinite]]


class _Levels(msgspec.Struct, array_like=True):
    levels: tuple[tuple[_Finite, _Finite], ...]


class _CcxtTicker(msgspec.Struct, rename="camel"):
    """The unified ticker fields we keep (ccxt's other keys are skipped unread)."""

    timestamp: _Ms | None = None
    bid: _MaybeFinite = None
    bid_volume: _MaybeFinite = None
    ask: _MaybeFinite = None
    ask_volume: _MaybeFinite = None
    last: _MaybeFinite = None
    open: _MaybeFinite = None
    high: _MaybeFinite = None
    low: _MaybeFinite = None
    base_volume: _MaybeFinite = None
    quote_volume: _MaybeFinite = None
    percentage: _MaybeFinite = None
    mark_price: _MaybeFinite = None
    index_price: _MaybeFinite = None


class _CcxtTrade(msgspec.Struct, kw_only=True):
    """The unified trade fields we keep; an int id goes the field-by-field way."""

    id: str | None = None
    timestamp: _Ms | None = None
    price: _Finite
    amount: _Finite
    side: Side | None = None


class _Trades(msgspec.Struct, array_like=True):
    trades: list[_CcxtTrade]


def _float(value: Any, where: str, field: str, *, required: bool = False) -> float | None:
    """A finite float, or None when absent; bool and strings that are not numbers fail.

    The hot path (a finite float, what ccxt gives) builds no text: the error message
    ``{where}: {field} ...`` is made only when the value is bad.
    """
    if type(value) is float and _isfinite(value):
        return value
    if value is None:
        if required:
            raise NormalizeError(f"{where}: {field} is missing")
        return None
    what = f"{where}: {field}"
    if isinstance(value, bool):
        raise NormalizeError(f"{what} is a bool ({value!r}), expected a number")
    if isinstance(value, int | float):
        result = float(value)
    elif isinstance(value, str):
        try:
            result = float(value)
        except ValueError:
            raise NormalizeError(f"{what} {value!r} is not a number") from None
    else:
        raise NormalizeError(f"{what} {value!r} is a {type(value).__name__}, expected a number")
    if not _isfinite(result):
        raise NormalizeError(f"{what} {value!r} is not finite")
    return result


def _required_float(value: Any, where: str, field: str) -> float:
    result = _float(value, where, field, required=True)
    assert result is not None
    return result


def _ms(value: Any, where: str, field: str, *, required: bool = False) -> int | None:
    """Epoch milliseconds as int (ccxt sometimes gives floats such as 1.7e12)."""
    if type(value) is int and value >= 0:
        return value
    number = _float(value, where, field, required=required)
    if number is None:
        return None
    if number < 0 or number != int(number):
        raise NormalizeError(f"{where}: {field} {value!r} is not a non-negative whole number of ms")
    return int(number)


def ohlcv_row(row: Any, where: str = "ohlcv row") -> Row:
    """Copy one ccxt OHLCV row ``[ts, o, h, l, c, v]`` (extra columns are ignored)."""
    if not isinstance(row, Sequence) or isinstance(row, str | bytes) or len(row) < 6:
        raise NormalizeError(f"{where}: {row!r} is not a list [ts, open, high, low, close, volume]")
    ts = _ms(row[0], where, "open time", required=True)
    assert ts is not None
    return (
        ts,
        _float(row[1], where, "open"),
        _float(row[2], where, "high"),
        _float(row[3], where, "low"),
        _float(row[4], where, "close"),
        _float(row[5], where, "volume"),
    )


def ohlcv_rows(rows: Any, where: str = "ohlcv", units: Conversion | None = None) -> list[Row]:
    """Copy every row of a ccxt OHLCV list, oldest first as ccxt returns them; with
    *units*, volume in base units (`rows_in_base`)."""
    if type(rows) is list:
        try:
            return rows_in_base(_convert((rows,), _Rows).rows, units)
        except _Invalid:
            pass  # the field-by-field path below coerces or names the bad field
    if not isinstance(rows, Sequence) or isinstance(rows, str | bytes):
        raise NormalizeError(f"{where}: expected a list of rows, got {type(rows).__name__}")
    copied = [
        ohlcv_row(row, where if len(rows) == 1 else f"{where}[{i}]") for i, row in enumerate(rows)
    ]
    return rows_in_base(copied, units)


def rows_in_base(rows: list[Row], units: Conversion | None) -> list[Row]:
    """Checked rows with their volume in base units (an inverse contract's at the close)."""
    if units is None:
        return rows
    return [(*r[:5], units.maybe(r[5], r[4], "candle volume")) for r in rows]


def _mapping(value: Any, where: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise NormalizeError(f"{where}: expected a dict, got {type(value).__name__}")
    return value


def _where(exchange: str, kind: str, symbol: str) -> str:
    """How errors name the structure they are about: ``binance ticker BTC/USDT``."""
    return f"{exchange} {kind} {symbol}"


@dataclass(frozen=True, slots=True)
class _Checked:
    """A ccxt dict on the field-by-field path: what errors call it, the dict, and its
    ``timestamp`` as checked ms."""

    where: str
    fields: Mapping[str, Any]
    ts_ms: int | None


def _checked(exchange: str, kind: str, symbol: str, data: Any) -> _Checked:
    """The preamble of every field-by-field path over a dict (ticker, book)."""
    where = _where(exchange, kind, symbol)
    fields = _mapping(data, where)
    return _Checked(where, fields, _ms(fields.get("timestamp"), where, "timestamp"))


def ticker(
    exchange: str, symbol: str, data: Any, recv_ns: int, units: Conversion | None = None
) -> Ticker:
    """A ccxt unified ticker dict -> `Ticker` (``percentage`` becomes ``change_pct``);
    with *units*, sizes and base volume in base units."""
    if type(data) is dict:
        try:
            fields = _convert(data, _CcxtTicker)
        except _Invalid:
            pass  # the field-by-field path below coerces or names the bad field
        else:
            return _ticker_message(exchange, symbol, fields, recv_ns, units)
    return checked_ticker(exchange, symbol, data, recv_ns, units)


def checked_ticker(
    exchange: str, symbol: str, data: Any, recv_ns: int, units: Conversion | None = None
) -> Ticker:
    """`ticker` field by field: coerces what the fast path refuses or names the bad field."""
    checked = _checked(exchange, "ticker", symbol, data)
    t, where = checked.fields, checked.where
    fields = _CcxtTicker(
        timestamp=checked.ts_ms,
        bid=_float(t.get("bid"), where, "bid"),
        bid_volume=_float(t.get("bidVolume"), where, "bidVolume"),
        ask=_float(t.get("ask"), where, "ask"),
        ask_volume=_float(t.get("askVolume"), where, "askVolume"),
        last=_float(t.get("last"), where, "last"),
        open=_float(t.get("open"), where, "open"),
        high=_float(t.get("high"), where, "high"),
        low=_float(t.get("low"), where, "low"),
        base_volume=_float(t.get("baseVolume"), where, "baseVolume"),
        quote_volume=_float(t.get("quoteVolume"), where, "quoteVolume"),
        percentage=_float(t.get("percentage"), where, "percentage"),
        mark_price=_float(t.get("markPrice"), where, "markPrice"),
        index_price=_float(t.get("indexPrice"), where, "indexPrice"),
    )
    return _ticker_message(exchange, symbol, fields, recv_ns, units)


def _ticker_message(
    exchange: str, symbol: str, t: _CcxtTicker, recv_ns: int, units: Conversion | None
) -> Ticker:
    """The wire `Ticker` of ccxt's fields, whichever path checked them; an inverse
    contract's sizes convert at the bid/ask and its 24 h base volume at ``last``."""
    if units is not None:
        t = _replace(
            t,
            bid_volume=units.maybe(t.bid_volume, t.bid, "bidVolume"),
            ask_volume=units.maybe(t.ask_volume, t.ask, "askVolume"),
            base_volume=units.maybe(t.base_volume, t.last, "baseVolume"),
        )
    return Ticker(
        exchange=exchange,
        symbol=symbol,
        ts_ms=t.timestamp,
        recv_ns=recv_ns,
        bid=t.bid,
        bid_size=t.bid_volume,
        ask=t.ask,
        ask_size=t.ask_volume,
        last=t.last,
        open=t.open,
        high=t.high,
        low=t.low,
        base_volume=t.base_volume,
        quote_volume=t.quote_volume,
        change_pct=t.percentage,
        mark=t.mark_price,
        index=t.index_price,
    )


def _side(value: Any, where: str) -> Side | None:
    if value is None:
        return None
    if value == "buy":
        return "buy"
    if value == "sell":
        return "sell"
    raise NormalizeError(f"{where}: side {value!r} is not 'buy', 'sell' or null")


def trade(data: Any, where: str) -> Trade:
    """One ccxt unified trade dict -> `Trade` (the id is kept as a string)."""
    t = _mapping(data, where)
    trade_id = t.get("id")
    return Trade(
        id=None if trade_id is None else str(trade_id),
        ts_ms=_ms(t.get("timestamp"), where, "timestamp"),
        price=_required_float(t.get("price"), where, "price"),
        amount=_required_float(t.get("amount"), where, "amount"),
        side=_side(t.get("side"), where),
    )


def trades(
    exchange: str, symbol: str, data: Any, recv_ns: int, units: Conversion | None = None
) -> Trades:
    """A ccxt trades list -> one `Trades` batch; ``ts_ms`` is the newest trade's time;
    with *units*, amounts in base units (`trades_in_base`)."""
    if type(data) is list and data:
        try:
            parsed = _convert((data,), _Trades).trades
        except _Invalid:
            pass  # the field-by-field path below coerces or names the bad field
        else:
            items = tuple(
                [
                    Trade(id=t.id, ts_ms=t.timestamp, price=t.price, amount=t.amount, side=t.side)
                    for t in parsed
                ]
            )
            return trades_message(exchange, symbol, trades_in_base(items, units), recv_ns)
    return checked_trades(exchange, symbol, data, recv_ns, units)


def checked_trades(
    exchange: str, symbol: str, data: Any, recv_ns: int, units: Conversion | None = None
) -> Trades:
    """`trades` trade by trade: coerces what the fast path refuses or names the bad field."""
    where = _where(exchange, "trades", symbol)
    if not isinstance(data, Sequence) or isinstance(data, str | bytes):
        raise NormalizeError(f"{where}: expected a list of trades, got {type(data).__name__}")
    if not data:
        raise NormalizeError(f"{where}: empty batch")
    items = tuple(trade(item, f"{where}[{i}]") for i, item in enumerate(data))
    return trades_message(exchange, symbol, trades_in_base(items, units), recv_ns)


def trades_in_base(items: tuple[Trade, ...], units: Conversion | None) -> tuple[Trade, ...]:
    """Checked trades with their amounts in base units (an inverse one's at its price)."""
    if units is None:
        return items
    return tuple([_replace(t, amount=units.base(t.amount, t.price, "amount")) for t in items])


def trades_message(exchange: str, symbol: str, items: tuple[Trade, ...], recv_ns: int) -> Trades:
    """Wrap already normalized trades (e.g. after de-duplication) into a batch message."""
    stamps = [t.ts_ms for t in items if t.ts_ms is not None]
    return Trades(
        exchange=exchange,
        symbol=symbol,
        ts_ms=max(stamps) if stamps else None,
        recv_ns=recv_ns,
        trades=items,
    )


def _top(side: Any, depth: int) -> tuple[Level, ...] | None:
    """The top *depth* levels when they are all exact ``[price, amount]`` pairs of
    finite numbers, else None (for `_levels` to coerce or name the bad level)."""
    if isinstance(side, list):
        try:
            return _convert((side[:depth],), _Levels).levels
        except _Invalid:
            return None
    return None


def _levels(side: Any, depth: int, where: str) -> tuple[Level, ...]:
    if not isinstance(side, Sequence) or isinstance(side, str | bytes):
        raise NormalizeError(f"{where}: expected a list of [price, amount], got {side!r:.60}")
    levels: list[Level] = []
    for i, level in enumerate(side[:depth]):
        if type(level) is list and len(level) >= 2:  # ccxt's own levels: the fast path
            price, amount = level[0], level[1]
            if type(price) is float and type(amount) is float and _isfinite(price + amount):
                levels.append((price, amount))
                continue
        if not isinstance(level, Sequence) or isinstance(level, str | bytes) or len(level) < 2:
            raise NormalizeError(f"{where}[{i}]: {level!r} is not [price, amount]")
        levels.append(
            (
                _required_float(level[0], f"{where}[{i}]", "price"),
                _required_float(level[1], f"{where}[{i}]", "amount"),
            )
        )
    return tuple(levels)


def book(
    exchange: str,
    symbol: str,
    data: Any,
    depth: int,
    recv_ns: int,
    units: Conversion | None = None,
) -> Book:
    """The top *depth* levels of ccxt's live order book, copied at once; with *units*,
    sizes in base units (an inverse level's at its price)."""
    if isinstance(data, dict):
        ts = data.get("timestamp")
        if ts is None or (type(ts) is int and ts >= 0):
            bids = _top(data.get("bids"), depth)
            asks = _top(data.get("asks"), depth) if bids is not None else None
            if asks is not None and bids is not None:
                return _book_message(exchange, symbol, ts, depth, bids, asks, recv_ns, units)
    return checked_book(exchange, symbol, data, depth, recv_ns, units)


def checked_book(
    exchange: str,
    symbol: str,
    data: Any,
    depth: int,
    recv_ns: int,
    units: Conversion | None = None,
) -> Book:
    """`book` level by level: coerces what the fast path refuses or names the bad level."""
    checked = _checked(exchange, "book", symbol, data)
    b, where = checked.fields, checked.where
    bids = _levels(b.get("bids"), depth, f"{where}: bids")
    asks = _levels(b.get("asks"), depth, f"{where}: asks")
    return _book_message(exchange, symbol, checked.ts_ms, depth, bids, asks, recv_ns, units)


def _book_message(
    exchange: str,
    symbol: str,
    ts_ms: int | None,
    depth: int,
    bids: tuple[Level, ...],
    asks: tuple[Level, ...],
    recv_ns: int,
    units: Conversion | None = None,
) -> Book:
    """The wire `Book`, whichever path checked its levels."""
    if units is not None:
        bids = _levels_in_base(bids, units)
        asks = _levels_in_base(asks, units)
    return Book(
        exchange=exchange,
        symbol=symbol,
        ts_ms=ts_ms,
        recv_ns=recv_ns,
        depth=depth,
        bids=bids,
        asks=asks,
    )


def _levels_in_base(levels: tuple[Level, ...], units: Conversion) -> tuple[Level, ...]:
    return tuple([(price, units.base(size, price, "level size")) for price, size in levels])
