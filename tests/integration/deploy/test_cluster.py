"""Redis Cluster support against a real local 3-master Redis Cluster: the client
(`marketbus.shared.cluster`), the producer's `publish_batch` and the consumer's
`ShardedSubscriber` and `feeds_matching`."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import NamedTuple

import pytest
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import NoPermissionError

from marketbus.consumers.cluster import ShardedSubscriber, ShardMessage, Subscribed, feeds_matching
from marketbus.producer.cluster_publish import publish_batch
from marketbus.shared.cluster import connect_cluster, has_sharded_pubsub, slot_of
from marketbus.shared.config import RedisConfig
from marketbus.shared.errors import ConfigError, RedisUnavailableError
from marketbus.shared.names import feed_name
from tests.support.cluster import LocalCluster
from tests.support.redis_process import free_port
from tests.unit.deploy.files import (
    CONSUMER,
    PRODUCER,
    acl_users,
    password_for,
    with_test_password,
)

BASES = ["BTC", "ETH", "SOL", "XRP", "BNB", "DOGE", "ADA", "TRX", "LINK", "AVAX", "DOT", "LTC"]
FEEDS = [
    feed_name("md", exchange, kind, f"{base}/USDT")
    for exchange in ("binance", "okx")
    for kind in ("ticker", "trades")
    for base in BASES
]


@pytest.fixture
async def cluster(cluster_url: str) -> AsyncIterator[RedisCluster]:
    client = await connect_cluster(RedisConfig(url=cluster_url, cluster=True))
    yield client
    await client.aclose()


class Outgoing(NamedTuple):
    """Shaped like the producer's ``Outgoing`` (what `publish_batch` takes)."""

    channel: str
    payload: bytes
    stream: str | None
    entry_id: str
    maxlen: int


def _entries(feeds: list[str], run: int, seq: int, *, live_only: bool = False) -> list[Outgoing]:
    return [
        Outgoing(f, f"{f}|{seq}".encode(), None if live_only else f, f"{run}-{seq}", 100)
        for f in feeds
    ]


async def test_feeds_spread_over_all_three_masters(cluster: RedisCluster) -> None:
    owners = {cluster.get_node_from_key(feed).name for feed in FEEDS}  # type: ignore[union-attr]
    assert len(owners) == 3
    assert len({slot_of(feed) for feed in FEEDS}) == len(FEEDS)


async def test_batch_lands_each_stream_on_its_slot_owner(cluster: RedisCluster) -> None:
    assert has_sharded_pubsub(cluster)
    for seq in (1, 2, 3):
        assert await publish_batch(cluster, _entries(FEEDS, 1000, seq)) == [None] * len(FEEDS)
    assert await publish_batch(cluster, _entries(FEEDS, 1000, 4, live_only=True)) == [None] * len(
        FEEDS
    )
    for feed in FEEDS:
        node = cluster.get_node_from_key(feed)
        assert node is not None
        # Asked of the owner directly: a wrong node would answer MOVED.
        entries = await cluster.execute_command("XRANGE", feed, "-", "+", target_nodes=node)
        assert [(i, f[b"d"]) for i, f in entries] == [
            (f"1000-{s}".encode(), f"{feed}|{s}".encode()) for s in (1, 2, 3)
        ]


async def test_stale_entry_id_comes_back_as_that_entry_error(cluster: RedisCluster) -> None:
    await publish_batch(cluster, _entries(FEEDS[:2], 1000, 5))
    mixed = [*_entries(FEEDS[:1], 1000, 5), *_entries(FEEDS[1:3], 1000, 6)]
    errors = await publish_batch(cluster, mixed)
    assert "equal or smaller" in str(errors[0])
    assert errors[1:] == [None, None]


async def test_sharded_subscriber_receives_every_feed_in_order(
    cluster: RedisCluster, cluster_url: str
) -> None:
    config = RedisConfig(url=cluster_url, cluster=True)
    async with ShardedSubscriber(config, cluster) as subscriber:
        await subscriber.subscribe(FEEDS)
        assert len(subscriber.nodes) == 3
        assert subscriber.feeds == frozenset(FEEDS)

        confirmed: set[str] = set()
        async with asyncio.timeout(10):
            while confirmed != set(FEEDS):
                item = await subscriber.get()
                assert isinstance(item, Subscribed)
                confirmed.add(item.feed)
        for seq in (1, 2):
            assert await publish_batch(cluster, _entries(FEEDS, 2000, seq)) == [None] * len(FEEDS)
        got: dict[str, list[bytes]] = {}
        async with asyncio.timeout(10):
            while sum(map(len, got.values())) < 2 * len(FEEDS):
                for item in await subscriber.get_batch(timeout_s=1):
                    assert isinstance(item, ShardMessage)
                    got.setdefault(item.feed, []).append(item.payload)
        assert got == {f: [f"{f}|1".encode(), f"{f}|2".encode()] for f in FEEDS}


async def test_subscriber_follows_a_feed_whose_slot_migrates(
    cluster: RedisCluster, cluster_url: str
) -> None:
    feed = FEEDS[0]
    config = RedisConfig(url=cluster_url, cluster=True)
    source = cluster.get_node_from_key(feed)
    target = next(n for n in cluster.get_primaries() if n.name != source.name)  # type: ignore[union-attr]
    try:
        async with ShardedSubscriber(config, cluster) as subscriber:
            await subscriber.subscribe([feed])
            async with asyncio.timeout(10):
                assert await subscriber.get() == Subscribed(feed)
            await _migrate_slot(cluster, slot_of(feed), source, target)  # type: ignore[arg-type]

            async with asyncio.timeout(10):  # the new owner's confirmation: a hole to repair
                assert await subscriber.get() == Subscribed(feed)
            assert subscriber.nodes == {target.name: {feed}}
            await cluster.nodes_manager.initialize()
            assert await _shard_subscribers(cluster, feed) == 1
            assert await publish_batch(cluster, _entries([feed], 3000, 1)) == [None]
            async with asyncio.timeout(10):
                assert await subscriber.get() == ShardMessage(feed, f"{feed}|1".encode())
    finally:  # the session's cluster is shared: give the slot back, empty
        if cluster.get_node_from_key(feed).name != source.name:  # type: ignore[union-attr]
            await cluster.delete(feed)
            await _migrate_slot(cluster, slot_of(feed), target, source)  # type: ignore[arg-type]
            await cluster.nodes_manager.initialize()


async def _shard_subscribers(cluster: RedisCluster, feed: str) -> int:
    """PUBSUB SHARDNUMSUB of *feed*, asked of its owner."""
    owner = cluster.get_node_from_key(feed)
    [(_, count)] = await cluster.execute_command("PUBSUB SHARDNUMSUB", feed, target_nodes=owner)
    return int(count)


async def test_patterns_expand_against_the_catalog(cluster: RedisCluster) -> None:
    await cluster.hset(
        "md:feeds",
        mapping={feed: b"{}" for feed in FEEDS},  # type: ignore[arg-type]
    )
    okx_tickers = await feeds_matching(cluster, "md", "md:okx:ticker:*")
    assert okx_tickers == sorted(f for f in FEEDS if f.startswith("md:okx:ticker:"))
    assert await feeds_matching(cluster, "md", "md:*:status") == [
        "md:binance:status",
        "md:okx:status",
    ]


async def _migrate_slot(cluster: RedisCluster, slot: int, source: object, target: object) -> None:
    """Move one empty slot from *source* to *target* the way redis-cli --cluster does."""
    src_id = await cluster.execute_command("CLUSTER MYID", target_nodes=source)
    dst_id = await cluster.execute_command("CLUSTER MYID", target_nodes=target)
    if isinstance(src_id, bytes):
        src_id, dst_id = src_id.decode(), dst_id.decode()
    await cluster.execute_command("CLUSTER SETSLOT", slot, "IMPORTING", src_id, target_nodes=target)
    await cluster.execute_command("CLUSTER SETSLOT", slot, "MIGRATING", dst_id, target_nodes=source)
    for node in (target, source):
        await cluster.execute_command("CLUSTER SETSLOT", slot, "NODE", dst_id, target_nodes=node)


async def test_cluster_mode_rejects_db_other_than_zero_and_unix() -> None:
    with pytest.raises(ConfigError, match="db 0"):
        await connect_cluster(RedisConfig(url="redis://127.0.0.1:7000/3", cluster=True))
    with pytest.raises(ConfigError, match="unix"):
        await connect_cluster(RedisConfig(url="unix:///tmp/r.sock", cluster=True))


async def test_unreachable_cluster_is_a_clear_error_without_password() -> None:
    url = f"redis://u:s3cret@127.0.0.1:{free_port()}/0"
    with pytest.raises(RedisUnavailableError, match="slot map") as info:
        await connect_cluster(RedisConfig(url=url, cluster=True, connect_timeout_s=1))
    assert "s3cret" not in str(info.value)


async def test_standalone_server_is_not_mistaken_for_a_cluster(redis_url: str) -> None:
    with pytest.raises(RedisUnavailableError, match="slot map"):
        await connect_cluster(RedisConfig(url=redis_url, cluster=True, connect_timeout_s=1))


def test_fixture_cluster_has_three_masters(local_cluster: LocalCluster) -> None:
    assert len(local_cluster.nodes) == 3


async def test_shipped_acl_users_work_on_every_node(
    cluster: RedisCluster, local_cluster: LocalCluster
) -> None:
    """users.acl's producer and consumer rules, applied by ACL SETUSER on each node
    (ACLs are per node), suffice for cluster routing, SPUBLISH+XADD and SSUBSCRIBE."""
    users = acl_users()
    for node in cluster.get_primaries():
        for name in (PRODUCER, CONSUMER):
            setuser = ["ACL", "SETUSER", name, "reset", *with_test_password(users[name])]
            await cluster.execute_command(*setuser, target_nodes=node)
    seed = local_cluster.nodes[0].port

    def config(user: str) -> RedisConfig:
        url = f"redis://{user}:{password_for(user)}@127.0.0.1:{seed}/0"
        return RedisConfig(url=url, cluster=True)

    producer = await connect_cluster(config(PRODUCER))
    consumer = await connect_cluster(config(CONSUMER))
    try:
        async with ShardedSubscriber(config(CONSUMER), consumer) as subscriber:
            await subscriber.subscribe(FEEDS)
            confirmed: set[str] = set()
            async with asyncio.timeout(10):
                while len(confirmed) < len(FEEDS):
                    confirmed.add((await subscriber.get()).feed)
            assert await publish_batch(producer, _entries(FEEDS, 4000, 1)) == [None] * len(FEEDS)
            async with asyncio.timeout(10):
                got = {(await subscriber.get()).feed for _ in FEEDS}
            assert got == set(FEEDS)
        assert await consumer.xrange(FEEDS[0], "-", "+")
        errors = await publish_batch(consumer, _entries(FEEDS[:3], 4000, 2))
        assert all(isinstance(error, NoPermissionError) for error in errors), errors
    finally:
        await producer.aclose()
        await consumer.aclose()
