"""KuCoin Futures: REST contracts, klines and book snapshots; the bullet-token websocket.

Paths (under `/kucoinfutures`): futures REST `/api/v1/contracts/active`,
`/api/v1/kline/query`, `/api/v1/level2/snapshot`, `/api/v1/timestamp` and
`POST /api/v1/bullet-public`, which hands out a token and the websocket endpoint
`/kucoinfutures/ws/endpoint` (dialled as `endpoint?token=..&connectId=..`). ccxt's
`load_markets` also asks the *spot* API for currencies: `/kucoinfutures/spot/api/v3/currencies`.

Websocket: a `welcome` on connect; `{"id", "type": "subscribe", "topic", "response": true}`
is acked with `{"id", "type": "ack"}`; `{"type": "ping"}` gets `{"type": "pong"}`.
Topics `/contractMarket/limitCandle:<id>_<period>`, `/contractMarket/ticker:<ids>`,
`/contractMarket/tickerV2:<ids>`, `/contractMarket/execution:<ids>` and
`/contractMarket/level2:<ids>` (`<ids>` comma-separated). `level2` pushes one level
change per message, `"change": "price,side,size"`, numbered by a `sequence` that the REST
snapshot continues: ccxt buffers deltas, fetches the snapshot, and replays the deltas
that follow it.

Contracts are linear USDT perpetuals sized as KuCoin sizes them (`XBTUSDTM` multiplier
0.001 BTC, `sim.contracts`) and traded in whole contracts: trade sizes, ticker sizes,
book sizes (WS and REST) and candle volumes (WS and REST) are whole contracts, as on
the real venue, and ccxt passes them on unconverted. Market ids follow KuCoin:
`XBTUSDTM` for BTC, `ETHUSDTM`...
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, ClassVar

from marketbus.shared.names import timeframe_ms
from marketbus.sim.instruments import Instrument, InstrumentKind
from marketbus.sim.market import (
    BookDelta,
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
    RestRequest,
    RestResponse,
    RestRoute,
    WsSession,
    compact_json,
    optional_int,
    select_klines,
)

EXCHANGE_ID = "kucoinfutures"
WS_PATH = f"/{EXCHANGE_ID}/ws/endpoint"
BULLET_TOKEN = "sim-bullet-public"
PING_INTERVAL_MS = 18_000
UNKNOWN_TOPIC = 404
REFUSED = 400
"""The code of the refusal `Faults.refuse_subscriptions` sends. Whatever the code, ccxt's
error handler raises inside its receive loop: the watch is never rejected, it stalls."""
_OK = "200000"
_MAX_KLINES = 500
_NS_PER_MS = 1_000_000
_PERIODS = {
    "1m": "1min",
    "3m": "3min",
    "5m": "5min",
    "15m": "15min",
    "30m": "30min",
    "1h": "1hour",
    "2h": "2hour",
    "4h": "4hour",
    "8h": "8hour",
    "12h": "12hour",
    "1d": "1day",
    "1w": "1week",
}
_CANDLES = "/contractMarket/limitCandle"
_TICKER = "/contractMarket/ticker"
_TICKER_V2 = "/contractMarket/tickerV2"
_EXECUTION = "/contractMarket/execution"
_LEVEL2 = "/contractMarket/level2"
_CHANNELS = (_CANDLES, _TICKER, _TICKER_V2, _EXECUTION, _LEVEL2)


def currency_id(code: str) -> str:
    """KuCoin Futures calls bitcoin XBT."""
    return "XBT" if code == "BTC" else code


def market_id(inst: Instrument) -> str:
    return f"{currency_id(inst.base)}{inst.quote}M"


def size_str(inst: Instrument, amount: float) -> str:
    """A base amount in KuCoin's contracts (whole numbers), as a decimal string."""
    return inst.contract(EXCHANGE_ID).contracts(inst.amount_str(amount))


def size_num(inst: Instrument, amount: float) -> int | float:
    """A base amount in contracts as the JSON number KuCoin sends (an int when whole)."""
    text = size_str(inst, amount)
    return int(text) if inst.contract(EXCHANGE_ID).whole else float(text)


def _ok(data: Json) -> RestResponse:
    return RestResponse(200, {"code": _OK, "data": data})


def _error(code: str, msg: str) -> RestResponse:
    return RestResponse(200, {"code": code, "msg": msg})


# -- REST bodies -------------------------------------------------------------------


def contract_info(inst: Instrument, ticker: Ticker) -> dict[str, Any]:
    """One entry of `GET /api/v1/contracts/active` (a perpetual: it has a funding time).
    `multiplier` is base units per contract (ccxt's `contractSize`)."""
    contract = inst.contract(EXCHANGE_ID)
    return {
        "symbol": market_id(inst),
        "rootSymbol": inst.quote,
        "type": "FFWCSX",
        "firstOpenDate": 1_585_555_200_000,
        "expireDate": None,
        "settleDate": None,
        "baseCurrency": currency_id(inst.base),
        "quoteCurrency": inst.quote,
        "settleCurrency": inst.settle,
        "maxOrderQty": 1_000_000,
        "maxPrice": 1_000_000.0,
        "lotSize": 1 if contract.whole else inst.lot_size,
        "tickSize": inst.tick_size,
        "indexPriceTickSize": inst.tick_size,
        "multiplier": float(contract.size),
        "initialMargin": 0.008,
        "maintainMargin": 0.004,
        "makerFeeRate": 0.0002,
        "takerFeeRate": 0.0006,
        "isDeleverage": True,
        "isQuanto": False,
        "isInverse": False,
        "markMethod": "FairPrice",
        "fairMethod": "FundingRate",
        "status": "Open",
        "fundingFeeRate": 0.0001,
        "nextFundingRateTime": 3_600_000,
        "maxLeverage": 125,
        "lastTradePrice": ticker.last,
        "markPrice": ticker.last,
        "indexPrice": ticker.last,
        "lowPrice": ticker.low,
        "highPrice": ticker.high,
        "volumeOf24h": size_num(inst, ticker.base_volume),
        "turnoverOf24h": ticker.quote_volume,
        "priceChg": ticker.change,
        "priceChgPct": round(ticker.change / ticker.open, 4) if ticker.open else 0.0,
    }


def currency_info(code: str) -> dict[str, Any]:
    """One entry of the spot API's `GET /api/v3/currencies`."""
    return {
        "currency": code,
        "name": code,
        "fullName": code,
        "precision": 8,
        "confirms": None,
        "contractAddress": None,
        "isMarginEnabled": True,
        "isDebitEnabled": True,
        "chains": [],
    }


def kline_row(inst: Instrument, candle: Candle) -> list[Any]:
    """`[time ms, open, high, low, close, volume, turnover]` as numbers; volume in
    contracts (ccxt's `fetch_ohlcv` volume is then contracts)."""
    return [
        candle.ts_ms,
        candle.open,
        candle.high,
        candle.low,
        candle.close,
        size_num(inst, candle.volume),
        candle.quote_volume,
    ]


def bullet_body(ws_base: str) -> dict[str, Any]:
    """`POST /api/v1/bullet-public`: the token and the one instance server to dial."""
    return {
        "token": BULLET_TOKEN,
        "instanceServers": [
            {
                "endpoint": f"{ws_base}{WS_PATH}",
                "encrypt": False,
                "protocol": "websocket",
                "pingInterval": PING_INTERVAL_MS,
                "pingTimeout": 10_000,
            }
        ],
    }


# -- websocket payloads ----------------------------------------------------------------


def candle_data(inst: Instrument, candle: Candle, event_ms: int) -> dict[str, Any]:
    """`candles` is `[start s, open, close, high, low, volume, volume]` in contracts: ccxt
    reads index 6 (it documents KuCoin's index 5 as wrong); the simulator puts the
    contract volume in both, so ccxt's `watch_ohlcv` volume is contracts, like REST."""
    volume = size_str(inst, candle.volume)
    return {
        "symbol": market_id(inst),
        "candles": [
            str(candle.ts_ms // 1000),
            inst.price_str(candle.open),
            inst.price_str(candle.close),
            inst.price_str(candle.high),
            inst.price_str(candle.low),
            volume,
            volume,
        ],
        "time": event_ms,
    }


TRADE_HISTORY_MAX = 100
"""KuCoin futures' ``/api/v1/trade/history`` window: the 100 most recent trades."""


def execution_data(inst: Instrument, trade: Trade) -> dict[str, Any]:
    return {
        "symbol": market_id(inst),
        "sequence": trade.id,
        "side": trade.side,
        "size": size_num(inst, trade.amount),
        "price": inst.price_str(trade.price),
        "takerOrderId": f"sim-taker-{trade.id}",
        "makerOrderId": f"sim-maker-{trade.id}",
        "tradeId": str(trade.id),
        "ts": trade.ts_ms * _NS_PER_MS,
    }


def ticker_data(inst: Instrument, ticker: Ticker) -> dict[str, Any]:
    """`ticker` (v1): the last trade and the best levels, no 24 h statistics."""
    return {
        "symbol": market_id(inst),
        "sequence": ticker.last_trade_id or 0,
        "side": ticker.last_side,
        "price": inst.price_str(ticker.last),
        "size": size_num(inst, ticker.last_size),
        "tradeId": str(ticker.last_trade_id),
        "bestBidSize": size_num(inst, ticker.bid_size),
        "bestBidPrice": inst.price_str(ticker.bid),
        "bestAskPrice": inst.price_str(ticker.ask),
        "bestAskSize": size_num(inst, ticker.ask_size),
        "ts": ticker.ts_ms * _NS_PER_MS,
    }


def ticker_v2_data(inst: Instrument, ticker: Ticker) -> dict[str, Any]:
    return {
        "symbol": market_id(inst),
        "sequence": ticker.last_trade_id or 0,
        "bestBidSize": size_num(inst, ticker.bid_size),
        "bestBidPrice": inst.price_str(ticker.bid),
        "bestAskPrice": inst.price_str(ticker.ask),
        "bestAskSize": size_num(inst, ticker.ask_size),
        "ts": ticker.ts_ms * _NS_PER_MS,
    }


def level2_changes(inst: Instrument, delta: BookDelta, book: BookSnapshot) -> list[dict[str, Any]]:
    """One `level2` push per changed level, sequences `first_update_id..last_update_id`.

    A delta that changed nothing still used one update id: it is sent as `book`'s best
    bid restated, so the sequence never skips (ccxt matches the snapshot by sequence).
    """
    changes = [(p, "buy", a) for p, a in delta.bids] + [(p, "sell", a) for p, a in delta.asks]
    if not changes:
        changes = [(p, "buy", a) for p, a in book.bids[:1]]
    return [
        {
            "sequence": delta.first_update_id + i,
            "change": f"{inst.price_str(price)},{side},{size_str(inst, amount)}",
            "timestamp": delta.ts_ms,
        }
        for i, (price, side, amount) in enumerate(changes)
    ]


class KucoinFuturesSession:
    """One public futures websocket connection."""

    def __init__(self, venue: KucoinFuturesVenue, connect_id: str) -> None:
        self._venue = venue
        self._connect_id = connect_id
        self._subs: set[tuple[str, str]] = set()  # (channel, "<id>" or "<id>_<period>")

    @property
    def topics(self) -> frozenset[str]:
        return frozenset(f"{channel}:{arg}" for channel, arg in self._subs)

    def opened(self, now_ms: int) -> list[Frame]:
        return [compact_json({"id": self._connect_id, "type": "welcome"})]

    def received(self, frame: Frame, now_ms: int, *, accept: bool) -> list[Frame]:
        try:
            request = json.loads(frame)
        except ValueError:
            return [self._error(None, 400, "request is not json")]
        if not isinstance(request, dict):
            return [self._error(None, 400, "request is not an object")]
        request_id = request.get("id")
        kind = request.get("type")
        if kind == "ping":
            return [compact_json({"id": request_id, "type": "pong", "timestamp": now_ms})]
        if kind not in ("subscribe", "unsubscribe"):
            return [self._error(request_id, 415, "type is not supported")]
        topic = request.get("topic")
        parsed = self._venue.parse_topic(topic) if isinstance(topic, str) else None
        if parsed is None:
            return [self._error(request_id, UNKNOWN_TOPIC, f"topic {topic} is not found")]
        if kind == "subscribe":
            if not accept:
                return [self._error(request_id, REFUSED, "subscription refused by the simulator")]
            self._subs.update(parsed)
        else:
            self._subs.difference_update(parsed)
        return [compact_json({"id": request_id, "type": "ack"})] if request.get("response") else []

    def render(self, event: MarketEvent) -> list[Frame]:
        inst = self._venue.instrument_for(event.symbol) if self._subs else None
        if inst is None:
            return []
        mid = market_id(inst)
        match event:
            case CandleEvent(candle=candle, event_ms=event_ms):
                period = _PERIODS.get(candle.timeframe)
                arg = f"{mid}_{period}"
                if period is not None and (_CANDLES, arg) in self._subs:
                    data = candle_data(inst, candle, event_ms)
                    return [self._push(_CANDLES, arg, "candle.stick", data)]
            case TradeEvent(trade=trade):
                if (_EXECUTION, mid) in self._subs:
                    return [self._push(_EXECUTION, mid, "match", execution_data(inst, trade))]
            case TickerEvent(ticker=ticker):
                frames: list[Frame] = []
                if (_TICKER, mid) in self._subs:
                    frames.append(self._push(_TICKER, mid, "ticker", ticker_data(inst, ticker)))
                if (_TICKER_V2, mid) in self._subs:
                    data = ticker_v2_data(inst, ticker)
                    frames.append(self._push(_TICKER_V2, mid, "tickerV2", data))
                return frames
            case BookEvent(delta=delta, book=book):
                if (_LEVEL2, mid) in self._subs:
                    changes = level2_changes(inst, delta, book)
                    return [self._push(_LEVEL2, mid, "level2", c) for c in changes]
        return []

    def heartbeat(self, now_ms: int) -> list[Frame]:
        return []

    def poison(self, now_ms: int) -> list[Frame]:
        """A `candle.stick` push whose `data` is a list, on a subscribed topic (the candle
        topic if there is one): ccxt's candle handler finds no symbol in it and raises a
        TypeError. Sent even on book-only connections, as ccxt's level2 handler shrugs off
        every malformed delta."""
        topics = sorted(self._subs, key=lambda sub: (sub[0] != _CANDLES, sub))
        channel, arg = topics[0] if topics else (_CANDLES, "XBTUSDTM_1min")
        return [self._push(channel, arg, "candle.stick", [])]

    def _push(self, channel: str, arg: str, subject: str, data: Json) -> str:
        return compact_json(
            {"type": "message", "topic": f"{channel}:{arg}", "subject": subject, "data": data}
        )

    def _error(self, request_id: object, code: int, msg: str) -> str:
        return compact_json({"id": request_id, "type": "error", "code": code, "data": msg})


class KucoinFuturesVenue(ListingVenue):
    """KuCoin Futures linear perpetuals (`BTC/USDT:USDT` is `XBTUSDTM`); spot symbols
    given to the simulator are not listed here."""

    exchange_id = EXCHANGE_ID
    market_id = staticmethod(market_id)
    lists: ClassVar[tuple[InstrumentKind, ...]] = ("swap",)

    def __init__(self, market: SyntheticMarket, clock: Clock) -> None:
        super().__init__(market, clock)
        self._granularities = {  # kline REST names periods in minutes
            str(timeframe_ms(tf) // 60_000): tf for tf in market.timeframes if tf in _PERIODS
        }
        self._periods = {_PERIODS[tf]: tf for tf in market.timeframes if tf in _PERIODS}

    def parse_topic(self, topic: str) -> set[tuple[str, str]] | None:
        """The (channel, argument) pairs a topic names, or None if KuCoin would refuse it."""
        channel, _, args = topic.partition(":")
        if channel not in _CHANNELS or not args:
            return None
        parsed: set[tuple[str, str]] = set()
        for arg in args.split(","):
            mid, _, period = arg.partition("_")
            if self.instrument_by_id(mid) is None:
                return None
            wants_period = channel == _CANDLES
            if wants_period != bool(period) or (wants_period and period not in self._periods):
                return None
            parsed.add((channel, arg))
        return parsed

    # -- REST ------------------------------------------------------------------------

    def rest_routes(self) -> list[RestRoute]:
        futures = f"/{EXCHANGE_ID}/api/v1"
        return [
            RestRoute("GET", f"{futures}/timestamp", lambda request: _ok(self._clock())),
            RestRoute("GET", f"{futures}/contracts/active", self._contracts),
            RestRoute("GET", f"{futures}/kline/query", self._klines),
            RestRoute("GET", f"{futures}/level2/snapshot", self._snapshot),
            RestRoute(
                "POST",
                f"{futures}/bullet-public",
                lambda request: _ok(bullet_body(request.ws_base)),
            ),
            RestRoute("GET", f"/{EXCHANGE_ID}/spot/api/v3/currencies", self._currencies),
            RestRoute("GET", f"{futures}/trade/history", self._trade_history),
        ]

    def _trade_history(self, request: RestRequest) -> RestResponse:
        """``GET /api/v1/trade/history``: the `TRADE_HISTORY_MAX` most recent trades,
        newest first, as the ``execution`` topic sends them (no paging, no start time)."""
        inst = self.instrument_by_id(request.params.get("symbol", ""))
        if inst is None:
            return _error("400100", "Contract does not exist")
        trades = self.market.trades(inst.symbol)[-TRADE_HISTORY_MAX:]
        return _ok([execution_data(inst, t) for t in reversed(trades)])

    def _contracts(self, request: RestRequest) -> RestResponse:
        contracts = self.listed("swap").values()
        return _ok([contract_info(i, self.market.ticker(i.symbol)) for i in contracts])

    def _currencies(self, request: RestRequest) -> RestResponse:
        codes = sorted({c for i in self.listed("swap").values() for c in (i.base, i.quote)})
        return _ok([currency_info(c) for c in codes])

    def _klines(self, request: RestRequest) -> RestResponse:
        query = request.params
        inst = self.instrument_by_id(query.get("symbol", ""))
        if inst is None:
            return _error("400100", "Contract does not exist")
        tf = self._granularities.get(query.get("granularity", ""))
        if tf is None:
            return _error("400100", "Parameter granularity is invalid")
        try:
            start = optional_int(query, "from")
            end = optional_int(query, "to")
        except ValueError:
            return _error("400100", "Parameter from/to is invalid")
        candles = select_klines(self.market.candles(inst.symbol, tf), start, end, _MAX_KLINES)
        return _ok([kline_row(inst, c) for c in candles])

    def _snapshot(self, request: RestRequest) -> RestResponse:
        inst = self.instrument_by_id(request.params.get("symbol", ""))
        if inst is None:
            return _error("400100", "Contract does not exist")
        book = self.market.book(inst.symbol)
        return _ok(
            {
                "symbol": market_id(inst),
                "sequence": book.update_id,
                "asks": [[p, size_num(inst, a)] for p, a in book.asks],
                "bids": [[p, size_num(inst, a)] for p, a in book.bids],
                "ts": book.ts_ms * _NS_PER_MS,
            }
        )

    # -- websocket -----------------------------------------------------------------------

    def open_session(self, path: str, query: Mapping[str, str]) -> WsSession | None:
        if path != WS_PATH or query.get("token") != BULLET_TOKEN:
            return None
        return KucoinFuturesSession(self, query.get("connectId", "sim"))

    def ccxt_options(self, http_base: str, ws_base: str) -> dict[str, Any]:
        return {
            "urls": {
                "api": {
                    "futuresPublic": f"{http_base}/{EXCHANGE_ID}",
                    "public": f"{http_base}/{EXCHANGE_ID}/spot",
                }
            }
        }
