"""Query a `marketbus record` archive with pandas: one symbol's 1m candles for a day
(candle corrections applied with `latest_candles`), and every trade above a size.

    python examples/archive_pandas.py --archive ./archive --symbol BTC/USDT \
        --day 2024-01-31 --min-amount 0.5
"""

from __future__ import annotations

import argparse
from pathlib import Path
from urllib.parse import unquote

import pandas as pd
import pyarrow.dataset as ds

from marketbus.archive import latest_candles


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--archive", required=True)
    parser.add_argument("--exchange", default="binance")
    parser.add_argument("--symbol", default="BTC/USDT")
    parser.add_argument("--day", required=True, help="UTC day, YYYY-MM-DD")
    parser.add_argument("--min-amount", type=float, default=1.0)
    args = parser.parse_args()
    root = Path(args.archive)

    # One kind per dataset (each kind has its own columns); partitions below it are
    # symbol= and date= (read as strings, the symbol decoded).
    candles = ds.dataset(
        root / f"exchange={args.exchange}" / "kind=ohlcv.1m",
        partitioning=ds.partitioning(flavor="hive"),
    )
    day = candles.to_table(
        filter=(ds.field("symbol") == args.symbol) & (ds.field("date") == args.day)
    )
    frame: pd.DataFrame = latest_candles(day).to_pandas()
    print(f"{len(frame)} candles of {args.symbol} on {args.day}")
    for row in frame.itertuples():
        print(f"  {row.ts_ms} o={row.open} h={row.high} l={row.low} c={row.close} v={row.volume}")

    frames = [
        pd.read_parquet(kind_dir, filters=[("amount", ">=", args.min_amount)]).assign(
            exchange=unquote(kind_dir.parent.name.partition("=")[2])
        )
        for kind_dir in sorted(root.glob("exchange=*/kind=trades"))
    ]
    trades = pd.concat(frames) if frames else pd.DataFrame()
    print(f"{len(trades)} trades of at least {args.min_amount}")
    for row in trades.sort_values(["trade_ts_ms", "run", "seq", "batch_index"]).itertuples():
        print(
            f"  {row.exchange} {row.symbol} {row.trade_ts_ms} {row.side} {row.amount} @ {row.price}"
        )


if __name__ == "__main__":
    main()
