"""Target 4: the bus's own CPU per message next to ccxt.pro's own CPU per exchange frame.

Both sides are CPU time (``time.process_time``: user + system, idle time excluded) of
one producer-like process, per kind (ohlcv.1m, trades, ticker, book) on binance.

- **Frames.** The marketbus simulator (`marketbus.sim.SimServer`, binance protocol) runs
  in a subprocess (``python -m bench.overhead --serve``). On request it makes one trade
  per millisecond, i.e. one frame per millisecond on the subscribed stream, so frames
  reach the client one at a time as from a real exchange, and each one goes the whole
  ccxt.pro way: aiohttp's frame decoding, ``client.handle_message``, ``json.loads``, the
  exchange's handler, resolving the future, waking the watch coroutine, the next call.
- **ccxt.pro per frame**: a loop that awaits ``watch_*`` and discards the result; its
  CPU over the measured frames / frames.
- **bus per message**: the same frames through the producer's own path: the real
  `WatchLoop` (deadline, normalize, feed handler, submit; `guard_frames` on the socket)
  and the real `Publisher` (outbox, stamp, encode, RESP packing, socket write, reading
  the replies) writing to a private redis-server; (CPU of that window - frames x ccxt's
  CPU per frame of the same round) / messages published. Redis's own CPU is another
  process's. Baseline: the same `Publisher` on the redis-py `RedisTransport`. Also
  without the Publisher (submit to a counting sink): the watch loop's share.
- **Rounds**: per kind, each round measures one window per loop (ccxt alone, loop
  alone, fast, redis-py; the order alternates between rounds so that a drift in load
  hits both sides); each bus figure is taken against the ccxt window of its own round
  and every row is the median over rounds. Single windows vary: read the medians, and
  small differences not at all.
- **Machine floor**: one PUBLISH + XADD write per 1 ms tick from a plain blocking
  socket, replies read without waiting (`bench.sockets.write_cpu_us`): what a
  single-message Redis write costs this host's kernel whatever the client, as a share of
  ccxt.pro's per-frame CPU. When it is over 10% no publisher that writes each frame at
  once can meet target 4 here; only several messages per write can.
- **Reference rows** (no I/O, so stable): ccxt's ``json.loads`` + ``handle_message``
  alone on one recorded frame (the narrow figure of the first version of this
  benchmark; not for books, whose deltas cannot be replayed); the feed handler's
  ``on_data`` alone; the real `WatchLoop` fed recorded ccxt results at once.

Frames are counted by a wrapper around each ccxt client's ``handle_message`` (a Python
call and a comparison per frame, charged to ccxt). Bounded: every wait has a deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import statistics
import sys
import time
import weakref
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis

from bench import sockets
from bench.publisher import make_publisher
from bench.report import Row
from bench.server import redis_server
from bench.workload import RUN
from marketbus.producer.config import ProducerSettings
from marketbus.producer.feeds import FeedHandler, handler_for
from marketbus.producer.publisher import Publisher
from marketbus.producer.stats import FeedCounters
from marketbus.producer.transport import FastTransport, RedisTransport, Transport
from marketbus.producer.watch import Subscription, WatchLoop, guard_client
from marketbus.shared.config import RedisConfig, StreamCaps
from marketbus.shared.names import Feed

EXCHANGE = "binance"
SYMBOL = "BTC/USDT"
KINDS = ("ohlcv.1m", "trades", "ticker", "book")
TOPIC = {"ohlcv.1m": "@kline_1m", "trades": "@trade", "ticker": "icker", "book": "@depth"}
"""What the simulator waits for before sending (a substring of the binance stream name)."""
INTERVAL_S = 0.001
"""Between frames: the client handles each frame before the next arrives."""
WARM_FRAMES = 10
"""Frames before the measured ones of a window (the loop's first call, Redis connected)."""
SETTLE_S = 0.02
"""Idle time around the measured window (no frames then; idle costs no CPU)."""
DEADLINE_S = 5.0
"""Bound on each wait once both sides run (a few dozen frames, a flush)."""
START_DEADLINE_S = 60.0
"""Bound on the frame source's ready line: the subprocess first imports this module, so
the producer and ccxt.pro (2.4 s of CPU, 7-15 s of wall time on 2 cores shared with a
test suite), then starts the simulator. Waiting on that line is the condition; the
bound only stops a source that hangs."""
ROOT = Path(__file__).resolve().parents[1]
FLOOR_RUN = RUN + 1_000_000
"""Run part of the machine floor's entry IDs (its streams are its own; each round is
a newer run, so its IDs only go up)."""


# -- the frame source (subprocess) -------------------------------------------------------


async def serve() -> None:
    """Simulator + command loop: each stdin line ``TOPIC WARM COUNT`` makes WARM trades,
    prints ``warm``, pauses, makes COUNT trades and prints ``sent`` (one trade per
    `INTERVAL_S`: one frame on each subscribed stream)."""
    from marketbus.sim import SimServer

    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    async with SimServer(EXCHANGE, [SYMBOL], rate=0, seed=7, warmup_s=600) as sim:
        print(json.dumps(sim.url_overrides(EXCHANGE)), flush=True)
        while line := await reader.readline():
            topic, warm, count = line.decode().split()
            await sim.wait_for(lambda t=topic: sim.subscribed(t), timeout=DEADLINE_S)
            for _ in range(int(warm)):
                sim.step(SYMBOL)
                await asyncio.sleep(INTERVAL_S)
            await asyncio.sleep(SETTLE_S)
            print("warm", flush=True)
            await asyncio.sleep(SETTLE_S * 3)  # the client starts its clock meanwhile
            for _ in range(int(count)):
                sim.step(SYMBOL)
                await asyncio.sleep(INTERVAL_S)
            print("sent", flush=True)


class FrameSource:
    """The simulator subprocess, driven over its stdin/stdout."""

    def __init__(self, proc: asyncio.subprocess.Process, overrides: dict[str, Any]) -> None:
        self.proc = proc
        self.overrides = overrides

    @classmethod
    async def start(cls) -> FrameSource:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bench.overhead",
            "--serve",
            cwd=ROOT,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        assert proc.stdout is not None
        try:
            async with asyncio.timeout(START_DEADLINE_S):
                line = await proc.stdout.readline()
        except BaseException:
            proc.kill()
            await proc.wait()
            raise
        if not line:
            await proc.wait()
            raise RuntimeError(
                f"bench.overhead --serve exited with {proc.returncode} before it was ready"
            )
        return cls(proc, json.loads(line))

    def request(self, topic: str, warm: int, count: int) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(f"{topic} {warm} {count}\n".encode())

    async def expect(self, word: str) -> None:
        assert self.proc.stdout is not None
        async with asyncio.timeout(DEADLINE_S):
            line = await self.proc.stdout.readline()
        if line.decode().strip() != word:
            raise RuntimeError(f"frame source said {line!r}, expected {word!r}")

    async def stop(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        try:
            async with asyncio.timeout(5):
                await self.proc.wait()
        except TimeoutError:
            self.proc.kill()
            await self.proc.wait()


# -- the client side -------------------------------------------------------------------------


class FrameCounter:
    """Counts the frames ccxt's clients hand to their message handler and keeps the last
    one (for the narrow reference row). With ``guard`` set, frames go through the
    producer's `guard_frames` wrapper (a bus cost), else straight to ccxt."""

    def __init__(self) -> None:
        self.frames = 0
        self.last: str | bytes | None = None
        self.guard = False
        self._target = -1
        self._reached = asyncio.Event()
        self._counted: weakref.WeakSet[Any] = weakref.WeakSet()
        """ccxt clients whose frames are counted already (a client is reused per URL)."""

    def install(self, exchange: Any) -> None:
        make_client = exchange.client

        def client(url: str) -> Any:
            ws = make_client(url)
            if ws not in self._counted:
                handle = ws.handle_message
                guard_client(ws, lambda *_: None)
                guarded = ws.handle_message

                def counted(message: Any) -> None:
                    self.frames += 1
                    self.last = message.data
                    if self.frames == self._target:
                        self._reached.set()
                    (guarded if self.guard else handle)(message)

                ws.handle_message = counted
                self._counted.add(ws)
            return ws

        exchange.client = client

    async def reach(self, frames: int) -> None:
        """Wait until *frames* frames were handled in all (no polling: its wake-ups would
        be counted in the measured CPU)."""
        if self.frames >= frames:
            return
        self._target = frames
        self._reached.clear()
        async with asyncio.timeout(DEADLINE_S):
            await self._reached.wait()


@dataclass
class Window:
    """One measured run: CPU seconds, frames handled, messages published."""

    cpu_s: float
    frames: int
    messages: int


async def ccxt_loop(exchange: Any, kind: str, last: list[Any]) -> None:
    """What ccxt.pro costs alone: await the watch call, discard the result (all but the
    last one is dropped: it is kept for the normalize reference row)."""
    method = getattr(
        exchange,
        {"trades": "watch_trades", "ticker": "watch_ticker", "book": "watch_order_book"}.get(
            kind, "watch_ohlcv"
        ),
    )
    args = (SYMBOL, kind.split(".")[1]) if kind.startswith("ohlcv.") else (SYMBOL,)
    while True:
        last[:] = [await method(*args)]


class Bus:
    """The producer's path for one kind: a `WatchLoop` submitting to a `Publisher` on
    *transport*, or with no transport to a sink that only counts (the loop alone)."""

    def __init__(self, transport: Transport | None, namespace: str, kind: str) -> None:
        self.transport = transport
        self.feed = Feed(namespace, EXCHANGE, kind, SYMBOL)
        self.handler = _handler(self.feed)
        self.counters: dict[str, FeedCounters] = {}
        self.submitted = 0
        self.publisher: Publisher | None = None
        if transport is not None:
            self.publisher, self.counters = make_publisher(
                transport,
                run=1_790_000_000_000,
                queue_max=100_000,
                namespace=namespace,
                caps=StreamCaps(),
            )

    def messages(self) -> int:
        """Messages published (or submitted, with no publisher) so far."""
        if self.publisher is None:
            return self.submitted
        return sum(c.published for c in self.counters.values())

    def _count(self, feed: str, message: object) -> None:
        self.submitted += 1

    async def flush(self) -> None:
        if self.publisher is not None:
            await self.publisher.flush(timeout_s=DEADLINE_S)

    async def run(self, exchange: Any) -> None:
        publisher = self.publisher
        loop = WatchLoop(
            exchange,
            Subscription(EXCHANGE, self.feed.kind, (self.feed,), batch=False),
            {SYMBOL: self.handler},
            ProducerSettings(),
            submit=self._count if publisher is None else publisher.submit,
            status=lambda *_: None,
            counters={self.feed.name: FeedCounters()},
        )
        writer = asyncio.create_task(publisher.run()) if publisher is not None else None
        try:
            await loop.run()
        finally:
            if writer is not None:
                writer.cancel()
                await asyncio.gather(writer, return_exceptions=True)
            if self.transport is not None:
                await self.transport.close()


def _handler(feed: Feed) -> FeedHandler:
    defaults = ProducerSettings()
    return handler_for(
        feed, close_grace_ms=defaults.close_grace_ms, book_depth=20, book_interval_ms=0
    )


async def window(
    source: FrameSource,
    counter: FrameCounter,
    kind: str,
    frames: int,
    body: Awaitable[None],
    finish: Callable[[], Awaitable[object]] | None = None,
    messages: Callable[[], int] | None = None,
) -> Window:
    """Run *body* while the source sends warm-up frames, then *frames* measured ones."""
    task = asyncio.ensure_future(body)
    try:
        source.request(TOPIC[kind], WARM_FRAMES, frames)
        await source.expect("warm")
        await asyncio.sleep(SETTLE_S)
        first = counter.frames
        before = messages() if messages else 0
        cpu = time.process_time()
        await source.expect("sent")
        await counter.reach(first + frames)
        await asyncio.sleep(SETTLE_S)
        if finish is not None:
            await finish()
        cpu = time.process_time() - cpu
        if task.done():
            task.result()  # the loop failed: raise its error
        after = messages() if messages else 0
        return Window(cpu, counter.frames - first, after - before)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def prime(
    source: FrameSource, counter: FrameCounter, kind: str, body: Awaitable[None], got: list[Any]
) -> None:
    """Subscribe and send frames until the watch call returned once (an order book
    returns only after its REST snapshot)."""
    task = asyncio.ensure_future(body)
    try:
        async with asyncio.timeout(DEADLINE_S):
            while not got:
                source.request(TOPIC[kind], WARM_FRAMES, 0)
                await source.expect("warm")
                await source.expect("sent")
                if task.done():
                    task.result()
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


@dataclass
class KindResult:
    """Per-run figures of one kind, microseconds (bus: per message, ccxt: per frame)."""

    ccxt: list[float] = field(default_factory=list)
    loop: list[float] = field(default_factory=list)
    fast: list[float] = field(default_factory=list)
    slow: list[float] = field(default_factory=list)
    frames_per_message: list[float] = field(default_factory=list)
    narrow: float = float("nan")
    normalize: float = float("nan")
    loop_alone: float = float("nan")


TRANSPORTS: dict[str, Callable[[str], Transport | None]] = {
    "loop": lambda url: None,
    "fast": lambda url: FastTransport(RedisConfig(url=url), aioredis.Redis.from_url(url)),
    "slow": lambda url: RedisTransport(aioredis.Redis.from_url(url)),
}
"""The bus variants: the watch loop alone, then with the Publisher on each transport."""


async def measure_kind(
    source: FrameSource, url: str, kind: str, rounds: int, frames: int, serial: list[int]
) -> KindResult:
    """*rounds* rounds of one window per loop (ccxt alone, then each bus variant); the bus
    figures of a round are taken against the ccxt window of the same round."""
    import ccxt.pro as ccxtpro

    result = KindResult()
    # REST (load_markets, the order book snapshot) is outside the measure: no throttling.
    exchange = ccxtpro.binance({**source.overrides, "enableRateLimit": False})
    counter = FrameCounter()
    counter.install(exchange)
    try:
        await exchange.load_markets()
        sample: list[Any] = []
        await prime(source, counter, kind, ccxt_loop(exchange, kind, sample), sample)
        variants = ["ccxt", *TRANSPORTS]
        for round_ in range(rounds):
            took: dict[str, Window] = {}
            # Alternate the order so that a drift in machine load hits both sides alike.
            for variant in variants if round_ % 2 == 0 else variants[::-1]:
                counter.guard = variant != "ccxt"
                if variant == "ccxt":
                    body = ccxt_loop(exchange, kind, sample)
                    took[variant] = await window(source, counter, kind, frames, body)
                    continue
                serial[0] += 1
                bus = Bus(TRANSPORTS[variant](url), f"ov{serial[0]}", kind)
                took[variant] = await window(
                    source,
                    counter,
                    kind,
                    frames,
                    bus.run(exchange),
                    finish=bus.flush,
                    messages=bus.messages,
                )
            ccxt_s = took["ccxt"].cpu_s / took["ccxt"].frames
            result.ccxt.append(ccxt_s * 1e6)
            for variant in TRANSPORTS:
                got = took[variant]
                extra_s = got.cpu_s - ccxt_s * got.frames
                getattr(result, variant).append(extra_s / max(got.messages, 1) * 1e6)
            fast = took["fast"]
            result.frames_per_message.append(fast.frames / max(fast.messages, 1))
        if counter.last is not None and kind != "book":
            result.narrow = await narrow_us(exchange, counter.last, frames * 5)
        result.normalize = normalize_us(kind, sample[0], frames * 10)
        result.loop_alone = await loop_us(kind, sample[0], frames * 10)
    finally:
        await exchange.close()
    return result


async def narrow_us(exchange: Any, frame: str | bytes, count: int) -> float:
    """ccxt's ``json.loads`` + ``handle_message`` alone on one recorded frame."""
    url = next(iter(exchange.clients))
    client = exchange.clients[url]
    loads = json.loads
    handle = exchange.handle_message
    start = time.process_time()
    for _ in range(count):
        handle(client, loads(frame))
    return (time.process_time() - start) / count * 1e6


def replays(kind: str, data: Any, count: int) -> list[Any]:
    """*count* watch results like the recorded *data*: trades get fresh ids (so none is
    dropped as a repeat), the candle row is the forming one (it opens this minute)."""
    if kind == "trades":
        return [[{**t, "id": f"{t['id']}-{i}"} for t in data] for i in range(count)]
    if kind.startswith("ohlcv."):
        row = list(data[-1])
        row[0] = time.time_ns() // 60_000_000_000 * 60_000
        return [[row]] * count
    return [data] * count


def normalize_us(kind: str, data: Any, count: int) -> float:
    """The feed handler's ``on_data`` alone on recorded ccxt results."""
    handler = _handler(Feed("md", EXCHANGE, kind, SYMBOL))
    results = replays(kind, data, count)
    now_ms = time.time_ns() // 1_000_000
    start = time.process_time()
    for i, result in enumerate(results):
        handler.on_data(result, now_ms, i)
    return (time.process_time() - start) / count * 1e6


class _Replayed(Exception):
    """Every prepared result was handed out."""


class _Replay:
    """A stand-in exchange whose watch calls return prepared results at once."""

    def __init__(self, results: list[Any]) -> None:
        self.results = results
        self.clients: dict[str, Any] = {}
        self.index = 0

    async def next(self, *args: Any) -> Any:
        index = self.index
        if index == len(self.results):
            raise _Replayed
        self.index = index + 1
        return self.results[index]

    watch_ohlcv = watch_trades = watch_ticker = watch_order_book = next


async def loop_us(kind: str, data: Any, count: int) -> float:
    """The real `WatchLoop` (deadline, normalize, handler, submit to a counting sink) on
    recorded results returned at once: its own CPU per message with no I/O at all,
    less the bare loop of the same watch calls."""
    feed = Feed("md", EXCHANGE, kind, SYMBOL)
    results = replays(kind, data, count)
    bare = _Replay(results)
    start = time.process_time()
    with contextlib.suppress(_Replayed):
        while True:
            await bare.next()
    bare_s = time.process_time() - start
    submitted = [0]

    def submit(name: str, message: object) -> None:
        submitted[0] += 1

    loop = WatchLoop(
        _Replay(results),
        Subscription(EXCHANGE, kind, (feed,), batch=False),
        {SYMBOL: _handler(feed)},
        ProducerSettings(),
        submit=submit,
        status=lambda *_: None,
        counters={feed.name: FeedCounters()},
    )
    start = time.process_time()
    with contextlib.suppress(_Replayed):
        await loop.run()
    took_s = time.process_time() - start - bare_s
    assert submitted[0] >= count, (submitted[0], count)
    return took_s / submitted[0] * 1e6


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


async def run(rounds: int, frames: int) -> list[Row]:
    """Per kind, *rounds* rounds of *frames* measured frames per loop; medians of rounds."""
    rows: list[Row] = []
    serial = [0]
    ccxt_per_frame: list[float] = []
    with redis_server() as server:
        source = await FrameSource.start()
        try:
            for kind in KINDS:
                got = await measure_kind(source, server.url, kind, rounds, frames, serial)
                ccxt_per_frame.append(_median(got.ccxt))
                name = f"{kind}, binance"
                pct_fast = [100 * b / c for b, c in zip(got.fast, got.ccxt, strict=True)]
                pct_slow = [100 * b / c for b, c in zip(got.slow, got.ccxt, strict=True)]
                per_message = f"{_median(got.frames_per_message):.2f} frames/message"
                rows += [
                    Row(f"ccxt.pro per frame, {name}: watch loop", "us CPU", got.ccxt),
                    Row(
                        f"ccxt.pro per frame, {name}: json.loads + handle_message",
                        "us CPU",
                        [got.narrow],
                        note="reference",
                    ),
                    Row(
                        f"bus per message, {name}: normalize (handler.on_data)",
                        "us CPU",
                        [got.normalize],
                        note="reference",
                    ),
                    Row(
                        f"bus per message, {name}: WatchLoop + normalize, no I/O",
                        "us CPU",
                        [got.loop_alone],
                        note="reference",
                    ),
                    Row(
                        f"bus per message, {name}: WatchLoop + normalize, no publish",
                        "us CPU",
                        got.loop,
                    ),
                    Row(
                        f"bus per message, {name}: WatchLoop + Publisher",
                        "us CPU",
                        got.fast,
                        got.slow,
                        baseline_name="same on RedisTransport",
                        higher_is_better=False,
                    ),
                    Row(
                        f"bus per message / ccxt.pro per frame, {name}",
                        "%",
                        pct_fast,
                        pct_slow,
                        baseline_name="same on RedisTransport",
                        higher_is_better=False,
                        target="< 10%",
                        note=per_message,
                    ),
                ]
            rows += await _machine_floor(server.url, rounds, frames, _median(ccxt_per_frame))
        finally:
            await source.stop()
    return rows


async def _machine_floor(url: str, rounds: int, ticks: int, ccxt_us: float) -> list[Row]:
    """What one single-message write costs this host whatever the client: a blocking
    socket, no asyncio (`bench.sockets.write_cpu_us`), next to ccxt.pro's per-frame
    CPU (the median over kinds of this run)."""
    floor = [
        await asyncio.to_thread(sockets.write_cpu_us, url, ticks, FLOOR_RUN + attempt)
        for attempt in range(rounds)
    ]
    return [
        Row(
            "machine floor per message: one PUBLISH + XADD write per 1 ms tick, blocking "
            "socket, no asyncio",
            "us CPU",
            floor,
        ),
        Row(
            "machine floor / ccxt.pro per frame (median of kinds)",
            "%",
            [100 * value / ccxt_us for value in floor],
            higher_is_better=False,
            target="< 10%",
        ),
    ]


if __name__ == "__main__":
    if sys.argv[1:] == ["--serve"]:
        asyncio.run(serve())
    else:
        from bench.report import table

        smoke = "--smoke" in sys.argv
        print(table(asyncio.run(run(1 if smoke else 9, 30 if smoke else 400))))
