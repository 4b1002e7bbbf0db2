"""The engine's discovery path under junk: what a pattern finds is bounded (no I/O)."""

from __future__ import annotations

import logging

import pytest

from marketbus.consumers.engine import BufferSizes, Engine
from marketbus.shared.codecs import encode
from marketbus.shared.schema import Ticker, Trade, Trades


def trades(exchange: str, symbol: str) -> Trades:
    return Trades(
        exchange=exchange,
        symbol=symbol,
        run=1,
        seq=1,
        ts_ms=1,
        recv_ns=0,
        trades=(Trade(id="1", ts_ms=1, price=1.0, amount=1.0, side="buy"),),
    )


def test_a_channel_whose_first_payload_does_not_decode_costs_only_a_counter() -> None:
    engine = Engine()
    engine.add_pattern("md:*", BufferSizes())
    for i in range(500):
        engine.on_live(f"md:x:trades:S{i}".encode(), b"{}")
    assert engine.feeds == {} and engine.take_fetches() == []
    assert engine.stats.undecodable == 500 and engine.ignored == 0


def test_a_channel_whose_first_message_does_not_fit_its_name_is_not_kept() -> None:
    engine = Engine()
    engine.add_pattern("md:*", BufferSizes())
    ticker = Ticker(exchange="x", symbol="S", run=1, seq=1, ts_ms=1, recv_ns=0, last=1.0)
    engine.on_live("md:x:trades:S", encode(ticker))
    assert engine.feeds == {} and engine.stats.rejected == 1


def test_patterns_bring_in_at_most_max_pattern_feeds_and_count_the_rest(
    caplog: pytest.LogCaptureFixture,
) -> None:
    now = [0.0]
    engine = Engine(max_pattern_feeds=5, clock=lambda: now[0])
    engine.add_pattern("md:*", BufferSizes())
    caplog.set_level(logging.WARNING, "marketbus.consumers")
    for i in range(300):
        now[0] = i * 0.1  # 30 s of junk
        engine.on_live(f"md:y:trades:S{i}/USDT", encode(trades("y", f"S{i}/USDT")))
    # four feeds and the status channel of their exchange
    assert sorted(engine.feeds) == ["md:y:status"] + [f"md:y:trades:S{i}/USDT" for i in range(4)]
    assert engine.stats.refused == 296
    refusals = [r for r in caplog.records if "max_pattern_feeds" in r.getMessage()]
    assert 2 <= len(refusals) <= 4  # once per 10 s, not once per channel
    # a feed goes: room for one more
    engine.drop(["md:y:trades:S0/USDT"])
    engine.on_live("md:y:trades:NEW/USDT", encode(trades("y", "NEW/USDT")))
    assert "md:y:trades:NEW/USDT" in engine.feeds and engine.stats.refused == 296
    # a known feed keeps working at the cap
    engine.on_live("md:y:trades:S1/USDT", encode(trades("y", "S1/USDT")))
    assert engine.stats.refused == 296


def test_a_feed_of_a_new_exchange_needs_room_for_its_status_channel_too() -> None:
    engine = Engine(max_pattern_feeds=3)
    engine.add_pattern("md:*", BufferSizes())
    engine.on_live("md:a:trades:X/Y", encode(trades("a", "X/Y")))
    engine.on_live("md:b:trades:X/Y", encode(trades("b", "X/Y")))  # 2 more: refused
    engine.on_live("md:a:trades:Z/Y", encode(trades("a", "Z/Y")))  # 1 more: kept
    assert sorted(engine.feeds) == ["md:a:status", "md:a:trades:X/Y", "md:a:trades:Z/Y"]
    assert engine.stats.refused == 1
