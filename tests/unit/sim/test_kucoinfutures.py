"""The KuCoin Futures protocol without sockets: requests in, frames out."""

from __future__ import annotations

import json
from typing import Any

from marketbus.sim.market import SyntheticMarket
from marketbus.sim.protocols.kucoinfutures import (
    BULLET_TOKEN,
    UNKNOWN_TOPIC,
    WS_PATH,
    KucoinFuturesVenue,
)
from marketbus.sim.venue import RestRequest, RestResponse, WsSession

T0 = 1_699_999_980_000  # a minute boundary
SYMBOL = "BTC/USDT:USDT"


def _venue(*, unit_contracts: bool = False) -> KucoinFuturesVenue:
    market = SyntheticMarket(
        [SYMBOL, "ETH/USDT:USDT", "BTC/USDT"], seed=3, start_ms=T0, unit_contracts=unit_contracts
    )
    return KucoinFuturesVenue(market, lambda: T0)


def _session(venue: KucoinFuturesVenue) -> WsSession:
    session = venue.open_session(WS_PATH, {"token": BULLET_TOKEN, "connectId": "c1"})
    assert session is not None
    return session


def _send(session: WsSession, request: Any, accept: bool = True) -> list[Any]:
    return [json.loads(f) for f in session.received(json.dumps(request), T0, accept=accept)]


def _subscribe(session: WsSession, topic: str, accept: bool = True) -> list[Any]:
    request = {"id": "7", "type": "subscribe", "topic": topic, "response": True}
    return _send(session, request, accept)


def _rest(venue: KucoinFuturesVenue, path: str, **params: str) -> RestResponse:
    [route] = [r for r in venue.rest_routes() if r.path == f"/kucoinfutures{path}"]
    return route.handler(RestRequest(params, "ws://127.0.0.1:9"))


def _pushes(session: WsSession, venue: KucoinFuturesVenue, now: int) -> list[Any]:
    events = venue.market.step(SYMBOL, now)
    return [json.loads(f) for e in events for f in session.render(e)]


def test_bullet_hands_out_the_endpoint_the_client_addressed_and_only_its_token_opens() -> None:
    venue = _venue()
    body = _rest(venue, "/api/v1/bullet-public").body
    [server] = body["data"]["instanceServers"]
    assert server["endpoint"] == f"ws://127.0.0.1:9{WS_PATH}"
    assert body["data"]["token"] == BULLET_TOKEN and server["pingInterval"] > 0
    assert venue.open_session(WS_PATH, {"token": "stolen"}) is None
    assert venue.open_session("/kucoinfutures/other", {"token": BULLET_TOKEN}) is None


def test_welcome_ping_ack_and_refusals() -> None:
    session = _session(_venue())
    assert [json.loads(f) for f in session.opened(T0)] == [{"id": "c1", "type": "welcome"}]
    [pong] = _send(session, {"id": "9", "type": "ping"})
    assert (pong["id"], pong["type"]) == ("9", "pong")
    assert _subscribe(session, "/contractMarket/limitCandle:XBTUSDTM_1min") == [
        {"id": "7", "type": "ack"}
    ]
    for topic in (
        "/contractMarket/limitCandle:XBTUSDTM",  # candles need a period
        "/contractMarket/execution:XBTUSDTM_1min",  # trades must not have one
        "/contractMarket/execution:BTC-USDT",  # spot id
        "/contractMarket/level3:XBTUSDTM",
    ):
        [error] = _subscribe(session, topic)
        assert (error["type"], error["code"]) == ("error", UNKNOWN_TOPIC)
    [refused] = _subscribe(session, "/contractMarket/ticker:XBTUSDTM", accept=False)
    assert refused["type"] == "error"
    assert session.topics == {"/contractMarket/limitCandle:XBTUSDTM_1min"}


def test_comma_separated_topics_subscribe_each_market() -> None:
    session = _session(_venue())
    _subscribe(session, "/contractMarket/execution:XBTUSDTM,ETHUSDTM")
    assert session.topics == {
        "/contractMarket/execution:XBTUSDTM",
        "/contractMarket/execution:ETHUSDTM",
    }
    request = {"id": "8", "type": "unsubscribe", "topic": "/contractMarket/execution:ETHUSDTM"}
    _send(session, request)
    assert session.topics == {"/contractMarket/execution:XBTUSDTM"}


def test_candles_are_seconds_open_close_high_low_volume() -> None:
    venue = _venue(unit_contracts=True)
    session = _session(venue)
    _subscribe(session, "/contractMarket/limitCandle:XBTUSDTM_1min")
    [push] = _pushes(session, venue, T0 + 5)
    candle = venue.market.candles(SYMBOL, "1m")[-1]
    assert push["subject"] == "candle.stick"
    assert push["data"]["candles"] == [
        str(T0 // 1000),
        f"{candle.open:.2f}",
        f"{candle.close:.2f}",
        f"{candle.high:.2f}",
        f"{candle.low:.2f}",
        f"{candle.volume:.4f}",
        f"{candle.volume:.4f}",
    ]


def test_level2_changes_continue_the_rest_snapshot_sequence_and_rebuild_the_book() -> None:
    venue = _venue(unit_contracts=True)
    session = _session(venue)
    _subscribe(session, "/contractMarket/level2:XBTUSDTM")
    snapshot = _rest(venue, "/api/v1/level2/snapshot", symbol="XBTUSDTM").body["data"]
    sides = {"buy": dict(snapshot["bids"]), "sell": dict(snapshot["asks"])}
    sequence = snapshot["sequence"]
    for i in range(1, 200):
        for push in _pushes(session, venue, T0 + i):
            assert push["subject"] == "level2"
            assert push["data"]["sequence"] == sequence + 1
            sequence = push["data"]["sequence"]
            price, side, size = push["data"]["change"].split(",")
            if float(size):
                sides[side][float(price)] = float(size)
            else:
                sides[side].pop(float(price), None)
    book = venue.market.book(SYMBOL)
    assert sequence == book.update_id
    assert sorted(sides["buy"].items(), reverse=True) == list(book.bids)
    assert sorted(sides["sell"].items()) == list(book.asks)


def test_trades_and_tickers_carry_nanosecond_times() -> None:
    venue = _venue(unit_contracts=True)
    session = _session(venue)
    _subscribe(session, "/contractMarket/execution:XBTUSDTM")
    _subscribe(session, "/contractMarket/ticker:XBTUSDTM")
    trade_push, ticker_push = _pushes(session, venue, T0 + 3)
    trade = venue.market.trades(SYMBOL)[-1]
    assert trade_push["data"]["tradeId"] == str(trade.id)
    assert trade_push["data"]["ts"] == (T0 + 3) * 1_000_000
    assert (trade_push["data"]["side"], trade_push["data"]["size"]) == (trade.side, trade.amount)
    assert ticker_push["subject"] == "ticker"
    assert ticker_push["data"]["price"] == f"{trade.price:.2f}"


def test_contracts_list_only_swaps_and_klines_window_by_from_and_to() -> None:
    venue = _venue(unit_contracts=True)
    contracts = _rest(venue, "/api/v1/contracts/active").body["data"]
    assert [c["symbol"] for c in contracts] == ["XBTUSDTM", "ETHUSDTM"]
    assert contracts[0]["baseCurrency"] == "XBT" and contracts[0]["multiplier"] == 1
    venue.market.advance(T0 + 10 * 60_000)
    rows = _rest(
        venue,
        "/api/v1/kline/query",
        symbol="XBTUSDTM",
        granularity="1",
        **{"from": str(T0 + 60_000), "to": str(T0 + 3 * 60_000)},
    ).body["data"]
    assert [r[0] for r in rows] == [T0 + 60_000, T0 + 120_000, T0 + 180_000]
    bad = _rest(venue, "/api/v1/kline/query", symbol="XBTUSDTM", granularity="7")
    assert bad.body["code"] != "200000"
