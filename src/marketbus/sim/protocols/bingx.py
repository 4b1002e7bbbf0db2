"""BingX spot and USDT-M perpetual swaps: REST markets and klines, gzipped websockets.

Paths (under `/bingx`): REST root `/openApi`, with spot `/spot/v1/common/symbols` and
`/spot/v1/market/kline`, swap `/swap/v2/quote/contracts`, `/swap/v3/quote/klines` and
`/swap/v2/server/time`, coin-margined `/cswap/v1/market/contracts` (empty: ccxt's
`load_markets` always asks). Websockets `/bingx/market` (spot) and `/bingx/swap-market`
(swap): ccxt tells them apart by `swap` in the URL.

Every server frame is gzip-compressed binary. Subscribe with
`{"id", "dataType": "BTC-USDT@kline_1min"}` (swap adds `"reqType": "sub"` and names
intervals `1m`), acked with `{"id", "code": 0, ...}`. Streams `<id>@kline_<interval>`,
`<id>@trade`, `<id>@ticker` and `<id>@depth<level>[@<ms>ms]`; depth pushes are whole
snapshots of the top `level` levels (asks listed highest first, as BingX does), so
there is no REST snapshot and no sequence to check. The server pings every
`PING_INTERVAL_MS` of the simulator's clock: swap sends `Ping` (ccxt answers `Pong`),
spot sends `{"ping": id, "time": ..}` (ccxt answers `{"pong": id, "time": ..}`).

Swap trade pushes carry no trade id, as on BingX: ccxt's trades then have `id` None.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

from marketbus.sim.instruments import Instrument, InstrumentKind
from marketbus.sim.market import (
    BookEvent,
    BookSnapshot,
    Candle,
    CandleEvent,
    MarketEvent,
    SyntheticMarket,
    Ticker,
    TickerEvent,
    Trade,
    TradeEvent,
)
from marketbus.sim.venue import (
    Clock,
    Frame,
    Json,
    ListingVenue,
    RestHandler,
    RestRequest,
    RestResponse,
    RestRoute,
    WsSession,
    compact_json,
    optional_int,
    select_klines,
)

EXCHANGE_ID = "bingx"
SPOT_WS_PATH = f"/{EXCHANGE_ID}/market"
SWAP_WS_PATH = f"/{EXCHANGE_ID}/swap-market"
PING_INTERVAL_MS = 5_000
DEPTH_LEVELS = (5, 10, 20, 50, 100)
DEPTH_INTERVALS = ("100ms", "200ms", "500ms", "1000ms")
UNSUPPORTED_DATA_TYPE = 80015
"""BingX's reply code to an unknown `dataType`. ccxt maps no exception to it and ignores
the reply: the watch waits forever."""
REFUSED = 100400
"""The code of the refusal that `Faults.refuse_subscriptions` sends. ccxt maps it to
BadRequest and rejects every pending watch on that connection, not only this one."""
_MAX_KLINES = 1440
_SPOT_INTERVALS = {
    "1m": "1min",
    "5m": "5min",
    "15m": "15min",
    "30m": "30min",
    "1h": "60min",
    "1d": "1day",
}
_SWAP_INTERVALS = ("1m", "3m", "5m", "15m", "30m", "1h", "2h", "4h", "6h", "8h", "12h", "1d")
_REST_INTERVALS = (*_SWAP_INTERVALS, "3d", "1w")
_UTC8 = timezone(timedelta(hours=8))


def market_id(inst: Instrument) -> str:
    """Spot and swap share ids (`BTC-USDT`): the connection or endpoint tells them apart."""
    return f"{inst.base}-{inst.quote}"


def gzipped(value: Json) -> bytes:
    """A websocket frame as BingX sends it (`mtime` fixed: equal payloads, equal bytes)."""
    text = value if isinstance(value, str) else compact_json(value)
    return gzip.compress(text.encode(), mtime=0)


def _ok(data: Json, now_ms: int) -> RestResponse:
    return RestResponse(200, {"code": 0, "msg": "", "timestamp": now_ms, "data": data})


def _error(code: int, msg: str, now_ms: int) -> RestResponse:
    return RestResponse(200, {"code": code, "msg": msg, "timestamp": now_ms, "data": {}})


# -- REST bodies --------------------------------------------------------------------


def spot_symbol_info(inst: Instrument) -> dict[str, Any]:
    return {
        "symbol": market_id(inst),
        "minQty": inst.lot_size,
        "maxQty": 1_000_000,
        "minNotional": 5,
        "maxNotional": 20_000_000,
        "status": 1,
        "tickSize": inst.tick_size,
        "stepSize": inst.lot_size,
        "apiStateSell": True,
        "apiStateBuy": True,
        "timeOnline": 0,
        "offTime": 0,
        "maintainTime": 0,
    }


def swap_contract_info(inst: Instrument, contract_id: int) -> dict[str, Any]:
    lot = inst.amount_str(inst.lot_size)
    return {
        "contractId": str(contract_id),
        "symbol": market_id(inst),
        "size": lot,
        "quantityPrecision": inst.amount_decimals,
        "pricePrecision": inst.price_decimals,
        "feeRate": "0.0005",
        "makerFeeRate": "0.0002",
        "takerFeeRate": "0.0005",
        "tradeMinLimit": 0,
        "tradeMinQuantity": float(lot),
        "tradeMinUSDT": 2,
        "maxLongLeverage": 125,
        "maxShortLeverage": 125,
        "currency": inst.settle,
        "asset": inst.base,
        "status": 1,
        "apiStateOpen": "true",
        "apiStateClose": "true",
        "ensureTrigger": True,
        "triggerFeeRate": "0.00020000",
        "brokerState": True,
        "launchTime": 1_586_275_200_000,
        "maintainTime": 0,
        "offTime": 0,
    }


def spot_kline_row(candle: Candle) -> list[Any]:
    """`[open time, o, h, l, c, volume, close time, quote volume]` as numbers."""
    return [
        candle.ts_ms,
        candle.open,
        candle.high,
        candle.low,
        candle.close,
        candle.volume,
        candle.close_ms,
        candle.quote_volume,
    ]


def swap_kline_row(inst: Instrument, candle: Candle) -> dict[str, Any]:
    return {
        "open": inst.price_str(candle.open),
        "close": inst.price_str(candle.close),
        "high": inst.price_str(candle.high),
        "low": inst.price_str(candle.low),
        "volume": inst.amount_str(candle.volume),
        "time": candle.ts_ms,
    }


# -- websocket payloads -----------------------------------------------------------------


def spot_kline_push(inst: Instrument, candle: Candle, interval: str, event_ms: int) -> Json:
    mid = market_id(inst)
    return {
        "code": 0,
        "data": {
            "E": event_ms,
            "K": {
                "T": candle.close_ms,
                "c": inst.price_str(candle.close),
                "h": inst.price_str(candle.high),
                "i": interval,
                "l": inst.price_str(candle.low),
                "n": candle.trades,
                "o": inst.price_str(candle.open),
                "q": inst.notional_str(candle.quote_volume),
                "s": mid,
                "t": candle.ts_ms,
                "v": inst.amount_str(candle.volume),
            },
            "e": "kline",
            "s": mid,
        },
        "dataType": f"{mid}@kline_{interval}",
        "success": True,
    }


def swap_kline_push(inst: Instrument, candle: Candle) -> Json:
    """Swap klines: `T` is the candle's open time (ccxt reads it so)."""
    mid = market_id(inst)
    row = {
        "c": inst.price_str(candle.close),
        "o": inst.price_str(candle.open),
        "h": inst.price_str(candle.high),
        "l": inst.price_str(candle.low),
        "v": inst.amount_str(candle.volume),
        "T": candle.ts_ms,
    }
    return {"code": 0, "dataType": f"{mid}@kline_{candle.timeframe}", "s": mid, "data": [row]}


def trade_push(inst: Instrument, trade: Trade, swap: bool) -> Json:
    """`m` is true when the buyer is the maker, i.e. the taker sold."""
    mid = market_id(inst)
    price, amount = inst.price_str(trade.price), inst.amount_str(trade.amount)
    maker_buys = trade.side == "sell"
    if swap:
        row = {"q": amount, "p": price, "T": trade.ts_ms, "m": maker_buys, "s": mid}
        return {"code": 0, "dataType": f"{mid}@trade", "data": [row]}
    data = {
        "E": trade.ts_ms,
        "T": trade.ts_ms,
        "e": "trade",
        "m": maker_buys,
        "p": price,
        "q": amount,
        "s": mid,
        "t": str(trade.id),
    }
    return {"code": 0, "data": data, "dataType": f"{mid}@trade", "success": True}


SPOT_RECENT_TRADES_MAX = 100
"""BingX spot ``/openApi/spot/v1/market/trades``: at most the 100 most recent trades."""
SWAP_RECENT_TRADES_MAX = 1000
"""BingX swap ``/openApi/swap/v2/quote/trades``: at most the 1000 most recent trades."""


def recent_trade_row(inst: Instrument, trade: Trade, swap: bool) -> dict[str, Any]:
    """One trade as the recent-trades endpoints list it, with the stream's values."""
    pushed = trade_push(inst, trade, swap)["data"]
    row = pushed[0] if isinstance(pushed, list) else pushed
    price, amount = row["p"], row["q"]
    if swap:
        quote = inst.price_str(float(price) * float(amount))
        return {
            "time": row["T"],
            "isBuyerMaker": row["m"],
            "price": price,
            "qty": amount,
            "quoteQty": quote,
        }
    return {
        "id": int(row["t"]),
        "price": float(price),
        "qty": float(amount),
        "time": row["T"],
        "buyerMaker": row["m"],
    }


def ticker_push(inst: Instrument, ticker: Ticker, swap: bool) -> Json:
    """24 h statistics; swap sends decimal strings, spot sends numbers."""
    mid = market_id(inst)
    change_pct = 100 * ticker.change / ticker.open if ticker.open else 0.0
    if swap:
        data: dict[str, Any] = {
            "e": "24hTicker",
            "E": ticker.ts_ms,
            "s": mid,
            "p": inst.price_str(ticker.change),
            "P": f"{change_pct:.2f}",
            "c": inst.price_str(ticker.last),
            "L": inst.amount_str(ticker.last_size),
            "h": inst.price_str(ticker.high),
            "l": inst.price_str(ticker.low),
            "v": inst.amount_str(ticker.base_volume),
            "q": inst.notional_str(ticker.quote_volume),
            "o": inst.price_str(ticker.open),
            "O": ticker.open_ms,
            "C": ticker.ts_ms,
            "A": inst.price_str(ticker.ask),
            "a": inst.amount_str(ticker.ask_size),
            "B": inst.price_str(ticker.bid),
            "b": inst.amount_str(ticker.bid_size),
        }
        return {"code": 0, "dataType": f"{mid}@ticker", "data": data}
    data = {
        "e": "24hTicker",
        "E": ticker.ts_ms,
        "s": mid,
        "p": round(ticker.change, inst.price_decimals),
        "P": f"{change_pct:.2f}%",
        "o": ticker.open,
        "h": ticker.high,
        "l": ticker.low,
        "c": ticker.last,
        "v": ticker.base_volume,
        "q": ticker.quote_volume,
        "O": ticker.open_ms,
        "C": ticker.ts_ms,
        "A": ticker.ask,
        "a": ticker.ask_size,
        "B": ticker.bid,
        "b": ticker.bid_size,
    }
    return {"code": 0, "timestamp": ticker.ts_ms, "dataType": f"{mid}@ticker", "data": data}


def depth_push(inst: Instrument, book: BookSnapshot, data_type: str, swap: bool) -> Json:
    """The top `level` levels of `book` (`level` from `data_type`), asks highest first."""
    level = int(data_type.split("@")[1].removeprefix("depth"))
    bids = [[inst.price_str(p), inst.amount_str(a)] for p, a in book.bids[:level]]
    asks = [[inst.price_str(p), inst.amount_str(a)] for p, a in reversed(book.asks[:level])]
    if swap:
        return {
            "code": 0,
            "dataType": data_type,
            "ts": book.ts_ms,
            "data": {"bids": bids, "asks": asks},
        }
    data = {"asks": asks, "bids": bids, "lastUpdateId": book.update_id}
    return {
        "code": 0,
        "data": data,
        "dataType": data_type,
        "success": True,
        "timestamp": book.ts_ms,
    }


def ping_time(now_ms: int) -> str:
    """BingX's spot ping time: local time in UTC+8, `2023-10-02T18:51:55.089+0800`."""
    moment = datetime.fromtimestamp(now_ms / 1000, UTC).astimezone(_UTC8)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now_ms % 1000:03d}+0800"


class BingxSession:
    """One BingX market-data connection: spot or swap."""

    def __init__(self, venue: BingxVenue, swap: bool) -> None:
        self._venue = venue
        self._swap = swap
        self._kind: InstrumentKind = "swap" if swap else "spot"
        self._subs: set[str] = set()
        self._pings = 0
        self._next_ping_ms: int | None = None

    @property
    def topics(self) -> frozenset[str]:
        return frozenset(self._subs)

    def opened(self, now_ms: int) -> list[Frame]:
        self._next_ping_ms = now_ms + PING_INTERVAL_MS
        return []

    def received(self, frame: Frame, now_ms: int, *, accept: bool) -> list[Frame]:
        if frame == "Pong":
            return []
        try:
            request = json.loads(frame)
        except ValueError:
            return []
        if not isinstance(request, dict) or "pong" in request:
            return []
        request_id = request.get("id")
        data_type = request.get("dataType")
        req_type = request.get("reqType", "sub")
        if not isinstance(data_type, str) or req_type not in ("sub", "unsub"):
            return [
                self._reply(request_id, UNSUPPORTED_DATA_TYPE, "dataType not supported", now_ms)
            ]
        if req_type == "unsub":
            self._subs.discard(data_type)
            return [self._reply(request_id, 0, "", now_ms)]
        if not accept:
            return [
                self._reply(request_id, REFUSED, "subscription refused by the simulator", now_ms)
            ]
        if data_type not in self._venue.data_types(self._swap):
            return [
                self._reply(request_id, UNSUPPORTED_DATA_TYPE, "dataType not supported", now_ms)
            ]
        self._subs.add(data_type)
        return [self._reply(request_id, 0, "", now_ms)]

    def render(self, event: MarketEvent) -> list[Frame]:
        inst = self._venue.instrument_for(event.symbol, self._kind) if self._subs else None
        if inst is None:
            return []
        mid = market_id(inst)
        match event:
            case CandleEvent(candle=candle, event_ms=event_ms):
                if self._swap:
                    if f"{mid}@kline_{candle.timeframe}" in self._subs:
                        return [gzipped(swap_kline_push(inst, candle))]
                    return []
                interval = _SPOT_INTERVALS.get(candle.timeframe)
                if interval is not None and f"{mid}@kline_{interval}" in self._subs:
                    return [gzipped(spot_kline_push(inst, candle, interval, event_ms))]
            case TradeEvent(trade=trade):
                if f"{mid}@trade" in self._subs:
                    return [gzipped(trade_push(inst, trade, self._swap))]
            case TickerEvent(ticker=ticker):
                if f"{mid}@ticker" in self._subs:
                    return [gzipped(ticker_push(inst, ticker, self._swap))]
            case BookEvent(book=book):
                return [
                    gzipped(depth_push(inst, book, data_type, self._swap))
                    for data_type in sorted(self._subs)
                    if data_type.startswith(f"{mid}@depth")
                ]
        return []

    def heartbeat(self, now_ms: int) -> list[Frame]:
        if self._next_ping_ms is None or now_ms < self._next_ping_ms:
            return []
        self._next_ping_ms = now_ms + PING_INTERVAL_MS
        self._pings += 1
        if self._swap:
            return [gzipped("Ping")]
        return [gzipped({"ping": f"{self._pings:032x}", "time": ping_time(now_ms)})]

    def poison(self, now_ms: int) -> list[Frame]:
        """A kline push, for a subscribed market, whose `dataType` lacks the `_<interval>`
        part: ccxt routes it by `@kline` and its handler raises an IndexError."""
        mid = min(self._subs).partition("@")[0] if self._subs else "BTC-USDT"
        return [gzipped({"code": 0, "dataType": f"{mid}@kline", "s": mid, "data": []})]

    def _reply(self, request_id: object, code: int, msg: str, now_ms: int) -> bytes:
        if self._swap:
            return gzipped(
                {"id": request_id, "code": code, "msg": msg, "dataType": "", "data": None}
            )
        return gzipped(
            {"id": request_id, "code": code, "msg": msg or "SUCCESS", "timestamp": now_ms}
        )


class BingxVenue(ListingVenue):
    """BingX spot (`BTC/USDT`) and USDT-M perpetuals (`BTC/USDT:USDT`), both `BTC-USDT`."""

    exchange_id = EXCHANGE_ID
    market_id = staticmethod(market_id)

    def __init__(self, market: SyntheticMarket, clock: Clock) -> None:
        super().__init__(market, clock)
        self._data_types = {False: self._all_data_types(False), True: self._all_data_types(True)}

    def _all_data_types(self, swap: bool) -> frozenset[str]:
        intervals = (
            [tf for tf in _SWAP_INTERVALS if tf in self.market.timeframes]
            if swap
            else [iv for tf, iv in _SPOT_INTERVALS.items() if tf in self.market.timeframes]
        )
        names: set[str] = set()
        for mid in self.listed("swap" if swap else "spot"):
            names.update((f"{mid}@trade", f"{mid}@ticker"))
            names.update(f"{mid}@kline_{iv}" for iv in intervals)
            names.update(f"{mid}@depth{level}" for level in DEPTH_LEVELS)
            names.update(
                f"{mid}@depth{level}@{ms}" for level in DEPTH_LEVELS for ms in DEPTH_INTERVALS
            )
        return frozenset(names)

    def data_types(self, swap: bool) -> frozenset[str]:
        """Every `dataType` a subscription on a spot or swap connection may name."""
        return self._data_types[swap]

    # -- REST ---------------------------------------------------------------------------

    def rest_routes(self) -> list[RestRoute]:
        root = f"/{EXCHANGE_ID}/openApi"
        return [
            RestRoute("GET", f"{root}/spot/v1/common/symbols", self._spot_symbols),
            RestRoute("GET", f"{root}/swap/v2/quote/contracts", self._swap_contracts),
            RestRoute(
                "GET",
                f"{root}/cswap/v1/market/contracts",
                lambda request: _ok([], self._clock()),
            ),
            RestRoute(
                "GET",
                f"{root}/swap/v2/server/time",
                lambda request: _ok({"serverTime": self._clock()}, self._clock()),
            ),
            RestRoute("GET", f"{root}/spot/v1/market/kline", self._klines_handler(swap=False)),
            RestRoute("GET", f"{root}/swap/v3/quote/klines", self._klines_handler(swap=True)),
            RestRoute("GET", f"{root}/spot/v1/market/trades", self._trades_handler(swap=False)),
            RestRoute("GET", f"{root}/swap/v2/quote/trades", self._trades_handler(swap=True)),
        ]

    def _trades_handler(self, swap: bool) -> RestHandler:
        """Recent trades, newest first: spot ``/market/trades`` (``limit`` at most 100,
        ids as on ``@trade``), swap ``/quote/trades`` (at most 1000, no ids at all, as
        the swap ``@trade`` stream)."""

        def handle(request: RestRequest) -> RestResponse:
            query, now = request.params, self._clock()
            inst = self.instrument_by_id(query.get("symbol", ""), "swap" if swap else "spot")
            if inst is None:
                return _error(109425, "Trading pair does not exist", now)
            most = SWAP_RECENT_TRADES_MAX if swap else SPOT_RECENT_TRADES_MAX
            try:
                limit = min(int(query.get("limit", "100")), most)
            except ValueError:
                return _error(109400, "Invalid parameters", now)
            trades = self.market.trades(inst.symbol)[-limit:] if limit > 0 else []
            return _ok([recent_trade_row(inst, t, swap) for t in reversed(trades)], now)

        return handle

    def _spot_symbols(self, request: RestRequest) -> RestResponse:
        symbols = [spot_symbol_info(i) for i in self.listed("spot").values()]
        return _ok({"symbols": symbols}, self._clock())

    def _swap_contracts(self, request: RestRequest) -> RestResponse:
        swaps = self.listed("swap").values()
        contracts = [swap_contract_info(i, n) for n, i in enumerate(swaps, 100)]
        return _ok(contracts, self._clock())

    def _klines_handler(self, swap: bool) -> RestHandler:
        def handle(request: RestRequest) -> RestResponse:
            query, now = request.params, self._clock()
            inst = self.instrument_by_id(query.get("symbol", ""), "swap" if swap else "spot")
            if inst is None:
                return _error(109425, "Trading pair does not exist", now)
            interval = query.get("interval", "")
            if interval not in _REST_INTERVALS or interval not in self.market.timeframes:
                return _error(109400, "Invalid parameters: interval", now)
            try:
                limit = min(int(query.get("limit", "500")), _MAX_KLINES)
                start = optional_int(query, "startTime")
                end = optional_int(query, "endTime")
            except ValueError:
                return _error(109400, "Invalid parameters", now)
            candles = select_klines(self.market.candles(inst.symbol, interval), start, end, limit)
            if swap:
                return _ok([swap_kline_row(inst, c) for c in candles], now)
            return _ok([spot_kline_row(c) for c in candles], now)

        return handle

    # -- websocket ----------------------------------------------------------------------

    def open_session(self, path: str, query: Mapping[str, str]) -> WsSession | None:
        if path == SPOT_WS_PATH:
            return BingxSession(self, swap=False)
        if path == SWAP_WS_PATH:
            return BingxSession(self, swap=True)
        return None

    def ccxt_options(self, http_base: str, ws_base: str) -> dict[str, Any]:
        rest = f"{http_base}/{EXCHANGE_ID}/openApi"
        return {
            "urls": {
                "api": {
                    "spot": rest,
                    "swap": rest,
                    "cswap": rest,
                    "ws": {
                        "spot": f"{ws_base}{SPOT_WS_PATH}",
                        "linear": f"{ws_base}{SWAP_WS_PATH}",
                    },
                }
            }
        }
