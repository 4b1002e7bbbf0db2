"""`marketbus tail --cluster` and `marketbus status --cluster` on a real local Redis
Cluster (here, next to the consumer's cluster tests, whose cluster fixture they share)."""

from __future__ import annotations

import asyncio
import sys
from asyncio.subprocess import PIPE
from collections.abc import AsyncIterator

import pytest
from redis.asyncio.cluster import RedisCluster

from marketbus.shared.cluster import connect_cluster
from marketbus.shared.codecs import encode_feed_info
from marketbus.shared.config import RedisConfig
from marketbus.shared.names import catalog_key
from marketbus.shared.schema import FeedInfo
from tests.support.waiting import wait_until
from tests.support.wire_writer import WireWriter

CLI = [sys.executable, "-m", "marketbus.cli"]
TICKERS = ["BTC/USDT", "XRP/USDT", "ADA/USDT"]
"""Their binance ticker feeds hash to three different shards; so do the trades feeds
of `TRADES`."""
TRADES = ["BTC/USDT", "XRP/USDT", "DOGE/USDT"]


@pytest.fixture
async def cluster(cluster_url: str) -> AsyncIterator[RedisCluster]:
    client = await connect_cluster(RedisConfig(url=cluster_url, cluster=True))
    yield client
    await client.aclose()


async def catalogue(
    cluster: RedisCluster, writer: WireWriter, kind: str, symbols: list[str]
) -> list[str]:
    feeds = []
    for symbol in symbols:
        feed = writer.feed(kind, symbol)
        info = FeedInfo(
            exchange=writer.exchange,
            symbol=symbol,
            kind=kind,
            timeframe=None,
            run=writer.run,
            stream_maxlen=1000,
            updated_ms=0,
        )
        await cluster.hset(catalog_key("md"), feed, encode_feed_info(info))
        feeds.append(feed)
    owners = {cluster.get_node_from_key(feed).name for feed in feeds}  # type: ignore[union-attr]
    assert len(owners) == 3
    return feeds


async def shard_subscribers(cluster: RedisCluster, channel: str) -> int:
    owner = cluster.get_node_from_key(channel)
    [(_, count)] = await cluster.execute_command("PUBSUB SHARDNUMSUB", channel, target_nodes=owner)
    return int(count)


async def test_tail_follows_catalogued_feeds_on_every_shard(
    cluster: RedisCluster, cluster_url: str
) -> None:
    writer = WireWriter(cluster, run=5)
    feeds = await catalogue(cluster, writer, "ticker", TICKERS)
    tail = ["tail", "md:binance:ticker:*", "--cluster", "--redis", cluster_url]
    count = ["--count", str(len(feeds) + 1)]
    proc = await asyncio.create_subprocess_exec(*CLI, *tail, *count, stdout=PIPE, stderr=PIPE)
    try:

        async def all_subscribed() -> bool:
            counts = [await shard_subscribers(cluster, feed) for feed in feeds]
            return counts == [1] * len(feeds)

        await wait_until(all_subscribed, what="tail to SSUBSCRIBE every feed")
        for i, symbol in enumerate(TICKERS):
            await writer.write(feeds[i], writer.ticker(symbol, 100.0 + i))
        await writer.raw(feeds[0], b"\x00garbage")
        stdout, stderr = await asyncio.wait_for(proc.communicate(), timeout=20)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    text = stdout.decode()
    assert proc.returncode == 0, stderr.decode()
    assert "3 catalogued channel(s)" in text
    for i, symbol in enumerate(TICKERS):
        assert f"5-1 ticker  binance {symbol}  bid={99.5 + i} ask={100.5 + i}" in text
    assert f"UNDECODABLE on {feeds[0]} (#1)" in text


async def test_status_reads_every_shard(cluster: RedisCluster, cluster_url: str) -> None:
    writer = WireWriter(cluster, run=5)
    feeds = await catalogue(cluster, writer, "trades", TRADES)
    for feed, symbol in zip(feeds, TRADES, strict=True):
        await writer.write(feed, writer.trades(symbol, 1.0))
        await writer.write(feed, writer.trades(symbol, 2.0))
    await writer.write(writer.status_feed, writer.status("connected"))
    status = ["status", "--cluster", "--redis", cluster_url]
    proc = await asyncio.create_subprocess_exec(*CLI, *status, stdout=PIPE, stderr=PIPE)
    stdout, stderr = await asyncio.wait_for(proc.communicate(), timeout=20)
    assert proc.returncode == 0, stderr.decode()
    lines = stdout.decode().splitlines()
    rows = {line.split()[0]: line.split() for line in lines if line.startswith("md:")}
    assert sorted(rows) == sorted(feeds)
    assert all(row[1:3] == ["5", "2"] and row[4] == "connected" for row in rows.values())
