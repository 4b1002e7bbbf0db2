"""Readable lines for `marketbus tail` and the demo."""

from __future__ import annotations

from marketbus.display import clock, describe, line, number
from marketbus.shared.schema import OHLCV, Book, Status, Trade, Trades

COMMON = {"exchange": "binance", "symbol": "BTC/USDT", "run": 1, "seq": 2, "recv_ns": 0}


def test_clock_and_number() -> None:
    assert clock(None) == "-"
    assert clock(1_700_000_000_123) == "22:13:20.123"
    assert number(None) == "-"
    assert number(97012.5) == "97012.5"


def test_every_type_has_a_line() -> None:
    candle = OHLCV(
        **COMMON,
        ts_ms=0,
        timeframe="1m",
        open=1.0,
        high=2.0,
        low=0.5,
        close=1.5,
        volume=3.0,
        closed=True,
    )
    assert line(candle) == (
        "00:00:00.000 1-2 ohlcv   binance BTC/USDT  1m 00:00:00.000 o=1 h=2 l=0.5 c=1.5 v=3 closed"
    )
    batch = tuple(Trade(id=str(i), ts_ms=0, price=10.0, amount=1.0, side="buy") for i in range(7))
    trades = Trades(**COMMON, ts_ms=None, trades=batch)
    assert describe(trades).startswith("7 trade(s): buy 1@10, ") and describe(trades).endswith(
        "..."
    )
    book = Book(**COMMON, ts_ms=None, depth=5, bids=((9.0, 1.0),), asks=())
    assert describe(book) == "top5 bid 1@9 | ask - (1x0 levels)"
    status = Status(
        exchange="binance", run=1, seq=3, ts_ms=None, recv_ns=0, event="gap", feed="f", detail="x"
    )
    assert line(status).endswith("status  binance  gap f: x")
