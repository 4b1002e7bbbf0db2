"""The benchmarks still run (tiny sizes): they are not tests, but they must not rot."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]


def test_bench_smoke_run_prints_every_row_with_its_baseline() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "bench", "--smoke"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    rows = [line for line in result.stdout.splitlines() if line.startswith("| ")]
    assert len(rows) >= 8, result.stdout
    assert any("redis-py" in row for row in rows)
    floors = [row for row in rows if "machine floor" in row]
    assert len(floors) == 4, floors  # latency p50/p99, write CPU and its share of ccxt
