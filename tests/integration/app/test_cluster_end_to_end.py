"""Scale-out end to end: simulator -> ccxt.pro producer -> 3-master Redis Cluster
(sharded pub/sub) -> consumer SDK in cluster mode. Feeds spread over the shards and the
consumer rebuilds the simulator's candles exactly."""

from __future__ import annotations

from marketbus.consumers import Subscriber
from marketbus.producer import Producer
from marketbus.producer.config import ProducerConfig
from marketbus.shared.cluster import connect_cluster
from marketbus.shared.config import RedisConfig, build_config
from marketbus.sim import SimServer
from tests.support.waiting import wait_until

SYMBOLS = ["BTC/USDT", "ETH/USDT", "SOL/USDT", "XRP/USDT"]
TIMEFRAME = "1s"


def config_for(cluster_url: str, sim: SimServer) -> ProducerConfig:
    return build_config(
        ProducerConfig,
        {
            "redis": {"url": cluster_url, "cluster": True},
            "producer": {"close_grace_ms": 300, "heartbeat_s": 0.5, "shutdown_timeout_s": 5},
            "exchanges": [
                {
                    "id": "binance",
                    "symbols": SYMBOLS,
                    "kinds": [f"ohlcv.{TIMEFRAME}", "trades"],
                    "ccxt": sim.url_overrides("binance"),
                }
            ],
        },
        environ={},
    )


async def test_producer_and_consumer_on_a_cluster_spread_feeds_and_match_the_market(
    cluster_url: str,
) -> None:
    redis_config = RedisConfig(url=cluster_url, cluster=True)
    async with (
        SimServer("binance", SYMBOLS, rate=40, seed=5, warmup_s=15) as sim,
        Producer(config_for(cluster_url, sim)) as producer,
        Subscriber(redis_config, candles=1000) as sub,
    ):
        for symbol in SYMBOLS:
            await sub.subscribe(exchange="binance", symbol=symbol, timeframe=TIMEFRAME)
            await sub.subscribe(exchange="binance", symbol=symbol, kind="trades")
        buffers = {s: sub.candles("binance", s, TIMEFRAME) for s in SYMBOLS}
        marks = {s: len(buffers[s].closed()) for s in SYMBOLS}
        await wait_until(
            lambda: all(len(buffers[s].closed()) >= marks[s] + 2 for s in SYMBOLS),
            timeout_s=20,
            what="live candles through the cluster",
        )
        sim.pause()
        for symbol in SYMBOLS:
            expected = [
                (c.ts_ms, c.open, c.high, c.low, c.close, c.volume)
                for c in sim.market.candles(symbol, TIMEFRAME)
                if c.closed
            ]

            def caught_up(symbol: str = symbol, last: int = expected[-1][0]) -> bool:
                closed = buffers[symbol].closed()
                return bool(closed) and closed[-1].ts_ms >= last

            await wait_until(caught_up, timeout_s=10, what=f"{symbol} to catch up")
            got = [
                (c.ts_ms, c.open, c.high, c.low, c.close, c.volume)
                for c in buffers[symbol].closed()
            ]
            assert got == expected[-len(got) :], symbol
            assert sub.trades("binance", symbol).total > 0
        assert sub.stats.gaps == 0 and sub.stats.undecodable == 0
        feeds = [f.name for f in producer.feeds if f.kind != "status"]
    cluster = await connect_cluster(redis_config)
    try:
        owners = {cluster.get_node_from_key(feed).name for feed in feeds}  # type: ignore[union-attr]
        assert len(owners) == 3, "feeds should spread over all three masters"
        for feed in feeds:
            if "ohlcv" in feed:
                assert await cluster.xlen(feed) > 0, feed
    finally:
        await cluster.aclose()
