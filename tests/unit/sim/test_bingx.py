"""The BingX protocol without sockets: requests in, gzipped frames out."""

from __future__ import annotations

import gzip
import json
from typing import Any

from marketbus.sim.market import SyntheticMarket
from marketbus.sim.protocols.bingx import (
    PING_INTERVAL_MS,
    REFUSED,
    SPOT_WS_PATH,
    SWAP_WS_PATH,
    UNSUPPORTED_DATA_TYPE,
    BingxVenue,
    ping_time,
)
from marketbus.sim.venue import Frame, RestRequest, RestResponse, WsSession

T0 = 1_699_999_980_000  # a minute boundary
SPOT, SWAP = "BTC/USDT", "BTC/USDT:USDT"


def _venue() -> BingxVenue:
    return BingxVenue(SyntheticMarket([SPOT, SWAP], seed=3, start_ms=T0), lambda: T0)


def _session(venue: BingxVenue, swap: bool) -> WsSession:
    session = venue.open_session(SWAP_WS_PATH if swap else SPOT_WS_PATH, {})
    assert session is not None
    return session


def _decode(frame: Frame) -> Any:
    assert isinstance(frame, bytes), "bingx sends every frame gzipped"
    text = gzip.decompress(frame).decode()
    return text if text == "Ping" else json.loads(text)


def _send(session: WsSession, request: Any, accept: bool = True) -> list[Any]:
    return [_decode(f) for f in session.received(json.dumps(request), T0, accept=accept)]


def _pushes(session: WsSession, venue: BingxVenue, symbol: str, now: int) -> list[Any]:
    return [_decode(f) for e in venue.market.step(symbol, now) for f in session.render(e)]


def _rest(venue: BingxVenue, path: str, **params: str) -> RestResponse:
    [route] = [r for r in venue.rest_routes() if r.path == f"/bingx/openApi{path}"]
    return route.handler(RestRequest(params, "ws://127.0.0.1:9"))


def test_subscriptions_are_acked_refused_and_dropped_in_each_dialect() -> None:
    venue = _venue()
    spot, swap = _session(venue, swap=False), _session(venue, swap=True)
    [ack] = _send(spot, {"id": "a", "dataType": "BTC-USDT@kline_1min"})
    assert (ack["id"], ack["code"], ack["msg"]) == ("a", 0, "SUCCESS")
    [ack] = _send(swap, {"id": "b", "reqType": "sub", "dataType": "BTC-USDT@kline_1m"})
    assert ack == {"id": "b", "code": 0, "msg": "", "dataType": "", "data": None}
    [unknown] = _send(swap, {"id": "c", "reqType": "sub", "dataType": "BTC-USDT@kline_1min"})
    assert unknown["code"] == UNSUPPORTED_DATA_TYPE
    [refused] = _send(swap, {"id": "d", "reqType": "sub", "dataType": "BTC-USDT@trade"}, False)
    assert refused["code"] == REFUSED
    assert swap.topics == {"BTC-USDT@kline_1m"}
    _send(swap, {"id": "e", "reqType": "unsub", "dataType": "BTC-USDT@kline_1m"})
    assert swap.topics == frozenset()


def test_server_pings_every_interval_and_ignores_the_answers() -> None:
    venue = _venue()
    spot, swap = _session(venue, swap=False), _session(venue, swap=True)
    for session in (spot, swap):
        session.opened(T0)
        assert session.heartbeat(T0 + PING_INTERVAL_MS - 1) == []
    assert [_decode(f) for f in swap.heartbeat(T0 + PING_INTERVAL_MS)] == ["Ping"]
    [ping] = [_decode(f) for f in spot.heartbeat(T0 + PING_INTERVAL_MS)]
    assert ping["time"] == ping_time(T0 + PING_INTERVAL_MS)
    assert spot.heartbeat(T0 + PING_INTERVAL_MS + 1) == []
    assert swap.received("Pong", T0, accept=True) == []
    assert (
        spot.received(json.dumps({"pong": ping["ping"], "time": ping["time"]}), T0, accept=True)
        == []
    )


def test_ping_time_is_utc_plus_8() -> None:
    assert ping_time(1_696_243_915_089) == "2023-10-02T18:51:55.089+0800"


def test_swap_trades_have_no_id_and_spot_trades_do() -> None:
    venue = _venue()
    spot, swap = _session(venue, swap=False), _session(venue, swap=True)
    _send(spot, {"id": "a", "dataType": "BTC-USDT@trade"})
    _send(swap, {"id": "b", "reqType": "sub", "dataType": "BTC-USDT@trade"})
    [spot_push] = _pushes(spot, venue, SPOT, T0 + 1)
    [swap_push] = _pushes(swap, venue, SWAP, T0 + 1)
    spot_trade = venue.market.trades(SPOT)[-1]
    assert spot_push["data"]["t"] == str(spot_trade.id)
    assert spot_push["data"]["m"] == (spot_trade.side == "sell")
    [row] = swap_push["data"]
    assert "t" not in row and row["T"] == T0 + 1


def test_klines_carry_the_open_time_where_ccxt_reads_it() -> None:
    venue = _venue()
    spot, swap = _session(venue, swap=False), _session(venue, swap=True)
    _send(spot, {"id": "a", "dataType": "BTC-USDT@kline_1min"})
    _send(swap, {"id": "b", "reqType": "sub", "dataType": "BTC-USDT@kline_1m"})
    [spot_push] = _pushes(spot, venue, SPOT, T0 + 1)
    [swap_push] = _pushes(swap, venue, SWAP, T0 + 1)
    assert (spot_push["data"]["K"]["t"], spot_push["data"]["K"]["T"]) == (T0, T0 + 59_999)
    assert swap_push["data"][0]["T"] == T0


def test_depth_is_a_snapshot_of_the_subscribed_level_asks_highest_first() -> None:
    venue = _venue()
    session = _session(venue, swap=True)
    _send(session, {"id": "a", "reqType": "sub", "dataType": "BTC-USDT@depth5@500ms"})
    [push] = _pushes(session, venue, SWAP, T0 + 1)
    book = venue.market.book(SWAP, 5)
    assert push["dataType"] == "BTC-USDT@depth5@500ms"
    assert [float(p) for p, _ in push["data"]["bids"]] == [p for p, _ in book.bids]
    assert [float(p) for p, _ in push["data"]["asks"]] == [p for p, _ in reversed(book.asks)]


def test_markets_and_kline_windows() -> None:
    venue = _venue()
    [spot] = _rest(venue, "/spot/v1/common/symbols").body["data"]["symbols"]
    [swap] = _rest(venue, "/swap/v2/quote/contracts").body["data"]
    assert spot["symbol"] == swap["symbol"] == "BTC-USDT"
    assert "currency" not in spot and swap["currency"] == "USDT"
    assert _rest(venue, "/cswap/v1/market/contracts").body["data"] == []
    venue.market.advance(T0 + 10 * 60_000)
    since = dict(symbol="BTC-USDT", interval="1m", startTime=str(T0 + 60_000 - 1), limit="2")
    rows = _rest(venue, "/spot/v1/market/kline", **since).body["data"]
    assert [r[0] for r in rows] == [T0 + 60_000, T0 + 120_000]
    latest = _rest(venue, "/swap/v3/quote/klines", symbol="BTC-USDT", interval="1m", limit="2")
    assert [r["time"] for r in latest.body["data"]] == [T0 + 9 * 60_000, T0 + 10 * 60_000]
