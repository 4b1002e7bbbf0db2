"""The SDK with an archive: history across the archive and the stream, and candle
buffers whose older part comes from the archive. Real redis-server, real recorder."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import redis.asyncio as aioredis

pytest.importorskip("pyarrow")

from marketbus.archive.options import RecordOptions
from marketbus.archive.recorder import Recorder
from marketbus.consumers import Candle, Subscriber, SyncSubscriber
from marketbus.consumers.buffers import candle_row
from marketbus.shared.config import RedisConfig
from marketbus.shared.schema import OHLCV
from tests.support.waiting import wait_until
from tests.support.wire_writer import WireWriter

M = 60_000
SYM = "BTC/USDT"
T0 = 1_700_000_040_000 // M * M  # a minute boundary


async def _record(url: str, out: Path) -> None:
    options = RecordOptions(feeds=["md:binance:*"], out=str(out), fsync=False)
    await Recorder(RedisConfig(url=url), options).run(until_idle=True)


async def _write_candles(writer: WireWriter, minutes: range, base: float = 10.0) -> list[OHLCV]:
    feed = writer.feed("ohlcv.1m", SYM)
    written = []
    for i in minutes:
        message = await writer.write(feed, writer.candle(SYM, T0 + i * M, base + i, closed=True))
        assert isinstance(message, OHLCV)
        written.append(message)
    return written


def _rows(candles: list[OHLCV]) -> list[Candle]:
    return [candle_row(c, closed=True) for c in candles]


async def test_candle_buffer_fills_its_older_part_from_the_archive(
    redis_url: str, tmp_path: Path
) -> None:
    redis = aioredis.Redis.from_url(redis_url)
    writer = WireWriter(redis, run=1_000)
    originals = await _write_candles(writer, range(50))
    await _record(redis_url, tmp_path / "arc")
    feed = writer.feed("ohlcv.1m", SYM)
    await redis.xtrim(feed, maxlen=10, approximate=False)
    assert await redis.xlen(feed) == 10
    async with Subscriber(redis_url, candles=40, archive=tmp_path / "arc") as sub:
        await sub.subscribe(feed)
        buffer = sub.candles("binance", SYM, "1m")
        assert buffer.closed() == _rows(originals[10:])
        # live candles go on from the stream's end
        [newer] = await _write_candles(writer, range(50, 51))
        newest = candle_row(newer, closed=True)
        await wait_until(lambda: buffer.latest == newest, what="the live candle")
        assert buffer.closed() == [*_rows(originals[11:]), newest]
    await redis.aclose()


async def test_without_an_archive_the_buffer_holds_what_the_stream_has(
    redis_url: str, tmp_path: Path
) -> None:
    redis = aioredis.Redis.from_url(redis_url)
    writer = WireWriter(redis, run=1_000)
    originals = await _write_candles(writer, range(20))
    feed = writer.feed("ohlcv.1m", SYM)
    await redis.xtrim(feed, maxlen=10, approximate=False)
    async with Subscriber(redis_url, candles=40) as sub:
        await sub.subscribe(feed)
        assert sub.candles("binance", SYM, "1m").closed() == _rows(originals[10:])
    await redis.aclose()


async def test_history_joins_archive_and_stream_once_the_last_value_winning(
    redis_url: str, tmp_path: Path
) -> None:
    redis = aioredis.Redis.from_url(redis_url)
    writer = WireWriter(redis, run=1_000)
    feed = writer.feed("ohlcv.1m", SYM)
    first = await _write_candles(writer, range(30))
    [corrected_early] = await _write_candles(writer, range(5, 6), base=500.0)
    await _record(redis_url, tmp_path / "arc")
    later = await _write_candles(writer, range(30, 40))
    [corrected_late] = await _write_candles(writer, range(35, 36), base=900.0)
    await redis.xtrim(feed, maxlen=15, approximate=False)  # 0..25 only in the archive
    expected = first + later
    expected[5], expected[35] = corrected_early, corrected_late
    async with Subscriber(redis_url, archive=str(tmp_path / "arc")) as sub:
        candles = await sub.history(feed, T0, T0 + 100 * M)
        assert candles == _rows(expected)
        window = await sub.history(feed, T0 + 3 * M, T0 + 33 * M)
        assert window == _rows(expected[3:33])
    await redis.aclose()


async def test_history_of_trades_is_every_trade_once_in_time_order(
    redis_url: str, tmp_path: Path
) -> None:
    redis = aioredis.Redis.from_url(redis_url)
    writer = WireWriter(redis, run=1_000)
    feed = writer.feed("trades", SYM)
    written = [
        await writer.write(feed, writer.trades(SYM, float(i), float(i) + 0.5, first_id=2 * i))
        for i in range(6)
    ]
    await _record(redis_url, tmp_path / "arc")
    written += [
        await writer.write(feed, writer.trades(SYM, float(i), first_id=100 + i))
        for i in range(6, 9)
    ]
    await redis.xtrim(feed, maxlen=4, approximate=False)
    expected = [t for batch in written for t in batch.trades]  # type: ignore[attr-defined]
    async with Subscriber(redis_url, archive=tmp_path / "arc") as sub:
        trades = await sub.history(feed, 0, 2**62)
    assert [t.id for t in trades] == [t.id for t in expected]
    assert trades == sorted(expected, key=lambda t: t.ts_ms)
    await redis.aclose()


async def test_sync_subscriber_reads_history(redis_url: str, tmp_path: Path) -> None:
    redis = aioredis.Redis.from_url(redis_url)
    writer = WireWriter(redis, run=1_000)
    originals = await _write_candles(writer, range(12))
    await _record(redis_url, tmp_path / "arc")
    feed = writer.feed("ohlcv.1m", SYM)

    def read() -> list[Candle]:
        with SyncSubscriber(redis_url, archive=tmp_path / "arc") as sub:
            rows = sub.history(feed, T0, T0 + 12 * M)
            assert all(isinstance(r, Candle) for r in rows)
            return rows  # type: ignore[return-value]

    assert await asyncio.to_thread(read) == _rows(originals)
    await redis.aclose()
