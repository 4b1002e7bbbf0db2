"""The archive examples and the record/replay commands, run as a user runs them."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import msgspec
import redis.asyncio as aioredis

from marketbus.shared.codecs import decode
from marketbus.shared.schema import Trade
from tests.support.wire_writer import WireWriter

EXAMPLES = Path(__file__).resolve().parents[3] / "examples"
T0 = 1_706_659_200_000  # 2024-01-31T00:00Z
M = 60_000


async def _seed(redis: aioredis.Redis) -> None:
    writer = WireWriter(redis, run=5)
    feed = writer.feed("ohlcv.1m", "BTC/USDT")
    for i in range(3):
        await writer.write(feed, writer.candle("BTC/USDT", T0 + i * M, 100.0 + i, closed=True))
    await writer.write(feed, writer.candle("BTC/USDT", T0 + M, 555.0, closed=True))  # correction
    await writer.write(
        writer.feed("ohlcv.1m", "ETH/USDT"), writer.candle("ETH/USDT", T0, 1.0, closed=True)
    )
    batch = msgspec.structs.replace(
        writer.trades("BTC/USDT"),
        ts_ms=T0,
        trades=(
            Trade(id="1", ts_ms=T0, price=100.0, amount=0.1, side="buy"),
            Trade(id="2", ts_ms=T0 + 5, price=101.0, amount=2.5, side="sell"),
        ),
    )
    await writer.write(writer.feed("trades", "BTC/USDT"), batch)


async def _run(*args: str) -> str:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err.decode()
    return out.decode()


async def test_record_from_a_config_file_then_query_with_duckdb_and_pandas_then_replay(
    redis_url: str, tmp_path: Path
) -> None:
    redis = aioredis.Redis.from_url(redis_url)
    await _seed(redis)
    archive = tmp_path / "archive"
    config = tmp_path / "record.toml"
    config.write_text(
        f'[redis]\nurl = "{redis_url}"\n\n[record]\nfeeds = ["md:binance:*"]\n'
        f'out = "{archive}"\nfsync = false\n'
    )
    out = await _run("-m", "marketbus.cli", "record", "--config", str(config), "--exit-when-idle")
    assert "entries=6, rows=7" in out, out

    query = ["--archive", str(archive), "--day", "2024-01-31", "--min-amount", "0.5"]
    for example in ("archive_duckdb.py", "archive_pandas.py"):
        out = await _run(str(EXAMPLES / example), *query)
        assert "3 candles of BTC/USDT on 2024-01-31" in out, out
        assert "c=555.0" in out and "c=101.0" not in out, out  # the correction won
        assert "1 trades of at least 0.5" in out and "2.5 @ 101.0" in out, out

    out = await _run(
        "-m",
        "marketbus.cli",
        "replay",
        "--from",
        str(archive),
        "--redis",
        redis_url,
        "--namespace",
        "bt",
        "--fast",
        "--feeds",
        "md:binance:ohlcv.1m:*",
        "--start",
        "2024-01-31T00:00:00Z",
        "--end",
        "2024-01-31T00:03:00",
    )
    # a candle counts at its close: those opened at 00:00 and 00:01 (with its
    # correction) closed before 00:03, the one opened at 00:02 did not
    assert "replayed 4 messages of 2 feeds" in out, out
    replayed = await redis.xrange("bt:binance:ohlcv.1m:BTC/USDT")
    assert [decode(f[b"d"]).ts_ms for _, f in replayed] == [T0, T0 + M, T0 + M]
    assert not await redis.exists("bt:binance:trades:BTC/USDT")
    await redis.aclose()
