"""`SyncSubscriber`: the `Subscriber` for code without asyncio.

It runs an event loop in one background thread. Every read is executed on that loop
and returns a snapshot (a copy, or an immutable message), so a reader thread never
sees a buffer change under it. Callbacks run on the background thread. Every call
has a deadline (``timeout_s``).
"""

from __future__ import annotations

import asyncio
import functools
import threading
from collections.abc import Callable, Coroutine, Iterable
from types import TracebackType
from typing import Any, Concatenate, ParamSpec, TypeVar, Unpack

from marketbus.consumers.buffers import BookState, CandleBuffer, TradeBuffer
from marketbus.consumers.events import Gap, Stats
from marketbus.consumers.listeners import GapCallback, MessageCallback, StaleCallback
from marketbus.consumers.options import OptionKeywords, SubscriberOptions, resolve_options
from marketbus.consumers.subscriber import Subscriber
from marketbus.shared.config import RedisConfig
from marketbus.shared.errors import SubscriberClosedError
from marketbus.shared.schema import Ticker

T = TypeVar("T")
P = ParamSpec("P")


def _blocking(
    method: Callable[Concatenate[Subscriber, P], Coroutine[Any, Any, T]],
) -> Callable[Concatenate[SyncSubscriber, P], T]:
    """*method* of `Subscriber`, with its signature, awaited on the loop thread."""

    @functools.wraps(method)
    def call(self: SyncSubscriber, /, *args: P.args, **kwargs: P.kwargs) -> T:
        return self._run(method(self._subscriber(), *args, **kwargs))

    return call


def _on_loop(
    method: Callable[Concatenate[Subscriber, P], T],
) -> Callable[Concatenate[SyncSubscriber, P], T]:
    """Plain *method* of `Subscriber`, with its signature, called on the loop thread."""

    @functools.wraps(method)
    def call(self: SyncSubscriber, /, *args: P.args, **kwargs: P.kwargs) -> T:
        return self._read(lambda sub: method(sub, *args, **kwargs))

    return call


class SyncSubscriber:
    """Blocking facade over `Subscriber`; takes the same options and keyword arguments
    (validated here: a bad option is a ConfigError before any thread starts).

    ::

        with SyncSubscriber("redis://localhost:6379/0") as sub:
            sub.subscribe(exchange="binance", symbol="BTC/USDT", kind="ohlcv.1m")
            closes = sub.candles("binance", "BTC/USDT", "1m").arrays().close
    """

    def __init__(
        self,
        redis: str | RedisConfig = "redis://127.0.0.1:6379/0",
        *,
        options: SubscriberOptions | None = None,
        timeout_s: float = 30.0,
        on_message: MessageCallback | None = None,
        on_gap: GapCallback | None = None,
        on_stale: StaleCallback | None = None,
        **keywords: Unpack[OptionKeywords],
    ) -> None:
        self._redis = redis
        self._options = resolve_options(options, keywords)
        self._callbacks = (on_message, on_gap, on_stale)
        self._timeout_s = timeout_s
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._sub: Subscriber | None = None

    def __enter__(self) -> SyncSubscriber:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def start(self) -> None:
        """Start the background loop and connect (raises what `Subscriber.start` raises)."""
        if self._thread is not None:
            return
        loop = asyncio.new_event_loop()
        self._loop = loop
        self._thread = threading.Thread(
            target=loop.run_forever, name="marketbus-subscriber", daemon=True
        )
        self._thread.start()
        on_message, on_gap, on_stale = self._callbacks

        async def make() -> Subscriber:
            sub = Subscriber(
                self._redis,
                options=self._options,
                on_message=on_message,
                on_gap=on_gap,
                on_stale=on_stale,
            )
            await sub.start()
            return sub

        try:
            self._sub = self._run(make())
        except BaseException:
            self._stop_loop()
            raise

    def close(self) -> None:
        """Close the subscriber and stop the thread; idempotent."""
        if self._loop is None:
            return
        try:
            if self._sub is not None:
                self._run(self._sub.close())
        finally:
            self._stop_loop()

    def _stop_loop(self) -> None:
        loop, thread = self._loop, self._thread
        self._loop = self._thread = None
        if loop is None or thread is None:
            return
        loop.call_soon_threadsafe(loop.stop)
        thread.join(self._timeout_s)
        if not thread.is_alive():
            loop.close()

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        if self._loop is None:
            coro.close()
            raise SubscriberClosedError("SyncSubscriber is not started")
        future = asyncio.run_coroutine_threadsafe(coro, self._loop)
        return future.result(self._timeout_s)

    def _subscriber(self) -> Subscriber:
        if self._sub is None:
            raise SubscriberClosedError("SyncSubscriber is not started")
        return self._sub

    def _read(self, fn: Callable[[Subscriber], T]) -> T:
        """Run *fn* on the loop thread, where buffers are mutated, and return its result."""
        sub = self._subscriber()

        async def call() -> T:
            return fn(sub)

        return self._run(call())

    # -- subscribing -------------------------------------------------------------------

    # `Subscriber`'s own signatures, run on the loop thread (callbacks run there too).
    subscribe = _blocking(Subscriber.subscribe)
    subscribe_pattern = _blocking(Subscriber.subscribe_pattern)
    discover = _blocking(Subscriber.discover)
    unsubscribe = _blocking(Subscriber.unsubscribe)
    history = _blocking(Subscriber.history)
    on_message = _on_loop(Subscriber.on_message)

    # -- snapshots ---------------------------------------------------------------------

    def candles(self, exchange: str, symbol: str, timeframe: str = "1m") -> CandleBuffer:
        """A copy of the candle buffer (its numpy views are then stable)."""
        return self._read(lambda s: s.candles(exchange, symbol, timeframe).snapshot())

    def trades(self, exchange: str, symbol: str) -> TradeBuffer:
        return self._read(lambda s: s.trades(exchange, symbol).snapshot())

    def book(self, exchange: str, symbol: str) -> BookState:
        return self._read(lambda s: s.book(exchange, symbol).snapshot())

    def ticker(self, exchange: str, symbol: str) -> Ticker | None:
        return self._read(lambda s: s.ticker(exchange, symbol))

    def is_stale(self, feed: str) -> bool:
        return self._read(lambda s: s.is_stale(feed))

    def stale_reason(self, feed: str) -> str:
        return self._read(lambda s: s.stale_reason(feed))

    def position(self, feed: str) -> tuple[int, int] | None:
        return self._read(lambda s: s.position(feed))

    @property
    def options(self) -> SubscriberOptions:
        """The options the subscriber runs with (validated)."""
        return self._options

    @property
    def stats(self) -> Stats:
        return self._read(lambda s: s.stats)

    @property
    def gaps(self) -> list[Gap]:
        return self._read(lambda s: s.gaps)

    @property
    def feeds(self) -> list[str]:
        return self._read(lambda s: s.feeds)

    def ready(self, feeds: Iterable[str] | None = None, timeout_s: float | None = None) -> None:
        names = list(feeds) if feeds is not None else None
        self._run(self._subscriber().ready(names, timeout_s))
