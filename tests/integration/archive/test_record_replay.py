"""Record a bus into an archive, replay it, read it back: real redis-server, real files."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
import redis.asyncio as aioredis

from marketbus.archive.continuity import Position
from marketbus.archive.dataset import archive_files
from marketbus.archive.errors import ArchiveError, ArchiveFileError
from marketbus.archive.history import history
from marketbus.archive.manifest import Rename
from marketbus.archive.options import RecordOptions, ReplayOptions
from marketbus.archive.partitions import Partition
from marketbus.archive.recorder import Recorder
from marketbus.archive.replay import replay
from marketbus.archive.rows import RowBuilder
from marketbus.archive.store import MANIFEST, ArchiveWriter
from marketbus.shared.codecs import decode
from marketbus.shared.config import RedisConfig
from marketbus.shared.schema import Ticker
from tests.support.redis_process import RedisProcess
from tests.support.waiting import wait_until
from tests.support.wire_writer import WireWriter

M = 60_000
SYM = "BTC/USDT:USDT"


async def _seed(writer: WireWriter, n: int = 20) -> None:
    for i in range(n):
        await writer.write(
            writer.feed("ohlcv.1m", SYM), writer.candle(SYM, i * M, 10.0 + i, closed=True)
        )
        await writer.write(
            writer.feed("trades", SYM), writer.trades(SYM, 1.0 + i, 2.0, first_id=2 * i)
        )
        await writer.write(writer.feed("ticker", SYM), writer.ticker(SYM, 3.0 + i))
        await writer.write(writer.feed("book", SYM), writer.book(SYM, 3.0 + i))


async def _entries(redis: aioredis.Redis, name: str) -> list[tuple[bytes, Any]]:
    return [(entry_id, decode(fields[b"d"])) for entry_id, fields in await redis.xrange(name)]


async def _record(url: str, out: Path, **extra: Any) -> None:
    options = RecordOptions(feeds=["md:binance:*"], out=str(out), fsync=False, **extra)
    await Recorder(RedisConfig(url=url), options).run(until_idle=True)


async def test_record_then_replay_gives_streams_equal_in_every_field(
    redis_url: str, tmp_path: Path
) -> None:
    redis = aioredis.Redis.from_url(redis_url)
    writer = WireWriter(redis, run=1_000)
    await _seed(writer)
    # a correction of candle 3, a trade batch with nulls and no trades
    await writer.write(writer.feed("ohlcv.1m", SYM), writer.candle(SYM, 3 * M, 99.0, closed=True))
    trades = writer.trades(SYM, 5.0)
    await writer.write(writer.feed("trades", SYM), trades)
    await _record(redis_url, tmp_path / "arc")
    for target in ("bt", "bt2"):
        await replay(
            RedisConfig(url=redis_url),
            ReplayOptions(source=str(tmp_path / "arc"), namespace=target, speed=None),
        )
    for kind in ("ohlcv.1m", "trades", "ticker", "book"):
        original = await _entries(redis, f"md:binance:{kind}:{SYM}")
        assert original and await _entries(redis, f"bt:binance:{kind}:{SYM}") == original
        assert await _entries(redis, f"bt2:binance:{kind}:{SYM}") == original
    with pytest.raises(ArchiveError, match="never over the live data"):
        await replay(
            RedisConfig(url=redis_url), ReplayOptions(source=str(tmp_path / "arc"), namespace="md")
        )
    catalog = await redis.hgetall("bt:feeds")
    assert len(catalog) == 4
    candles = await history(redis, tmp_path / "arc", f"md:binance:ohlcv.1m:{SYM}", 0, 10 * M)
    assert [c.ts_ms for c in candles] == [i * M for i in range(10)]
    assert candles[3].close == 99.0
    await redis.aclose()


async def test_history_joins_archive_and_stream_without_duplicates(
    redis_url: str, tmp_path: Path
) -> None:
    redis = aioredis.Redis.from_url(redis_url)
    writer = WireWriter(redis, run=1_000)
    feed = writer.feed("ohlcv.1m", SYM)
    for i in range(5):
        await writer.write(feed, writer.candle(SYM, i * M, 10.0 + i, closed=True))
    await _record(redis_url, tmp_path / "arc")
    for i in range(5, 8):
        await writer.write(feed, writer.candle(SYM, i * M, 10.0 + i, closed=True))
    await redis.xtrim(feed, maxlen=4)  # the archive is now the only home of 0..3
    candles = await history(redis, tmp_path / "arc", feed, 0, 100 * M)
    assert [c.ts_ms for c in candles] == [i * M for i in range(8)]
    await redis.aclose()


async def _spawn_recorder(url: str, out: Path) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "marketbus.cli",
        "record",
        "--redis",
        url,
        "--feeds",
        "md:binance:*",
        "--out",
        str(out),
        "--roll-s",
        "0.05",
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )


def _recorded_trade_ids(out: Path) -> list[str]:
    ids: list[str] = []
    for file in archive_files(out):
        if file.partition.kind == "trades":
            ids += pq.read_table(file.path).column("trade_id").to_pylist()
    return ids


async def test_kill_9_mid_file_then_restart_has_no_duplicate_and_no_loss(
    redis_url: str, tmp_path: Path
) -> None:
    redis = aioredis.Redis.from_url(redis_url)
    writer = WireWriter(redis, run=1_000)
    feed = writer.feed("trades", SYM)
    out = tmp_path / "arc"
    proc = await _spawn_recorder(redis_url, out)
    sent = 0

    async def write_some(count: int) -> None:
        nonlocal sent
        for _ in range(count):
            await writer.write(feed, writer.trades(SYM, 1.0, first_id=sent))
            sent += 1

    await write_some(300)
    await wait_until(lambda: len(_recorded_trade_ids(out)) >= 100, 30, "some files")
    await write_some(300)
    os.kill(proc.pid, signal.SIGKILL)
    await proc.wait()
    await write_some(300)
    proc = await _spawn_recorder(redis_url, out)
    await wait_until(lambda: len(_recorded_trade_ids(out)) >= sent, 30, "every trade recorded")
    proc.send_signal(signal.SIGTERM)
    await asyncio.wait_for(proc.wait(), 30)
    ids = _recorded_trade_ids(out)
    assert sorted(ids, key=int) == [str(i) for i in range(sent)]
    await redis.aclose()


async def test_redis_outage_is_survived_and_what_was_missed_is_recorded(
    make_redis_server: Any, tmp_path: Path
) -> None:
    server: RedisProcess = make_redis_server()
    out = tmp_path / "arc"
    redis = aioredis.Redis.from_url(server.url)
    writer = WireWriter(redis, run=1_000, cap=10)
    feed = writer.feed("trades", SYM)
    options = RecordOptions(
        feeds=["md:binance:*"],
        out=str(out),
        fsync=False,
        roll_s=0.05,
        backoff_initial_s=4.0,
        backoff_max_s=4.0,
    )
    recorder = Recorder(RedisConfig(url=server.url), options)
    task = asyncio.create_task(recorder.run())
    for i in range(5):
        await writer.write(feed, writer.trades(SYM, 1.0, first_id=i))
    await wait_until(lambda: recorder.stats.entries == 5, 20, "first entries")
    server.kill()
    await wait_until(lambda: recorder.stats.outages == 1, 20, "the outage noticed")
    server.start()
    await redis.aclose()
    redis = aioredis.Redis.from_url(server.url)
    writer.redis = redis
    # the restarted server lost the stream; the producer goes on in the same run, and
    # the cap evicts most of it before the recorder's backoff (>= 2 s) lets it look
    for i in range(5, 100):
        await writer.write(feed, writer.trades(SYM, 1.0, first_id=i))
    await wait_until(lambda: recorder.stats.gaps >= 1, 20, "the gap recorded")
    await wait_until(lambda: not task.done() and recorder.stats.entries > 5, 20, "resumed")
    recorder.stop()
    await asyncio.wait_for(task, 20)
    gaps = [f for f in archive_files(out) if f.partition.kind == "gap"]
    rows = [r for f in gaps for r in pq.read_table(f.path).to_pylist()]
    assert rows and rows[0]["reason"] == "evicted"
    assert rows[0]["first_seq"] == 6 and rows[0]["run"] == 1_000
    await redis.aclose()


async def test_corrupt_and_foreign_files_are_named_and_nothing_else_is_lost(
    redis_url: str, tmp_path: Path
) -> None:
    redis = aioredis.Redis.from_url(redis_url)
    writer = WireWriter(redis, run=1_000)
    await _seed(writer, 5)
    out = tmp_path / "arc"
    await _record(redis_url, out)
    good = archive_files(out)
    part = good[0].path.parent
    (part / "junk.parquet").write_bytes(b"not parquet at all")
    pq.write_table(
        pq.read_table(good[0].path).replace_schema_metadata({}), part / "foreign.parquet"
    )
    (out / "README.txt").write_text("notes")
    with pytest.raises(ArchiveFileError, match=r"(foreign|junk)\.parquet"):
        await replay(
            RedisConfig(url=redis_url), ReplayOptions(source=str(out), namespace="bt", speed=None)
        )
    stats = await replay(
        RedisConfig(url=redis_url),
        ReplayOptions(source=str(out), namespace="bt", speed=None, skip_bad_files=True),
    )
    assert stats.messages == 20
    # the recorder still records into the same directory
    await writer.write(writer.feed("ticker", SYM), writer.ticker(SYM, 1.0))
    await _record(redis_url, out)
    assert len([f for f in archive_files(out, on_bad_file="skip")]) > len(good)
    await redis.aclose()


async def test_replay_at_speed_takes_the_exchange_time_divided_by_speed(
    redis_url: str, tmp_path: Path
) -> None:
    redis = aioredis.Redis.from_url(redis_url)
    writer = WireWriter(redis, run=1_000)
    for i in range(4):  # closes at 1, 2, 3, 4 minutes: 3 minutes of exchange time
        await writer.write(
            writer.feed("ohlcv.1m", SYM), writer.candle(SYM, i * M, 1.0, closed=True)
        )
    await _record(redis_url, tmp_path / "arc")
    options = ReplayOptions(source=str(tmp_path / "arc"), namespace="bt", speed=600.0)
    stats = await replay(RedisConfig(url=redis_url), options)
    assert stats.messages == 4 and stats.seconds >= 180 / 600 * 0.9
    await redis.aclose()


def test_one_recorder_per_directory_and_a_corrupt_manifest_is_named(tmp_path: Path) -> None:
    first = ArchiveWriter(tmp_path, "md")
    first.open()
    with pytest.raises(ArchiveError, match="another recorder"):
        ArchiveWriter(tmp_path, "md").open()
    first.commit({}, [])
    first.close()
    with pytest.raises(ArchiveError, match="records namespace 'md'"):
        ArchiveWriter(tmp_path, "bt").open()
    (tmp_path / MANIFEST).write_bytes(b'{"namespace": ')
    with pytest.raises(ArchiveError, match=MANIFEST):
        ArchiveWriter(tmp_path, "md").open()


def _stage_one(writer: ArchiveWriter) -> Rename:
    builder = RowBuilder("ticker")
    builder.add("1-1", Ticker(exchange="binance", symbol=SYM, run=1, seq=1, ts_ms=0, recv_ns=0))
    [(day, table)] = builder.take()
    return writer.stage(Partition("binance", "ticker", SYM, day), table, {"feed": "x"})


def test_a_crash_before_the_commit_point_leaves_nothing_visible(tmp_path: Path) -> None:
    writer = ArchiveWriter(tmp_path, "md")
    writer.open()
    staged = _stage_one(writer)
    writer.close()  # the process dies here: the manifest never named the file
    assert (tmp_path / staged.temp).exists() and archive_files(tmp_path) == []
    again = ArchiveWriter(tmp_path, "md")
    assert again.open().positions == {}
    assert not (tmp_path / staged.temp).exists() and archive_files(tmp_path) == []
    again.close()


def test_a_crash_after_the_commit_point_is_rolled_forward(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    writer = ArchiveWriter(tmp_path, "md")
    writer.open()
    staged = _stage_one(writer)
    real_replace = os.replace

    def die_on_data_files(src: Any, dst: Any) -> None:
        if str(dst).endswith(".parquet"):
            raise KeyboardInterrupt  # the process dies between the manifest and the renames
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", die_on_data_files)
    with pytest.raises(KeyboardInterrupt):
        writer.commit({"md:binance:ticker:X": Position(1, 1)}, [staged])
    writer.close()
    monkeypatch.setattr(os, "replace", real_replace)
    assert archive_files(tmp_path) == []
    again = ArchiveWriter(tmp_path, "md")
    assert again.open().positions == {"md:binance:ticker:X": Position(1, 1)}
    assert [f.path for f in archive_files(tmp_path)] == [tmp_path / staged.final]
    again.close()
