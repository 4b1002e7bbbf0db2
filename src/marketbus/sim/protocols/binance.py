"""Binance spot and USD-M futures: REST market data and websocket market streams.

Paths (all under `/binance`): spot REST `/api/v3/...`, futures REST `/fapi/v1/...`;
websockets `/stream/<n>` (spot, combined payloads `{"stream", "data"}`), `/ws/<n>`
(spot, raw payloads) and `/fws/<category>/ws/<n>` (futures, raw payloads). ccxt tells
spot from futures connections by `/stream` in the URL, so the spot URL given to ccxt
holds it and the futures URL must not.

Subscriptions use `{"method": "SUBSCRIBE", "params": [...], "id": n}` and are acked
with `{"result": null, "id": n}`. Streams: `<id>@kline_<tf>`, `<id>@trade`,
`<id>@aggTrade`, `<id>@depth[@100ms|@1000ms]`, `<id>@ticker`, `<id>@miniTicker`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from marketbus.sim.instruments import Instrument, InstrumentKind
from marketbus.sim.market import (
    BookDelta,
    BookEvent,
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

EXCHANGE_ID = "binance"
_FAR_FUTURE_MS = 4_133_404_800_000  # binance's delivery date of perpetuals
_MAX_KLINES = 1000


def market_id(instrument: Instrument) -> str:
    return f"{instrument.base}{instrument.quote}"


# -- REST bodies ---------------------------------------------------------------


def _filters(inst: Instrument) -> list[dict[str, Any]]:
    return [
        {
            "filterType": "PRICE_FILTER",
            "minPrice": inst.price_str(inst.tick_size),
            "maxPrice": "10000000.00",
            "tickSize": inst.price_str(inst.tick_size),
        },
        {
            "filterType": "LOT_SIZE",
            "minQty": inst.amount_str(inst.lot_size),
            "maxQty": "9000000",
            "stepSize": inst.amount_str(inst.lot_size),
        },
    ]


def spot_symbol_info(inst: Instrument) -> dict[str, Any]:
    return {
        "symbol": market_id(inst),
        "status": "TRADING",
        "baseAsset": inst.base,
        "baseAssetPrecision": 8,
        "quoteAsset": inst.quote,
        "quotePrecision": 8,
        "quoteAssetPrecision": 8,
        "orderTypes": ["LIMIT", "MARKET"],
        "icebergAllowed": False,
        "ocoAllowed": False,
        "isSpotTradingAllowed": True,
        "isMarginTradingAllowed": False,
        "filters": _filters(inst),
        "permissions": ["SPOT"],
    }


def futures_symbol_info(inst: Instrument) -> dict[str, Any]:
    return {
        "symbol": market_id(inst),
        "pair": market_id(inst),
        "contractType": "PERPETUAL",
        "deliveryDate": _FAR_FUTURE_MS,
        "onboardDate": 1_569_398_400_000,
        "status": "TRADING",
        "marginAsset": inst.settle,
        "baseAsset": inst.base,
        "quoteAsset": inst.quote,
        "pricePrecision": inst.price_decimals,
        "quantityPrecision": inst.amount_decimals,
        "baseAssetPrecision": 8,
        "quotePrecision": 8,
        "underlyingType": "COIN",
        "filters": _filters(inst),
        "orderTypes": ["LIMIT", "MARKET"],
        "timeInForce": ["GTC", "IOC", "FOK"],
    }


def exchange_info(instruments: list[Instrument], server_time_ms: int) -> dict[str, Any]:
    """`GET /api/v3/exchangeInfo` or `/fapi/v1/exchangeInfo`: all spot or all swaps."""
    return {
        "timezone": "UTC",
        "serverTime": server_time_ms,
        "rateLimits": [],
        "exchangeFilters": [],
        "symbols": [
            spot_symbol_info(i) if i.kind == "spot" else futures_symbol_info(i) for i in instruments
        ],
    }


def kline_row(inst: Instrument, candle: Candle) -> list[Any]:
    """One row of `GET /klines`."""
    return [
        candle.ts_ms,
        inst.price_str(candle.open),
        inst.price_str(candle.high),
        inst.price_str(candle.low),
        inst.price_str(candle.close),
        inst.amount_str(candle.volume),
        candle.close_ms,
        inst.notional_str(candle.quote_volume),
        candle.trades,
        "0",
        "0",
        "0",
    ]


def depth_body(
    market: SyntheticMarket, inst: Instrument, limit: int, futures: bool, now_ms: int
) -> dict[str, Any]:
    book = market.book(inst.symbol, limit)
    body: dict[str, Any] = {"lastUpdateId": book.update_id}
    if futures:
        body["E"] = now_ms
        body["T"] = book.ts_ms
    body["bids"] = [[inst.price_str(p), inst.amount_str(a)] for p, a in book.bids]
    body["asks"] = [[inst.price_str(p), inst.amount_str(a)] for p, a in book.asks]
    return body


def _error(status: int, code: int, msg: str) -> RestResponse:
    return RestResponse(status, {"code": code, "msg": msg})


# -- websocket payloads ------------------------------------------------------------


def kline_payload(inst: Instrument, candle: Candle, event_ms: int) -> dict[str, Any]:
    mid = market_id(inst)
    return {
        "e": "kline",
        "E": event_ms,
        "s": mid,
        "k": {
            "t": candle.ts_ms,
            "T": candle.close_ms,
            "s": mid,
            "i": candle.timeframe,
            "f": candle.first_trade_id if candle.first_trade_id is not None else -1,
            "L": candle.last_trade_id if candle.last_trade_id is not None else -1,
            "o": inst.price_str(candle.open),
            "c": inst.price_str(candle.close),
            "h": inst.price_str(candle.high),
            "l": inst.price_str(candle.low),
            "v": inst.amount_str(candle.volume),
            "n": candle.trades,
            "x": candle.closed,
            "q": inst.notional_str(candle.quote_volume),
            "V": "0",
            "Q": "0",
            "B": "0",
        },
    }


def trade_payload(inst: Instrument, trade: Trade, futures: bool) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "e": "trade",
        "E": trade.ts_ms,
        "T": trade.ts_ms,
        "s": market_id(inst),
        "t": trade.id,
        "p": inst.price_str(trade.price),
        "q": inst.amount_str(trade.amount),
        "m": trade.side == "sell",  # buyer is the maker when the taker sells
    }
    if futures:
        payload["X"] = "MARKET"
    else:
        payload["M"] = True
    return payload


RECENT_TRADES_MAX = 1000
"""Binance's ``/api/v3/trades`` window: the 1000 most recent trades at most."""


def recent_trade_row(inst: Instrument, trade: Trade, futures: bool) -> dict[str, Any]:
    """One trade as ``/api/v3/trades`` (``/fapi/v1/trades``) lists it: the ``@trade``
    stream's id, price and quantity."""
    pushed = trade_payload(inst, trade, futures)
    row: dict[str, Any] = {
        "id": pushed["t"],
        "price": pushed["p"],
        "qty": pushed["q"],
        "quoteQty": inst.price_str(trade.price * float(pushed["q"])),
        "time": pushed["T"],
        "isBuyerMaker": pushed["m"],
    }
    if not futures:
        row["isBestMatch"] = True
    return row


def agg_trade_payload(inst: Instrument, trade: Trade) -> dict[str, Any]:
    return {
        "e": "aggTrade",
        "E": trade.ts_ms,
        "s": market_id(inst),
        "a": trade.id,
        "p": inst.price_str(trade.price),
        "q": inst.amount_str(trade.amount),
        "f": trade.id,
        "l": trade.id,
        "T": trade.ts_ms,
        "m": trade.side == "sell",
    }


def depth_payload(inst: Instrument, delta: BookDelta, futures: bool) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "e": "depthUpdate",
        "E": delta.ts_ms,
        "s": market_id(inst),
        "U": delta.first_update_id,
        "u": delta.last_update_id,
    }
    if futures:
        payload["T"] = delta.ts_ms
        payload["pu"] = delta.prev_update_id
    payload["b"] = [[inst.price_str(p), inst.amount_str(a)] for p, a in delta.bids]
    payload["a"] = [[inst.price_str(p), inst.amount_str(a)] for p, a in delta.asks]
    return payload


def ticker_payload(inst: Instrument, ticker: Ticker, futures: bool) -> dict[str, Any]:
    change_pct = 100 * ticker.change / ticker.open if ticker.open else 0.0
    payload: dict[str, Any] = {
        "e": "24hrTicker",
        "E": ticker.ts_ms,
        "s": market_id(inst),
        "p": inst.price_str(ticker.change),
        "P": f"{change_pct:.3f}",
        "w": inst.price_str(
            ticker.quote_volume / ticker.base_volume if ticker.base_volume else ticker.last
        ),
        "c": inst.price_str(ticker.last),
        "Q": inst.amount_str(ticker.last_size),
    }
    if not futures:
        payload["x"] = inst.price_str(ticker.open)
        payload["b"] = inst.price_str(ticker.bid)
        payload["B"] = inst.amount_str(ticker.bid_size)
        payload["a"] = inst.price_str(ticker.ask)
        payload["A"] = inst.amount_str(ticker.ask_size)
    payload.update(
        {
            "o": inst.price_str(ticker.open),
            "h": inst.price_str(ticker.high),
            "l": inst.price_str(ticker.low),
            "v": inst.amount_str(ticker.base_volume),
            "q": inst.notional_str(ticker.quote_volume),
            "O": ticker.open_ms,
            "C": ticker.ts_ms,
            "F": ticker.first_trade_id if ticker.first_trade_id is not None else -1,
            "L": ticker.last_trade_id if ticker.last_trade_id is not None else -1,
            "n": ticker.count,
        }
    )
    return payload


def mini_ticker_payload(inst: Instrument, ticker: Ticker) -> dict[str, Any]:
    return {
        "e": "24hrMiniTicker",
        "E": ticker.ts_ms,
        "s": market_id(inst),
        "c": inst.price_str(ticker.last),
        "o": inst.price_str(ticker.open),
        "h": inst.price_str(ticker.high),
        "l": inst.price_str(ticker.low),
        "v": inst.amount_str(ticker.base_volume),
        "q": inst.notional_str(ticker.quote_volume),
    }


def event_streams(
    inst: Instrument, event: MarketEvent, futures: bool
) -> list[tuple[str, dict[str, Any]]]:
    """Every stream name `event` feeds, with its payload."""
    lid = market_id(inst).lower()
    match event:
        case TradeEvent(trade=trade):
            return [
                (f"{lid}@trade", trade_payload(inst, trade, futures)),
                (f"{lid}@aggTrade", agg_trade_payload(inst, trade)),
            ]
        case CandleEvent(candle=candle, event_ms=event_ms):
            return [(f"{lid}@kline_{candle.timeframe}", kline_payload(inst, candle, event_ms))]
        case BookEvent(delta=delta):
            payload = depth_payload(inst, delta, futures)
            return [(f"{lid}@depth{rate}", payload) for rate in ("", "@100ms", "@1000ms", "@0ms")]
        case TickerEvent(ticker=ticker):
            return [
                (f"{lid}@ticker", ticker_payload(inst, ticker, futures)),
                (f"{lid}@miniTicker", mini_ticker_payload(inst, ticker)),
            ]
    return []


class BinanceSession:
    """One binance market-stream connection: spot or futures, raw or combined."""

    def __init__(self, venue: BinanceVenue, futures: bool, combined: bool) -> None:
        self._venue = venue
        self._futures = futures
        self._kind: InstrumentKind = "swap" if futures else "spot"
        self._combined = combined
        self._streams: set[str] = set()

    @property
    def topics(self) -> frozenset[str]:
        return frozenset(self._streams)

    def opened(self, now_ms: int) -> list[Frame]:
        return []

    def received(self, frame: Frame, now_ms: int, *, accept: bool) -> list[Frame]:
        try:
            request = json.loads(frame)
        except ValueError:
            return [compact_json({"error": {"code": 3, "msg": "Invalid JSON"}, "id": None})]
        if not isinstance(request, dict):
            return [compact_json({"error": {"code": 3, "msg": "Invalid request"}, "id": None})]
        request_id = request.get("id")
        method = request.get("method")
        params = request.get("params", [])
        if method == "LIST_SUBSCRIPTIONS":
            return [compact_json({"result": sorted(self._streams), "id": request_id})]
        if method not in ("SUBSCRIBE", "UNSUBSCRIBE") or not isinstance(params, list):
            return [
                compact_json(
                    {
                        "error": {"code": 2, "msg": "Invalid request: unknown method"},
                        "id": request_id,
                    }
                )
            ]
        if not accept:
            return [
                compact_json(
                    {
                        "error": {"code": 2, "msg": "Invalid request: subscription refused"},
                        "id": request_id,
                    }
                )
            ]
        if method == "UNSUBSCRIBE":
            self._streams.difference_update(str(p) for p in params)
            return [compact_json({"result": None, "id": request_id})]
        valid = self._venue.stream_names(self._kind)
        unknown = [p for p in params if p not in valid]
        if unknown:
            return [
                compact_json(
                    {
                        "error": {
                            "code": 2,
                            "msg": f"Invalid request: invalid stream {unknown[0]}",
                        },
                        "id": request_id,
                    }
                )
            ]
        self._streams.update(params)
        return [compact_json({"result": None, "id": request_id})]

    def render(self, event: MarketEvent) -> list[Frame]:
        inst = self._venue.instrument_for(event.symbol, self._kind)
        if inst is None or not self._streams:
            return []
        return [
            self._wrap(name, payload)
            for name, payload in event_streams(inst, event, self._futures)
            if name in self._streams
        ]

    def heartbeat(self, now_ms: int) -> list[Frame]:
        return []

    def poison(self, now_ms: int) -> list[Frame]:
        """A kline with an interval ccxt does not know: its handler raises a TypeError."""
        for name in sorted(self._streams):
            if "@kline_" in name:
                lid = name.split("@", 1)[0]
                inst = self._venue.instrument_by_id(lid.upper(), self._kind)
                if inst is not None:
                    candle = self._venue.market.candles(
                        inst.symbol, self._venue.market.timeframes[0]
                    )[-1]
                    payload = kline_payload(inst, candle, now_ms)
                    payload["k"]["i"] = "7x"
                    return [self._wrap(name, payload)]
        return [self._wrap("poison", {"e": "kline", "E": now_ms, "s": "NOSUCH", "k": {"i": "7x"}})]

    def _wrap(self, stream: str, payload: dict[str, Any]) -> str:
        return compact_json({"stream": stream, "data": payload} if self._combined else payload)


class BinanceVenue(ListingVenue):
    """Binance spot (`BASE/QUOTE`) and USD-M perpetuals (`BASE/QUOTE:QUOTE`)."""

    exchange_id = EXCHANGE_ID
    market_id = staticmethod(market_id)

    def __init__(self, market: SyntheticMarket, clock: Clock) -> None:
        super().__init__(market, clock)
        self._stream_names = {kind: self._all_streams(kind) for kind in self.lists}

    def _all_streams(self, kind: InstrumentKind) -> frozenset[str]:
        names: set[str] = set()
        for mid in self.listed(kind):
            lid = mid.lower()
            names.update(f"{lid}@{s}" for s in ("trade", "aggTrade", "ticker", "miniTicker"))
            names.update(f"{lid}@depth{r}" for r in ("", "@100ms", "@1000ms", "@0ms"))
            names.update(f"{lid}@kline_{tf}" for tf in self.market.timeframes)
        return frozenset(names)

    def stream_names(self, kind: InstrumentKind) -> frozenset[str]:
        """Every stream a subscription on a spot or futures connection may name."""
        return self._stream_names[kind]

    # -- REST ----------------------------------------------------------------------

    def rest_routes(self) -> list[RestRoute]:
        routes: list[RestRoute] = []
        for prefix, futures in (("/binance/api/v3", False), ("/binance/fapi/v1", True)):
            routes += [
                RestRoute("GET", f"{prefix}/ping", lambda request: RestResponse(200, {})),
                RestRoute(
                    "GET",
                    f"{prefix}/time",
                    lambda request: RestResponse(200, {"serverTime": self._clock()}),
                ),
                RestRoute("GET", f"{prefix}/exchangeInfo", self._exchange_info_handler(futures)),
                RestRoute("GET", f"{prefix}/klines", self._klines_handler(futures)),
                RestRoute("GET", f"{prefix}/depth", self._depth_handler(futures)),
            ]
        return routes + self._trade_routes()

    def _lookup(self, query: Mapping[str, str], futures: bool) -> Instrument | None:
        return self.instrument_by_id(query.get("symbol", ""), "swap" if futures else "spot")

    def _exchange_info_handler(self, futures: bool) -> RestHandler:
        def handle(request: RestRequest) -> RestResponse:
            instruments = list(self.listed("swap" if futures else "spot").values())
            return RestResponse(200, exchange_info(instruments, self._clock()))

        return handle

    def _klines_handler(self, futures: bool) -> RestHandler:
        def handle(request: RestRequest) -> RestResponse:
            query = request.params
            inst = self._lookup(query, futures)
            if inst is None:
                return _error(400, -1121, "Invalid symbol.")
            interval = query.get("interval", "")
            if interval not in self.market.timeframes:
                return _error(400, -1120, "Invalid interval.")
            try:
                limit = min(int(query.get("limit", "500")), _MAX_KLINES)
                start = optional_int(query, "startTime")
                end = optional_int(query, "endTime")
            except ValueError:
                return _error(400, -1100, "Illegal characters found in a parameter.")
            candles = select_klines(self.market.candles(inst.symbol, interval), start, end, limit)
            return RestResponse(200, [kline_row(inst, c) for c in candles])

        return handle

    def _depth_handler(self, futures: bool) -> RestHandler:
        def handle(request: RestRequest) -> RestResponse:
            query = request.params
            inst = self._lookup(query, futures)
            if inst is None:
                return _error(400, -1121, "Invalid symbol.")
            try:
                limit = int(query.get("limit", "100"))
            except ValueError:
                return _error(400, -1100, "Illegal characters found in a parameter.")
            return RestResponse(200, depth_body(self.market, inst, limit, futures, self._clock()))

        return handle

    # -- REST: recent trades ---------------------------------------------------------

    def _trade_routes(self) -> list[RestRoute]:
        """``GET /api/v3/trades`` and ``/fapi/v1/trades``: the most recent trades (``limit``
        default 500, at most `RECENT_TRADES_MAX`), oldest first, with the ids of the
        ``@trade`` stream. No start time: older trades are only in ``historicalTrades``
        and ``aggTrades``, whose ids are aggregate ids (not served here)."""
        return [
            RestRoute("GET", "/binance/api/v3/trades", self._recent_trades_handler(False)),
            RestRoute("GET", "/binance/fapi/v1/trades", self._recent_trades_handler(True)),
        ]

    def _recent_trades_handler(self, futures: bool) -> RestHandler:
        def handle(request: RestRequest) -> RestResponse:
            query = request.params
            inst = self._lookup(query, futures)
            if inst is None:
                return _error(400, -1121, "Invalid symbol.")
            try:
                limit = min(int(query.get("limit", "500")), RECENT_TRADES_MAX)
            except ValueError:
                return _error(400, -1100, "Illegal characters found in a parameter.")
            trades = self.market.trades(inst.symbol)[-limit:] if limit > 0 else []
            return RestResponse(200, [recent_trade_row(inst, t, futures) for t in trades])

        return handle

    # -- websocket -----------------------------------------------------------------

    def open_session(self, path: str, query: Mapping[str, str]) -> WsSession | None:
        parts = path.strip("/").split("/")
        if len(parts) < 2 or parts[0] != "binance":
            return None
        if parts[1] == "stream":
            return BinanceSession(self, futures=False, combined=True)
        if parts[1] == "ws":
            return BinanceSession(self, futures=False, combined=False)
        if parts[1] == "fws":
            return BinanceSession(self, futures=True, combined=False)
        return None

    def ccxt_options(self, http_base: str, ws_base: str) -> dict[str, Any]:
        spot_rest = f"{http_base}/binance/api/v3"
        futures_rest = f"{http_base}/binance/fapi/v1"
        listed = {"spot": self.listed("spot"), "linear": self.listed("swap")}
        types = [t for t, ids in listed.items() if ids] or ["spot"]
        return {
            "urls": {
                "api": {
                    "public": spot_rest,
                    "private": spot_rest,
                    "v1": f"{http_base}/binance/api/v1",
                    "fapiPublic": futures_rest,
                    "fapiPrivate": futures_rest,
                    "ws": {
                        "spot": f"{ws_base}/binance/stream",
                        "margin": f"{ws_base}/binance/stream",
                        "linear": f"{ws_base}/binance/fws/ws",
                    },
                }
            },
            "options": {"fetchMarkets": {"types": types}, "fetchCurrencies": False},
        }
