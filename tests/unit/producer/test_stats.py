"""Counters, the latency histogram and the heartbeat's stats detail."""

from __future__ import annotations

import json

from marketbus.producer.stats import (
    FeedCounters,
    LatencyHistogram,
    heartbeat_detail,
    parse_heartbeat,
)


def test_latency_quantiles_are_bucket_bounds() -> None:
    h = LatencyHistogram((0.001, 0.01, 0.1))
    assert h.quantile(0.5) is None
    for seconds in (0.0005, 0.0005, 0.005, 0.05, 2.0):
        h.observe(seconds)
    assert h.counts == [2, 1, 1, 1]
    assert (h.quantile(0.4), h.quantile(0.6), h.quantile(0.8), h.quantile(1.0)) == (
        0.001,
        0.01,
        0.1,
        2.0,
    )
    assert h.maximum == 2.0 and h.count == 5


def test_a_heartbeat_carries_each_feed_of_its_exchange_compactly() -> None:
    live, quiet, other = FeedCounters(), FeedCounters(), FeedCounters()
    live.state, live.published, live.last_message_ms, live.reconnects = "connected", 9, 1_000, 2
    counters = {
        "md:binance:ticker:BTC/USDT": live,
        "md:binance:trades:BTC/USDT": quiet,
        "md:okx:ticker:BTC/USDT": other,
    }
    detail = heartbeat_detail(counters, prefix="md:binance:", queued=3, now_ms=3_500, lease="h")
    assert json.loads(detail) == {
        "queued": 3,
        "lease": "h",
        "feeds": {
            "ticker:BTC/USDT": {"state": "connected", "msgs": 9, "age_s": 2.5, "reconnects": 2},
            "trades:BTC/USDT": {"state": "starting"},
        },
    }
    beat = parse_heartbeat(detail)
    assert beat is not None and beat.feeds["trades:BTC/USDT"].msgs == 0
    assert parse_heartbeat("3 feeds, 0 queued") is None  # older producers: plain text
    assert parse_heartbeat("{not json") is None
