"""Fault modes switched at runtime, as real ccxt.pro clients experience them."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import ccxt.pro
import pytest

from tests.integration.sim.conftest import VENUES, Rig, Venue, rig_for, within

FAULT_VENUES = [
    v for i, v in enumerate(VENUES) if v.exchange not in {u.exchange for u in VENUES[:i]}
]
"""The first venue of each exchange: faults act on connections, not on market kinds."""


@pytest.fixture(params=FAULT_VENUES, ids=str)
async def live(request: pytest.FixtureRequest) -> AsyncIterator[Rig]:
    """A rig whose client already receives candles."""
    venue: Venue = request.param
    async with rig_for(venue) as rig:
        await within(rig.exchange.watch_ohlcv(venue.symbol, venue.timeframe))
        yield rig


def _watch(rig: Rig) -> Any:
    return rig.exchange.watch_ohlcv(rig.venue.symbol, rig.venue.timeframe)


async def test_dropped_connection_fails_the_watch_and_the_next_watch_reconnects(live: Rig) -> None:
    pending = asyncio.ensure_future(_watch(live))
    await asyncio.sleep(0)
    live.sim.faults.go_silent()  # make sure the pending watch cannot resolve before the drop
    assert live.sim.faults.drop_connections() >= 1
    with pytest.raises(ccxt.NetworkError):
        await within(pending)
    live.sim.faults.resume()
    accepted = live.sim.connections_accepted
    await within(_watch(live))
    assert live.sim.connections_accepted > accepted


async def test_silent_server_leaves_the_watch_waiting_until_resumed(live: Rig) -> None:
    live.sim.faults.go_silent()
    pending = asyncio.ensure_future(_watch(live))
    done, _ = await asyncio.wait({pending}, timeout=0.5)
    assert not done, "a silent socket must not deliver data"
    assert live.sim.connection_count >= 1
    live.sim.faults.resume()
    await within(pending)


async def test_delay_holds_every_frame_back(live: Rig) -> None:
    symbol = live.venue.symbol
    await within(live.exchange.watch_trades(symbol))
    live.sim.pause()
    live.sim.faults.delay(0.4)
    loop = asyncio.get_running_loop()
    started = loop.time()
    live.sim.step(symbol)
    stepped = live.sim.market.trades(symbol)[-1].id
    trades = await within(live.exchange.watch_trades(symbol))
    while int(trades[-1]["id"]) != stepped:  # trades sent before the pause may still arrive
        trades = await within(live.exchange.watch_trades(symbol))
    assert loop.time() - started >= 0.4


@pytest.mark.parametrize(
    "live", [v for v in FAULT_VENUES if v.refusal_rejects_watch], indirect=True, ids=str
)
async def test_refused_subscription_fails_the_watch(live: Rig) -> None:
    live.sim.faults.refuse_subscriptions()
    with pytest.raises(ccxt.ExchangeError):
        await within(live.exchange.watch_trades(live.venue.symbols[1]))


@pytest.mark.parametrize(
    "live", [v for v in FAULT_VENUES if not v.refusal_rejects_watch], indirect=True, ids=str
)
async def test_refused_subscription_stalls_the_watch_where_ccxt_raises_in_its_loop(
    live: Rig,
) -> None:
    """ccxt quirk (kucoinfutures): the error reply makes ccxt's message handler raise
    inside its receive loop, so the watch is neither resolved nor rejected."""
    live.sim.faults.refuse_subscriptions()
    received = live.sim.frames_received
    pending = asyncio.ensure_future(live.exchange.watch_trades(live.venue.symbols[1]))
    await live.sim.wait_for(lambda: live.sim.frames_received > received)  # refused now
    done, _ = await asyncio.wait({pending}, timeout=1.0)
    pending.cancel()
    assert not done
    assert live.sim.connection_count >= 1


def _fence(rig: Rig) -> list[float]:
    """Make one trade now and return the forming candle it leaves as ccxt's row
    `[ts, o, h, l, c, volume]` (volume grows with every trade, so no earlier row of
    the candle equals it): the candle frame it causes is the newest one queued."""
    symbol, timeframe = rig.venue.symbol, rig.venue.timeframe
    rig.sim.step(symbol)
    return rig.candle_row(rig.sim.market.candles(symbol, timeframe)[-1])


@pytest.mark.parametrize("kind", ["poison", "invalid_json"])
async def test_garbage_frame_stops_delivery_while_the_socket_stays_open(
    live: Rig, kind: str
) -> None:
    """ccxt quirk the producer must guard against: a frame that does not parse, or
    makes a handler raise, ends ccxt's receive loop on that socket, silently and for
    good, without closing the socket or failing the pending watch.

    Frames the simulator queued before the garbage (a tick's burst: a candle close and
    several trades) are still delivered ahead of it and would resolve a watch started
    after `send_garbage`. So the garbage goes out right behind a fence, a trade whose
    candle frame is the last one queued, with the feed silent; the test waits until
    ccxt's candle cache holds the fence, then the feed resumes and nothing more may
    arrive.
    """
    live.sim.pause()
    fence = _fence(live)
    live.sim.faults.go_silent()
    assert live.sim.faults.send_garbage(kind) >= 1  # type: ignore[arg-type]

    async def read_to_fence() -> None:
        # ccxt's candle cache, not a watch: a frame handled while no watch is pending
        # resolves nothing, so waiting on watches could miss the fence for good.
        symbol, timeframe = live.venue.symbol, live.venue.timeframe
        while True:
            rows = live.exchange.ohlcvs.get(symbol, {}).get(timeframe)
            if rows and list(rows[-1][:6]) == fence:
                return
            await asyncio.sleep(0.01)

    await within(read_to_fence())
    live.sim.faults.resume()
    live.sim.resume()
    pending = asyncio.ensure_future(_watch(live))
    done, _ = await asyncio.wait({pending}, timeout=1.0)
    pending.cancel()
    assert not done
    assert live.sim.connection_count >= 1
