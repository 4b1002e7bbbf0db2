"""The contract between the I/O shell (`sim.server`) and one exchange's protocol.

A `Venue` is one exchange's sans-I/O protocol: it answers REST requests with JSON
bodies, opens a `WsSession` per websocket connection, and says which ccxt options
point ccxt at the simulator. A `WsSession` turns received frames into replies and
market events into the frames its subscriptions ask for. Neither awaits nor touches
a socket: the shell moves the bytes.

`ListingVenue` is what every venue module builds on: the market, the clock and the
instruments the exchange lists, indexed by the exchange's market ids. A venue states
only what differs: its id, its market-id rule and which kinds it lists.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

from marketbus.sim.instruments import Instrument, InstrumentKind
from marketbus.sim.market import Candle, MarketEvent, SyntheticMarket

Frame = str | bytes
"""One websocket message: text or binary."""

Json = Any
"""A JSON-serialisable value (dicts, lists, strings, numbers, None)."""

Clock = Callable[[], int]
"""The simulator's time in ms since the epoch (wall clock, or driven by a test)."""


@dataclass(frozen=True, slots=True)
class RestResponse:
    status: int
    body: Json


@dataclass(frozen=True, slots=True)
class RestRequest:
    """One REST call: its query-string (and JSON body) parameters, and the websocket
    root (`ws://host:port`) of the server as the client addressed it, for venues that
    hand out websocket endpoints over REST (kucoin's bullet tokens)."""

    params: Mapping[str, str]
    ws_base: str


RestHandler = Callable[[RestRequest], RestResponse]
"""Handles one REST call."""


@dataclass(frozen=True, slots=True)
class RestRoute:
    method: str
    path: str
    handler: RestHandler


class WsSession(Protocol):
    """One websocket connection's protocol state (its subscriptions, its ids)."""

    @property
    def topics(self) -> frozenset[str]:
        """The exchange's names of what this connection is subscribed to."""

    def opened(self, now_ms: int) -> list[Frame]:
        """Frames to send as soon as the connection is up (a welcome message)."""

    def received(self, frame: Frame, now_ms: int, *, accept: bool) -> list[Frame]:
        """Replies to one client frame. With `accept` False a subscribe is refused."""

    def render(self, event: MarketEvent) -> list[Frame]:
        """The frames `event` causes on this connection (empty if not subscribed)."""

    def heartbeat(self, now_ms: int) -> list[Frame]:
        """Server-initiated pings due by `now_ms` (called about once a second)."""

    def poison(self, now_ms: int) -> list[Frame]:
        """A well-formed frame, on a subscribed topic, that makes ccxt's handler raise."""


class Venue(Protocol):
    """One exchange's protocol, bound to a market and a clock."""

    exchange_id: str

    def rest_routes(self) -> list[RestRoute]:
        """REST endpoints, paths relative to the server root (they start with `/{id}/`)."""

    def open_session(self, path: str, query: Mapping[str, str]) -> WsSession | None:
        """A session for a websocket dialled at `path`, or None if no such endpoint."""

    def ccxt_options(self, http_base: str, ws_base: str) -> dict[str, Any]:
        """Constructor options for `ccxt.pro.<exchange_id>` that target the simulator."""


# -- what the venue modules share --------------------------------------------------------


def compact_json(value: Json) -> str:
    """`value` as exchanges send JSON: no spaces after separators."""
    return json.dumps(value, separators=(",", ":"))


def optional_int(params: Mapping[str, str], name: str) -> int | None:
    """Query parameter `name` as an int, None if absent; ValueError if not a number."""
    return int(params[name]) if name in params else None


def select_klines(
    candles: list[Candle], start_ms: int | None, end_ms: int | None, limit: int
) -> list[Candle]:
    """The kline window of binance, bingx and kucoin: open times in [start, end]; from
    start forward when start is given, else the latest `limit` ending at `end` (or now)."""
    chosen = [
        c
        for c in candles
        if (start_ms is None or c.ts_ms >= start_ms) and (end_ms is None or c.ts_ms <= end_ms)
    ]
    return chosen[:limit] if start_ms is not None else chosen[-limit:]


class ListingVenue(ABC):
    """The market, the clock, and the instruments a venue lists, by symbol and by the
    exchange's market id per kind (spot and swap may share ids, as on binance).

    A subclass sets `exchange_id`, `lists` (the kinds the exchange has) and overrides
    `market_id`.
    """

    exchange_id: str
    lists: ClassVar[tuple[InstrumentKind, ...]] = ("spot", "swap")

    def __init__(self, market: SyntheticMarket, clock: Clock) -> None:
        self.market = market
        self._clock = clock
        listed = [i for i in market.instruments() if i.kind in self.lists]
        self._by_symbol = {i.symbol: i for i in listed}
        self._by_id: dict[InstrumentKind, dict[str, Instrument]] = {
            kind: {self.market_id(i): i for i in listed if i.kind == kind} for kind in self.lists
        }

    @staticmethod
    @abstractmethod
    def market_id(inst: Instrument, /) -> str:
        """The exchange's id of `inst` (`BTCUSDT`, `BTC-USDT-SWAP`...)."""

    def listed(self, kind: InstrumentKind) -> Mapping[str, Instrument]:
        """The listed instruments of `kind` by market id, in the market's order."""
        return self._by_id.get(kind, {})

    def instrument_by_id(
        self, market_id: str, kind: InstrumentKind | None = None
    ) -> Instrument | None:
        """The listed instrument the exchange calls `market_id`; give `kind` where spot
        and swap share ids."""
        for k in self.lists if kind is None else (kind,):
            inst = self.listed(k).get(market_id)
            if inst is not None:
                return inst
        return None

    def instrument_for(self, symbol: str, kind: InstrumentKind | None = None) -> Instrument | None:
        """The listed instrument of ccxt `symbol` (only if of `kind`, when given)."""
        inst = self._by_symbol.get(symbol)
        if inst is None or (kind is not None and inst.kind != kind):
            return None
        return inst
