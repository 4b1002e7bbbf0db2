"""The walking skeleton end to end on real parts: simulator -> ccxt.pro producer -> Redis
-> consumer SDK. A consumer that starts after the producer has been running rebuilds
exactly the candles the simulator generated, value by value."""

from __future__ import annotations

from marketbus.consumers import Subscriber
from marketbus.producer import Producer
from marketbus.producer.config import ProducerConfig
from marketbus.shared.config import build_config
from marketbus.sim import SimServer
from tests.support.waiting import wait_until

SYMBOLS = ["BTC/USDT", "ETH/USDT", "SOL/USDT"]
TIMEFRAME = "1s"


def config_for(redis_url: str, sim: SimServer) -> ProducerConfig:
    return build_config(
        ProducerConfig,
        {
            "redis": {"url": redis_url},
            "producer": {"close_grace_ms": 300, "heartbeat_s": 0.5, "shutdown_timeout_s": 5},
            "exchanges": [
                {
                    "id": "binance",
                    "symbols": SYMBOLS,
                    "kinds": [f"ohlcv.{TIMEFRAME}", "ticker"],
                    "ccxt": sim.url_overrides("binance"),
                }
            ],
        },
        environ={},
    )


def sim_closed(sim: SimServer, symbol: str) -> list[tuple[float | int | None, ...]]:
    return [
        (c.ts_ms, c.open, c.high, c.low, c.close, c.volume)
        for c in sim.market.candles(symbol, TIMEFRAME)
        if c.closed
    ]


async def test_late_consumer_rebuilds_the_simulators_candles_exactly(redis_url: str) -> None:
    async with (
        SimServer("binance", SYMBOLS, rate=40, seed=11, warmup_s=20) as sim,
        Producer(config_for(redis_url, sim)) as producer,
    ):
        first_feed = f"md:binance:ohlcv.{TIMEFRAME}:BTC/USDT"
        await wait_until(
            lambda: producer.stats[first_feed].published >= 25, timeout_s=20, what="history"
        )
        async with Subscriber(redis_url, candles=1000) as sub:
            for symbol in SYMBOLS:
                await sub.subscribe(exchange="binance", symbol=symbol, timeframe=TIMEFRAME)
                await sub.subscribe(exchange="binance", symbol=symbol, kind="ticker")
            # let a few more candles close live, then stop the market to compare
            buffers = {s: sub.candles("binance", s, TIMEFRAME) for s in SYMBOLS}
            marks = {s: len(buffers[s].closed()) for s in SYMBOLS}
            await wait_until(
                lambda: all(len(buffers[s].closed()) >= marks[s] + 3 for s in SYMBOLS),
                timeout_s=20,
                what=f"live candles after the backfill (from {marks})",
            )
            sim.pause()
            for symbol in SYMBOLS:
                expected = sim_closed(sim, symbol)

                def caught_up(
                    symbol: str = symbol, expected: list[tuple[float | int | None, ...]] = expected
                ) -> bool:
                    got = buffers[symbol].closed()
                    return bool(got) and got[-1].ts_ms >= expected[-1][0]

                await wait_until(caught_up, timeout_s=10, what=f"{symbol} to catch up")
                got = [
                    (c.ts_ms, c.open, c.high, c.low, c.close, c.volume)
                    for c in buffers[symbol].closed()
                ]
                assert got == expected[-len(got) :], symbol
                assert len(got) >= marks[symbol] + 3
                ticker = sub.ticker("binance", symbol)
                assert ticker is not None and ticker.last is not None
            stats = sub.stats
            assert stats.gaps == 0 and stats.undecodable == 0
