"""Every kind on every simulated exchange, through the generic producer."""

from __future__ import annotations

import ccxt.pro
import pytest
import redis.asyncio as aioredis

from marketbus.producer import Producer
from marketbus.shared.codecs import decode
from marketbus.shared.schema import OHLCV, Book, Ticker, Trades
from marketbus.sim import SUPPORTED_EXCHANGES, SimServer
from tests.integration.producer.conftest import producer_config
from tests.support.waiting import wait_until

SYMBOLS = {"binance": ["BTC/USDT", "ETH/USDT"], "okx": ["BTC/USDT", "ETH/USDT"],
           "binanceusdm": ["BTC/USDT:USDT"], "kucoinfutures": ["BTC/USDT:USDT", "ETH/USDT:USDT"],
           "bingx": ["BTC/USDT", "ETH/USDT"]}  # fmt: skip


def timeframe_for(exchange: str) -> str:
    return "1s" if "1s" in getattr(ccxt.pro, exchange)().timeframes else "1m"


@pytest.mark.parametrize("exchange", SUPPORTED_EXCHANGES)
async def test_all_kinds_flow_and_match_the_simulated_market(redis_url: str, exchange: str) -> None:
    symbols = SYMBOLS.get(exchange, ["BTC/USDT"])
    timeframe = timeframe_for(exchange)
    kinds = [f"ohlcv.{timeframe}", "ticker", "trades", "book"]
    async with SimServer(exchange, symbols, rate=40, seed=3, warmup_s=180) as sim:
        config = producer_config(redis_url, sim, exchange, symbols, kinds)
        redis = aioredis.Redis.from_url(redis_url)
        try:
            async with Producer(config) as producer:
                assert len(producer.feeds) == len(kinds) * len(symbols)

                async def all_streams_filled() -> bool:
                    for feed in producer.feeds:
                        if await redis.xlen(feed.name) < (1 if feed.timeframe else 3):
                            return False
                    return True

                await wait_until(all_streams_filled, timeout_s=15, what="every feed streamed")
            for symbol in symbols:
                sim_trades = {str(t.id): t for t in sim.market.trades(symbol)}
                ids: list[str] = []
                for _, fields in await redis.xrange(f"md:{exchange}:trades:{symbol}"):
                    message = decode(fields[b"d"])
                    assert isinstance(message, Trades)
                    for trade in message.trades:
                        assert trade.id is not None
                        truth = sim_trades[trade.id]
                        assert (trade.price, trade.amount, trade.side, trade.ts_ms) == (
                            truth.price, truth.amount, truth.side, truth.ts_ms,
                        )  # fmt: skip
                        ids.append(trade.id)
                assert len(ids) == len(set(ids)), "a trade was published twice"
                numeric = sorted(int(i) for i in ids)
                assert numeric == list(range(numeric[0], numeric[-1] + 1)), "a trade is missing"

                for _, fields in await redis.xrange(f"md:{exchange}:book:{symbol}"):
                    book = decode(fields[b"d"])
                    assert isinstance(book, Book) and book.depth == 20
                    assert 0 < len(book.bids) <= 20 and 0 < len(book.asks) <= 20
                    assert [p for p, _ in book.bids] == sorted(
                        (p for p, _ in book.bids), reverse=True
                    )
                    assert [p for p, _ in book.asks] == sorted(p for p, _ in book.asks)
                    assert book.bids[0][0] < book.asks[0][0]

                tickers = await redis.xrange(f"md:{exchange}:ticker:{symbol}")
                assert all(isinstance(decode(f[b"d"]), Ticker) for _, f in tickers)

                truth_candles = {
                    c.ts_ms: c for c in sim.market.candles(symbol, timeframe) if c.closed
                }
                candles = [
                    decode(f[b"d"])
                    for _, f in await redis.xrange(f"md:{exchange}:ohlcv.{timeframe}:{symbol}")
                ]
                assert candles
                for candle in candles:
                    assert isinstance(candle, OHLCV) and candle.closed
                    truth = truth_candles[candle.ts_ms or 0]
                    assert (candle.open, candle.high, candle.low, candle.close, candle.volume) == (
                        truth.open, truth.high, truth.low, truth.close, truth.volume,
                    )  # fmt: skip
        finally:
            await redis.aclose()
