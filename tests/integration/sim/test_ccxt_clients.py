"""Real ccxt.pro clients against the simulator: every kind, value by value.

Each test runs per venue (exchange x spot/swap); what ccxt returns must equal what
the simulator's market generated, exactly, in the units the venue prints (contracts
on okx and kucoinfutures swaps: `Rig.printed`, `Rig.candle_row`).
"""

from __future__ import annotations

import asyncio
from typing import Any

from tests.integration.sim.conftest import Rig, collect_until, live_book_when, within


async def test_load_markets_lists_the_simulated_symbols(rig: Rig) -> None:
    markets = await within(rig.exchange.load_markets())
    for symbol in rig.venue.symbols:
        market = markets[symbol]
        assert market["type"] == ("swap" if ":" in symbol else "spot")
        assert market["active"] is not False


async def test_fetch_ohlcv_returns_the_generated_candles(wall_clock_rig: Rig) -> None:
    rig = wall_clock_rig
    symbol, tf = rig.venue.symbol, rig.venue.timeframe
    rows = await within(rig.exchange.fetch_ohlcv(symbol, tf, limit=5))
    closed = {c.ts_ms: rig.candle_row(c) for c in rig.sim.market.candles(symbol, tf) if c.closed}
    assert len(rows) == 5
    assert [list(r) for r in rows[:-1]] == [closed[r[0]] for r in rows[:-1]]
    assert rows[-1][0] >= max(closed)


async def test_fetch_ohlcv_since_starts_at_since(rig: Rig) -> None:
    symbol, tf = rig.venue.symbol, rig.venue.timeframe
    closed = [c for c in rig.sim.market.candles(symbol, tf) if c.closed]
    since = closed[2].ts_ms
    rows = await within(rig.exchange.fetch_ohlcv(symbol, tf, since=since, limit=3))
    assert [list(r) for r in rows] == [rig.candle_row(c) for c in closed[2:5]]


async def test_watch_ohlcv_rebuilds_the_closed_candles_exactly(rig: Rig) -> None:
    symbol, tf = rig.venue.symbol, rig.venue.timeframe
    seen: dict[int, list[Any]] = {}

    async def watch() -> None:
        for row in await rig.exchange.watch_ohlcv(symbol, tf):
            seen[row[0]] = list(row)

    await collect_until(watch, lambda _: len(seen) >= 4)
    finished = sorted(seen)[:-1]  # the newest may still be forming
    generated = {c.ts_ms: rig.candle_row(c) for c in rig.sim.market.candles(symbol, tf) if c.closed}
    assert [seen[ts] for ts in finished] == [generated[ts] for ts in finished]


async def test_watch_ohlcv_for_symbols_covers_every_symbol(rig: Rig) -> None:
    if not rig.exchange.has.get("watchOHLCVForSymbols"):
        return
    tf = rig.venue.timeframe
    pairs = [[s, tf] for s in rig.venue.symbols]
    seen: set[str] = set()

    async def watch() -> None:
        result = await rig.exchange.watch_ohlcv_for_symbols(pairs)
        seen.update(result)

    await collect_until(watch, lambda _: seen == set(rig.venue.symbols))


async def test_watch_trades_delivers_every_trade_in_order(rig: Rig) -> None:
    symbol = rig.venue.symbol
    trades: list[dict[str, Any]] = []

    async def watch() -> None:
        trades.extend(await rig.exchange.watch_trades(symbol))

    await collect_until(watch, lambda _: len(trades) >= 30)
    if not rig.venue.trade_ids:
        assert all(t["id"] is None for t in trades)
        rows = [
            (g.ts_ms, g.price, rig.printed(g.amount), g.side) for g in rig.sim.market.trades(symbol)
        ]
        got = [(t["timestamp"], t["price"], t["amount"], t["side"]) for t in trades]
        start = rows.index(got[0])
        assert rows[start : start + len(got)] == got
        return
    generated = {t.id: t for t in rig.sim.market.trades(symbol)}
    ids = [int(t["id"]) for t in trades]
    assert ids == list(range(ids[0], ids[0] + len(ids)))
    early_ms = 1 if rig.venue.trade_ms_may_be_early else 0
    for t in trades:
        g = generated[int(t["id"])]
        assert (t["price"], t["amount"], t["side"]) == (g.price, rig.printed(g.amount), g.side)
        assert g.ts_ms - early_ms <= t["timestamp"] <= g.ts_ms


async def test_watch_trades_for_symbols_covers_every_symbol(rig: Rig) -> None:
    if not rig.exchange.has.get("watchTradesForSymbols"):
        return
    seen: set[str] = set()

    async def watch() -> None:
        seen.update(
            t["symbol"]
            for t in await rig.exchange.watch_trades_for_symbols(list(rig.venue.symbols))
        )

    await collect_until(watch, lambda _: seen == set(rig.venue.symbols))


async def test_watch_ticker_equals_the_generated_ticker(rig: Rig) -> None:
    symbol = rig.venue.symbol
    rig.sim.pause()
    task = asyncio.ensure_future(rig.exchange.watch_ticker(symbol))
    await rig.sim.wait_for(lambda: rig.sim.subscribed() or task.done())
    rig.sim.step(symbol)
    ticker = await within(task)
    expected = rig.sim.market.ticker(symbol)
    assert ticker["symbol"] == symbol
    assert ticker["last"] == expected.last
    stats = (ticker["open"], ticker["high"], ticker["low"], ticker["baseVolume"])
    if rig.venue.ticker_stats:
        volume = rig.printed(expected.base_volume)
        assert stats == (expected.open, expected.high, expected.low, volume)
    else:
        assert stats == (None, None, None, None)
    if ticker["bid"] is not None:
        assert (ticker["bid"], ticker["ask"]) == (expected.bid, expected.ask)


async def test_watch_tickers_covers_every_symbol(rig: Rig) -> None:
    if not rig.exchange.has.get("watchTickers"):
        return
    seen: set[str] = set()

    async def watch() -> None:
        seen.update(await rig.exchange.watch_tickers(list(rig.venue.symbols)))

    await collect_until(watch, lambda _: seen == set(rig.venue.symbols))


async def test_watch_order_book_converges_to_the_generated_book(rig: Rig) -> None:
    symbol = rig.venue.symbol
    depth = rig.sim.market.depth
    book = await within(rig.exchange.watch_order_book(symbol))
    rig.sim.pause()
    rig.sim.step(symbol)
    expected = rig.sim.market.book(symbol)

    bids = [[p, rig.printed(a)] for p, a in expected.bids]
    asks = [[p, rig.printed(a)] for p, a in expected.asks]

    def matches(b: Any) -> bool:
        return bool(b["bids"][:depth] == bids and b["asks"][:depth] == asks)

    book = await live_book_when(rig.exchange, symbol, matches)
    assert matches(book)


async def test_watch_order_book_for_symbols_covers_every_symbol(rig: Rig) -> None:
    if not rig.exchange.has.get("watchOrderBookForSymbols"):
        return
    seen: set[str] = set()

    async def watch() -> None:
        book = await rig.exchange.watch_order_book_for_symbols(list(rig.venue.symbols))
        seen.add(book["symbol"])

    await collect_until(watch, lambda _: seen == set(rig.venue.symbols))
