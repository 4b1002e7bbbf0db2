"""Every size on the bus is in base units: real ccxt.pro against simulators that print
their real contracts (okx BTC-USDT-SWAP ctVal 0.01, kucoinfutures XBTUSDTM multiplier
0.001, whole contracts; okx's inverse BTC-USD-SWAP, whole contracts of 100 USD), and
binance spot, which prints base units and stays untouched.

Inverse: trades and book levels are whole contracts valued at their own price, which
the producer and the simulator's truth both compute as the exact decimal quotient, so
they match exactly; the candle volume is okx's `volCcy` (BTC), exact too. The ticker's
24 h base volume cannot be: ccxt keeps only `vol24h` (contracts) and drops `volCcy24h`,
so the producer values the day's contracts at `last` (units.py). The bus must carry
exactly that figure, and it stays within `INVERSE_DAY_VOLUME_TOLERANCE` of the truth
(the trades' own prices differ from `last` by the day's price range).

Trades (by id), closed candles (by open time), the book and the ticker must carry the
simulator's base-unit truth exactly: the conversion is done in decimal arithmetic, so not
even the last float digit may differ. The book and ticker are compared once trading is
paused (they are the whole state, and the truth only keeps the current one).
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

import pytest
import redis.asyncio as aioredis

from marketbus.producer import Producer
from marketbus.shared.codecs import decode_feed_info
from marketbus.shared.names import catalog_key, timeframe_ms
from marketbus.shared.schema import OHLCV, Book, Ticker, Trades
from marketbus.sim import SimServer
from marketbus.sim.market import Ticker as SimTicker
from marketbus.sim.server import accelerated_clock
from tests.integration.producer.conftest import messages, producer_config
from tests.integration.producer.test_exchanges import (
    CANDLES_PER_S,
    TRADE_TS_TOLERANCE_MS,
    timeframe_for,
)
from tests.integration.sim.conftest import ccxt_client
from tests.support.waiting import wait_until

MARKETS = [
    ("okx", "BTC/USDT:USDT", Decimal("0.01")),
    ("okx", "BTC/USD:BTC", Decimal("100")),
    ("kucoinfutures", "BTC/USDT:USDT", Decimal("0.001")),
    ("binance", "BTC/USDT", None),
]
"""Exchange, symbol and the contract size the catalog must show (None: spot; quote
units per contract where the symbol settles in its base, i.e. inverse)."""

INVERSE_DAY_VOLUME_TOLERANCE = 1e-3
"""Relative: the simulated BTC price moves far less than 0.1 % over a test."""

TICKER_FIGURES = {
    "okx": ("bid_size", "ask_size", "base_volume"),  # no quote volume on okx swaps
    "kucoinfutures": ("bid_size", "ask_size"),  # its WS ticker has no 24 h volumes
    "binance": ("base_volume", "quote_volume"),  # miniTicker: no best bid/ask
}
"""The ticker sizes and volumes each simulated venue's ccxt ticker carries."""

TRADE_MESSAGES_WANTED = 10
CLOSED_CANDLES_WANTED = 3


@pytest.mark.parametrize(("exchange", "symbol", "contract_size"), MARKETS, ids=lambda v: str(v))
async def test_every_kind_on_the_bus_carries_the_simulators_base_units_exactly(
    redis_url: str, exchange: str, symbol: str, contract_size: Decimal | None
) -> None:
    timeframe = timeframe_for(exchange)
    period_ms = timeframe_ms(timeframe)
    kinds = [f"ohlcv.{timeframe}", "ticker", "trades", "book"]
    clock = accelerated_clock(period_ms / CANDLES_PER_S)
    async with SimServer(
        exchange,
        [symbol],
        rate=40,
        seed=5,
        warmup_s=60 * period_ms / 1000,
        warmup_every_ms=period_ms,
        clock=clock,
    ) as sim:
        instrument = sim.market.instrument(symbol)
        spec = instrument.contract(exchange)
        expected_size = Decimal(1) if contract_size is None else contract_size
        assert spec.size == expected_size  # the simulator prints real contracts
        config = producer_config(redis_url, sim, exchange, [symbol], kinds)
        redis = aioredis.Redis.from_url(redis_url)
        names = {kind: f"md:{exchange}:{kind}:{symbol}" for kind in kinds}
        candles_name = names[f"ohlcv.{timeframe}"]
        try:
            async with Producer(config) as producer:

                async def flowed() -> bool:
                    return (
                        await redis.xlen(names["trades"]) >= TRADE_MESSAGES_WANTED
                        and await redis.xlen(candles_name) >= CLOSED_CANDLES_WANTED
                        and await redis.xlen(names["book"]) > 0
                        and await redis.xlen(names["ticker"]) > 0
                    )

                await wait_until(flowed, timeout_s=30, what="every kind flowed")
                sim.pause()
                truth_book = sim.market.book(symbol, 20)
                truth_ticker = sim.market.ticker(symbol)

                figures = TICKER_FIGURES[exchange]
                truth_figures = _figures(truth_ticker, figures)
                if instrument.inverse:
                    truth_figures["base_volume"] = _inverse_day_volume(truth_ticker, spec.size)
                truth_state = _State(truth_book.bids, truth_book.asks, truth_figures)
                newest: list[_State] = []

                async def settled() -> bool:
                    book = (await messages(redis, names["book"], newest=1))[0]
                    ticker = (await messages(redis, names["ticker"], newest=1))[0]
                    assert isinstance(book, Book) and isinstance(ticker, Ticker)
                    newest[:] = [_State(book.bids, book.asks, _figures(ticker, figures))]
                    return newest[0] == truth_state

                try:
                    await wait_until(settled, timeout_s=15, what="book and ticker in base units")
                except AssertionError:
                    assert newest == [truth_state]  # shows the difference
                    raise
                catalog = await redis.hgetall(catalog_key("md"))
                assert producer.feeds
            for field, raw in catalog.items():
                info = decode_feed_info(raw)
                assert info.exchange == exchange, field
                assert info.contract_size == (
                    None if contract_size is None else float(contract_size)
                )
                assert info.inverse is instrument.inverse
            await _check_trades_and_candles(redis, sim, exchange, symbol, timeframe)
        finally:
            await redis.aclose()


def _inverse_day_volume(ticker: SimTicker, size: Decimal) -> float:
    """The day's inverse contracts valued at `last`, as the producer must convert them;
    close to the truth (each trade valued at its own price)."""
    assert ticker.contracts_volume is not None and ticker.contracts_volume > 0
    at_last = float(Decimal(ticker.contracts_volume) * size / Decimal(repr(ticker.last)))
    assert at_last == pytest.approx(ticker.base_volume, rel=INVERSE_DAY_VOLUME_TOLERANCE)
    return at_last


async def test_ccxt_lists_the_simulated_okx_inverse_swap_as_okx_does() -> None:
    async with (
        SimServer("okx", ["BTC/USD:BTC", "BTC/USDT:USDT"], rate=1, seed=5) as sim,
        ccxt_client(sim, "okx") as exchange,
    ):
        markets = await exchange.load_markets()
    inverse, linear = markets["BTC/USD:BTC"], markets["BTC/USDT:USDT"]
    assert (inverse["id"], inverse["settle"], inverse["contractSize"]) == (
        "BTC-USD-SWAP",
        "BTC",
        100,
    )
    assert (inverse["swap"], inverse["inverse"], inverse["linear"]) == (True, True, False)
    assert inverse["precision"]["amount"] == 1  # whole contracts
    assert (linear["inverse"], linear["contractSize"]) == (False, 0.01)


@dataclass(frozen=True, slots=True)
class _State:
    """The whole-state kinds' sizes: book levels and the ticker's sizes and volumes."""

    bids: tuple[tuple[float, float], ...]
    asks: tuple[tuple[float, float], ...]
    ticker: dict[str, float | None]


def _figures(ticker: Ticker | SimTicker, names: tuple[str, ...]) -> dict[str, float | None]:
    return {name: getattr(ticker, name) for name in names}


async def _check_trades_and_candles(
    redis: aioredis.Redis, sim: SimServer, exchange: str, symbol: str, timeframe: str
) -> None:
    truth_trades = {str(t.id): t for t in sim.market.trades(symbol)}
    seen = 0  # trades, at least one per message
    for message in await messages(redis, f"md:{exchange}:trades:{symbol}"):
        assert isinstance(message, Trades)
        for trade in message.trades:
            assert trade.id is not None and trade.ts_ms is not None
            truth = truth_trades[trade.id]
            assert (trade.price, trade.amount, trade.side) == (
                truth.price,
                truth.amount,
                truth.side,
            ), trade.id
            assert 0 <= truth.ts_ms - trade.ts_ms <= TRADE_TS_TOLERANCE_MS.get(exchange, 0)
            seen += 1
    assert seen >= TRADE_MESSAGES_WANTED

    truth_candles = {c.ts_ms: c for c in sim.market.candles(symbol, timeframe) if c.closed}
    final: dict[int, OHLCV] = {}  # a correction re-sends a candle: the last one counts
    for candle in await messages(redis, f"md:{exchange}:ohlcv.{timeframe}:{symbol}"):
        assert isinstance(candle, OHLCV) and candle.closed and candle.ts_ms is not None
        final[candle.ts_ms] = candle
    assert len(final) >= CLOSED_CANDLES_WANTED
    for ts, candle in final.items():
        truth = truth_candles[ts]
        assert (candle.close, candle.volume) == (truth.close, truth.volume), f"candle {ts}"
