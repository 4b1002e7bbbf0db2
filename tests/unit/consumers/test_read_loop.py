"""The read path's bookkeeping without a server: subscriptions the engine asks for."""

from __future__ import annotations

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError

from marketbus.consumers.engine import BufferSizes, Engine
from marketbus.consumers.read_loop import ReadLoop
from marketbus.consumers.streams import StreamReader
from marketbus.shared.backoff import Backoff
from marketbus.shared.codecs import encode
from marketbus.shared.schema import Trade, Trades

TRADES = "md:binance:trades:BTC/USDT"
STATUS = "md:binance:status"


class FlakyTransport:
    """A `Transport` whose first SUBSCRIBE fails as a lost connection does."""

    def __init__(self) -> None:
        self.subscribed: list[list[str]] = []
        self.failures = 1
        self.woken = 0

    async def subscribe(self, channels: list[str]) -> None:
        if self.failures:
            self.failures -= 1
            raise RedisConnectionError("lost")
        self.subscribed.append(channels)

    async def psubscribe(self, patterns: list[str]) -> None:
        pass

    async def unsubscribe(self, channels: list[str]) -> None:
        pass

    async def pump(self, timeout_s: float) -> None:
        pass

    def wake(self) -> None:
        self.woken += 1

    async def close(self) -> None:
        pass


def trade(seq: int) -> Trades:
    return Trades(
        exchange="binance",
        symbol="BTC/USDT",
        run=1,
        seq=seq,
        ts_ms=seq,
        recv_ns=0,
        trades=(Trade(id=str(seq), ts_ms=seq, price=float(seq), amount=1.0, side="buy"),),
    )


async def test_a_status_channel_the_engine_asks_for_is_subscribed_even_after_a_failure() -> None:
    engine = Engine()
    engine.add_pattern("md:*:trades:*", BufferSizes())  # does not cover the status channel
    reader = ReadLoop(
        engine,
        StreamReader(engine, Backoff(), on_progress=lambda: None),
        backoff=Backoff(),
        poll_s=1,
    )
    transport = FlakyTransport()
    reader.attach(transport)
    assert reader.connected
    reader.on_live_batch([(TRADES.encode(), None, encode(trade(1)))])  # found by the pattern
    assert transport.woken == 1  # the loop is told there is a subscription to send
    with pytest.raises(RedisConnectionError):
        await reader.subscribe_requested()
    await reader.subscribe_requested()  # kept, and sent again
    assert transport.subscribed == [[STATUS]]
    await reader.subscribe_requested()  # nothing more to send
    assert transport.subscribed == [[STATUS]]
    await reader.close()
    assert not reader.connected
