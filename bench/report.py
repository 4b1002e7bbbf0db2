"""Benchmark results: one row per measurement, printed marketbus next to its baseline."""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field


@dataclass
class Row:
    """One benchmark: medians over runs of marketbus and of its baseline (same process)."""

    name: str
    unit: str
    marketbus: list[float] = field(default_factory=list)
    baseline: list[float] = field(default_factory=list)
    baseline_name: str = ""
    higher_is_better: bool = True
    target: str = ""
    note: str = ""

    @property
    def mb(self) -> float:
        return statistics.median(self.marketbus) if self.marketbus else float("nan")

    @property
    def base(self) -> float:
        return statistics.median(self.baseline) if self.baseline else float("nan")

    @property
    def ratio(self) -> float:
        if not self.baseline or not self.marketbus or self.base == 0 or self.mb == 0:
            return float("nan")
        return self.mb / self.base if self.higher_is_better else self.base / self.mb


def fmt(value: float) -> str:
    if value != value:
        return "-"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.3g}"


def table(rows: list[Row]) -> str:
    """A Markdown table (readable in a terminal, pasted as is into docs/benchmarks.md)."""
    head = "| benchmark | unit | marketbus | baseline | baseline is | x better | target |"
    lines = [head, "|---|---|---:|---:|---|---:|---|"]
    for r in rows:
        ratio = "-" if r.ratio != r.ratio else f"{r.ratio:.1f}x"
        note = f" ({r.note})" if r.note else ""
        lines.append(
            f"| {r.name}{note} | {r.unit} | {fmt(r.mb)} | {fmt(r.base)} | {r.baseline_name} "
            f"| {ratio} | {r.target} |"
        )
    return "\n".join(lines)
