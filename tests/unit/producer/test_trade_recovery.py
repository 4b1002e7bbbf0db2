"""TradesHandler's recovery decisions (pure): what it fetches after an outage or a
hand-over, what it publishes from the answer, and which gap it announces."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from marketbus.producer.feeds import (
    FetchedTrades,
    FetchTrades,
    Notice,
    RestFailed,
    TradesHandler,
    after_last,
)
from marketbus.shared.names import Feed
from marketbus.shared.schema import MarketMessage, Trade, Trades

FEED = Feed("md", "binance", "trades", "BTC/USDT")


def trade(i: int, ts: int | None = None) -> Trade:
    return Trade(id=str(i), ts_ms=i if ts is None else ts, price=1.0, amount=1.0, side="buy")


def raw(t: Trade) -> dict[str, Any]:
    """*t* as ccxt hands it over."""
    return {"id": t.id, "timestamp": t.ts_ms, "price": t.price, "amount": t.amount, "side": t.side}


def ids(messages: Any) -> list[str | None]:
    return [t.id for m in messages if isinstance(m, Trades) for t in m.trades]


def gaps(handler: TradesHandler) -> list[Notice]:
    return [n for n in handler.take_notices() if n.event == "gap"]


def answer(handler: TradesHandler, fetched: list[Trade] | RestFailed) -> list[MarketMessage]:
    [request] = handler.take_requests()
    assert isinstance(request, FetchTrades)
    result = fetched if isinstance(fetched, RestFailed) else FetchedTrades(tuple(fetched))
    return list(handler.on_trades(request, result, 99))


def test_after_an_outage_the_missed_trades_go_out_before_the_held_live_batch() -> None:
    h = TradesHandler(FEED)
    h.on_data([raw(trade(1)), raw(trade(2))], 0, 1)
    h.on_down()
    assert h.on_data([raw(trade(6)), raw(trade(7))], 0, 1) == [], "held for the fetch"
    [request] = h.take_requests()
    assert request == FetchTrades(2)
    fetched = FetchedTrades(tuple(trade(i) for i in range(2, 8)))  # overlaps both ends
    out = h.on_trades(request, fetched, 99)
    assert ids(out) == ["3", "4", "5", "6", "7"]
    assert gaps(h) == [] and h.live and h.recovered == 3
    assert ids(h.on_data([raw(trade(7)), raw(trade(8))], 0, 1)) == ["8"]


def test_what_the_rest_window_no_longer_holds_is_announced_with_its_exchange_times() -> None:
    h = TradesHandler(FEED)
    h.on_data([raw(trade(10))], 0, 1)
    h.on_down()
    h.on_data([raw(trade(50))], 0, 1)
    out = answer(h, [trade(i) for i in range(40, 51)])  # the window starts at 40
    assert ids(out) == [str(i) for i in range(40, 51)]
    [gap] = gaps(h)
    assert (gap.from_ms, gap.to_ms) == (10, 40)
    assert "between 10 (the last one published) and 40 (the first one after)" in gap.detail


def test_a_failed_fetch_announces_the_whole_outage_and_releases_the_held_batch() -> None:
    h = TradesHandler(FEED)
    h.on_data([raw(trade(10))], 0, 1)
    h.on_down()
    h.on_data([raw(trade(20)), raw(trade(21))], 0, 1)
    h.on_data([raw(trade(22))], 0, 1)  # arrived while the first was held: held too
    out = answer(h, RestFailed("HTTP 503"))  # one fetch for the outage
    assert ids(out) == ["20", "21", "22"]
    [gap] = gaps(h)
    assert (gap.from_ms, gap.to_ms) == (10, 20) and "HTTP 503" in gap.detail


def test_a_new_producer_continues_after_the_streams_last_trade() -> None:
    h = TradesHandler(FEED)
    last = Trades(exchange="binance", symbol="BTC/USDT", ts_ms=5, recv_ns=1, trades=(trade(5),))
    h.on_start(last, 0)
    assert not h.pending, "nothing to fetch before trades flow"
    assert h.on_data([raw(trade(9))], 0, 1) == []
    [request] = h.take_requests()
    assert request == FetchTrades(5)
    out = h.on_trades(request, FetchedTrades(tuple(trade(i) for i in range(3, 10))), 99)
    assert ids(out) == ["6", "7", "8", "9"], "the stream's last trade and older are not repeated"
    assert gaps(h) == []


def test_an_empty_stream_starts_without_recovery() -> None:
    h = TradesHandler(FEED)
    h.on_start(None, 0)
    assert ids(h.on_data([raw(trade(1))], 0, 1)) == ["1"] and not h.pending


def test_same_millisecond_trades_are_ordered_by_numeric_id() -> None:
    assert after_last(trade(8, ts=5), 5, "7")
    assert not after_last(trade(7, ts=5), 5, "7")
    assert not after_last(trade(6, ts=5), 5, "7"), "published before the last one"
    assert not after_last(trade(9, ts=4), 5, "7")
    assert after_last(trade(9, ts=6), 5, "7")
    assert after_last(trade(1), None, None), "nothing published yet"


@given(
    total=st.integers(min_value=3, max_value=120),
    per_ms=st.integers(min_value=1, max_value=4),
    data=st.data(),
)
def test_recovery_publishes_each_trade_once_in_order_or_names_the_hole(
    total: int, per_ms: int, data: st.DataObject
) -> None:
    """Trades 0..total-1 (several per ms); a prefix published, the socket down, a live
    batch held, the REST window = the newest *window* trades: the stream is the prefix
    then every recovered and live trade once, in order; a gap is announced exactly when
    the window does not reach back to the last published trade, and its times are those
    of the trades around the hole."""
    trades = [trade(i, ts=i // per_ms) for i in range(total)]
    published = data.draw(st.integers(min_value=1, max_value=total - 2))
    live_from = data.draw(st.integers(min_value=published, max_value=total - 1))
    window = data.draw(st.integers(min_value=1, max_value=total))
    h = TradesHandler(FEED)
    out = ids(h.on_data([raw(t) for t in trades[:published]], 0, 1))
    h.on_down()
    h.on_data([raw(t) for t in trades[live_from:]], 0, 1)
    out += ids(answer(h, trades[-window:]))
    first_fetched = total - window
    resumed = min(max(published, first_fetched), live_from)
    assert out == [t.id for t in trades[:published] + trades[resumed:]]
    notices = gaps(h)
    if first_fetched < published:
        assert notices == [], "the window held the last published trade"
        return
    [gap] = notices  # the window does not show the last published trade: maybe a hole
    missed = trades[published:resumed]
    assert gap.from_ms == trades[published - 1].ts_ms
    assert gap.to_ms == trades[resumed].ts_ms
    assert all(gap.from_ms <= (t.ts_ms or 0) <= gap.to_ms for t in missed)


def test_a_feed_quiet_past_its_deadline_checks_rest_for_what_it_may_have_missed() -> None:
    """A subscription stuck behind a live socket loses trades although no socket failed."""
    h = TradesHandler(FEED)
    h.on_data([raw(trade(1)), raw(trade(2))], 0, 1)
    h.on_quiet()
    assert h.on_data([raw(trade(9))], 0, 1) == [], "held for the fetch"
    out = answer(h, [trade(i) for i in range(2, 9)])  # reaches back to the last one published
    assert ids(out) == ["3", "4", "5", "6", "7", "8", "9"]
    assert gaps(h) == []


def test_a_merely_quiet_feed_publishes_nothing_twice_after_its_check() -> None:
    h = TradesHandler(FEED)
    h.on_data([raw(trade(1)), raw(trade(2))], 0, 1)
    h.on_quiet()
    assert h.on_data([raw(trade(3))], 0, 1) == []
    assert ids(answer(h, [trade(1), trade(2), trade(3)])) == ["3"]
    assert gaps(h) == []
