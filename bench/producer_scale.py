"""Producer scale: one producer, many symbols x 4 kinds on one exchange.

    python -m bench.producer_scale [--symbols 200] [--seconds 20] [--rate 2] [--smoke]

Starts a private redis-server and the binance simulator (in this process), runs the
real producer as a child process (``python -m marketbus.producer``, metrics on), waits
until every feed flows, then measures for ``--seconds``:

- messages/s the producer wrote to Redis (its Prometheus counters, all feeds);
- the producer's CPU (user + system time of its process over the window, % of a core);
- lag: ccxt handed the data over -> Redis acknowledged it (its latency histogram);
- whether it fell behind: the writer backlog grew, messages were dropped, or lag p99
  went over a second. The simulator's own CPU is shown too: on a small machine the
  three processes (simulator, producer, redis-server) share the cores.

``--smoke`` (20 symbols, 2 s) checks the whole path.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.integration.producer.conftest import write_toml
from tests.support.redis_process import free_port

from bench.server import redis_server
from marketbus.producer.config import ProducerConfig
from marketbus.shared.config import build_config
from marketbus.sim import SimServer

KINDS = ["ohlcv.1m", "ticker", "trades", "book"]
LAG_LIMIT_S = 1.0
"""A p99 lag above this counts as falling behind."""


@dataclass
class Scrape:
    """The producer's metrics at one moment."""

    at: float
    cpu_s: float
    published: float
    dropped: float
    queue: float
    latency_buckets: dict[float, float]
    latency_count: float
    feeds_connected: int

    def quantile(self, earlier: Scrape, q: float) -> float | None:
        """Upper bound of the bucket holding quantile *q* of the latencies since *earlier*."""
        count = self.latency_count - earlier.latency_count
        if count <= 0:
            return None
        for bound in sorted(self.latency_buckets):
            seen = self.latency_buckets[bound] - earlier.latency_buckets.get(bound, 0.0)
            if seen >= q * count:
                return bound
        return float("inf")


def symbols_for(count: int) -> list[str]:
    """``S000/USDT``, ``S001/USDT``...: the simulator prices any base deterministically."""
    return [f"S{i:03d}/USDT" for i in range(count)]


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process *pid* (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def scrape(port: int, pid: int) -> Scrape:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    published = dropped = queue = count = 0.0
    connected = 0
    buckets: dict[float, float] = {}
    for line in text.splitlines():
        if line.startswith("#") or not line:
            continue
        name, _, value = line.rpartition(" ")
        number = float(value)
        if name.startswith("marketbus_producer_messages_published_total"):
            published += number
        elif name.startswith("marketbus_producer_messages_dropped_total"):
            dropped += number
        elif name.startswith("marketbus_producer_queue_depth"):
            queue = number
        elif name.startswith("marketbus_producer_feed_connected"):
            connected += int(number)
        elif name.startswith("marketbus_producer_publish_latency_seconds_bucket"):
            bound = name.split('le="', 1)[1].split('"', 1)[0]
            buckets[float(bound)] = number
        elif name.startswith("marketbus_producer_publish_latency_seconds_count"):
            count = number
    return Scrape(
        time.monotonic(), cpu_seconds(pid), published, dropped, queue, buckets, count, connected
    )


def producer_config(redis_url: str, sim: SimServer, symbols: list[str], port: int) -> Any:
    ccxt = sim.url_overrides("binance") | {"enableRateLimit": False}  # our own simulator
    return build_config(
        ProducerConfig,
        {
            "redis": {"url": redis_url},
            "producer": {"metrics_port": port, "heartbeat_s": 5.0, "stale_after_s": 30.0},
            "exchanges": [{"id": "binance", "symbols": symbols, "kinds": KINDS, "ccxt": ccxt}],
        },
        environ={},
    )


async def wait_for(predicate: Any, timeout_s: float, what: str, poll_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout_s:g}s waiting for {what}")
        await asyncio.sleep(poll_s)


async def measure(symbols: int, seconds: float, rate: float) -> int:
    names = symbols_for(symbols)
    feeds = symbols * len(KINDS)
    port = free_port()
    print(
        f"producer_scale: {symbols} symbols x {len(KINDS)} kinds = {feeds} feeds on binance "
        f"(simulator: {rate:g} trades/s per symbol), measuring {seconds:g} s"
    )
    with redis_server() as redis, tempfile.TemporaryDirectory(prefix="mb-scale-") as tmp:
        async with SimServer("binance", names, rate=rate, seed=1, timeframes=["1m"]) as sim:
            config = write_toml(
                producer_config(redis.url, sim, names, port), Path(tmp) / "producer.toml"
            )
            log = open(Path(tmp) / "producer.log", "wb")  # noqa: SIM115, ASYNC230 - closed below
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "marketbus.producer",
                "--config",
                str(config),
                "--log-level",
                "WARNING",
                stdout=log,
                stderr=log,
            )
            started = time.monotonic()
            try:
                latest: list[Scrape] = []
                progress = [0]

                def all_flowing() -> bool:
                    if proc.returncode is not None:
                        tail = (Path(tmp) / "producer.log").read_text(errors="replace")[-3000:]
                        raise RuntimeError(f"the producer exited with {proc.returncode}:\n{tail}")
                    try:
                        latest[:] = [scrape(port, proc.pid)]
                    except OSError:
                        return False
                    if latest[0].feeds_connected != progress[-1]:
                        progress.append(latest[0].feeds_connected)
                        print(
                            f"  {time.monotonic() - started:5.1f} s: {progress[-1]} feeds flowing",
                            flush=True,
                        )
                    return latest[0].feeds_connected == feeds

                poll_s = 0.2 if symbols <= 20 else 1.0  # each scrape costs the producer CPU
                await wait_for(all_flowing, 60 + symbols * 0.3, "every feed to flow", poll_s)
                startup_s = time.monotonic() - started
                sim_cpu0 = time.process_time()
                # Two scrapes only: rendering 800 feeds' metrics costs the producer CPU.
                first = scrape(port, proc.pid)
                await asyncio.sleep(seconds)
                last = scrape(port, proc.pid)
                sim_cpu = time.process_time() - sim_cpu0
            finally:
                if proc.returncode is None:
                    with contextlib.suppress(ProcessLookupError):
                        proc.terminate()
                    try:
                        await asyncio.wait_for(proc.wait(), 15)
                    except TimeoutError:
                        proc.kill()
                        await proc.wait()
                log.close()
            code = proc.returncode
    window = last.at - first.at
    rate_out = (last.published - first.published) / window
    cpu = 100 * (last.cpu_s - first.cpu_s) / window
    p50, p99 = last.quantile(first, 0.5), last.quantile(first, 0.99)
    dropped = last.dropped - first.dropped
    behind = []
    if dropped:
        behind.append(f"{dropped:.0f} dropped")
    if last.queue > max(1000.0, first.queue * 2):
        behind.append(f"backlog grew to {last.queue:.0f}")
    if p99 is None or p99 > LAG_LIMIT_S:
        behind.append(f"lag p99 {p99}")

    def ms(value: float | None) -> str:
        return "-" if value is None else f"<= {value * 1000:g} ms"

    print(f"  startup (markets, backfill, {feeds} subscriptions): {startup_s:.1f} s")
    print(f"  published:    {rate_out:,.0f} messages/s")
    per_message = cpu / 100 / rate_out * 1e6 if rate_out else float("nan")
    print(
        f"  producer CPU: {cpu:.0f} % of one core ({per_message:.0f} us per message, "
        f"~{1e6 / per_message:,.0f} messages/s per core)"
    )
    print(
        f"  lag recv->Redis ack: p50 {ms(p50)}, p99 {ms(p99)} (the simulator trades all "
        f"symbols in one tick: {len(KINDS)} x {symbols} messages arrive at once)"
    )
    print(
        f"  writer backlog: {first.queue:.0f} at the start, {last.queue:.0f} at the end; "
        f"dropped {dropped:.0f}"
    )
    print(f"  simulator CPU (this process): {100 * sim_cpu / window:.0f} % of one core")
    print(f"  fell behind: {'yes: ' + ', '.join(behind) if behind else 'no'}")
    print(f"  producer exit code on SIGTERM: {code}")
    return 0 if code == 0 else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.producer_scale")
    parser.add_argument("--symbols", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--rate", type=float, default=0.5, help="trades/s per symbol")
    parser.add_argument("--smoke", action="store_true", help="20 symbols, 2 s: under 10 s")
    args = parser.parse_args(argv)
    if args.smoke:
        args.symbols, args.seconds = min(args.symbols, 20), min(args.seconds, 2.0)
    return asyncio.run(measure(args.symbols, args.seconds, args.rate))


if __name__ == "__main__":
    sys.exit(main())
