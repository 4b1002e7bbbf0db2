"""`ShardedSubscriber` (marketbus.consumers.cluster) against a real local 3-master Redis
Cluster: what it hands on when a node is lost, and how it closes when cancelled."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from redis.asyncio.cluster import RedisCluster

from marketbus.consumers.cluster import ShardedSubscriber, ShardMessage, Subscribed
from marketbus.shared.cluster import connect_cluster
from marketbus.shared.config import RedisConfig
from marketbus.shared.errors import RedisUnavailableError
from marketbus.shared.names import feed_name
from tests.support.waiting import wait_until

FEED = feed_name("md", "binance", "trades", "BTC/USDT")
READER, READER_PASSWORD = "reader", "reader-secret"


@pytest.fixture
async def cluster(cluster_url: str) -> AsyncIterator[RedisCluster]:
    client = await connect_cluster(RedisConfig(url=cluster_url, cluster=True))
    yield client
    await client.aclose()


@pytest.fixture
async def reader_url(cluster: RedisCluster, cluster_url: str) -> AsyncIterator[str]:
    """*cluster_url* as an ACL user allowed everything, on every node (ACLs are per node)."""
    rules = ["reset", "on", f">{READER_PASSWORD}", "~*", "&*", "+@all"]
    for node in cluster.get_primaries():
        await cluster.execute_command("ACL", "SETUSER", READER, *rules, target_nodes=node)
    yield cluster_url.replace("redis://", f"redis://{READER}:{READER_PASSWORD}@")
    for node in cluster.get_primaries():
        await cluster.execute_command("ACL", "DELUSER", READER, target_nodes=node)


async def shard_subscribers(cluster: RedisCluster, channel: str) -> int:
    """PUBSUB SHARDNUMSUB of *channel*, asked of the node that owns it."""
    owner = cluster.get_node_from_key(channel)
    [(_, count)] = await cluster.execute_command("PUBSUB SHARDNUMSUB", channel, target_nodes=owner)
    return int(count)


async def test_deliveries_queued_before_a_node_failure_are_returned_before_it_is_raised(
    cluster: RedisCluster, reader_url: str
) -> None:
    """A node is lost for good (its channel permission revoked: Redis drops the
    connection and refuses the re-SSUBSCRIBE) behind three messages already queued:
    `get_batch` returns those three, and only the next call raises the loss."""
    async with ShardedSubscriber(RedisConfig(url=reader_url, cluster=True), cluster) as sub:
        await sub.subscribe([FEED])
        async with asyncio.timeout(10):
            assert await sub.get() == Subscribed(FEED)
        for payload in (b"1", b"2", b"3"):
            await cluster.execute_command("SPUBLISH", FEED, payload)
        await wait_until(lambda: sub.pending == 3, what="three messages queued")
        owner = cluster.get_node_from_key(FEED)
        await cluster.execute_command("ACL", "SETUSER", READER, "resetchannels", target_nodes=owner)
        await wait_until(lambda: sub.pending == 4, what="the node's failure queued behind them")

        assert await sub.get_batch(timeout_s=1) == [
            ShardMessage(FEED, b"1"),
            ShardMessage(FEED, b"2"),
            ShardMessage(FEED, b"3"),
        ]
        assert sub.pending == 1
        with pytest.raises(RedisUnavailableError, match="lost the sharded pub/sub connection"):
            await sub.get_batch(timeout_s=1)
        assert sub.pending == 0


async def test_a_failure_first_in_the_queue_is_raised_at_once(
    cluster: RedisCluster, reader_url: str
) -> None:
    async with ShardedSubscriber(RedisConfig(url=reader_url, cluster=True), cluster) as sub:
        await sub.subscribe([FEED])
        async with asyncio.timeout(10):
            assert await sub.get() == Subscribed(FEED)
        owner = cluster.get_node_from_key(FEED)
        await cluster.execute_command("ACL", "SETUSER", READER, "resetchannels", target_nodes=owner)
        await wait_until(lambda: sub.pending == 1, what="the node's failure queued")
        with pytest.raises(RedisUnavailableError, match="lost the sharded pub/sub connection"):
            await sub.get_batch(timeout_s=1)


async def test_aclose_in_a_cancelled_task_closes_every_node_and_stays_cancelled(
    cluster: RedisCluster, cluster_url: str
) -> None:
    """The closing task is cancelled while it waits for a node's reader to stop: the
    connections are still closed, and the task ends cancelled, as it was asked to."""
    sub = ShardedSubscriber(RedisConfig(url=cluster_url, cluster=True), cluster)
    await sub.subscribe([FEED])
    async with asyncio.timeout(10):
        assert await sub.get() == Subscribed(FEED)
    assert await shard_subscribers(cluster, FEED) == 1

    async def close_while_cancelled() -> None:
        task = asyncio.current_task()
        assert task is not None
        task.cancel()  # delivered at aclose's first wait: for the node's reader to stop
        await sub.aclose()

    closer = asyncio.create_task(close_while_cancelled())
    with pytest.raises(asyncio.CancelledError):
        await closer
    assert closer.cancelled()
    assert sub.nodes == {} and sub.feeds == frozenset()
    await wait_until(
        lambda: shard_subscribers_are(cluster, FEED, 0), what="the node connection closed"
    )


async def shard_subscribers_are(cluster: RedisCluster, channel: str, count: int) -> bool:
    return await shard_subscribers(cluster, channel) == count
