"""A forged ticker or book message costs only itself, on a real redis-server with each
transport: it is never shown, it is counted, and every real update after it shows."""

from __future__ import annotations

from collections.abc import AsyncIterator

import msgspec
import pytest
import redis.asyncio as aioredis

from marketbus.consumers import Gap, Subscriber
from marketbus.consumers.options import TransportKind
from marketbus.shared.codecs import encode
from marketbus.shared.schema import Book, Message, Ticker
from tests.support.waiting import wait_until
from tests.support.wire_writer import WireWriter

SYM = "BTC/USDT"
FORGED = 666.0


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(redis_url)
    yield client
    await client.aclose()


def price_of(message: Message) -> float:
    if isinstance(message, Ticker):
        return message.last or 0.0
    assert isinstance(message, Book)
    return message.bids[0][0] + 1  # WireWriter.book: the best bid is mid - 1


async def test_forged_ticker_and_book_are_dropped_and_the_feeds_flow_on(
    redis_url: str, redis: aioredis.Redis, transport: TransportKind
) -> None:
    writer = WireWriter(redis, run=7)
    ticker, book = writer.feed("ticker", SYM), writer.feed("book", SYM)
    gaps: list[Gap] = []
    delivered: list[float] = []

    def record(update: object) -> None:
        if isinstance(update, Ticker | Book):
            delivered.append(price_of(update))

    def shown() -> tuple[float | None, float | None]:
        latest = sub.ticker("binance", SYM)
        best_bid = sub.book("binance", SYM).best_bid
        return (
            None if latest is None else latest.last,
            None if best_bid is None else best_bid[0] + 1,
        )

    async def write_real(price: float) -> None:
        await writer.write(ticker, writer.ticker(SYM, price))
        await writer.write(book, writer.book(SYM, price))
        await wait_until(lambda: shown() == (price, price), what=f"real state {price}")

    async def forge(run: int, seq: int) -> None:
        for feed, message in (
            (ticker, writer.ticker(SYM, FORGED)),
            (book, writer.book(SYM, FORGED)),
        ):
            forged = msgspec.structs.replace(message, run=run, seq=seq)
            await redis.publish(feed, encode(forged))  # never XADDed: the stream lacks it

    async with Subscriber(
        redis_url, transport=transport, on_gap=gaps.append, on_message=record
    ) as sub:
        await sub.subscribe(ticker, book)
        for price in range(1, 4):
            await write_real(float(price))
        await forge(7, writer.seqs[ticker] + 1_000_000)
        for price in range(4, 8):  # each real update shows right after the forgery
            await write_real(float(price))
        await forge(8, 1)  # a later run no producer started
        for price in range(8, 11):
            await write_real(float(price))
        await wait_until(lambda: sub.stats.suspect == 4, what="both forgeries counted")
        await wait_until(lambda: delivered.count(10.0) == 2, what="the last real updates")
        assert FORGED not in delivered
        assert sub.position(ticker) == sub.position(book) == (7, 10)
        assert gaps == [] and sub.stats.gaps == 0
