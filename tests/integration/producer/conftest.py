"""Fixtures for producer integration tests: the loopback simulator, configs for it, and
real producer processes (``python -m marketbus.producer``) that are always reaped."""

from __future__ import annotations

import asyncio
import json
import re
import signal
import sys
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any

import msgspec
import pytest
import redis.asyncio as aioredis

from marketbus.producer.config import ProducerConfig
from marketbus.shared.codecs import decode
from marketbus.shared.config import build_config
from marketbus.shared.schema import Message
from marketbus.sim import SimServer
from tests.support.waiting import wait_until

SYMBOLS = ["BTC/USDT", "ETH/USDT"]
PROCESS_DEADLINE_S = 60.0
"""How long a producer subprocess may take to log a line or to exit. Its start alone
imports ccxt.pro, 2.4 s of CPU, which on 2 cores shared with the suite's other
processes took 7-15 s of wall time: a 15 s deadline failed the fencing tests under load."""


def producer_config(
    redis_url: str,
    sim: SimServer,
    exchange: str = "binance",
    symbols: Sequence[str] = SYMBOLS,
    kinds: Sequence[str] = ("ohlcv.1s", "ticker"),
    **settings: Any,
) -> ProducerConfig:
    """A config aiming one exchange at *sim*, with fast timings for tests."""
    producer = {
        "close_grace_ms": 300,
        "heartbeat_s": 0.5,
        "backoff_initial_s": 0.05,
        "backoff_max_s": 0.5,
        "shutdown_timeout_s": 5.0,
    } | settings
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


async def stream(
    redis: aioredis.Redis, key: str, *, newest: int | None = None
) -> list[tuple[bytes, Message]]:
    """``(entry id, decoded message)`` of stream *key*, oldest first (the *newest* n)."""
    if newest is None:
        raw = await redis.xrange(key) or []
    else:
        raw = list(reversed(await redis.xrevrange(key, count=newest) or []))
    found: list[tuple[bytes, Message]] = []
    for entry_id, fields in raw:
        payload = (fields or {}).get(b"d")
        assert isinstance(entry_id, bytes) and isinstance(payload, bytes), (entry_id, fields)
        found.append((entry_id, decode(payload)))
    return found


async def messages(redis: aioredis.Redis, key: str, *, newest: int | None = None) -> list[Message]:
    """The decoded messages of stream *key*, oldest first."""
    return [message for _, message in await stream(redis, key, newest=newest)]


def _toml_value(value: object) -> str:
    if isinstance(value, dict):
        items = (f"{json.dumps(k)} = {_toml_value(v)}" for k, v in value.items() if v is not None)
        return "{" + ", ".join(items) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, bool):
        return "true" if value else "false"
    return json.dumps(value)


def write_toml(config: ProducerConfig, path: Path) -> Path:
    """*config* as the TOML file ``marketbus produce --config`` reads."""
    lines: list[str] = []
    for section, body in msgspec.to_builtins(config).items():
        tables = body if isinstance(body, list) else [body]
        for table in tables:
            lines.append(f"[[{section}]]" if isinstance(body, list) else f"[{section}]")
            lines += [f"{k} = {_toml_value(v)}" for k, v in table.items() if v is not None]
    path.write_text("\n".join(lines) + "\n")
    return path


class ProducerProcess:
    """``python -m marketbus.producer --config FILE`` with its stderr collected by line."""

    def __init__(self, config: Path, name: str) -> None:
        self.config = config
        self.name = name
        self.lines: list[str] = []
        self.proc: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task[None] | None = None

    async def start(self, *extra: str) -> ProducerProcess:
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "marketbus.producer",
            "--config",
            str(self.config),
            *extra,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        self._reader = asyncio.create_task(self._read())
        return self

    async def _read(self) -> None:
        assert self.proc is not None and self.proc.stderr is not None
        async for raw in self.proc.stderr:
            self.lines.append(raw.decode(errors="replace").rstrip())

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    @property
    def returncode(self) -> int | None:
        return None if self.proc is None else self.proc.returncode

    @property
    def stderr(self) -> str:
        return "\n".join(self.lines)

    def logged(self, pattern: str) -> re.Match[str] | None:
        for line in self.lines:
            found = re.search(pattern, line)
            if found:
                return found
        return None

    async def wait_logged(
        self, pattern: str, timeout_s: float = PROCESS_DEADLINE_S
    ) -> re.Match[str]:
        await wait_until(
            lambda: self.logged(pattern) is not None or self.returncode is not None,
            timeout_s=timeout_s,
            what=f"{self.name} to log {pattern!r}",
        )
        found = self.logged(pattern)
        assert found is not None, f"{self.name} exited {self.returncode}:\n{self.stderr[-3000:]}"
        return found

    def signal(self, signum: signal.Signals) -> None:
        assert self.proc is not None
        self.proc.send_signal(signum)

    async def wait(self, timeout_s: float = PROCESS_DEADLINE_S) -> int:
        assert self.proc is not None
        code = await asyncio.wait_for(self.proc.wait(), timeout_s)
        if self._reader is not None:
            await asyncio.wait_for(self._reader, timeout_s)
        return code

    async def kill(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.kill()
            await self.proc.wait()
        if self._reader is not None:
            self._reader.cancel()
            await asyncio.gather(self._reader, return_exceptions=True)


@pytest.fixture
async def producer_processes() -> AsyncIterator[Callable[[Path, str], ProducerProcess]]:
    """A factory of `ProducerProcess`es; every one is killed at the end, pass or fail."""
    made: list[ProducerProcess] = []

    def make(config: Path, name: str = "producer") -> ProducerProcess:
        process = ProducerProcess(config, name)
        made.append(process)
        return process

    yield make
    for process in made:
        await process.kill()


@pytest.fixture
async def binance_sim() -> AsyncIterator[SimServer]:
    """A binance spot simulator with 10 s of candle history, trading 50/s per symbol."""
    async with SimServer("binance", SYMBOLS, rate=50, seed=7, warmup_s=10) as sim:
        yield sim
