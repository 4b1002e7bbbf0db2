"""Messages to archive rows and back: one typed Arrow schema per kind, no I/O.

Every row keeps the message's identity: ``run``, ``seq``, ``entry_id`` (the stream
entry ID it was read from), ``ts_ms`` (exchange time) and ``recv_ns``. Trades are one
row per trade (``batch_index`` and ``batch_size`` rebuild the exchange batch); book
levels are lists of ``{price, amount}``. Rows are collected column by column
(`RowBuilder`) because that is what Arrow wants and what costs least per message.
`messages_of` turns rows back into the wire messages, equal in every field.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Final

import msgspec
import pyarrow as pa
import pyarrow.compute as pc

from marketbus.archive.partitions import DAY_MS, GAP_KIND
from marketbus.shared.names import timeframe_of
from marketbus.shared.schema import (
    COMMON_FIELDS,
    OHLCV,
    Book,
    MarketMessage,
    Ticker,
    Trade,
    Trades,
)

_ID: Final = [
    pa.field("run", pa.int64(), nullable=False),
    pa.field("seq", pa.int64(), nullable=False),
    pa.field("entry_id", pa.string(), nullable=False),
    pa.field("ts_ms", pa.int64()),
    pa.field("recv_ns", pa.int64(), nullable=False),
]
_F64: Final = pa.float64()
LEVEL: Final = pa.struct([pa.field("price", _F64), pa.field("amount", _F64)])
TICKER_FIELDS: Final = tuple(n for n in Ticker.__struct_fields__ if n not in COMMON_FIELDS)
"""The ticker's own fields, one float column each, from the schema (a field added there
is recorded too)."""
CANDLE_FIELDS: Final = ("open", "high", "low", "close", "volume")

CANDLE_SCHEMA: Final = pa.schema(
    [*_ID, *(pa.field(n, _F64) for n in CANDLE_FIELDS), pa.field("closed", pa.bool_())]
)
TICKER_SCHEMA: Final = pa.schema([*_ID, *(pa.field(n, _F64) for n in TICKER_FIELDS)])
TRADE_SCHEMA: Final = pa.schema(
    [
        *_ID,
        pa.field("batch_index", pa.int32(), nullable=False),
        pa.field("batch_size", pa.int32(), nullable=False),
        pa.field("trade_id", pa.string()),
        pa.field("trade_ts_ms", pa.int64()),
        pa.field("price", _F64),
        pa.field("amount", _F64),
        pa.field("side", pa.string()),
    ]
)
BOOK_SCHEMA: Final = pa.schema(
    [
        *_ID,
        pa.field("depth", pa.int32(), nullable=False),
        pa.field("bids", pa.list_(LEVEL)),
        pa.field("asks", pa.list_(LEVEL)),
    ]
)
GAP_SCHEMA: Final = pa.schema(
    [
        pa.field("feed", pa.string(), nullable=False),
        pa.field("reason", pa.string(), nullable=False),
        pa.field("run", pa.int64()),
        pa.field("first_seq", pa.int64()),
        pa.field("last_seq", pa.int64()),
        pa.field("after_entry_id", pa.string()),
        pa.field("before_entry_id", pa.string()),
        pa.field("start_ms", pa.int64()),
        pa.field("end_ms", pa.int64()),
        pa.field("detail", pa.string(), nullable=False),
        pa.field("recorded_ns", pa.int64(), nullable=False),
    ]
)


def family(kind: str) -> str:
    """``ohlcv`` for any ``ohlcv.*`` kind, else the kind itself."""
    return "ohlcv" if timeframe_of(kind) else kind


_SCHEMAS: Final = {
    "ohlcv": CANDLE_SCHEMA,
    "ticker": TICKER_SCHEMA,
    "trades": TRADE_SCHEMA,
    "book": BOOK_SCHEMA,
    GAP_KIND: GAP_SCHEMA,
}
_TYPES: Final[dict[str, type[MarketMessage]]] = {
    "ohlcv": OHLCV,
    "ticker": Ticker,
    "trades": Trades,
    "book": Book,
}


def schema_for(kind: str) -> pa.Schema:
    """The Arrow schema of *kind*'s rows (``ohlcv.1m``, ``trades``, ``gap``, ...)."""
    try:
        return _SCHEMAS[family(kind)]
    except KeyError:
        raise ValueError(f"no archive schema for kind {kind!r}") from None


def message_type(kind: str) -> type[MarketMessage]:
    """The wire message type a feed of *kind* carries."""
    return _TYPES[family(kind)]


class GapRow(msgspec.Struct, frozen=True, kw_only=True):
    """What the recorder could not get back for *feed* (one row of ``kind=gap``).

    ``reason``: ``evicted`` (the stream cap removed it before it was read), ``missing``
    (the stream never had it), ``producer`` (the producer announced it lost, ``detail``
    is its text) or ``undecodable`` (an entry that is not a valid message of the feed).
    Known bounds are set: ``run``/``first_seq``..``last_seq`` (inclusive), the entry IDs
    just before and after the hole, the exchange-time window ``start_ms``..``end_ms``.
    """

    feed: str
    reason: str
    run: int | None = None
    first_seq: int | None = None
    last_seq: int | None = None
    after_entry_id: str | None = None
    before_entry_id: str | None = None
    start_ms: int | None = None
    end_ms: int | None = None
    detail: str = ""
    recorded_ns: int

    @property
    def day(self) -> int:
        """The UTC day partition of this row: its window start, else when recorded."""
        ms = self.start_ms if self.start_ms is not None else self.recorded_ns // 1_000_000
        return ms // DAY_MS


def gap_table(rows: list[GapRow]) -> pa.Table:
    return pa.Table.from_pylist([msgspec.structs.asdict(r) for r in rows], schema=GAP_SCHEMA)


_ID_NAMES: Final = ("run", "seq", "entry_id", "ts_ms", "recv_ns")


class RowBuilder:
    """Rows of one feed, kept as one Python list per column until `take`.

    The identity columns (run, seq, entry_id, ts_ms, recv_ns) are kept once per
    message and repeated per row by Arrow at `take` (a trade batch is one message and
    several rows), so adding a trade costs a handful of list appends. `add` returns how
    many rows the message became (trades: one per trade, at least one so an empty batch
    survives the round trip). ``len()`` is the buffered rows.
    """

    __slots__ = ("_add", "columns", "days", "ids", "kind", "parents", "rows", "schema")

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.schema = schema_for(kind)
        self.ids: tuple[list[Any], ...] = tuple([] for _ in _ID_NAMES)
        self.columns: dict[str, list[Any]] = {
            name: [] for name in self.schema.names if name not in _ID_NAMES
        }
        self.days: list[int] = []
        """UTC day of each message."""
        self.parents: list[int] = []
        """Message index of each row (trades only; otherwise row i is message i)."""
        self.rows = 0
        self._add = {
            "ohlcv": self._candle,
            "ticker": self._ticker,
            "trades": self._trades,
            "book": self._book,
        }[family(kind)]

    def __len__(self) -> int:
        return self.rows

    def add(self, entry_id: str, message: MarketMessage) -> int:
        """Append *message* (read from stream entry *entry_id*); returns rows added."""
        run, seq, ids, ts, recv = self.ids
        ts_ms = message.ts_ms
        run.append(message.run)
        seq.append(message.seq)
        ids.append(entry_id)
        ts.append(ts_ms)
        recv.append(message.recv_ns)
        self.days.append((ts_ms if ts_ms is not None else message.recv_ns // 1_000_000) // DAY_MS)
        added: int = self._add(message)
        self.rows += added
        return added

    def _candle(self, m: MarketMessage) -> int:
        assert isinstance(m, OHLCV)
        c = self.columns
        c["open"].append(m.open)
        c["high"].append(m.high)
        c["low"].append(m.low)
        c["close"].append(m.close)
        c["volume"].append(m.volume)
        c["closed"].append(m.closed)
        return 1

    def _ticker(self, m: MarketMessage) -> int:
        assert isinstance(m, Ticker)
        c = self.columns
        for name in TICKER_FIELDS:
            c[name].append(getattr(m, name))
        return 1

    def _trades(self, m: MarketMessage) -> int:
        assert isinstance(m, Trades)
        c = self.columns
        parent = len(self.days) - 1
        trades = m.trades
        size = len(trades)
        if not size:
            self.parents.append(parent)
            c["batch_index"].append(0)
            c["batch_size"].append(0)
            for name in ("trade_id", "trade_ts_ms", "price", "amount", "side"):
                c[name].append(None)
            return 1
        parents, index, sizes = self.parents, c["batch_index"], c["batch_size"]
        ids, times, prices = c["trade_id"], c["trade_ts_ms"], c["price"]
        amounts, sides = c["amount"], c["side"]
        for i, t in enumerate(trades):
            parents.append(parent)
            index.append(i)
            sizes.append(size)
            ids.append(t.id)
            times.append(t.ts_ms)
            prices.append(t.price)
            amounts.append(t.amount)
            sides.append(t.side)
        return size

    def _book(self, m: MarketMessage) -> int:
        assert isinstance(m, Book)
        c = self.columns
        c["depth"].append(m.depth)
        c["bids"].append(m.bids)
        c["asks"].append(m.asks)
        return 1

    def take(self) -> list[tuple[int, pa.Table]]:
        """The buffered rows as one table per UTC day ``(day, table)``; clears the buffer."""
        if not self.rows:
            return []
        schema = self.schema
        parents = pa.array(self.parents, type=pa.int64()) if self.parents else None
        arrays = []
        for name in schema.names:
            if name in _ID_NAMES:
                values = pa.array(self.ids[_ID_NAMES.index(name)], type=schema.field(name).type)
                arrays.append(values.take(parents) if parents is not None else values)
            else:
                arrays.append(pa.array(self.columns[name], type=schema.field(name).type))
        table = pa.Table.from_arrays(arrays, schema=schema)
        days = self.days
        first = days[0]
        distinct = {first} if days.count(first) == len(days) else set(days)
        for values in (*self.ids, *self.columns.values()):
            values.clear()
        self.days, self.parents, self.rows = [], [], 0
        if len(distinct) == 1:
            return [(first, table)]
        day_array = pa.array(days, type=pa.int64())
        row_days = day_array.take(parents) if parents is not None else day_array
        return [(day, table.filter(pc.equal(row_days, day))) for day in sorted(distinct)]


def iter_messages(
    kind: str, exchange: str, symbol: str, table: pa.Table, chunk_rows: int = 10_000
) -> Iterator[MarketMessage]:
    """`messages_of` a chunk of rows at a time (never splitting a trade batch), so only
    one chunk is held as Python objects."""
    count = table.num_rows
    starts = table.column("batch_index").to_pylist() if family(kind) == "trades" else None
    begin = 0
    while begin < count:
        end = min(begin + chunk_rows, count)
        while starts is not None and end < count and starts[end] != 0:
            end += 1
        yield from messages_of(kind, exchange, symbol, table.slice(begin, end - begin))
        begin = end


def messages_of(kind: str, exchange: str, symbol: str, table: pa.Table) -> Iterator[MarketMessage]:
    """The messages of a feed's rows, in row order (sort by run, seq[, batch_index] first).

    Trade rows of one ``(run, seq)`` become one `Trades` batch.
    """
    data = table.to_pydict()
    count = table.num_rows
    base = family(kind)
    runs, seqs, tss, recvs = data["run"], data["seq"], data["ts_ms"], data["recv_ns"]
    if base == "ohlcv":
        timeframe = timeframe_of(kind) or ""
        o, h, lo, c, v, closed = (data[n] for n in (*CANDLE_FIELDS, "closed"))
        for i in range(count):
            yield OHLCV(
                exchange=exchange,
                symbol=symbol,
                run=runs[i],
                seq=seqs[i],
                ts_ms=tss[i],
                recv_ns=recvs[i],
                timeframe=timeframe,
                open=o[i],
                high=h[i],
                low=lo[i],
                close=c[i],
                volume=v[i],
                closed=closed[i],
            )
    elif base == "ticker":
        columns = [data[n] for n in TICKER_FIELDS]
        for i in range(count):
            fields = {n: col[i] for n, col in zip(TICKER_FIELDS, columns, strict=True)}
            yield Ticker(
                exchange=exchange,
                symbol=symbol,
                run=runs[i],
                seq=seqs[i],
                ts_ms=tss[i],
                recv_ns=recvs[i],
                **fields,
            )
    elif base == "book":
        depths, bids, asks = data["depth"], data["bids"], data["asks"]
        for i in range(count):
            yield Book(
                exchange=exchange,
                symbol=symbol,
                run=runs[i],
                seq=seqs[i],
                ts_ms=tss[i],
                recv_ns=recvs[i],
                depth=depths[i],
                bids=tuple((lv["price"], lv["amount"]) for lv in bids[i]),
                asks=tuple((lv["price"], lv["amount"]) for lv in asks[i]),
            )
    elif base == "trades":
        yield from _trades_of(exchange, symbol, data, count)
    else:
        raise ValueError(f"kind {kind!r} rows are not messages")


def _trades_of(
    exchange: str, symbol: str, data: dict[str, list[Any]], count: int
) -> Iterator[Trades]:
    runs, seqs, sizes = data["run"], data["seq"], data["batch_size"]
    ids, times, prices, amounts, sides = (
        data[n] for n in ("trade_id", "trade_ts_ms", "price", "amount", "side")
    )
    i = 0
    while i < count:
        size = sizes[i]
        end = i + max(size, 1)
        if end > count or runs[end - 1] != runs[i] or seqs[end - 1] != seqs[i]:
            raise ValueError(f"trade rows of {runs[i]}-{seqs[i]} are incomplete: batch_size {size}")
        trades = tuple(
            Trade(id=ids[j], ts_ms=times[j], price=prices[j], amount=amounts[j], side=sides[j])
            for j in range(i, i + size)
        )
        yield Trades(
            exchange=exchange,
            symbol=symbol,
            run=runs[i],
            seq=seqs[i],
            ts_ms=data["ts_ms"][i],
            recv_ns=data["recv_ns"][i],
            trades=trades,
        )
        i = end
