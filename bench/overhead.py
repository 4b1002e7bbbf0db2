"""Target 4: the bus's own cost per message next to ccxt.pro's parse cost per frame.

- ccxt.pro: ``json.loads`` of a binance kline frame + ``binance.handle_message`` (what
  ccxt does per WebSocket frame before watch_ohlcv returns), no network.
- bus: producer normalize (``ohlcv_rows`` + ``CandleTracker.update``) timed here, plus
  publish (stamp + encode + XADD/PUBLISH) taken as 1 / the real Publisher's rate from the
  publish benchmark of the same run (wall time per message, so an upper bound).
Rows give the bus cost as a % of ccxt's; baseline = the same with the redis-py transport.
"""

from __future__ import annotations

import json
import time
from typing import Any

from bench.report import Row
from marketbus.producer.candles import CandleTracker
from marketbus.producer.normalize import ohlcv_rows

FRAME = (
    '{"e":"kline","E":1790000000123,"s":"BTCUSDT","k":{"t":1790000000000,"T":1790000059999,'
    '"s":"BTCUSDT","i":"1m","f":100,"L":200,"o":"65000.10","c":"65010.20","h":"65020.00",'
    '"l":"64990.00","v":"12.345","n":100,"x":false,"q":"802000.1","V":"6.1","Q":"400000.0",'
    '"B":"0"}}'
)
MARKET: dict[str, Any] = {
    "id": "BTCUSDT", "symbol": "BTC/USDT", "base": "BTC", "quote": "USDT", "baseId": "BTC",
    "quoteId": "USDT", "active": True, "type": "spot", "spot": True, "margin": False,
    "swap": False, "future": False, "option": False, "contract": False, "linear": None,
    "inverse": None, "lowercaseId": "btcusdt", "precision": {"amount": 1e-5, "price": 0.01},
    "limits": {}, "info": {},
}  # fmt: skip


async def ccxt_frame_us(count: int) -> float:
    import ccxt.pro as ccxtpro

    exchange = ccxtpro.binance({"newUpdates": True})
    try:
        exchange.set_markets([MARKET])
        client = exchange.client(exchange.urls["api"]["ws"]["spot"] + "/0")
        start = time.perf_counter()
        for _ in range(count):
            exchange.handle_message(client, json.loads(FRAME))
        return (time.perf_counter() - start) / count * 1e6
    finally:
        await exchange.close()


def normalize_us(count: int) -> float:
    tracker = CandleTracker("binance", "BTC/USDT", "1m", 2_000)
    row = [1_790_000_000_000, 65000.1, 65020.0, 64990.0, 65010.2, 12.345]
    now_ms = 1_790_000_001_000
    start = time.perf_counter()
    for i in range(count):
        tracker.update(ohlcv_rows([row]), now_ms, i)
    return (time.perf_counter() - start) / count * 1e6


async def run(count: int, fast_publish_rate: float, slow_publish_rate: float) -> list[Row]:
    ccxt_us = await ccxt_frame_us(count)
    norm_us = normalize_us(count)
    fast = norm_us + 1e6 / fast_publish_rate
    slow = norm_us + 1e6 / slow_publish_rate
    return [
        Row("ccxt.pro parse per kline frame", "us", [ccxt_us], note="reference"),
        Row("bus cost per message: normalize", "us", [norm_us]),
        Row(
            "bus cost per message: normalize + publish",
            "% of ccxt parse",
            [100 * fast / ccxt_us],
            [100 * slow / ccxt_us],
            baseline_name="same on RedisTransport",
            higher_is_better=False,
            target="< 10%",
        ),
    ]
