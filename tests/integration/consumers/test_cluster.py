"""The Subscriber in cluster mode, against a real local 3-master Redis Cluster.

Feeds spread over all three shards are written as a cluster producer writes them
(SPUBLISH + XADD ``{run}-{seq}`` on the owning node) and must be followed, backfilled
and repaired with the same exact accounting as on one server.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from redis.asyncio.cluster import RedisCluster

from marketbus.consumers import Backoff, Gap, Subscriber, TradeBuffer
from marketbus.consumers import subscriber as subscriber_module
from marketbus.shared.cluster import connect_cluster
from marketbus.shared.codecs import encode_feed_info
from marketbus.shared.config import RedisConfig
from marketbus.shared.errors import ConfigError
from marketbus.shared.names import catalog_key
from marketbus.shared.schema import FeedInfo
from tests.support.waiting import wait_until
from tests.support.wire_writer import WireWriter
from tests.unit.deploy.files import CONSUMER, acl_users, password_for, with_test_password

SYMBOLS = ["BTC/USDT", "XRP/USDT", "DOGE/USDT", "ETH/USDT", "SOL/USDT", "BNB/USDT"]
"""Their binance trades feeds: the first three hash to three different shards."""
FAST = Backoff(initial_s=0.02, maximum_s=0.2)


@pytest.fixture
async def cluster(cluster_url: str) -> AsyncIterator[RedisCluster]:
    client = await connect_cluster(RedisConfig(url=cluster_url, cluster=True))
    yield client
    await client.aclose()


def config(url: str) -> RedisConfig:
    return RedisConfig(url=url, cluster=True)


def owners(cluster: RedisCluster, feeds: list[str]) -> set[str]:
    return {node.name for feed in feeds if (node := cluster.get_node_from_key(feed)) is not None}


def trades(sub: Subscriber, feed: str) -> TradeBuffer:
    _, exchange, _, symbol = feed.split(":", 3)
    return sub.trades(exchange, symbol)


def seqs(sub: Subscriber, feed: str) -> list[int]:
    """Trade ids, which the tests set to the message's seq."""
    return [int(t.id or 0) for t in trades(sub, feed)]


def have(sub: Subscriber, feeds: list[str], count: int) -> Callable[[], bool]:
    """A condition: every feed of *feeds* is followed and holds *count* trades."""
    return lambda: all(f in sub.feeds and len(trades(sub, f)) == count for f in feeds)


def last_ticker_is(sub: Subscriber, last: float) -> bool:
    ticker = sub.ticker("binance", "BTC/USDT")
    return ticker is not None and ticker.last == last


async def write_trades(writer: WireWriter, feed: str, first: int, last: int, **knobs: bool) -> None:
    symbol = feed.split(":", 3)[3]
    for i in range(first, last + 1):
        await writer.write(feed, writer.trades(symbol, float(i), first_id=i), **knobs)


async def on_every_primary(cluster: RedisCluster, *command: str) -> None:
    for node in cluster.get_primaries():
        await cluster.execute_command(*command, target_nodes=node)


async def shard_subscribers(cluster: RedisCluster, channel: str) -> int:
    """PUBSUB SHARDNUMSUB of *channel*, asked of the node that owns it."""
    owner = cluster.get_node_from_key(channel)
    [(_, count)] = await cluster.execute_command("PUBSUB SHARDNUMSUB", channel, target_nodes=owner)
    return int(count)


def subscribers_are(
    cluster: RedisCluster, channel: str, count: int
) -> Callable[[], Awaitable[bool]]:
    """A condition: *channel* has *count* shard subscribers."""

    async def check() -> bool:
        return await shard_subscribers(cluster, channel) == count

    return check


async def test_feeds_on_every_shard_are_backfilled_followed_and_repaired_exactly(
    cluster: RedisCluster, cluster_url: str
) -> None:
    writer = WireWriter(cluster, run=7)
    feeds = [writer.feed("trades", symbol) for symbol in SYMBOLS]
    assert len(owners(cluster, feeds)) == 3
    ticker = writer.feed("ticker", "BTC/USDT")
    for feed in feeds:
        await write_trades(writer, feed, 1, 5)
    await writer.write(ticker, writer.ticker("BTC/USDT", 10.0))
    async with Subscriber(config(cluster_url), trades=100) as sub:
        await sub.subscribe(*feeds, ticker)
        assert all(seqs(sub, feed) == [1, 2, 3, 4, 5] for feed in feeds)
        assert last_ticker_is(sub, 10.0)
        for feed in feeds:
            await write_trades(writer, feed, 6, 7)
            await write_trades(writer, feed, 8, 10, publish=False)  # stream only: a hole
            await write_trades(writer, feed, 11, 12)
        await writer.write(ticker, writer.ticker("BTC/USDT", 11.0))
        await wait_until(have(sub, feeds, 12))
        assert all(seqs(sub, feed) == list(range(1, 13)) for feed in feeds)
        await wait_until(lambda: last_ticker_is(sub, 11.0))
        stats = sub.stats
        assert stats.repairs == len(feeds) and stats.gaps == 0 and stats.missing == 0
        assert stats.backfilled == len(feeds) * (5 + 3) + 1
        assert stats.received == len(feeds) * 4 + 1 and stats.duplicates == 0


async def test_evicted_entries_on_a_shard_are_reported_as_exact_gaps(
    cluster: RedisCluster, cluster_url: str
) -> None:
    writer = WireWriter(cluster, run=7)
    feeds = [writer.feed("trades", symbol) for symbol in SYMBOLS[:3]]
    assert len(owners(cluster, feeds)) == 3
    gaps: list[Gap] = []
    async with Subscriber(config(cluster_url), on_gap=gaps.append) as sub:
        await sub.subscribe(*feeds)
        for feed in feeds:
            await write_trades(writer, feed, 1, 1)
            await write_trades(writer, feed, 2, 11, publish=False)
            await cluster.xtrim(feed, maxlen=3, approximate=False)  # evicts 1..8
            await write_trades(writer, feed, 12, 12)
        await wait_until(lambda: len(gaps) == len(feeds), what="one gap per feed")
        assert sorted(gaps, key=lambda g: g.feed) == [
            Gap(feed=feed, run=7, first_seq=2, last_seq=8, reason="evicted")
            for feed in sorted(feeds)
        ]
        assert all(seqs(sub, feed) == [1, 9, 10, 11, 12] for feed in feeds)
        assert sub.stats.missing == 7 * len(feeds)


async def test_pattern_follows_catalogued_and_new_feeds_and_their_status_channel(
    cluster: RedisCluster, cluster_url: str
) -> None:
    binance = WireWriter(cluster, run=5, exchange="binance")
    okx = WireWriter(cluster, run=6, exchange="okx")
    old = [binance.feed("trades", "BTC/USDT"), okx.feed("trades", "ADA/USDT")]
    for writer, feed in zip((binance, okx), old, strict=True):
        await write_trades(writer, feed, 1, 3)
        await catalogue(cluster, feed, writer.run)
    async with Subscriber(config(cluster_url), rescan_s=0.1) as sub:
        known = await sub.subscribe_pattern("md:*:trades:*")  # does not cover md:*:status
        assert sorted(old) == sorted(n for n in known if n.endswith("USDT"))
        await wait_until(have(sub, old, 3), what="backfill")

        # the status channel of each exchange is followed: staleness and producer gaps
        for writer in (binance, okx):
            await wait_until(subscribers_are(cluster, writer.status_feed, 1))
        await binance.write(binance.status_feed, binance.status("disconnected", old[0], "ws"))
        await wait_until(lambda: sub.stale_reason(old[0]) == "disconnected")
        await okx.write(okx.status_feed, okx.status("gap", old[1], "dropped 3"))
        await wait_until(lambda: any(g.reason == "producer" for g in sub.gaps))

        # a feed catalogued later is found by the periodic rescan and backfilled
        new = binance.feed("trades", "DOGE/USDT")
        assert len(owners(cluster, [*old, new])) == 3
        await write_trades(binance, new, 1, 2)
        await catalogue(cluster, new, binance.run)
        await wait_until(have(sub, [new], 2), what="the new feed found and backfilled")
        await write_trades(binance, new, 3, 4)
        await wait_until(have(sub, [new], 4))
        assert seqs(sub, new) == [1, 2, 3, 4]

        # unsubscribing every binance feed drops md:binance:status too; okx keeps its own
        await sub.unsubscribe(old[0], new)
        assert sub.feeds == [old[1]]
        for channel in (old[0], new, binance.status_feed):
            await wait_until(subscribers_are(cluster, channel, 0), what=f"{channel} dropped")
        assert await shard_subscribers(cluster, okx.status_feed) == 1
        await write_trades(okx, old[1], 4, 4)
        await wait_until(have(sub, old[1:], 4))
        await write_trades(binance, new, 5, 5)  # the rescan does not bring it back
        assert new not in sub.feeds


async def catalogue(cluster: RedisCluster, feed: str, run: int) -> None:
    _, exchange, kind, symbol = feed.split(":", 3)
    info = FeedInfo(
        exchange=exchange,
        symbol=symbol,
        kind=kind,
        timeframe=None,
        run=run,
        stream_maxlen=1000,
        updated_ms=0,
    )
    await cluster.hset(catalog_key("md"), feed, encode_feed_info(info))


async def test_killed_pubsub_connections_resume_from_streams(
    cluster: RedisCluster, cluster_url: str
) -> None:
    writer = WireWriter(cluster, run=7)
    feeds = [writer.feed("trades", symbol) for symbol in SYMBOLS[:3]]
    assert len(owners(cluster, feeds)) == 3
    async with Subscriber(config(cluster_url), backoff=FAST) as sub:
        await sub.subscribe(*feeds)
        for feed in feeds:
            await write_trades(writer, feed, 1, 10)
        await wait_until(have(sub, feeds, 10))
        # every node's subscription is lost: the subscriber subscribes anew and the
        # confirmations make it resume every feed from its stream
        await on_every_primary(cluster, "CLIENT", "KILL", "TYPE", "pubsub")
        for feed in feeds:
            await write_trades(writer, feed, 11, 30)
        await wait_until(have(sub, feeds, 30), timeout_s=15)
        assert all(seqs(sub, feed) == list(range(1, 31)) for feed in feeds)
        assert sub.stats.gaps == 0 and sub.stats.resumes >= len(feeds)


async def test_node_subscription_lost_for_good_is_rebuilt_and_resumed(
    cluster: RedisCluster, cluster_url: str
) -> None:
    """A node stops serving our subscription (here: the user's channel permission is
    revoked on it, so Redis drops the connection and refuses the re-SSUBSCRIBE). The
    subscriber reports the outage, keeps retrying, and once the node serves it again
    resumes every feed from its stream without losing anything."""
    user, password = "reader", "reader-secret"
    await on_every_primary(
        cluster, "ACL", "SETUSER", user, "reset", "on", f">{password}", "~*", "&*", "+@all"
    )
    url = cluster_url.replace("redis://", f"redis://{user}:{password}@")
    writer = WireWriter(cluster, run=7)
    feeds = [writer.feed("trades", symbol) for symbol in SYMBOLS[:3]]
    assert len(owners(cluster, feeds)) == 3
    lost = cluster.get_node_from_key(feeds[0])
    try:
        async with Subscriber(config(url), backoff=FAST) as sub:
            await sub.subscribe(*feeds)
            for feed in feeds:
                await write_trades(writer, feed, 1, 10)
            await wait_until(have(sub, feeds, 10))
            await cluster.execute_command(
                "ACL", "SETUSER", user, "resetchannels", target_nodes=lost
            )
            await wait_until(lambda: not sub.connected, what="the outage is reported")
            for feed in feeds:
                await write_trades(writer, feed, 11, 20)
            await cluster.execute_command("ACL", "SETUSER", user, "&*", target_nodes=lost)
            await wait_until(lambda: sub.connected, timeout_s=15, what="the subscription is back")
            for feed in feeds:
                await write_trades(writer, feed, 21, 25)
            await wait_until(have(sub, feeds, 25))
            assert all(seqs(sub, feed) == list(range(1, 26)) for feed in feeds)
            stats = sub.stats
            assert stats.reconnects >= 1 and stats.gaps == 0 and stats.resumes >= len(feeds)
    finally:
        await on_every_primary(cluster, "ACL", "DELUSER", user)


async def test_cluster_without_sharded_pubsub_is_refused(
    cluster_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(subscriber_module, "has_sharded_pubsub", lambda cluster: False)
    sub = Subscriber(config(cluster_url))
    with pytest.raises(ConfigError, match="sharded pub/sub"):
        await sub.start()
    await sub.close()


async def test_shipped_consumer_acl_user_suffices_in_cluster_mode(
    cluster: RedisCluster, cluster_url: str
) -> None:
    """deploy/users.acl's marketbus-consumer, loaded on every node, runs the subscriber:
    slot map, catalog scan, SSUBSCRIBE, backfill and repair; no command is denied."""
    consumer = acl_users()[CONSUMER]
    await on_every_primary(
        cluster, "ACL", "SETUSER", CONSUMER, "reset", *with_test_password(consumer)
    )
    await on_every_primary(cluster, "ACL", "LOG", "RESET")
    url = cluster_url.replace("redis://", f"redis://{CONSUMER}:{password_for(CONSUMER)}@")
    writer = WireWriter(cluster, run=7)
    feeds = [writer.feed("trades", symbol) for symbol in SYMBOLS[:3]]
    for feed in feeds:
        await write_trades(writer, feed, 1, 2)
        await catalogue(cluster, feed, writer.run)
    try:
        async with Subscriber(config(url)) as sub:
            await sub.subscribe_pattern("md:*")
            await wait_until(have(sub, feeds, 2))
            for feed in feeds:
                await write_trades(writer, feed, 3, 3, publish=False)
                await write_trades(writer, feed, 4, 4)
            await wait_until(have(sub, feeds, 4))
        denied: set[str] = set()
        for node in cluster.get_primaries():
            for entry in await cluster.execute_command("ACL", "LOG", target_nodes=node):
                denied.add(entry[b"object"].decode())
        assert not denied, f"the SDK needs commands the consumer user lacks: {denied}"
    finally:
        await on_every_primary(cluster, "ACL", "DELUSER", CONSUMER)
