"""Every kind of three symbols on every simulated exchange, through the generic producer.

Three symbols is what starved in ccxt 4.5.90's batch watches (the later symbols of a
read never returned): each symbol's every feed must flow, and each symbol's closed
candles must be the simulator's, live ones included.
"""

from __future__ import annotations

import ccxt.pro
import pytest
import redis.asyncio as aioredis

from marketbus.producer import Producer
from marketbus.shared.names import timeframe_ms
from marketbus.shared.schema import OHLCV, Book, Ticker, Trades
from marketbus.sim import SUPPORTED_EXCHANGES, SimServer
from marketbus.sim.server import accelerated_clock
from tests.integration.producer.conftest import messages, producer_config
from tests.support.waiting import wait_until

SPOT = ["BTC/USDT", "ETH/USDT", "SOL/USDT"]
SYMBOLS = {
    "binanceusdm": ["BTC/USDT:USDT", "ETH/USDT:USDT", "SOL/USDT:USDT"],
    "kucoinfutures": ["BTC/USDT:USDT", "ETH/USDT:USDT", "SOL/USDT:USDT"],
}
TRADE_TS_TOLERANCE_MS = {"kucoinfutures": 1}
"""ccxt parses kucoin's nanosecond trade times as ``ns * 0.000001``: a float product, so
an exact ms can come out 1 less. The simulator's time is exact; ccxt's may floor."""
CANDLES_PER_S = 1000
"""The simulator's clock runs so fast that a candle of any timeframe closes every ms/1000."""


def timeframe_for(exchange: str) -> str:
    return "1s" if "1s" in getattr(ccxt.pro, exchange)().timeframes else "1m"


KNOWN_ISSUES = {
    "kucoinfutures": "test artifact: ccxt sends kucoin's kline window end as its own wall "
    "clock (`to = milliseconds()`), behind the simulator's accelerated clock, so a candle "
    "the socket skipped at start-up is not found over REST (reported as an error event)",
}


@pytest.mark.parametrize(
    "exchange",
    [
        pytest.param(e, marks=pytest.mark.xfail(reason=KNOWN_ISSUES[e], strict=False))
        if e in KNOWN_ISSUES
        else e
        for e in SUPPORTED_EXCHANGES
    ],
)
async def test_every_symbols_feeds_flow_and_match_the_simulated_market(
    redis_url: str, exchange: str
) -> None:
    symbols = SYMBOLS.get(exchange, SPOT)
    timeframe = timeframe_for(exchange)
    period_ms = timeframe_ms(timeframe)
    kinds = [f"ohlcv.{timeframe}", "ticker", "trades", "book"]
    clock = accelerated_clock(period_ms / CANDLES_PER_S)  # one candle a second
    warmup_s = 180 * period_ms / 1000
    async with SimServer(
        exchange,
        symbols,
        rate=40,
        seed=3,
        warmup_s=warmup_s,
        warmup_every_ms=period_ms,
        clock=clock,
    ) as sim:
        config = producer_config(redis_url, sim, exchange, symbols, kinds)
        redis = aioredis.Redis.from_url(redis_url)
        try:
            async with Producer(config) as producer:
                assert len(producer.feeds) == len(kinds) * len(symbols)
                # Candles opened from here on can only have come from the live socket.
                live_from = sim.now_ms() + period_ms

                async def every_feed_flowed() -> bool:
                    for feed in producer.feeds:
                        if feed.timeframe is None:
                            if await redis.xlen(feed.name) < 3:
                                return False
                            continue
                        newest = await messages(redis, feed.name, newest=1)
                        candle = newest[0] if newest else None
                        if candle is None or (candle.ts_ms or 0) < live_from:
                            return False
                    return True

                await wait_until(every_feed_flowed, timeout_s=15, what="every symbol's feeds")
            for symbol in symbols:
                await _check_symbol(redis, sim, exchange, symbol, timeframe)
        finally:
            await redis.aclose()


async def _check_symbol(
    redis: aioredis.Redis, sim: SimServer, exchange: str, symbol: str, timeframe: str
) -> None:
    sim_trades = {str(t.id): t for t in sim.market.trades(symbol)}
    ids: list[str] = []
    for message in await messages(redis, f"md:{exchange}:trades:{symbol}"):
        assert isinstance(message, Trades)
        for trade in message.trades:
            assert trade.id is not None
            sim_trade = sim_trades[trade.id]
            assert (trade.price, trade.amount, trade.side) == (
                sim_trade.price,
                sim_trade.amount,
                sim_trade.side,
            ), symbol
            assert trade.ts_ms is not None
            assert 0 <= sim_trade.ts_ms - trade.ts_ms <= TRADE_TS_TOLERANCE_MS.get(exchange, 0)
            ids.append(trade.id)
    assert len(ids) == len(set(ids)), f"{symbol}: a trade was published twice"
    numeric = sorted(int(i) for i in ids)
    assert numeric == list(range(numeric[0], numeric[-1] + 1)), f"{symbol}: a trade is missing"

    for book in await messages(redis, f"md:{exchange}:book:{symbol}"):
        assert isinstance(book, Book) and book.depth == 20
        assert 0 < len(book.bids) <= 20 and 0 < len(book.asks) <= 20
        assert [p for p, _ in book.bids] == sorted((p for p, _ in book.bids), reverse=True)
        assert [p for p, _ in book.asks] == sorted(p for p, _ in book.asks)
        assert book.bids[0][0] < book.asks[0][0]

    tickers = await messages(redis, f"md:{exchange}:ticker:{symbol}")
    assert tickers and all(isinstance(t, Ticker) for t in tickers), symbol

    truth_candles = {c.ts_ms: c for c in sim.market.candles(symbol, timeframe) if c.closed}
    candles = await messages(redis, f"md:{exchange}:ohlcv.{timeframe}:{symbol}")
    final: dict[int, OHLCV] = {}  # a correction re-sends a candle: the last one counts
    for candle in candles:
        assert isinstance(candle, OHLCV) and candle.closed and candle.ts_ms is not None
        final[candle.ts_ms] = candle
    stamps = sorted(final)
    step = timeframe_ms(timeframe)
    assert stamps == list(range(stamps[0], stamps[-1] + step, step)), f"{symbol}: candle hole"
    for ts, candle in final.items():
        truth = truth_candles[ts]
        assert (candle.open, candle.high, candle.low, candle.close, candle.volume) == (
            truth.open,
            truth.high,
            truth.low,
            truth.close,
            truth.volume,
        ), f"{symbol} candle {ts}"
