"""Trades the socket missed are fetched over REST: exactly what the exchange printed.

For each simulated exchange, real ccxt.pro against the simulator, with the market
paused and trades made by the test (`SimServer.step`, one per millisecond of a clock the
test moves): an abrupt drop of every socket, and a producer killed (SIGKILL) and
replaced, each shorter than the exchange's REST window, lose no trade id and repeat
none (the trades stream against the simulator's trades); an outage longer than the
window announces exactly the trades it could not fetch as a ``gap`` with
``from_ms``/``to_ms``.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from marketbus.producer import Producer
from marketbus.producer.config import ProducerConfig
from marketbus.shared.schema import Status, Trades
from marketbus.sim import SimServer
from marketbus.sim.market import Trade as SimTrade
from tests.integration.producer.conftest import (
    ProducerProcess,
    messages,
    producer_config,
    write_toml,
)
from tests.support.waiting import wait_until

SYMBOL = {
    "binance": "BTC/USDT",
    "okx": "BTC/USDT",
    "kucoinfutures": "BTC/USDT:USDT",
    "bingx": "BTC/USDT",
}
OKX_HISTORY = 400
"""The okx simulator keeps this many trades: its history-trades window."""
WINDOW = {"binance": 1000, "okx": OKX_HISTORY, "kucoinfutures": 100, "bingx": 100}
"""How many recent trades each exchange's REST endpoint still has."""
SHORT = 40
"""Trades made during a short outage: inside every window (with the live ones after)."""
LIVE = 5
"""Trades made once the socket is back: they reveal the outage."""
NUDGE_AFTER_POLLS = 20
"""Polls of an unchanged stream (10 ms apart) after which `Rig.wait_published` trades once."""

exchanges = pytest.mark.parametrize("exchange", list(SYMBOL))


class ManualClock:
    """The simulator's clock, moved only by the test: every trade gets its own ms."""

    def __init__(self, start_ms: int) -> None:
        self.ms = start_ms

    def __call__(self) -> int:
        return self.ms


@dataclass
class Rig:
    exchange: str
    sim: SimServer
    clock: ManualClock
    redis: aioredis.Redis
    truth: list[SimTrade] = field(default_factory=list)
    """Every trade the simulator made, oldest first."""

    @property
    def symbol(self) -> str:
        return SYMBOL[self.exchange]

    @property
    def feed(self) -> str:
        return f"md:{self.exchange}:trades:{self.symbol}"

    def trade(self, count: int) -> None:
        """Make *count* trades, one per millisecond, recording each."""
        for _ in range(count):
            self.clock.ms += 1
            self.sim.step(self.symbol)
            self.truth.append(self.sim.market.trades(self.symbol)[-1])

    async def published(self) -> list[tuple[str, int]]:
        """``(id, ts_ms)`` of every trade in the stream, in stream order."""
        found: list[tuple[str, int]] = []
        for message in await messages(self.redis, self.feed):
            assert isinstance(message, Trades)
            for t in message.trades:
                assert t.id is not None and t.ts_ms is not None
                found.append((t.id, t.ts_ms))
        return found

    async def wait_published(self) -> None:
        """Until the trades made so far are in the stream. ccxt hands a trade over only
        when the watch call is waiting for it, else with the next frame, so when the
        stream stops growing short of the target one more trade is made (a nudge)."""
        target = str(self.truth[-1].id)
        seen = {"count": -1, "still": 0}

        async def there() -> bool:
            ids = [i for i, _ in await self.published()]
            if target in ids:
                return True
            seen["still"] = seen["still"] + 1 if len(ids) == seen["count"] else 0
            seen["count"] = len(ids)
            if seen["still"] >= NUDGE_AFTER_POLLS:
                seen["still"] = 0
                self.trade(1)
            return False

        await wait_until(there, timeout_s=20, what=f"trade {target} in {self.feed}")

    async def wait_subscribed(self, subscribed: bool = True) -> None:
        await self.sim.wait_for(lambda: self.sim.subscribed() == subscribed, timeout=20)

    async def gaps(self) -> list[Status]:
        found = await messages(self.redis, f"md:{self.exchange}:status")
        return [m for m in found if isinstance(m, Status) and m.event == "gap"]

    async def assert_exact(self) -> None:
        """The stream holds the simulator's trades since its first one: none lost or
        repeated, in exchange order, and no gap was announced."""
        ids = [i for i, _ in await self.published()]
        truth = [str(t.id) for t in self.truth]
        assert len(ids) == len(set(ids)), "a trade was published twice"
        start = truth.index(ids[0])
        assert ids == truth[start : start + len(ids)], "trades lost or out of order"
        assert len(truth) - start - len(ids) <= 1, "only a last nudge may be unpublished"
        assert await self.gaps() == []


def config(rig: Rig, redis_url: str, **settings: object) -> ProducerConfig:
    return producer_config(
        redis_url,
        rig.sim,
        rig.exchange,
        [rig.symbol],
        ["trades"],
        stale_after_s=60.0,
        **settings,
    )


@pytest.fixture
async def rig(exchange: str, redis_url: str) -> AsyncIterator[Rig]:
    """A paused simulator of *exchange* on a test-moved clock, and a Redis client."""
    clock = ManualClock(time.time_ns() // 1_000_000)
    history = OKX_HISTORY if exchange == "okx" else 10_000
    redis = aioredis.Redis.from_url(redis_url)
    async with SimServer(
        exchange, [SYMBOL[exchange]], rate=0, seed=3, history=history, clock=clock
    ) as sim:
        sim.pause()
        try:
            yield Rig(exchange, sim, clock, redis)
        finally:
            await redis.aclose()


async def flowing(rig: Rig) -> None:
    """Subscribed, and the first live trades are in the stream."""
    await rig.wait_subscribed()
    rig.trade(LIVE)
    await rig.wait_published()


async def outage(rig: Rig, trades: int) -> None:
    """Every socket dropped abruptly; *trades* made before it is back; then live ones."""
    rig.sim.faults.drop_connections()
    await rig.wait_subscribed(False)
    rig.trade(trades)  # no await in between: no socket is subscribed to see them
    await rig.wait_subscribed()
    rig.trade(LIVE)
    await rig.wait_published()


@exchanges
async def test_an_outage_inside_the_rest_window_loses_and_repeats_no_trade(
    rig: Rig, redis_url: str
) -> None:
    async with Producer(config(rig, redis_url)):
        await flowing(rig)
        for _ in range(2):
            await outage(rig, SHORT)
    await rig.assert_exact()


@exchanges
async def test_a_killed_producer_is_continued_without_loss_by_the_next(
    rig: Rig,
    redis_url: str,
    tmp_path: Path,
    producer_processes: Callable[[Path, str], ProducerProcess],
) -> None:
    settings = config(rig, redis_url, lease_ttl_s=0.5, on_conflict="standby")
    first = await producer_processes(write_toml(settings, tmp_path / "p.toml"), "first").start()
    await flowing(rig)
    await first.kill()  # SIGKILL: nothing flushed, the lease left to expire
    await rig.wait_subscribed(False)
    rig.trade(SHORT)
    async with Producer(settings):
        await flowing(rig)
    await rig.assert_exact()


@exchanges
async def test_an_outage_beyond_the_rest_window_announces_exactly_the_hole(
    rig: Rig, redis_url: str
) -> None:
    async with Producer(config(rig, redis_url)):
        await flowing(rig)
        last_before = (await rig.published())[-1]
        await outage(rig, WINDOW[rig.exchange] + 150)
        await wait_until(rig.gaps, timeout_s=10, what="a gap event")
    published = await rig.published()
    ids = [i for i, _ in published]
    assert len(ids) == len(set(ids)), "a trade was published twice"
    [gap] = await rig.gaps()
    assert gap.feed == rig.feed and gap.from_ms == last_before[1]
    after = published[published.index(last_before) + 1]
    assert gap.to_ms == after[1], "to_ms is the first trade published after the hole"
    truth = [str(t.id) for t in rig.truth]
    hole = truth[truth.index(last_before[0]) + 1 : truth.index(after[0])]
    assert len(hole) >= 150, "at least what the window could not hold is missing"
    kept = [i for i in truth[truth.index(ids[0]) :] if i not in set(hole)]
    assert ids == kept[: len(ids)] and len(kept) - len(ids) <= 1
    # The hole lies strictly between the trades at from_ms and to_ms (compared in the
    # simulator's times: ccxt rounds kucoin's ns times to ms, sometimes 1 ms off).
    ts = {str(t.id): t.ts_ms for t in rig.truth}
    assert all(ts[last_before[0]] < ts[i] < ts[after[0]] for i in hole)
