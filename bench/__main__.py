"""``python -m bench [--smoke] [--only NAME ...] [--runs N]``: run the benchmarks.

Run from the repository root with the project's venv. Every benchmark starts its own
loopback redis-server (never the shared 6379), prints marketbus next to its baseline
from the same run, and stops the server. ``--smoke`` runs everything at a tiny size in a
few seconds (CI calls it; the figures are meaningless there).
"""

from __future__ import annotations

import argparse
import asyncio
import platform
import subprocess
import sys
import time
from importlib.metadata import version

from bench import latency, memory, overhead, publish, record, subscribe
from bench.report import Row, table
from bench.server import redis_server

SECTIONS = ("publish", "subscribe", "latency", "overhead", "memory", "record")


def machine() -> str:
    """Machine and versions, for docs/benchmarks.md."""
    cpu = platform.processor() or "?"
    try:
        with open("/proc/cpuinfo") as f:
            names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
        cpu = f"{len(names)} x {names[0]}" if names else cpu
    except OSError:
        pass
    server = subprocess.run(["redis-server", "--version"], capture_output=True, text=True).stdout
    packages = ", ".join(
        f"{name} {version(name)}" for name in ("redis", "hiredis", "msgspec", "ccxt")
    )
    return (
        f"{platform.platform()}; CPU {cpu}; Python {platform.python_version()}; "
        f"{server.split(' sha=')[0].strip()}; {packages}"
    )


async def main(args: argparse.Namespace) -> list[Row]:
    smoke = args.smoke
    runs = 1 if smoke else args.runs
    only = set(args.only or SECTIONS)
    rows: list[Row] = []
    with redis_server() as server:
        if "publish" in only:
            rows += await publish.run(server.url, runs, 2_000 if smoke else 300_000)
        if "subscribe" in only:
            rows += await subscribe.run(server.url, runs, 2_000 if smoke else 400_000)
        if "latency" in only:
            rates = (1_000,) if smoke else (5_000, 50_000)
            rows += await latency.run(server.url, runs, 0.3 if smoke else 3.0, rates)
        if "memory" in only:
            rows += await memory.run(server.url, *((10, 100) if smoke else (1_000, 1_000)))
        if "record" in only:
            rows += await record.run(server.url, runs, 2_000 if smoke else 200_000)
    if "overhead" in only:
        rows += await overhead.run(1 if smoke else 3 * runs, 30 if smoke else 400)
    return rows


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, a few seconds")
    parser.add_argument("--only", nargs="+", choices=SECTIONS, help="run only these")
    parser.add_argument("--runs", type=int, default=3, help="runs per figure (median)")
    arguments = parser.parse_args()
    began = time.perf_counter()
    print(machine(), flush=True)
    result = asyncio.run(main(arguments))
    print(table(result))
    runs = 1 if arguments.smoke else arguments.runs
    print(
        f"({time.perf_counter() - began:.0f}s; medians of {runs} runs, overhead rows: "
        f"medians of {1 if arguments.smoke else 3 * runs} rounds)"
    )
    sys.exit(0)
