"""The synthetic market, driven by an explicit clock: exact and repeatable."""

from __future__ import annotations

import itertools

import pytest

from marketbus.shared.names import timeframe_ms
from marketbus.sim.instruments import parse_instrument
from marketbus.sim.market import BookEvent, CandleEvent, SyntheticMarket, TradeEvent
from marketbus.sim.timeframes import period_start

T0 = 1_700_000_000_000  # a minute boundary


def _market(seed: int = 1, history: int = 5000) -> SyntheticMarket:
    return SyntheticMarket(["BTC/USDT", "ETH/USDT:USDT"], seed=seed, start_ms=T0, history=history)


def _run(market: SyntheticMarket, steps: int, every_ms: int = 250) -> None:
    for i in range(1, steps + 1):
        for symbol in market.symbols:
            market.step(symbol, T0 + i * every_ms)


def test_same_seed_and_clock_give_identical_markets() -> None:
    a, b = _market(), _market()
    _run(a, 200)
    _run(b, 200)
    assert a.trades("BTC/USDT") == b.trades("BTC/USDT")
    assert a.candles("BTC/USDT", "1m") == b.candles("BTC/USDT", "1m")
    assert a.book("ETH/USDT:USDT") == b.book("ETH/USDT:USDT")


def test_other_seed_gives_other_trades() -> None:
    a, b = _market(1), _market(2)
    _run(a, 20)
    _run(b, 20)
    assert a.trades("BTC/USDT") != b.trades("BTC/USDT")


def test_candles_aggregate_exactly_the_trades() -> None:
    market = _market()
    _run(market, 1000, every_ms=97)
    trades = market.trades("BTC/USDT")
    inst = market.instrument("BTC/USDT")
    for candle in market.candles("BTC/USDT", "1m"):
        inside = [t for t in trades if period_start(t.ts_ms, "1m") == candle.ts_ms]
        if not inside:
            continue
        assert candle.open == inside[0].price
        assert candle.close == inside[-1].price
        assert candle.high == max(t.price for t in inside)
        assert candle.low == min(t.price for t in inside)
        lots = sum(round(t.amount * 10**inst.amount_decimals) for t in inside)
        assert candle.volume == inst.amount(lots)
        assert candle.trades == len(inside)


def test_values_survive_a_round_trip_through_exchange_strings() -> None:
    market = _market()
    _run(market, 500, every_ms=113)
    inst = market.instrument("BTC/USDT")
    for c in market.candles("BTC/USDT", "1m"):
        for price in (c.open, c.high, c.low, c.close):
            assert float(inst.price_str(price)) == price
        assert float(inst.amount_str(c.volume)) == c.volume
        assert float(inst.notional_str(c.quote_volume)) == c.quote_volume


def test_only_the_last_candle_is_forming_and_periods_are_contiguous() -> None:
    market = _market()
    _run(market, 400)  # 100 s
    candles = market.candles("BTC/USDT", "1s")
    assert [c.closed for c in candles] == [True] * (len(candles) - 1) + [False]
    step = timeframe_ms(candles[0].timeframe)
    assert all(b.ts_ms - a.ts_ms == step for a, b in itertools.pairwise(candles))


def test_clock_alone_closes_candles_and_fills_quiet_periods() -> None:
    market = _market()
    market.step("BTC/USDT", T0 + 500)
    events = market.advance(T0 + 3_500)
    closed = [
        e.candle
        for e in events
        if isinstance(e, CandleEvent) and e.symbol == "BTC/USDT" and e.candle.timeframe == "1s"
    ]
    assert [c.ts_ms for c in closed] == [T0, T0 + 1000, T0 + 2000, T0 + 3000]
    assert [c.closed for c in closed] == [True, True, True, False]
    quiet = closed[1]
    assert quiet.volume == 0 and quiet.open == quiet.close == closed[0].close


def test_closed_history_is_bounded() -> None:
    market = _market(history=50)
    market.advance(T0 + 500_000)
    assert len(market.candles("BTC/USDT", "1s")) == 51  # 50 closed + forming


def test_book_deltas_replayed_on_a_snapshot_give_the_book() -> None:
    market = _market()
    snapshot = market.book("BTC/USDT")
    bids, asks = dict(snapshot.bids), dict(snapshot.asks)
    last_id = snapshot.update_id
    for i in range(1, 300):
        for event in market.step("BTC/USDT", T0 + i):
            if isinstance(event, BookEvent):
                delta = event.delta
                assert delta.prev_update_id == last_id
                assert delta.first_update_id == last_id + 1 <= delta.last_update_id
                last_id = delta.last_update_id
                for side, changes in ((bids, delta.bids), (asks, delta.asks)):
                    for price, amount in changes:
                        if amount:
                            side[price] = amount
                        else:
                            side.pop(price, None)
                assert event.book.update_id == last_id
    book = market.book("BTC/USDT")
    assert sorted(bids.items(), reverse=True) == list(book.bids)
    assert sorted(asks.items()) == list(book.asks)
    assert book.bids[0][0] < book.asks[0][0]


def test_trades_hit_the_best_levels() -> None:
    market = _market()
    for i in range(1, 100):
        before = market.book("BTC/USDT", 1)
        trade = next(e.trade for e in market.step("BTC/USDT", T0 + i) if isinstance(e, TradeEvent))
        expected = before.asks[0][0] if trade.side == "buy" else before.bids[0][0]
        assert trade.price == expected


def test_ticker_reflects_book_and_trades() -> None:
    market = _market()
    _run(market, 100)
    ticker = market.ticker("BTC/USDT")
    trades = market.trades("BTC/USDT")
    book = market.book("BTC/USDT", 1)
    assert (ticker.last, ticker.last_size, ticker.last_side) == (
        trades[-1].price,
        trades[-1].amount,
        trades[-1].side,
    )
    assert (ticker.bid, ticker.ask) == (book.bids[0][0], book.asks[0][0])
    assert ticker.high == max(t.price for t in trades)
    assert ticker.count == len(trades)


def test_clock_must_not_go_backwards() -> None:
    market = _market()
    market.step("BTC/USDT", T0 + 10)
    with pytest.raises(ValueError):
        market.step("BTC/USDT", T0 + 5)


def test_unknown_symbol_and_timeframe_are_named_in_the_error() -> None:
    market = _market()
    with pytest.raises(KeyError, match="DOGE/USDT"):
        market.ticker("DOGE/USDT")
    with pytest.raises(KeyError, match="7m"):
        market.candles("BTC/USDT", "7m")


def test_instrument_parsing() -> None:
    swap = parse_instrument("ETH/USDT:USDT")
    assert (swap.base, swap.quote, swap.settle, swap.kind) == ("ETH", "USDT", "USDT", "swap")
    assert parse_instrument("FOO/USDT").initial_price_ticks > 0
    with pytest.raises(ValueError):
        parse_instrument("BTCUSDT")


@pytest.mark.parametrize(
    ("tf", "ms"), [("1s", 1000), ("3m", 180_000), ("4h", 14_400_000), ("1w", 604_800_000)]
)
def test_timeframes(tf: str, ms: int) -> None:
    assert timeframe_ms(tf) == ms


def test_weeks_open_on_monday() -> None:
    monday = 1_699_833_600_000  # 2023-11-13 00:00 UTC
    assert period_start(monday + 3 * 86_400_000, "1w") == monday
