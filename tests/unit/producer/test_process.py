"""The producer's start-up: concurrent per-exchange work is structured (no Redis, no ccxt I/O)."""

from __future__ import annotations

import asyncio
from typing import Any

import ccxt
import pytest
import redis.asyncio as aioredis

from marketbus.producer import process, watch
from marketbus.producer.config import ExchangeConfig, ProducerConfig, ProducerSettings
from marketbus.shared.config import RedisConfig
from marketbus.shared.errors import MarketbusError


class FakeExchange:
    """Loads markets by failing at once (*broken*) or by waiting until cancelled; records
    whether its markets were still loading when it was closed."""

    def __init__(self, exchange_id: str, broken: bool) -> None:
        self.id = exchange_id
        self.broken = broken
        self.loading = False
        self.cancelled = False
        self.closed_while_loading: bool | None = None

    def client(self, url: str) -> Any:
        raise AssertionError("no socket is opened before markets are loaded")

    async def load_markets(self) -> None:
        if self.broken:
            raise ccxt.ExchangeNotAvailable("down for maintenance")
        self.loading = True
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            self.cancelled = True
            raise
        finally:
            self.loading = False

    async def close(self) -> None:
        self.closed_while_loading = self.loading


async def test_a_failing_exchange_cancels_its_siblings_before_their_clients_close(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    exchanges = {"broken": FakeExchange("broken", True), "slow": FakeExchange("slow", False)}

    async def connect(config: RedisConfig, **kwargs: Any) -> aioredis.Redis:
        return aioredis.Redis.from_url("redis://127.0.0.1:1")  # never dialled

    monkeypatch.setattr(process, "connect", connect)
    monkeypatch.setattr(watch, "create_exchange", lambda config: exchanges[config.id])
    config = ProducerConfig(
        exchanges=[ExchangeConfig(id=i, symbols=["BTC/USDT"]) for i in exchanges],
        producer=ProducerSettings(backoff_initial_s=0.001, backoff_max_s=0.001),
    )
    producer = process.Producer(config)
    with pytest.raises(MarketbusError, match="broken: cannot load markets"):
        await asyncio.wait_for(producer.start(), 5)
    slow = exchanges["slow"]
    assert slow.cancelled, "the sibling's start-up was cancelled"
    assert slow.closed_while_loading is False, "its client was closed only after it stopped"
