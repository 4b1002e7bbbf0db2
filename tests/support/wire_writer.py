"""Writes messages exactly as SPEC "Streams" says a producer does, for consumer tests.

Each message is stamped with the writer's run and the feed's next seq, encoded once,
PUBLISHed on the feed name and XADDed as ``{run}-{seq} d {payload}`` with ``MAXLEN ~``
(ohlcv: closed candles only go to the stream). Knobs let fault tests skip the publish
or the XADD of a message, to fabricate exactly the holes a consumer must handle.
"""

from __future__ import annotations

import time
from typing import Any

import msgspec
import redis.asyncio as aioredis

from marketbus.shared.codecs import Encoding, encode
from marketbus.shared.names import entry_id, feed_name, status_name
from marketbus.shared.schema import OHLCV, Book, Message, Status, Ticker, Trade, Trades


class WireWriter:
    """One fake producer run writing to *redis* in namespace *ns*."""

    def __init__(
        self,
        redis: aioredis.Redis,
        *,
        ns: str = "md",
        exchange: str = "binance",
        run: int | None = None,
        cap: int = 10_000,
        encoding: Encoding = "json",
    ) -> None:
        self.redis = redis
        self.ns = ns
        self.exchange = exchange
        self.run = run if run is not None else time.time_ns() // 1_000_000
        self.cap = cap
        self.encoding = encoding
        self.seqs: dict[str, int] = {}

    def feed(self, kind: str, symbol: str) -> str:
        return feed_name(self.ns, self.exchange, kind, symbol)

    @property
    def status_feed(self) -> str:
        return status_name(self.ns, self.exchange)

    def new_run(self, run: int | None = None) -> None:
        """Start a later run: seqs restart at 1."""
        self.run = run if run is not None else self.run + 1
        self.seqs.clear()

    async def write(
        self,
        feed: str,
        message: Message,
        *,
        publish: bool = True,
        stream: bool | None = None,
    ) -> Message:
        """Stamp, encode, PUBLISH and XADD *message*; returns the stamped message."""
        seq = self.seqs.get(feed, 0) + 1
        self.seqs[feed] = seq
        stamped = msgspec.structs.replace(message, run=self.run, seq=seq)
        payload = encode(stamped, self.encoding)
        if stream is None:
            stream = not isinstance(stamped, OHLCV) or stamped.closed
        async with self.redis.pipeline(transaction=False) as pipe:
            if stream:
                pipe.xadd(
                    feed,
                    {"d": payload},
                    id=entry_id(self.run, seq),
                    maxlen=self.cap,
                    approximate=True,
                )
            if publish:
                pipe.publish(feed, payload)
            await pipe.execute()
        return stamped

    async def raw(self, feed: str, payload: bytes, *, stream: bool = True) -> None:
        """Publish (and XADD) bytes that are not a valid message, taking a seq."""
        seq = self.seqs.get(feed, 0) + 1
        self.seqs[feed] = seq
        if stream:
            await self.redis.xadd(feed, {"d": payload}, id=entry_id(self.run, seq))
        await self.redis.publish(feed, payload)

    # -- message builders ---------------------------------------------------------------

    def candle(
        self, symbol: str, ts_ms: int, close: float, *, closed: bool, timeframe: str = "1m"
    ) -> OHLCV:
        return OHLCV(
            exchange=self.exchange,
            symbol=symbol,
            ts_ms=ts_ms,
            recv_ns=time.time_ns(),
            timeframe=timeframe,
            open=close - 1,
            high=close + 1,
            low=close - 2,
            close=close,
            volume=1.0,
            closed=closed,
        )

    def ticker(self, symbol: str, last: float) -> Ticker:
        return Ticker(
            exchange=self.exchange,
            symbol=symbol,
            ts_ms=int(time.time() * 1000),
            recv_ns=time.time_ns(),
            bid=last - 0.5,
            ask=last + 0.5,
            last=last,
        )

    def trades(self, symbol: str, *prices: float, first_id: int = 0) -> Trades:
        now = int(time.time() * 1000)
        return Trades(
            exchange=self.exchange,
            symbol=symbol,
            ts_ms=now,
            recv_ns=time.time_ns(),
            trades=tuple(
                Trade(id=str(first_id + i), ts_ms=now, price=p, amount=1.0, side="buy")
                for i, p in enumerate(prices)
            ),
        )

    def book(self, symbol: str, mid: float, depth: int = 5) -> Book:
        return Book(
            exchange=self.exchange,
            symbol=symbol,
            ts_ms=int(time.time() * 1000),
            recv_ns=time.time_ns(),
            depth=depth,
            bids=tuple((mid - 1 - i, 1.0) for i in range(depth)),
            asks=tuple((mid + 1 + i, 1.0) for i in range(depth)),
        )

    def status(self, event: Any, feed: str | None = None, detail: str = "") -> Status:
        return Status(
            exchange=self.exchange,
            ts_ms=None,
            recv_ns=time.time_ns(),
            event=event,
            feed=feed,
            detail=detail,
        )
