"""Per-feed handlers: trade de-duplication and book conflation."""

from __future__ import annotations

from typing import Any

from marketbus.producer.feeds import BookHandler, OhlcvHandler, TradeIds, TradesHandler, handler_for
from marketbus.shared.names import Feed
from marketbus.shared.schema import Book, Trade, Trades


def ccxt_trade(i: int) -> dict[str, Any]:
    return {"id": str(i), "timestamp": i, "price": 1.0, "amount": 1.0, "side": "buy"}


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
    assert h.take_interruption() is None, "no outage, nothing to announce"
    h.live = False  # the watch loop saw the socket fail
    assert h.on_data([ccxt_trade(7)], 0, 1) == []  # ccxt's cache repeated: not the end yet
    assert h.take_interruption() is None
    h.on_data([ccxt_trade(7), ccxt_trade(12), ccxt_trade(11)], 0, 1)
    detail = h.take_interruption()
    assert detail is not None and "between 7 (the last one published) and 11" in detail
    assert h.live and h.take_interruption() is None, "announced once"
    h.on_data([ccxt_trade(13)], 0, 1)
    assert h.take_interruption() is None and h.newest_ms == 13


def test_an_outage_before_any_trade_is_announced_without_a_start() -> None:
    h = TradesHandler(Feed("md", "x", "trades", "A/B"))
    h.live = False
    h.on_data([{"id": "1", "timestamp": None, "price": 1.0, "amount": 1.0, "side": None}], 0, 1)
    detail = h.take_interruption()
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
    from marketbus.producer.feeds import OhlcvHandler
    from marketbus.shared.names import Feed
    from marketbus.shared.schema import OHLCV

    h = OhlcvHandler(Feed("md", "binance", "ohlcv.1m", "BTC/USDT"), close_grace_ms=0)
    h.on_data([[0, 1.0, 1.0, 1.0, 1.0, 1.0]], now_ms=1, recv_ns=1)
    h.live = False
    assert h.on_clock(120_000, 1) == []
    h.live = True
    assert [isinstance(m, OHLCV) and m.closed for m in h.on_clock(120_000, 1)] == [True]
