"""Fixtures for producer integration tests: the loopback simulator and configs for it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Any

import pytest

from marketbus.shared.config import ProducerConfig, build_config
from marketbus.sim import SimServer

SYMBOLS = ["BTC/USDT", "ETH/USDT"]


def producer_config(
    redis_url: str,
    sim: SimServer,
    exchange: str = "binance",
    symbols: Sequence[str] = SYMBOLS,
    kinds: Sequence[str] = ("ohlcv.1s", "ticker"),
    **settings: Any,
) -> ProducerConfig:
    """A config aiming one exchange at *sim*, with fast timings for tests."""
    producer = {"close_grace_ms": 300, "heartbeat_s": 0.5, "backoff_initial_s": 0.05,
                "backoff_max_s": 0.5, "shutdown_timeout_s": 5.0} | settings  # fmt: skip
    return build_config(
        ProducerConfig,
        {
            "redis": {"url": redis_url},
            "producer": producer,
            "exchanges": [
                {
                    "id": exchange,
                    "symbols": list(symbols),
                    "kinds": list(kinds),
                    "ccxt": sim.url_overrides(exchange),
                }
            ],
        },
        environ={},
    )


@pytest.fixture
async def binance_sim() -> AsyncIterator[SimServer]:
    """A binance spot simulator with 10 s of candle history, trading 50/s per symbol."""
    async with SimServer("binance", SYMBOLS, rate=50, seed=7, warmup_s=10) as sim:
        yield sim
