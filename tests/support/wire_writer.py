"""Writes messages exactly as SPEC "Streams" says a producer does, for consumer tests.

Each message is stamped with the writer's run and the feed's next seq, encoded once,
PUBLISHed on the feed name and XADDed as ``{run}-{seq} d {payload}`` with ``MAXLEN ~``
(ohlcv: closed candles only go to the stream). Knobs let fault tests skip the publish
or the XADD of a message, to fabricate exactly the holes a consumer must handle.

Given a `RedisCluster`, it writes as a cluster producer does: SPUBLISH + XADD on the
node owning the feed's slot, through `marketbus.producer.cluster_publish.publish_batch`.
"""

from __future__ import annotations

import time
from typing import Any, NamedTuple

import msgspec
import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster

from marketbus.producer.cluster_publish import publish_batch
from marketbus.shared.codecs import Encoding, encode
from marketbus.shared.names import entry_id, feed_name, status_name
from marketbus.shared.schema import OHLCV, Book, Message, Status, Ticker, Trade, Trades


class _Write(NamedTuple):
    """One item for `publish_batch` (shaped like the producer's ``Outgoing``)."""

    channel: str
    payload: bytes
    stream: str | None
    entry_id: str
    maxlen: int


class WireWriter:
    """One fake producer run writing to *redis* (a server or a cluster) in namespace *ns*."""

    def __init__(
        self,
        redis: aioredis.Redis | RedisCluster,
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
        if isinstance(self.redis, RedisCluster):
            await self._write_cluster(
                self.redis, feed, payload, seq, publish=publish, stream=stream
            )
            return stamped
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

    async def _write_cluster(
        self,
        cluster: RedisCluster,
        feed: str,
        payload: bytes,
        seq: int,
        *,
        publish: bool,
        stream: bool,
    ) -> None:
        if publish:
            item = _Write(
                feed, payload, feed if stream else None, entry_id(self.run, seq), self.cap
            )
            [error] = await publish_batch(cluster, [item])
            if error is not None:
                raise error
        elif stream:
            await cluster.xadd(
                feed, {"d": payload}, id=entry_id(self.run, seq), maxlen=self.cap, approximate=True
            )

    async def raw(self, feed: str, payload: bytes, *, stream: bool = True) -> None:
        """Publish (and XADD) bytes that are not a valid message, taking a seq."""
        seq = self.seqs.get(feed, 0) + 1
        self.seqs[feed] = seq
        if isinstance(self.redis, RedisCluster):
            await self._write_cluster(self.redis, feed, payload, seq, publish=True, stream=stream)
            return
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
