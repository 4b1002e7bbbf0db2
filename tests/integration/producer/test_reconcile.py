"""Candle reconciliation against the simulator with real ccxt.pro: a stall makes the
producer close a candle with pre-final values (binance: by the clock; okx, on an
accelerated clock: by the newer candle seen after the stall), and one reconciliation
later the stream's last entry per candle is exactly the exchange's REST candle."""

from __future__ import annotations

from collections import Counter

import pytest
import redis.asyncio as aioredis

from marketbus.producer import Producer
from marketbus.shared.names import timeframe_ms
from marketbus.shared.schema import OHLCV
from marketbus.sim import SimServer
from marketbus.sim.server import accelerated_clock
from tests.integration.producer.conftest import messages, producer_config
from tests.support.waiting import wait_until

SYMBOL = "BTC/USDT"
VENUES = [
    pytest.param("binance", "1s", 1.0, id="binance-clock-close"),
    pytest.param("okx", "1m", 60.0, id="okx-newer-candle-close"),
]


async def closed_candles(redis: aioredis.Redis, name: str) -> list[OHLCV]:
    found = await messages(redis, name)
    assert all(isinstance(m, OHLCV) and m.closed and m.ts_ms is not None for m in found)
    return [m for m in found if isinstance(m, OHLCV)]


def values(c: OHLCV) -> tuple[float | None, ...]:
    return (c.open, c.high, c.low, c.close, c.volume)


@pytest.mark.parametrize(("exchange", "timeframe", "factor"), VENUES)
async def test_a_candle_closed_during_a_stall_is_corrected_to_the_exchanges_rest_candle(
    redis_url: str, exchange: str, timeframe: str, factor: float
) -> None:
    period = timeframe_ms(timeframe)
    name = f"md:{exchange}:ohlcv.{timeframe}:{SYMBOL}"
    async with SimServer(
        exchange,
        [SYMBOL],
        rate=40,
        seed=11,
        warmup_s=20 * period / 1000,
        warmup_every_ms=period,
        clock=accelerated_clock(factor),
    ) as sim:
        config = producer_config(
            redis_url,
            sim,
            exchange,
            [SYMBOL],
            [f"ohlcv.{timeframe}"],
            reconcile_after_ms=300,
            reconcile_every_ms=500,
        )
        redis = aioredis.Redis.from_url(redis_url)
        try:
            async with Producer(config) as producer:
                live_from = sim.now_ms() // period * period + period

                async def live_candles_closed() -> bool:
                    newest = await messages(redis, name, newest=1)
                    return bool(newest) and (newest[0].ts_ms or 0) >= live_from

                await wait_until(live_candles_closed, timeout_s=15, what="live candles")

                # The stall: frames are dropped while trading goes on, past a boundary.
                stalled = sim.now_ms() // period * period  # the candle forming now
                sim.faults.go_silent()
                await wait_until(
                    lambda: sim.now_ms() >= stalled + period + period // 2,
                    what="the stalled candle's end on the simulator's clock",
                )
                if factor == 1.0:  # real time: the producer's clock closes it, pre-final

                    async def closed_by_the_clock() -> bool:
                        newest = await messages(redis, name, newest=1)
                        return bool(newest) and newest[0].ts_ms == stalled

                    await wait_until(closed_by_the_clock, what="the clock closing the candle")
                sim.faults.resume()
                settled = stalled + period  # every candle up to here is final on the exchange

                async def reconciled() -> bool:
                    truth = {c.ts_ms: c for c in sim.market.candles(SYMBOL, timeframe) if c.closed}
                    final = {c.ts_ms: c for c in await closed_candles(redis, name)}
                    return (
                        settled in final
                        and settled in truth
                        and producer.stats[name].corrections >= 1
                        and all(
                            values(c) == values(truth[ts])
                            for ts, c in final.items()
                            if ts <= settled
                        )
                    )

                await wait_until(reconciled, timeout_s=15, what="the stalled candle corrected")
                stats = producer.stats[name]
            candles = await closed_candles(redis, name)
        finally:
            await redis.aclose()
    truth = {c.ts_ms: c for c in sim.market.candles(SYMBOL, timeframe) if c.closed}
    final: dict[int, OHLCV] = {}
    for c in candles:
        assert c.ts_ms is not None
        final[c.ts_ms] = c  # a reader keeps the last value per open time
    stamps = sorted(final)
    assert stamps == list(range(stamps[0], stamps[-1] + period, period)), "candle hole"
    for ts in stamps:
        if ts <= settled:
            assert values(final[ts]) == values(truth[ts]), f"candle {ts}"
    first = next(c for c in candles if c.ts_ms == stalled)
    assert values(first) != values(truth[stalled]), "the stall closed it with pre-final values"
    sends = Counter(c.ts_ms for c in candles)
    assert sends[stalled] == 2, "sent closed once, then corrected once"
    assert max(sends.values()) <= 2, "no period is sent closed again and again"
    assert stats.corrections >= 1
