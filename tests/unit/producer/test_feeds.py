"""Per-feed handlers: trade de-duplication and book conflation."""

from __future__ import annotations

from typing import Any

import pytest

from marketbus.producer.feeds import (
    BookHandler,
    FetchCandles,
    FetchTrades,
    OhlcvHandler,
    RestFailed,
    TradeIds,
    TradesHandler,
    handler_for,
)
from marketbus.shared.names import Feed
from marketbus.shared.schema import OHLCV, Book, Trade, Trades


def ccxt_trade(i: int) -> dict[str, Any]:
    return {"id": str(i), "timestamp": i, "price": 1.0, "amount": 1.0, "side": "buy"}


def interruption(h: TradesHandler) -> str | None:
    """The detail of the ``gap`` notice *h* has to report, if any (taken once)."""
    notices = h.take_notices()
    assert all(n.event == "gap" and not n.error for n in notices) and len(notices) <= 1
    return notices[0].detail if notices else None


def test_trades_repeated_after_a_reconnect_are_dropped_and_the_rest_kept() -> None:
    h = TradesHandler(Feed("md", "x", "trades", "A/B"))
    first = h.on_data([ccxt_trade(1), ccxt_trade(2)], 0, 1)
    assert isinstance(first[0], Trades) and len(first[0].trades) == 2
    again = h.on_data([ccxt_trade(2), ccxt_trade(3)], 0, 1)
    assert isinstance(again[0], Trades)
    assert [t.id for t in again[0].trades] == ["3"] and again[0].ts_ms == 3
    assert h.on_data([ccxt_trade(3)], 0, 1) == [] and h.duplicates == 2


def test_trades_after_the_socket_was_down_say_which_may_be_missing() -> None:
    h = TradesHandler(Feed("md", "x", "trades", "A/B"))
    h.on_data([ccxt_trade(5), ccxt_trade(7)], 0, 1)
    assert interruption(h) is None, "no outage, nothing to announce"
    h.on_down()  # the watch loop saw the socket fail
    assert h.on_data([ccxt_trade(7)], 0, 1) == []  # ccxt's cache repeated: not the end yet
    assert interruption(h) is None
    assert h.on_data([ccxt_trade(7), ccxt_trade(12), ccxt_trade(11)], 0, 1) == []
    assert interruption(h) is None, "held until the trades since 7 are fetched"
    [request] = h.take_requests()
    assert isinstance(request, FetchTrades) and request.since_ms == 7
    h.on_trades(request, RestFailed("REST down"), 1)  # recovery failed: announce it all
    detail = interruption(h)
    assert detail is not None and "between 7 (the last one published) and 11" in detail
    assert h.live and interruption(h) is None, "announced once"
    h.on_data([ccxt_trade(13)], 0, 1)
    assert interruption(h) is None and h.newest_ms == 13


def test_an_outage_before_any_trade_is_announced_without_a_start() -> None:
    h = TradesHandler(Feed("md", "x", "trades", "A/B"))
    h.on_down()
    h.on_data([{"id": "1", "timestamp": None, "price": 1.0, "amount": 1.0, "side": None}], 0, 1)
    detail = interruption(h)
    assert detail is not None and "the last trade published and the first one after" in detail


def test_trade_id_memory_is_bounded() -> None:
    ids = TradeIds(capacity=2)
    t = [Trade(id=str(i), ts_ms=i, price=1, amount=1, side=None) for i in range(3)]
    assert ids.fresh(tuple(t)) == tuple(t)
    assert len(ids) == 2
    assert ids.fresh((t[0],)) == (t[0],), "the oldest id was forgotten"
    anonymous = Trade(id=None, ts_ms=1, price=1, amount=1, side=None)
    assert ids.fresh((anonymous, anonymous)) == (anonymous, anonymous)


def book(i: int) -> dict[str, Any]:
    return {"bids": [[float(i), 1.0]], "asks": [[float(i + 1), 1.0]], "timestamp": i}


def test_book_interval_zero_sends_every_update() -> None:
    h = BookHandler(Feed("md", "x", "book", "A/B"), depth=5, interval_ms=0)
    assert len(h.on_data(book(1), 0, 1)) == 1 and len(h.on_data(book(2), 0, 1)) == 1
    assert h.on_clock(10_000, 1) == []


def test_book_interval_conflates_and_the_clock_releases_the_latest() -> None:
    h = BookHandler(Feed("md", "x", "book", "A/B"), depth=5, interval_ms=100)
    assert [m.ts_ms for m in h.on_data(book(1), 1_000, 1)] == [1]
    assert h.on_data(book(2), 1_010, 1) == [] and h.on_data(book(3), 1_050, 1) == []
    assert h.on_clock(1_099, 1) == []
    released = h.on_clock(1_100, 1)
    assert isinstance(released[0], Book) and released[0].ts_ms == 3
    assert h.on_clock(1_500, 1) == []
    assert [m.ts_ms for m in h.on_data(book(4), 1_150, 1)] == []
    assert [m.ts_ms for m in h.on_data(book(5), 1_200, 1)] == [5]


def test_handler_for_picks_by_kind() -> None:
    kw: dict[str, int] = {"close_grace_ms": 0, "book_depth": 5, "book_interval_ms": 0}
    assert isinstance(handler_for(Feed("md", "x", "ohlcv.1m", "A/B"), **kw), OhlcvHandler)
    assert isinstance(handler_for(Feed("md", "x", "book", "A/B"), **kw), BookHandler)
    assert handler_for(Feed("md", "x", "ticker", "A/B"), **kw).on_data({"last": 1}, 0, 1)


def test_candles_do_not_close_by_the_clock_while_the_socket_is_down() -> None:
    h = OhlcvHandler(Feed("md", "binance", "ohlcv.1m", "BTC/USDT"), close_grace_ms=0)
    h.on_data([[0, 1.0, 1.0, 1.0, 1.0, 1.0]], now_ms=1, recv_ns=1)
    h.on_down()
    assert h.on_clock(120_000, 1) == []
    h.on_data([[0, 1.0, 1.0, 1.0, 1.0, 1.0]], now_ms=2, recv_ns=1)  # data flows again
    assert [isinstance(m, OHLCV) and m.closed for m in h.on_clock(120_000, 1)] == [True]


P = 60_000
CANDLES = Feed("md", "binance", "ohlcv.1m", "BTC/USDT")


def candle_row(ts: int, close: float = 1.0) -> list[float]:
    return [ts, 1.0, 1.0, 1.0, close, 1.0]


def test_rows_that_skip_candles_wait_for_them_over_rest_and_come_out_in_order() -> None:
    h = OhlcvHandler(CANDLES, close_grace_ms=0)
    h.on_data([candle_row(0)], now_ms=1, recv_ns=1)
    assert not h.pending
    assert h.on_data([candle_row(3 * P)], now_ms=3 * P + 1, recv_ns=5) == [], "held back"
    assert h.pending
    (request,) = h.take_requests()
    assert request == FetchCandles(0, 3 * P, "missed")
    rest = [(P, 1.0, 1.0, 1.0, 7.0, 1.0), (2 * P, 1.0, 1.0, 1.0, 8.0, 1.0)]
    out = h.on_rest(request, rest, recv_ns=9)
    assert [(m.ts_ms, m.close, m.closed) for m in out if isinstance(m, OHLCV)] == [
        (0, 1.0, True),
        (P, 7.0, True),
        (2 * P, 8.0, True),
        (3 * P, 1.0, False),
    ]
    assert {m.recv_ns for m in out} == {5}, "the held data keeps its own time"
    (notice,) = h.take_notices()
    assert notice.event is None and "2 of 2 fetched over REST" in notice.detail


def test_a_failed_fetch_of_skipped_candles_is_an_error_notice_and_the_rows_go_on() -> None:
    h = OhlcvHandler(CANDLES, close_grace_ms=0)
    h.on_data([candle_row(0)], now_ms=1, recv_ns=1)
    h.on_data([candle_row(2 * P)], now_ms=2 * P + 1, recv_ns=1)
    (request,) = h.take_requests()
    out = h.on_rest(request, RestFailed("timed out"), recv_ns=1)
    assert [(m.ts_ms, m.closed) for m in out if isinstance(m, OHLCV)] == [(0, True), (2 * P, False)]
    (notice,) = h.take_notices()
    assert (notice.event, notice.error) == ("error", True)
    assert notice.detail == f"candles {P}..{P} missed and not fetched: timed out"


def test_backfill_sends_the_closed_candles_after_the_streams_newest_and_seeds_it() -> None:
    h = OhlcvHandler(CANDLES, close_grace_ms=0)
    newest = OHLCV(
        exchange="binance",
        symbol="BTC/USDT",
        ts_ms=0,
        recv_ns=0,
        timeframe="1m",
        open=1.0,
        high=1.0,
        low=1.0,
        close=1.0,
        volume=1.0,
        closed=True,
    )
    h.on_start(newest, now_ms=3 * P)
    (request,) = h.take_requests()
    assert request == FetchCandles(0, 3 * P, "backfill")
    out = h.on_rest(request, [(P, 1.0, 1.0, 1.0, 2.0, 1.0)], recv_ns=4)
    assert [(m.ts_ms, m.closed, m.recv_ns) for m in out] == [(P, True, 4)]
    assert [n.detail for n in h.take_notices()] == ["backfilled 1 closed candle(s)"]
    assert h.on_data([candle_row(0)], now_ms=3 * P, recv_ns=1) == [], "seeded: not a correction"


def test_no_rest_history_means_no_backfill_and_no_seed() -> None:
    h = OhlcvHandler(CANDLES, close_grace_ms=0)
    newest = OHLCV(
        exchange="binance",
        symbol="BTC/USDT",
        ts_ms=0,
        recv_ns=0,
        timeframe="1m",
        open=1.0,
        high=1.0,
        low=1.0,
        close=1.0,
        volume=1.0,
        closed=True,
    )
    h.on_start(newest, now_ms=3 * P)
    (request,) = h.take_requests()
    assert h.on_rest(request, RestFailed("no fetchOHLCV", unsupported=True), recv_ns=1) == []
    assert not h.pending
    h.on_data([candle_row(2 * P)], now_ms=2 * P + 1, recv_ns=1)
    assert not h.pending, "nothing seeded, so nothing is missing"


def test_kinds_without_rest_work_have_nothing_pending_and_refuse_answers() -> None:
    h = handler_for(
        Feed("md", "x", "ticker", "A/B"), close_grace_ms=0, book_depth=5, book_interval_ms=0
    )
    h.on_start(None, 0)
    h.on_down()
    assert not h.pending and h.take_requests() == [] and h.on_clock(0, 1) == []
    with pytest.raises(ValueError, match="was not asked for"):
        h.on_rest(FetchCandles(None, 0, "missed"), [], 1)
