"""The producer's start-up reads each feed's market: a contract market ccxt describes
without a contract size stops the start, naming it (no Redis, no ccxt I/O)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import redis.asyncio as aioredis

from marketbus.producer import process, watch
from marketbus.producer.config import ExchangeConfig, ProducerConfig, ProducerSettings
from marketbus.shared.config import RedisConfig
from marketbus.shared.errors import ConfigError

SWAP = {"symbol": "BTC/USDT:USDT", "contract": True, "linear": True, "inverse": False}


class MarketsOnly:
    """An exchange whose markets load at once, as *market* describes its one symbol."""

    has = {"watchTrades": True}
    timeframes: dict[str, str] = {}

    def __init__(self, market: dict[str, Any]) -> None:
        self.id = "okx"
        self.markets: dict[str, Any] | None = None
        self._market = market

    def client(self, url: str) -> Any:
        raise AssertionError("no socket is opened before the markets are checked")

    async def load_markets(self) -> None:
        self.markets = {self._market["symbol"]: self._market}

    def market(self, symbol: str) -> dict[str, Any]:
        assert self.markets is not None
        return dict(self.markets[symbol])

    async def close(self) -> None:
        pass


async def test_a_contract_market_without_a_contract_size_stops_the_start_by_name(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def connect(config: RedisConfig, **kwargs: Any) -> aioredis.Redis:
        return aioredis.Redis.from_url("redis://127.0.0.1:1")  # never dialled

    exchange = MarketsOnly(SWAP | {"contractSize": None})
    monkeypatch.setattr(process, "connect", connect)
    monkeypatch.setattr(watch, "create_exchange", lambda config: exchange)
    config = ProducerConfig(
        exchanges=[ExchangeConfig(id="okx", symbols=["BTC/USDT:USDT"], kinds=["trades"])],
        producer=ProducerSettings(backoff_initial_s=0.001, backoff_max_s=0.001),
    )
    producer = process.Producer(config)
    with pytest.raises(ConfigError, match=r"okx 'BTC/USDT:USDT'.*contractSize None"):
        await asyncio.wait_for(producer.start(), 5)
