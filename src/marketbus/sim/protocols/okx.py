"""OKX v5: REST instruments and candles, public and business websockets.

Paths (under `/okx`): REST `/api/v5/public/instruments`, `/api/v5/market/candles`
(and `history-candles`), `/api/v5/public/time`; websockets `/ws/v5/public`
(`tickers`, `trades`, `books`, `books5`) and `/ws/v5/business` (`candle<bar>`).
Subscribe `{"op": "subscribe", "args": [{"channel", "instId"}]}` is acked with
`{"event": "subscribe", "arg": ...}`; text `ping` gets text `pong`. The `books`
channel sends a snapshot on subscribe, then updates chained by `prevSeqId`/`seqId`,
each with OKX's CRC32 checksum of the top 25 levels.

Units, as OKX documents them: swap sizes (`sz`, book sizes, `lastSz`/`bidSz`/`askSz`)
and `vol24h` are CONTRACTS of `ctVal` base units (BTC-USDT-SWAP: 0.01 BTC, traded in
steps of 0.01 contracts, `sim.contracts`); `volCcy24h` is base units on swaps (quote
on spot). Candles: `vol` contracts, `volCcy` base, `volCcyQuote` quote on swaps; ccxt
4.5.90 reads `volCcy` for swaps, so its candle volume is base while its trade amounts,
book sizes and ticker `baseVolume` are contracts.

Inverse swaps (`BTC/USD:BTC` = BTC-USD-SWAP: ctType inverse, ctVal 100, ctValCcy USD,
settleCcy BTC, lotSz 1) print the same fields in whole contracts of 100 USD: `sz`, book
sizes, `vol`/`vol24h` contracts; `volCcy`/`volCcy24h` the base (BTC) value, printed as
the shortest decimal of the truth's float so that parsing it gives the truth exactly.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Mapping
from typing import Any

from marketbus.sim.instruments import Instrument, InstrumentKind
from marketbus.sim.market import (
    BookEvent,
    BookSnapshot,
    Candle,
    CandleEvent,
    MarketEvent,
    Ticker,
    TickerEvent,
    Trade,
    TradeEvent,
)
from marketbus.sim.venue import (
    Frame,
    ListingVenue,
    RestHandler,
    RestRequest,
    RestResponse,
    RestRoute,
    WsSession,
    compact_json,
    optional_int,
)

EXCHANGE_ID = "okx"
_BAR_UNITS = {"s": "s", "m": "m", "H": "h", "D": "d", "W": "w"}
_MAX_CANDLES = 300
_BOOK_CHANNELS = ("books", "books5")
_INST_TYPES: dict[str, InstrumentKind] = {"SPOT": "spot", "SWAP": "swap"}


def market_id(inst: Instrument) -> str:
    pair = f"{inst.base}-{inst.quote}"
    return pair if inst.kind == "spot" else f"{pair}-SWAP"


def bar_to_timeframe(bar: str) -> str | None:
    """OKX bar ('1m', '1H', '1Dutc') to ccxt timeframe ('1m', '1h', '1d')."""
    bar = bar.removesuffix("utc")
    unit = _BAR_UNITS.get(bar[-1:])
    return None if unit is None or not bar[:-1].isdigit() else f"{bar[:-1]}{unit}"


def size_str(inst: Instrument, amount: float, price: float | None = None) -> str:
    """A base amount as OKX prints sizes: contracts on swaps, base units on spot.
    Inverse contracts are worth a base amount only at a `price`: the one it was
    valued at (the trade's, the level's)."""
    spec = inst.contract(EXCHANGE_ID)
    if inst.inverse:
        if price is None:
            raise ValueError(f"{inst.symbol}: an inverse size needs its price")
        return spec.contracts(repr(amount), inst.price_str(price))
    return spec.contracts(inst.amount_str(amount))


def base_str(inst: Instrument, amount: float) -> str:
    """A base volume as OKX prints `volCcy` on swaps: the truth's figure, exactly
    (an inverse volume is a sum of quotients, so its shortest repr)."""
    return repr(amount) if inst.inverse else inst.amount_str(amount)


def _contracts_volume(inst: Instrument, volume: float, contracts: int | None) -> str:
    """`vol`/`vol24h`: contracts (base units on spot)."""
    if inst.inverse:
        if contracts is None:
            raise ValueError(f"{inst.symbol}: an inverse volume needs its contracts")
        return str(contracts)
    return size_str(inst, volume)


def _ok(data: list[Any]) -> RestResponse:
    return RestResponse(200, {"code": "0", "msg": "", "data": data})


def instrument_info(inst: Instrument) -> dict[str, Any]:
    contract = inst.contract(EXCHANGE_ID)
    lot = inst.amount_str(inst.lot_size) if inst.kind == "spot" else str(contract.step)
    ct_type, ct_ccy = ("inverse", inst.quote) if inst.inverse else ("linear", inst.base)
    common = {
        "instId": market_id(inst),
        "tickSz": inst.price_str(inst.tick_size),
        "lotSz": lot,
        "minSz": lot,
        "state": "live",
        "listTime": "1606468572000",
        "expTime": "",
    }
    if inst.kind == "spot":
        return {
            **common,
            "instType": "SPOT",
            "baseCcy": inst.base,
            "quoteCcy": inst.quote,
            "settleCcy": "",
            "ctVal": "",
            "ctMult": "",
            "ctValCcy": "",
            "ctType": "",
            "uly": "",
            "instFamily": "",
            "lever": "10",
        }
    return {
        **common,
        "instType": "SWAP",
        "baseCcy": "",
        "quoteCcy": "",
        "settleCcy": inst.settle,
        "ctVal": str(contract.size),
        "ctMult": "1",
        "ctValCcy": ct_ccy,
        "ctType": ct_type,
        "uly": f"{inst.base}-{inst.quote}",
        "instFamily": f"{inst.base}-{inst.quote}",
        "lever": "100",
    }


def candle_row(inst: Instrument, candle: Candle) -> list[str]:
    """`[ts, o, h, l, c, vol, volCcy, volCcyQuote, confirm]` as OKX documents them:
    on swaps `vol` is contracts and `volCcy` base units, on spot `vol` is base and
    `volCcy` quote; `volCcyQuote` is quote on both. ccxt 4.5.90's `parse_ohlcv` reads
    `vol` on spot and `volCcy` otherwise, so its swap candle volume is in BASE units
    (BTC on the inverse BTC-USD-SWAP too)."""
    volume = _contracts_volume(inst, candle.volume, candle.contracts_volume)
    quote = inst.notional_str(candle.quote_volume)
    return [
        str(candle.ts_ms),
        inst.price_str(candle.open),
        inst.price_str(candle.high),
        inst.price_str(candle.low),
        inst.price_str(candle.close),
        volume,
        quote if inst.kind == "spot" else base_str(inst, candle.volume),
        quote,
        "1" if candle.closed else "0",
    ]


def select_candles(
    candles: list[Candle], after: int | None, before: int | None, limit: int
) -> list[Candle]:
    """OKX's window: open time < `after` and > `before`, newest first, at most `limit`."""
    chosen = [
        c
        for c in candles
        if (after is None or c.ts_ms < after) and (before is None or c.ts_ms > before)
    ]
    return list(reversed(chosen[-limit:]))


def ticker_data(inst: Instrument, ticker: Ticker) -> dict[str, Any]:
    """Sizes and `vol24h` in contracts on swaps (ccxt's `baseVolume` reads `vol24h`);
    `volCcy24h` is quote on spot and base units on swaps."""
    volume = _contracts_volume(inst, ticker.base_volume, ticker.contracts_volume)
    return {
        "instType": "SPOT" if inst.kind == "spot" else "SWAP",
        "instId": market_id(inst),
        "last": inst.price_str(ticker.last),
        "lastSz": size_str(inst, ticker.last_size, ticker.last),
        "askPx": inst.price_str(ticker.ask),
        "askSz": size_str(inst, ticker.ask_size, ticker.ask),
        "bidPx": inst.price_str(ticker.bid),
        "bidSz": size_str(inst, ticker.bid_size, ticker.bid),
        "open24h": inst.price_str(ticker.open),
        "high24h": inst.price_str(ticker.high),
        "low24h": inst.price_str(ticker.low),
        "volCcy24h": (
            inst.notional_str(ticker.quote_volume)
            if inst.kind == "spot"
            else base_str(inst, ticker.base_volume)
        ),
        "vol24h": volume,
        "sodUtc0": inst.price_str(ticker.open),
        "sodUtc8": inst.price_str(ticker.open),
        "ts": str(ticker.ts_ms),
    }


def trade_data(inst: Instrument, trade: Trade) -> dict[str, Any]:
    return {
        "instId": market_id(inst),
        "tradeId": str(trade.id),
        "px": inst.price_str(trade.price),
        "sz": size_str(inst, trade.amount, trade.price),
        "side": trade.side,
        "ts": str(trade.ts_ms),
        "count": "1",
    }


def _levels(inst: Instrument, levels: tuple[tuple[float, float], ...]) -> list[list[str]]:
    return [[inst.price_str(p), size_str(inst, a, p), "0", "1" if a else "0"] for p, a in levels]


def checksum(bids: list[list[str]], asks: list[list[str]]) -> int:
    """OKX's book checksum: CRC32 of the top 25 levels interleaved, as a signed int."""
    parts: list[str] = []
    for i in range(25):
        if i < len(bids):
            parts += bids[i][:2]
        if i < len(asks):
            parts += asks[i][:2]
    crc = zlib.crc32(":".join(parts).encode())
    return crc - (1 << 32) if crc >= 1 << 31 else crc


def book_data(
    inst: Instrument, book: BookSnapshot, changes: BookSnapshot | None, prev_seq: int
) -> dict[str, Any]:
    """A `books` push: the whole `book` (snapshot) or only `changes` (update); the
    checksum always covers the whole book after the push."""
    shown = changes if changes is not None else book
    return {
        "asks": _levels(inst, shown.asks),
        "bids": _levels(inst, shown.bids),
        "ts": str(book.ts_ms),
        "checksum": checksum(_levels(inst, book.bids), _levels(inst, book.asks)),
        "prevSeqId": prev_seq,
        "seqId": book.update_id,
    }


class OkxSession:
    """One OKX websocket connection (`public` or `business`)."""

    def __init__(self, venue: OkxVenue, business: bool) -> None:
        self._venue = venue
        self._business = business
        self._subs: set[tuple[str, str]] = set()  # (channel, instId)

    @property
    def topics(self) -> frozenset[str]:
        return frozenset(f"{channel}:{inst_id}" for channel, inst_id in self._subs)

    def opened(self, now_ms: int) -> list[Frame]:
        return []

    def received(self, frame: Frame, now_ms: int, *, accept: bool) -> list[Frame]:
        if frame == "ping":
            return ["pong"]
        try:
            request = json.loads(frame)
        except ValueError:
            return [self._error("60012", f"Invalid request: {frame!r}")]
        if not isinstance(request, dict) or request.get("op") not in ("subscribe", "unsubscribe"):
            return [self._error("60012", f"Invalid request: {frame!r}")]
        args = request.get("args")
        if not isinstance(args, list) or not all(isinstance(a, dict) for a in args):
            return [self._error("60012", f"Invalid request: {frame!r}")]
        if request["op"] == "unsubscribe":
            replies: list[Frame] = []
            for arg in args:
                self._subs.discard((str(arg.get("channel")), str(arg.get("instId"))))
                replies.append(compact_json({"event": "unsubscribe", "arg": arg, "connId": "sim"}))
            return replies
        if not accept:
            return [self._error("60018", "Subscription refused by the simulator")]
        replies = []
        for arg in args:
            channel, inst_id = str(arg.get("channel")), str(arg.get("instId"))
            problem = self._venue.check_topic(channel, inst_id, self._business)
            if problem is not None:
                return [
                    self._error(
                        "60018", f"Wrong URL or channel:{channel},instId:{inst_id} {problem}"
                    )
                ]
            self._subs.add((channel, inst_id))
            replies.append(compact_json({"event": "subscribe", "arg": arg, "connId": "sim"}))
            inst = self._venue.instrument_by_id(inst_id)
            if channel in _BOOK_CHANNELS and inst is not None:
                replies.append(self._book_snapshot(channel, inst))
        return replies

    def render(self, event: MarketEvent) -> list[Frame]:
        inst = self._venue.instrument_for(event.symbol) if self._subs else None
        if inst is None:
            return []
        inst_id = market_id(inst)
        match event:
            case CandleEvent(candle=candle):
                channel = f"candle{self._venue.bar_of(candle.timeframe)}"
                if (channel, inst_id) in self._subs:
                    return [self._push(channel, inst_id, [candle_row(inst, candle)])]
            case TradeEvent(trade=trade):
                if ("trades", inst_id) in self._subs:
                    return [self._push("trades", inst_id, [trade_data(inst, trade)])]
            case TickerEvent(ticker=ticker):
                if ("tickers", inst_id) in self._subs:
                    return [self._push("tickers", inst_id, [ticker_data(inst, ticker)])]
            case BookEvent(delta=delta, book=book):
                frames: list[Frame] = []
                if ("books", inst_id) in self._subs:
                    changes = BookSnapshot(
                        delta.ts_ms, delta.last_update_id, delta.bids, delta.asks
                    )
                    data = book_data(inst, book, changes, delta.prev_update_id)
                    frames.append(
                        compact_json(
                            {
                                "arg": {"channel": "books", "instId": inst_id},
                                "action": "update",
                                "data": [data],
                            }
                        )
                    )
                if ("books5", inst_id) in self._subs:
                    frames.append(self._books5(inst, inst_id, book))
                return frames
        return []

    def heartbeat(self, now_ms: int) -> list[Frame]:
        return []

    def poison(self, now_ms: int) -> list[Frame]:
        """A push whose `instId` is not a string: ccxt's candle handler raises
        a TypeError, its book handler too (sides that are not lists)."""
        for channel, inst_id in sorted(self._subs):
            if channel.startswith("candle"):
                row = [str(now_ms), "1", "1", "1", "1", "1", "1", "1", "0"]
                return [compact_json({"arg": {"channel": channel, "instId": 5}, "data": [row]})]
            if channel == "books":
                data = [{"asks": 5, "bids": 5}]
                return [
                    compact_json(
                        {
                            "arg": {"channel": channel, "instId": inst_id},
                            "action": "update",
                            "data": data,
                        }
                    )
                ]
        return [compact_json({"arg": {"channel": "candle1m", "instId": 5}, "data": [["0"] * 9]})]

    def _push(self, channel: str, inst_id: str, data: list[Any]) -> str:
        return compact_json({"arg": {"channel": channel, "instId": inst_id}, "data": data})

    def _book_snapshot(self, channel: str, inst: Instrument) -> str:
        """The whole book, pushed when `channel` is subscribed."""
        inst_id = market_id(inst)
        book = self._venue.market.book(inst.symbol)
        if channel == "books5":
            return self._books5(inst, inst_id, book)
        data = book_data(inst, book, None, -1)
        return compact_json(
            {"arg": {"channel": channel, "instId": inst_id}, "action": "snapshot", "data": [data]}
        )

    def _books5(self, inst: Instrument, inst_id: str, book: BookSnapshot) -> str:
        top = BookSnapshot(book.ts_ms, book.update_id, book.bids[:5], book.asks[:5])
        data = {
            "asks": _levels(inst, top.asks),
            "bids": _levels(inst, top.bids),
            "ts": str(book.ts_ms),
            "instId": inst_id,
        }
        return compact_json({"arg": {"channel": "books5", "instId": inst_id}, "data": [data]})

    def _error(self, code: str, msg: str) -> str:
        return compact_json({"event": "error", "code": code, "msg": msg, "connId": "sim"})


class OkxVenue(ListingVenue):
    """OKX spot (`BTC-USDT`), linear swaps (`BTC-USDT-SWAP`, ctVal 0.01 BTC) and
    inverse swaps (`BTC-USD-SWAP`, ctVal 100 USD)."""

    exchange_id = EXCHANGE_ID
    market_id = staticmethod(market_id)

    @staticmethod
    def bar_of(timeframe: str) -> str:
        unit = timeframe[-1]
        return timeframe if unit in "sm" else f"{timeframe[:-1]}{unit.upper()}"

    def check_topic(self, channel: str, inst_id: str, business: bool) -> str | None:
        """Why OKX would refuse this subscription on this connection, or None."""
        if self.instrument_by_id(inst_id) is None:
            return "doesn't exist"
        if channel.startswith("candle"):
            if not business:
                return "candles are served on /business"
            tf = bar_to_timeframe(channel.removeprefix("candle"))
            return None if tf in self.market.timeframes else "unknown bar"
        if business:
            return "only candles are served on /business"
        return None if channel in ("tickers", "trades", *_BOOK_CHANNELS) else "unknown channel"

    def rest_routes(self) -> list[RestRoute]:
        return [
            RestRoute(
                "GET", "/okx/api/v5/public/time", lambda request: _ok([{"ts": str(self._clock())}])
            ),
            RestRoute("GET", "/okx/api/v5/public/instruments", self._instruments),
            RestRoute("GET", "/okx/api/v5/market/candles", self._candles),
            RestRoute("GET", "/okx/api/v5/market/history-candles", self._candles),
            *self._trade_routes(),
        ]

    # -- REST: trades ------------------------------------------------------------------

    def _trade_routes(self) -> list[RestRoute]:
        """``/market/trades``: the most recent trades (``limit`` default 100, at most
        500); ``/market/history-trades``: pages of at most 100 going back by trade id
        (``after``: older than that id; ``before``: newer), as far as the market's
        history reaches. Both newest first, ids as on the ``trades`` channel."""
        return [
            RestRoute("GET", "/okx/api/v5/market/trades", self._trades_handler(500)),
            RestRoute("GET", "/okx/api/v5/market/history-trades", self._trades_handler(100)),
        ]

    def _trades_handler(self, most: int) -> RestHandler:
        def handle(request: RestRequest) -> RestResponse:
            query = request.params
            inst = self.instrument_by_id(query.get("instId", ""))
            if inst is None:
                return RestResponse(
                    200, {"code": "51001", "msg": "Instrument ID does not exist", "data": []}
                )
            try:
                limit = min(int(query.get("limit", "100")), most)
                after = optional_int(query, "after") if most == 100 else None
                before = optional_int(query, "before") if most == 100 else None
            except ValueError:
                return RestResponse(200, {"code": "51000", "msg": "Parameter error", "data": []})
            trades = [
                t
                for t in self.market.trades(inst.symbol)
                if (after is None or t.id < after) and (before is None or t.id > before)
            ]
            chosen = trades[:limit] if before is not None else trades[-limit:]
            return _ok([trade_data(inst, t) for t in reversed(chosen)])

        return handle

    def _instruments(self, request: RestRequest) -> RestResponse:
        query = request.params
        kind = _INST_TYPES.get(query.get("instType", ""))
        return _ok([instrument_info(i) for i in self.listed(kind).values()] if kind else [])

    def _candles(self, request: RestRequest) -> RestResponse:
        query = request.params
        inst = self.instrument_by_id(query.get("instId", ""))
        if inst is None:
            return RestResponse(
                200, {"code": "51001", "msg": "Instrument ID does not exist", "data": []}
            )
        tf = bar_to_timeframe(query.get("bar", "1m"))
        if tf not in self.market.timeframes or tf is None:
            return RestResponse(200, {"code": "51000", "msg": "Parameter bar error", "data": []})
        try:
            limit = min(int(query.get("limit", "100")), _MAX_CANDLES)
            after = optional_int(query, "after")
            before = optional_int(query, "before")
        except ValueError:
            return RestResponse(200, {"code": "50014", "msg": "Parameter error", "data": []})
        candles = select_candles(self.market.candles(inst.symbol, tf), after, before, limit)
        return _ok([candle_row(inst, c) for c in candles])

    def open_session(self, path: str, query: Mapping[str, str]) -> WsSession | None:
        if path.rstrip("/") == "/okx/ws/v5/public":
            return OkxSession(self, business=False)
        if path.rstrip("/") == "/okx/ws/v5/business":
            return OkxSession(self, business=True)
        return None

    def ccxt_options(self, http_base: str, ws_base: str) -> dict[str, Any]:
        types = sorted(kind for kind in self.lists if self.listed(kind))
        return {
            "urls": {"api": {"rest": f"{http_base}/okx", "ws": f"{ws_base}/okx/ws/v5"}},
            "options": {"fetchMarkets": {"types": types}},
        }
