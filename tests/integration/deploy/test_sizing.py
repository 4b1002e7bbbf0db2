"""The memory table of docs/deployment.md ("Sizing") holds for a real redis-server:
typical JSON messages of each kind, XADDed as the producer does, cost within 20% of
the documented bytes per entry, and their payloads have the documented size."""

from __future__ import annotations

import re
from typing import Any

import pytest
import redis.asyncio as aioredis

from marketbus.shared.codecs import encode
from marketbus.shared.schema import OHLCV, Book, Message, Ticker, Trade, Trades
from tests.unit.deploy.files import DOCS

ENTRIES = 5_000
T0 = 1_760_000_000_000
_ROW = re.compile(r"^\| (ticker|trades|book|ohlcv\.1m) \| (\d+) \| (\d+) \|", re.M)


def _typical(kind: str, i: int) -> Message:
    """A realistic message of *kind* (BTC/USDT on binance), number *i* of a run."""
    common: dict[str, Any] = {
        "exchange": "binance",
        "symbol": "BTC/USDT",
        "run": T0,
        "seq": i,
        "ts_ms": T0 + i,
        "recv_ns": (T0 + i) * 1_000_000 + 123_456,
    }
    if kind == "ticker":
        prices = {"bid": 64123.45 + i, "ask": 64123.46 + i, "last": 64123.45, "open": 63000.1}
        return Ticker(
            **common,
            **prices,
            bid_size=1.2345,
            ask_size=0.5432,
            high=65000.2,
            low=62000.3,
            base_volume=12345.678,
            quote_volume=791234567.89,
            change_pct=1.78,
        )
    if kind == "trades":
        trades = tuple(
            Trade(
                id=str(4_000_000_000 + 3 * i + k),
                ts_ms=T0 + i,
                price=64123.45 + k,
                amount=0.00123 * (k + 1),
                side="buy",
            )
            for k in range(2)
        )
        return Trades(**common, trades=trades)
    if kind == "book":
        bids = tuple((64123.45 - 0.01 * k, 0.1 + 0.37 * k) for k in range(20))
        asks = tuple((64123.46 + 0.01 * k, 0.2 + 0.41 * k) for k in range(20))
        return Book(**common, depth=20, bids=bids, asks=asks)
    common["ts_ms"] = T0 + 60_000 * i
    return OHLCV(
        **common,
        timeframe="1m",
        open=64000.1,
        high=64200.2,
        low=63900.3,
        close=64100.4,
        volume=123.456,
        closed=True,
    )


def _documented() -> dict[str, tuple[int, int]]:
    rows = {
        kind: (int(payload), int(entry)) for kind, payload, entry in _ROW.findall(DOCS.read_text())
    }
    assert set(rows) == {"ticker", "trades", "book", "ohlcv.1m"}, "sizing table not found"
    return rows


@pytest.mark.parametrize("kind", ["ticker", "trades", "book", "ohlcv.1m"])
async def test_documented_bytes_per_entry_hold(redis_url: str, kind: str) -> None:
    payload_doc, entry_doc = _documented()[kind]
    redis = aioredis.Redis.from_url(redis_url)
    try:
        key = f"md:binance:{kind}:BTC/USDT"
        payload_bytes = 0
        pipe = redis.pipeline(transaction=False)
        for i in range(1, ENTRIES + 1):
            payload = encode(_typical(kind.partition(".")[0], i))
            payload_bytes += len(payload)
            pipe.xadd(key, {"d": payload}, id=f"{T0}-{i}", maxlen=ENTRIES, approximate=True)
        await pipe.execute()
        per_entry = await redis.memory_usage(key, samples=0) / ENTRIES
    finally:
        await redis.aclose()
    assert payload_bytes / ENTRIES == pytest.approx(payload_doc, rel=0.05)
    assert per_entry == pytest.approx(entry_doc, rel=0.2)
