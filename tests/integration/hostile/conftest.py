"""Fixtures of the hostile-input suite: the simulator the real producer follows."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from marketbus.sim import SimServer
from tests.integration.producer.conftest import SYMBOLS


@pytest.fixture
async def binance_sim() -> AsyncIterator[SimServer]:
    """A binance spot simulator with 10 s of candle history, trading 50/s per symbol."""
    async with SimServer("binance", SYMBOLS, rate=50, seed=7, warmup_s=10) as sim:
        yield sim
