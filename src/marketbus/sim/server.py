"""The simulator's I/O shell: one aiohttp server (REST + websockets) on loopback.

It owns the `SyntheticMarket`, advances it from a ticking task at `rate` trades per
second per symbol, fans the resulting events out to every websocket session, and
routes REST calls to the venues (one per simulated exchange, all on one port under
`/{exchange_id}/`). All protocol logic lives in the venues; this module only moves
frames, applies `faults`, and keeps each connection's send queue bounded.

    async with SimServer("binance", ["BTC/USDT"], rate=50, seed=1) as sim:
        ex = ccxt.pro.binance(sim.url_overrides("binance"))
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

from aiohttp import WSMsgType, web

from marketbus.shared.errors import ConfigError, MarketbusError
from marketbus.sim.faults import Faults, GarbageKind
from marketbus.sim.loopback import confine_to_loopback
from marketbus.sim.market import BookEvent, MarketEvent, SyntheticMarket
from marketbus.sim.protocols import make_venue
from marketbus.sim.timeframes import DEFAULT_TIMEFRAMES
from marketbus.sim.venue import Clock, Frame, RestHandler, RestRequest, Venue, WsSession

log = logging.getLogger(__name__)

SEND_QUEUE_LIMIT = 10_000
"""Frames buffered per connection; a client this far behind is disconnected."""

_HEARTBEAT_S = 1.0
_MAX_STEPS_PER_TICK = 1_000


def wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


def accelerated_clock(factor: float, base: Clock = wall_clock_ms) -> Clock:
    """A clock that starts at `base()` now and runs `factor` times faster.

    With factor 60 a 1m candle closes every real second: tests and demos see closed
    candles of real timeframes without waiting for them.
    """
    if factor <= 0:
        raise ValueError("factor must be positive")
    origin = base()
    return lambda: origin + int((base() - origin) * factor)


class _Connection:
    """One websocket client: its protocol session and its bounded send queue."""

    def __init__(self, ws: web.WebSocketResponse, session: WsSession, path: str) -> None:
        self.ws = ws
        self.session = session
        self.path = path
        self.queue: asyncio.Queue[tuple[float, Frame]] = asyncio.Queue(SEND_QUEUE_LIMIT)
        self.writer: asyncio.Task[None] | None = None


class SimServer:
    """A loopback exchange simulator for real ccxt.pro clients.

    `exchange` is one ccxt exchange id or several (they share one market and port).
    `rate` is trades per second per symbol (0: the market only moves its clock).
    `warmup_s` seconds of history (one trade per symbol per `warmup_every_ms`) are
    generated before start, so `fetch_ohlcv` has closed candles to return.
    Derivative venues print amounts in their real contracts (okx BTC ctVal 0.01,
    kucoinfutures XBTUSDTM multiplier 0.001; `sim.contracts`) while `market` holds the
    truth in base units; `unit_contracts=True` makes every contract one base unit (the
    old behaviour, for tests of code that does not convert units yet).
    """

    def __init__(
        self,
        exchange: str | Sequence[str],
        symbols: Sequence[str],
        *,
        rate: float = 10.0,
        seed: int = 0,
        host: str = "127.0.0.1",
        port: int = 0,
        timeframes: Sequence[str] = DEFAULT_TIMEFRAMES,
        depth: int = 20,
        history: int = 5000,
        warmup_s: float = 0.0,
        warmup_every_ms: int = 1000,
        clock: Clock = wall_clock_ms,
        unit_contracts: bool = False,
    ) -> None:
        if rate < 0:
            raise ValueError("rate must not be negative")
        self.rate = rate
        self.host = host
        self._requested_port = port
        self._clock = clock
        now = clock()
        self.market = SyntheticMarket(
            symbols,
            seed=seed,
            start_ms=now - int(warmup_s * 1000),
            timeframes=timeframes,
            depth=depth,
            history=history,
            unit_contracts=unit_contracts,
        )
        if warmup_s > 0:
            self.market.replay(now, warmup_every_ms)
        self._last_ms = now
        ids = [exchange] if isinstance(exchange, str) else list(exchange)
        self.venues: dict[str, Venue] = {i: make_venue(i, self.market, self.now_ms) for i in ids}
        self.faults = Faults(self)
        self._connections: set[_Connection] = set()
        self.connections_accepted = 0
        self.frames_received = 0
        self._changed = asyncio.Event()
        self._paused = False
        self._runner: web.AppRunner | None = None
        self._ticker: asyncio.Task[None] | None = None
        self._port: int | None = None

    # -- lifecycle --------------------------------------------------------------------

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("server not started")
        return self._port

    @property
    def http_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://{self.host}:{self.port}"

    async def start(self) -> None:
        app = web.Application()
        for venue in self.venues.values():
            for route in venue.rest_routes():
                app.router.add_route(route.method, route.path, self._rest_endpoint(route.handler))
        app.router.add_route("*", "/{tail:.*}", self._fallback)
        self._runner = web.AppRunner(app, handle_signals=False, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self._requested_port)
        await site.start()
        server = site._server
        assert isinstance(server, asyncio.base_events.Server)
        self._port = int(server.sockets[0].getsockname()[1])
        self._ticker = asyncio.create_task(self._tick_forever(), name="sim-ticker")

    async def stop(self) -> None:
        if self._ticker is not None:
            self._ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ticker
            self._ticker = None
        for conn in list(self._connections):
            await self._close(conn)
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> SimServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # -- what clients need -----------------------------------------------------------------

    def url_overrides(self, exchange_id: str) -> dict[str, Any]:
        """Options for `ccxt.pro.<exchange_id>(options)` that aim it at this server only."""
        venue = self.venues.get(exchange_id)
        if venue is None:
            raise KeyError(f"{exchange_id!r} is not simulated here (have {sorted(self.venues)})")
        options = venue.ccxt_options(self.http_url, self.ws_url)
        return confine_to_loopback(exchange_id, options, self.http_url, self.ws_url)

    def now_ms(self) -> int:
        """The simulator's clock, never going backwards."""
        self._last_ms = max(self._last_ms, self._clock())
        return self._last_ms

    @property
    def connection_count(self) -> int:
        return len(self._connections)

    async def wait_for(self, predicate: Callable[[], bool], timeout: float = 5.0) -> None:
        """Wait until `predicate()` holds, re-checking whenever connections or
        subscriptions change; raise TimeoutError after `timeout` seconds."""

        async def wait() -> None:
            while not predicate():
                self._changed.clear()
                await self._changed.wait()

        await asyncio.wait_for(wait(), timeout)

    def sessions(self) -> list[WsSession]:
        return [c.session for c in self._connections]

    def subscribed(self, topic_part: str = "") -> bool:
        """Whether some connection has a subscription whose name contains `topic_part`."""
        return any(topic_part in topic for s in self.sessions() for topic in s.topics)

    def pause(self) -> None:
        """Stop trading (the clock still runs and closes candles); `step` still works."""
        self._paused = True

    def resume(self) -> None:
        self._paused = False

    def step(self, symbol: str | None = None, count: int = 1) -> None:
        """Make `count` trades now on `symbol` (every symbol if None) and publish them."""
        now_ms = self.now_ms()
        symbols = self.market.symbols if symbol is None else (symbol,)
        events: list[MarketEvent] = []
        for _ in range(count):
            for s in symbols:
                events.extend(self.market.step(s, now_ms))
        self._publish(events)

    def _book_fault(self, event: MarketEvent) -> MarketEvent | None:
        if not isinstance(event, BookEvent):
            return event
        return self.faults.book_event(event, self.market.instrument(event.symbol))

    # -- fault target ---------------------------------------------------------------------

    def drop_all(self) -> int:
        conns = list(self._connections)
        for conn in conns:
            asyncio.get_running_loop().create_task(self._close(conn, abort=True))
        return len(conns)

    def inject(self, kind: GarbageKind) -> int:
        now = self.now_ms()
        for conn in self._connections:
            frames: list[Frame] = (
                ["{not json"] if kind == "invalid_json" else conn.session.poison(now)
            )
            self._send(conn, frames, force=True)
        return len(self._connections)

    # -- websocket ----------------------------------------------------------------------------

    async def _fallback(self, request: web.Request) -> web.StreamResponse:
        for venue in self.venues.values():
            if request.path.startswith(f"/{venue.exchange_id}/"):
                session = venue.open_session(request.path, request.query)
                if (
                    session is not None
                    and request.headers.get("Upgrade", "").lower() == "websocket"
                ):
                    return await self._serve_ws(request, session)
        return web.json_response(
            {"code": 404, "msg": f"no such endpoint: {request.path}"}, status=404
        )

    async def _serve_ws(self, request: web.Request, session: WsSession) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(autoping=True, max_msg_size=1 << 20)
        await ws.prepare(request)
        conn = _Connection(ws, session, request.path)
        conn.writer = asyncio.create_task(self._write(conn), name=f"sim-ws-writer {request.path}")
        self._connections.add(conn)
        self.connections_accepted += 1
        self._changed.set()
        try:
            self._send(conn, session.opened(self.now_ms()))
            async for msg in ws:
                if msg.type in (WSMsgType.TEXT, WSMsgType.BINARY):
                    self.frames_received += 1
                    accept = not self.faults.refuse_subscribe
                    self._send(conn, session.received(msg.data, self.now_ms(), accept=accept))
                    self._changed.set()
        finally:
            await self._close(conn)
        return ws

    def _send(self, conn: _Connection, frames: list[Frame], *, force: bool = False) -> None:
        if not frames or (self.faults.silent and not force):
            return
        due = asyncio.get_running_loop().time() + self.faults.delay_s
        for frame in frames:
            try:
                conn.queue.put_nowait((due, frame))
            except asyncio.QueueFull:
                log.warning(
                    "sim: client on %s is %d frames behind; disconnecting",
                    conn.path,
                    SEND_QUEUE_LIMIT,
                )
                asyncio.get_running_loop().create_task(self._close(conn, abort=True))
                return

    async def _write(self, conn: _Connection) -> None:
        loop = asyncio.get_running_loop()
        while True:
            due, frame = await conn.queue.get()
            wait = due - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            try:
                if isinstance(frame, bytes):
                    await conn.ws.send_bytes(frame)
                else:
                    await conn.ws.send_str(frame)
            except (ConnectionError, RuntimeError):
                return

    async def _close(self, conn: _Connection, *, abort: bool = False) -> None:
        if conn not in self._connections:
            return
        self._connections.discard(conn)
        self._changed.set()
        if conn.writer is not None:
            conn.writer.cancel()
        if abort:
            transport = conn.ws._req.transport if conn.ws._req is not None else None
            if transport is not None:
                transport.abort()
        with contextlib.suppress(ConnectionError, RuntimeError, asyncio.CancelledError):
            await conn.ws.close()

    # -- REST -----------------------------------------------------------------------------------

    def _rest_endpoint(self, handler: RestHandler) -> Callable[[web.Request], Any]:
        """Wrap `handler`; the market is first brought up to the clock (publishing the
        closes that causes), so an answer never lags the time the client asked at:
        clients that compute windows from their own clock (kucoin's klines) see the
        candle forming now."""

        async def endpoint(request: web.Request) -> web.Response:
            params = dict(request.query)
            if request.can_read_body:
                with contextlib.suppress(ValueError):
                    body = await request.json()
                    if isinstance(body, dict):
                        params.update({str(k): str(v) for k, v in body.items()})
            self._publish(self.market.advance(self.now_ms()))
            reply = handler(RestRequest(params, f"ws://{request.host}"))
            return web.Response(
                status=reply.status,
                text=json.dumps(reply.body, separators=(",", ":")),
                content_type="application/json",
            )

        return endpoint

    # -- the market's clock ---------------------------------------------------------------------

    async def _tick_forever(self) -> None:
        loop = asyncio.get_running_loop()
        started = loop.time()
        steps_done = 0
        next_heartbeat = started
        interval = 0.1 if self.rate == 0 else min(0.1, max(0.005, 1 / self.rate))
        while True:
            now_ms = self.now_ms()
            events = self.market.advance(now_ms)
            due = int((loop.time() - started) * self.rate)
            if not self._paused:
                for _ in range(min(due - steps_done, _MAX_STEPS_PER_TICK)):
                    for symbol in self.market.symbols:
                        events.extend(self.market.step(symbol, now_ms))
            steps_done = due
            self._publish(events)
            if loop.time() >= next_heartbeat:
                next_heartbeat += _HEARTBEAT_S
                for conn in list(self._connections):
                    self._send(conn, conn.session.heartbeat(now_ms))
            await asyncio.sleep(interval)

    def _publish(self, events: list[MarketEvent]) -> None:
        if not events:
            return
        if self.faults.book_breaks_pending:
            events = [e for e in map(self._book_fault, events) if e is not None]
        for conn in list(self._connections):
            frames: list[Frame] = []
            for event in events:
                frames.extend(conn.session.render(event))
            self._send(conn, frames)
        self._changed.set()


async def serve(exchange: str, port: int, symbols: list[str], rate: float, seed: int) -> None:
    """Run a simulator until cancelled (the `marketbus sim` command).

    ConfigError for an exchange it does not simulate (or a negative rate), MarketbusError
    for a port it cannot listen on: one line each, not a traceback.
    """
    try:
        sim = SimServer(exchange, symbols, rate=rate, seed=seed, port=port, warmup_s=3600)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    try:
        await sim.start()
    except OSError as exc:
        await sim.stop()
        reason = exc.strerror
        if exc.errno == errno.EADDRINUSE:
            reason = f"port {port} is in use; choose another with --port"
        raise MarketbusError(
            f"the simulator cannot listen on {sim.host}:{port}: {reason}"
        ) from None
    try:
        log.info("simulating %s on %s (%s)", exchange, sim.http_url, ", ".join(symbols))
        await asyncio.Event().wait()
    finally:
        await sim.stop()
