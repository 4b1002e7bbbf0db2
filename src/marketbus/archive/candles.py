"""The read rule for candles: a correction replaces the earlier value.

A producer re-sends a corrected candle (closed, same ``ts_ms``, a later ``(run, seq)``),
and the archive keeps both rows. Read rule: for each feed and ``ts_ms``, the row with
the largest ``(run, seq)`` wins. In SQL::

    QUALIFY row_number() OVER (PARTITION BY exchange, kind, symbol, ts_ms
                               ORDER BY run DESC, seq DESC) = 1
"""

from __future__ import annotations

from collections.abc import Iterable

import pyarrow as pa
import pyarrow.compute as pc

from marketbus.shared.schema import OHLCV

_FEED_COLUMNS = ("exchange", "kind", "symbol")


def latest_candles(table: pa.Table) -> pa.Table:
    """*table*'s candle rows with only the last value of each candle, sorted by feed
    (the ``exchange``/``kind``/``symbol`` columns present) then ``ts_ms``."""
    keys = [name for name in _FEED_COLUMNS if name in table.column_names] + ["ts_ms"]
    order = [(name, "ascending") for name in (*keys, "run", "seq")]
    table = table.sort_by(order)
    count = table.num_rows
    if count < 2:
        return table
    differs = None
    for name in keys:
        column = table.column(name).combine_chunks()
        if pa.types.is_dictionary(column.type):
            column = column.cast(column.type.value_type)
        changed = pc.fill_null(pc.not_equal(column.slice(1), column.slice(0, count - 1)), True)
        differs = changed if differs is None else pc.or_(differs, changed)
    assert differs is not None
    last_of_group = pa.concat_arrays([differs, pa.array([True])])
    return table.filter(last_of_group)


def latest_by_time(candles: Iterable[OHLCV]) -> list[OHLCV]:
    """One candle per ``ts_ms`` (the largest ``(run, seq)`` wins), sorted by ``ts_ms``."""
    best: dict[int | None, OHLCV] = {}
    for candle in candles:
        seen = best.get(candle.ts_ms)
        if seen is None or candle.position > seen.position:
            best[candle.ts_ms] = candle
    return sorted(best.values(), key=lambda c: (c.ts_ms is None, c.ts_ms or 0))
