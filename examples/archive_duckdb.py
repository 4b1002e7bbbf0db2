"""Query a `marketbus record` archive with DuckDB: one symbol's 1m candles for a day
(candle corrections applied: the last value of each ts_ms wins), and every trade above
a size.

    python examples/archive_duckdb.py --archive ./archive --symbol BTC/USDT \
        --day 2024-01-31 --min-amount 0.5
"""

from __future__ import annotations

import argparse

import duckdb

CANDLES = """
SELECT ts_ms, open, high, low, close, volume
FROM read_parquet($glob, hive_partitioning = true, union_by_name = true)
WHERE symbol = $symbol AND date = CAST($day AS DATE)
QUALIFY row_number() OVER (PARTITION BY exchange, symbol, ts_ms ORDER BY run DESC, seq DESC) = 1
ORDER BY ts_ms
"""

BIG_TRADES = """
SELECT exchange, symbol, trade_ts_ms, price, amount, side, trade_id
FROM read_parquet($glob, hive_partitioning = true)
WHERE amount >= $min_amount
ORDER BY trade_ts_ms, exchange, symbol, run, seq, batch_index
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--archive", required=True)
    parser.add_argument("--exchange", default="binance")
    parser.add_argument("--symbol", default="BTC/USDT")
    parser.add_argument("--day", required=True, help="UTC day, YYYY-MM-DD")
    parser.add_argument("--min-amount", type=float, default=1.0)
    args = parser.parse_args()
    root = args.archive.rstrip("/")

    candles = duckdb.execute(
        CANDLES,
        {
            "glob": f"{root}/exchange={args.exchange}/kind=ohlcv.1m/*/*/*.parquet",
            "symbol": args.symbol,
            "day": args.day,
        },
    ).fetchall()
    print(f"{len(candles)} candles of {args.symbol} on {args.day}")
    for ts_ms, open_, high, low, close, volume in candles:
        print(f"  {ts_ms} o={open_} h={high} l={low} c={close} v={volume}")

    trades = duckdb.execute(
        BIG_TRADES,
        {"glob": f"{root}/exchange=*/kind=trades/*/*/*.parquet", "min_amount": args.min_amount},
    ).fetchall()
    print(f"{len(trades)} trades of at least {args.min_amount}")
    for exchange, symbol, ts_ms, price, amount, side, trade_id in trades:
        print(f"  {exchange} {symbol} {ts_ms} {side} {amount} @ {price} (id {trade_id})")


if __name__ == "__main__":
    main()
