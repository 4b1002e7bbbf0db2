"""Venue protocols without sockets: requests in, frames out."""

from __future__ import annotations

import json
from typing import Any

from marketbus.sim.market import BookEvent, CandleEvent, SyntheticMarket
from marketbus.sim.protocols.binance import BinanceVenue
from marketbus.sim.protocols.okx import OkxVenue, bar_to_timeframe, select_candles
from marketbus.sim.venue import WsSession, select_klines

T0 = 1_700_000_000_000


def _market() -> SyntheticMarket:
    return SyntheticMarket(["BTC/USDT", "BTC/USDT:USDT"], seed=3, start_ms=T0)


def _send(session: WsSession, request: Any, accept: bool = True) -> list[Any]:
    frames = session.received(json.dumps(request), T0, accept=accept)
    return [json.loads(f) for f in frames]


def _render(session: WsSession, market: SyntheticMarket, symbol: str, now: int) -> list[Any]:
    return [json.loads(f) for e in market.step(symbol, now) for f in session.render(e)]


def test_binance_subscribe_is_acked_and_klines_carry_the_closed_flag() -> None:
    market = _market()
    venue = BinanceVenue(market, lambda: T0)
    session = venue.open_session("/binance/stream/0", {})
    assert session is not None
    params = ["btcusdt@kline_1s"]
    assert _send(session, {"method": "SUBSCRIBE", "params": params, "id": 1}) == [
        {"result": None, "id": 1}
    ]
    first = _render(session, market, "BTC/USDT", T0 + 100)
    assert first[0]["stream"] == "btcusdt@kline_1s"
    assert first[0]["data"]["k"]["x"] is False
    later = _render(session, market, "BTC/USDT", T0 + 1100)
    closed = [f["data"]["k"] for f in later if f["data"]["k"]["x"]]
    assert [k["t"] for k in closed] == [T0]


def test_binance_refuses_unknown_streams_and_refused_subscriptions() -> None:
    venue = BinanceVenue(_market(), lambda: T0)
    session = venue.open_session("/binance/ws/0", {})
    assert session is not None
    [reply] = _send(session, {"method": "SUBSCRIBE", "params": ["nosuch@trade"], "id": 2})
    assert reply["error"]["code"] == 2
    [reply] = _send(session, {"method": "SUBSCRIBE", "params": ["btcusdt@trade"], "id": 3}, False)
    assert reply["id"] == 3 and "error" in reply
    assert session.topics == frozenset()


def test_binance_futures_depth_updates_chain_by_pu() -> None:
    market = _market()
    venue = BinanceVenue(market, lambda: T0)
    session = venue.open_session("/binance/fws/public/ws/0", {})
    assert session is not None
    _send(session, {"method": "SUBSCRIBE", "params": ["btcusdt@depth@100ms"], "id": 1})
    last_u = market.book("BTC/USDT:USDT").update_id
    for i in range(1, 20):
        for update in _render(session, market, "BTC/USDT:USDT", T0 + i):
            assert update["pu"] == last_u and update["U"] == last_u + 1
            last_u = update["u"]
    assert last_u == market.book("BTC/USDT:USDT").update_id


def test_binance_klines_window() -> None:
    market = _market()
    market.advance(T0 + 10_000)
    candles = market.candles("BTC/USDT", "1s")
    assert [c.ts_ms for c in select_klines(candles, None, None, 3)] == [
        c.ts_ms for c in candles[-3:]
    ]
    assert [c.ts_ms for c in select_klines(candles, T0 + 2000, None, 2)] == [T0 + 2000, T0 + 3000]
    assert select_klines(candles, None, T0 + 1000, 5)[-1].ts_ms == T0 + 1000


def test_okx_ping_pong_and_candles_only_on_business() -> None:
    venue = OkxVenue(_market(), lambda: T0)
    public = venue.open_session("/okx/ws/v5/public", {})
    assert public is not None
    assert public.received("ping", T0, accept=True) == ["pong"]
    arg = {"channel": "candle1m", "instId": "BTC-USDT"}
    [reply] = _send(public, {"op": "subscribe", "args": [arg]})
    assert reply["event"] == "error"
    business = venue.open_session("/okx/ws/v5/business", {})
    assert business is not None
    assert _send(business, {"op": "subscribe", "args": [arg]})[0]["event"] == "subscribe"


def test_okx_books_snapshot_then_updates_chained_by_seq_id() -> None:
    market = _market()
    venue = OkxVenue(market, lambda: T0)
    session = venue.open_session("/okx/ws/v5/public", {})
    assert session is not None
    arg = {"channel": "books", "instId": "BTC-USDT-SWAP"}
    ack, snapshot = _send(session, {"op": "subscribe", "args": [arg]})
    assert ack["event"] == "subscribe" and snapshot["action"] == "snapshot"
    seq = snapshot["data"][0]["seqId"]
    assert snapshot["data"][0]["prevSeqId"] == -1
    for i in range(1, 10):
        for push in _render(session, market, "BTC/USDT:USDT", T0 + i):
            assert push["action"] == "update" and push["data"][0]["prevSeqId"] == seq
            seq = push["data"][0]["seqId"]


def test_okx_candle_window_is_newest_first() -> None:
    market = _market()
    market.advance(T0 + 10_000)
    candles = market.candles("BTC/USDT", "1s")
    rows = select_candles(candles, after=T0 + 5000, before=T0 + 1000, limit=10)
    assert [c.ts_ms for c in rows] == [T0 + 4000, T0 + 3000, T0 + 2000]
    assert bar_to_timeframe("1H") == "1h" and bar_to_timeframe("1Dutc") == "1d"


def test_render_ignores_events_nobody_subscribed() -> None:
    market = _market()
    session = BinanceVenue(market, lambda: T0).open_session("/binance/stream/0", {})
    assert session is not None
    events = market.step("BTC/USDT", T0 + 1)
    assert any(isinstance(e, (CandleEvent, BookEvent)) for e in events)
    assert [f for e in events for f in session.render(e)] == []
