"""The contract between the I/O shell (`sim.server`) and one exchange's protocol.

A `Venue` is one exchange's sans-I/O protocol: it answers REST requests with JSON
bodies, opens a `WsSession` per websocket connection, and says which ccxt options
point ccxt at the simulator. A `WsSession` turns received frames into replies and
market events into the frames its subscriptions ask for. Neither awaits nor touches
a socket: the shell moves the bytes.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from marketbus.sim.market import MarketEvent

Frame = str | bytes
"""One websocket message: text or binary."""

Json = Any
"""A JSON-serialisable value (dicts, lists, strings, numbers, None)."""


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
