"""History: the recorder's throughput and bytes on disk, and replay's throughput.

Rows (same process, same server, same streams):
- recorder: stream entries recorded per second, `Recorder` reading the streams to
  their end (XREAD, decode, rows, Parquet with zstd, fsynced commit) vs a plain
  redis-py XREAD loop writing each payload as a JSON line (the simplest recorder); per
  wall-clock second, and per CPU second of the recording process (what one core does,
  independent of what else a shared machine runs; Redis's own CPU is not counted on
  either side);
- bytes on disk per trade and per candle: the archive's Parquet files vs the JSON
  payloads the producer wrote (a trade's share of its batch's payload);
- replay: messages per second published back (PUBLISH + XADD) with ``--fast``.

Steady state: one-time costs (pyarrow importing pandas on its first array) are paid
before the timings. Workload: ``count`` messages over 20 trades feeds (batches of 1-4
trades, realistic prices, sizes and ids) and, for the candle row, ``count // 10``
closed 1m candles over 20 feeds.
"""

from __future__ import annotations

import random
import tempfile
import time
from pathlib import Path
from typing import BinaryIO

import msgspec
import redis.asyncio as aioredis

from bench.report import Row
from marketbus.archive.options import RecordOptions, ReplayOptions
from marketbus.archive.recorder import Recorder
from marketbus.archive.replay import replay
from marketbus.archive.rows import RowBuilder
from marketbus.shared.codecs import encoder_for
from marketbus.shared.config import RedisConfig
from marketbus.shared.names import entry_id, feed_name
from marketbus.shared.schema import OHLCV, Message, Trade, Trades

RUN = 1_790_000_000_000
FEEDS = 20


def trade_messages(count: int, seed: int = 7) -> list[tuple[str, Trades]]:
    rng = random.Random(seed)
    out: list[tuple[str, Trades]] = []
    prices = [100.0 + 10 * f for f in range(FEEDS)]
    next_id = [10_000_000 * (f + 1) for f in range(FEEDS)]
    for n in range(count):
        f = n % FEEDS
        ts = RUN + n * 3
        batch = []
        for _ in range(rng.randint(1, 4)):
            prices[f] = round(prices[f] + rng.choice((-0.01, 0.0, 0.01)), 2)
            next_id[f] += 1
            batch.append(
                Trade(
                    id=str(next_id[f]),
                    ts_ms=ts,
                    price=prices[f],
                    amount=round(rng.expovariate(2.0), 4),
                    side=rng.choice(("buy", "sell")),
                )
            )
        message = Trades(
            exchange="binance",
            symbol=f"T{f}/USDT",
            ts_ms=ts,
            recv_ns=ts * 1_000_000 + rng.randint(1_000_000, 9_000_000),
            trades=tuple(batch),
        )
        out.append((feed_name("md", "binance", "trades", f"T{f}/USDT"), message))
    return out


def candle_messages(count: int) -> list[tuple[str, OHLCV]]:
    out: list[tuple[str, OHLCV]] = []
    for n in range(count):
        f, step = n % FEEDS, n // FEEDS
        price = 100.0 + (step % 1000) * 0.25
        ts = RUN + step * 60_000
        message = OHLCV(
            exchange="binance",
            symbol=f"C{f}/USDT",
            ts_ms=ts,
            recv_ns=(ts + 60_000) * 1_000_000 + 123_456,
            timeframe="1m",
            open=price,
            high=price + 1.5,
            low=price - 1.25,
            close=price + 0.5,
            volume=round(1234.5 + step * 0.37, 4),
            closed=True,
        )
        out.append((feed_name("md", "binance", "ohlcv.1m", f"C{f}/USDT"), message))
    return out


async def seed(redis: aioredis.Redis, messages: list[tuple[str, Message]]) -> int:
    """XADD every message as a producer does; returns the JSON payload bytes."""
    encode = encoder_for("json").encode
    seqs: dict[str, int] = {}
    total = 0
    pipe = redis.pipeline(transaction=False)
    for name, message in messages:
        seq = seqs[name] = seqs.get(name, 0) + 1
        payload = encode(msgspec.structs.replace(message, run=RUN, seq=seq))
        total += len(payload)
        pipe.xadd(name, {b"d": payload}, id=entry_id(RUN, seq))
        if len(pipe) >= 1000:
            await pipe.execute()
    await pipe.execute()
    return total


def _line_files(out: Path, names: list[str]) -> dict[str, BinaryIO]:
    return {name: (out / f"{i}.jsonl").open("wb") for i, name in enumerate(names)}


class Rate(msgspec.Struct, frozen=True):
    """Entries per wall-clock second, and per CPU second of this process (what one
    core does, whatever else the machine runs)."""

    wall: float
    cpu: float


def _rate(count: int, wall_start: float, cpu_start: float) -> Rate:
    return Rate(
        count / (time.perf_counter() - wall_start), count / (time.process_time() - cpu_start)
    )


async def baseline_rate(url: str, out: Path) -> Rate:
    """A plain redis-py XREAD loop writing payloads as JSON lines, one file per stream."""
    redis = aioredis.Redis.from_url(url)
    names = sorted([k.decode() async for k in redis.scan_iter(match="md:*", _type="stream")])
    last = dict.fromkeys(names, "0-0")
    files = _line_files(out, names)
    count = 0
    start, cpu = time.perf_counter(), time.process_time()
    while True:
        reply = await redis.xread(last, count=1000)
        if not reply:
            break
        items = reply.items() if isinstance(reply, dict) else reply
        for key, entries in items:
            name = key.decode()
            f = files[name]
            for _, fields in entries:
                f.write(fields[b"d"] + b"\n")
            last[name] = entries[-1][0]
            count += len(entries)
    for f in files.values():
        f.close()
    rate = _rate(count, start, cpu)
    await redis.aclose()
    return rate


def warm_up() -> None:
    """Pay one-time costs outside the timings: pyarrow's first array from Python lists
    imports pandas when it is installed (about 1 s)."""
    builder = RowBuilder("trades")
    builder.add("1-1", trade_messages(1)[0][1])
    builder.take()


async def recorder_rate(url: str, out: Path) -> Rate:
    options = RecordOptions(feeds=["md:*"], out=str(out))
    start, cpu = time.perf_counter(), time.process_time()
    stats = await Recorder(RedisConfig(url=url), options).run(until_idle=True)
    return _rate(stats.entries, start, cpu)


def disk_bytes(root: Path, kind: str) -> int:
    return sum(p.stat().st_size for p in root.glob(f"exchange=*/kind={kind}/**/*.parquet"))


async def run(url: str, runs: int, count: int) -> list[Row]:
    recorded_cpu = Row(
        "recorder: entries recorded per CPU second of its process",
        "msg/CPU-s",
        baseline_name="redis-py XREAD -> JSON lines",
        target=">= 100k msg/s",
    )
    recorded = Row(
        "recorder: entries recorded",
        "msg/s",
        baseline_name="redis-py XREAD -> JSON lines",
        target=">= 100k msg/s",
    )
    per_trade = Row(
        "bytes on disk per trade",
        "bytes",
        baseline_name="JSON payload",
        higher_is_better=False,
        target=">= 5x fewer",
    )
    per_candle = Row(
        "bytes on disk per candle", "bytes", baseline_name="JSON payload", higher_is_better=False
    )
    replayed = Row("replay --fast: messages published", "msg/s", baseline_name="-")
    warm_up()
    redis = aioredis.Redis.from_url(url)
    trades = trade_messages(count)
    candles = candle_messages(max(count // 10, FEEDS))
    trade_count = sum(len(m.trades) for _, m in trades)
    for _ in range(runs):
        await redis.flushall()
        trade_json = await seed(redis, list(trades))
        candle_json = await seed(redis, list(candles))
        with tempfile.TemporaryDirectory(prefix="marketbus-bench-rec-") as tmp:
            root = Path(tmp)
            (root / "lines").mkdir()
            base = await baseline_rate(url, root / "lines")
            rate = await recorder_rate(url, root / "arc")
            recorded.baseline.append(base.wall)
            recorded.marketbus.append(rate.wall)
            recorded_cpu.baseline.append(base.cpu)
            recorded_cpu.marketbus.append(rate.cpu)
            per_trade.marketbus.append(disk_bytes(root / "arc", "trades") / trade_count)
            per_trade.baseline.append(trade_json / trade_count)
            per_candle.marketbus.append(disk_bytes(root / "arc", "ohlcv.1m") / len(candles))
            per_candle.baseline.append(candle_json / len(candles))
            stats = await replay(
                RedisConfig(url=url),
                ReplayOptions(source=str(root / "arc"), namespace="bt", speed=None),
                replace=True,
            )
            replayed.marketbus.append(stats.messages / stats.seconds)
    await redis.aclose()
    return [recorded, recorded_cpu, per_trade, per_candle, replayed]
