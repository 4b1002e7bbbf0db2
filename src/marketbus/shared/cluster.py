"""Redis Cluster: the client both sides use to spread feeds over shards.

Feed names carry no ``{hashtag}``, so every feed hashes to its own slot and its stream
and its (sharded) channel live together on the node that owns that slot: the write of a
feed goes to one node, and the reader of a feed talks to the same node. Catalog, lease
and status keys are single keys too, so no command marketbus sends is cross-slot.

- `cluster_client` / `connect_cluster`: a `RedisCluster` from a `RedisConfig` with
  ``cluster = true`` (TLS and ACL credentials as for a single server).
- `has_sharded_pubsub`: whether the servers know SPUBLISH/SSUBSCRIBE (Redis 7+);
  the producer picks SPUBLISH or PUBLISH by it, the consumer refuses a cluster
  without it.
- `slot_of`: the hash slot of a name.

Each side's use of the cluster lives with that side: the producer's pipelined
SPUBLISH + XADD in `marketbus.producer.cluster_publish`, the consumer's sharded
subscriber and pattern expansion in `marketbus.consumers.cluster`.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from redis.asyncio.cluster import RedisCluster
from redis.crc import key_slot
from redis.exceptions import AuthenticationError, RedisClusterException, ResponseError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from marketbus.shared.config import RedisConfig
from marketbus.shared.connection import check_tls_files, connection_kwargs
from marketbus.shared.errors import ConfigError, RedisUnavailableError
from marketbus.shared.urls import redact


def is_cluster(config: RedisConfig) -> bool:
    """True when *config* points at a Redis Cluster (``redis.cluster = true``)."""
    return config.cluster


def slot_of(name: str) -> int:
    """The cluster hash slot of a feed, status or catalog name (0..16383)."""
    return key_slot(name.encode())


def _check_cluster_url(config: RedisConfig) -> None:
    parts = urlsplit(config.url)
    if parts.scheme not in ("redis", "rediss"):
        raise ConfigError(
            f"redis.url {redact(config.url)!r}: a cluster is reached over redis:// or "
            "rediss://, not a unix socket"
        )
    if parts.path.strip("/") not in ("", "0"):
        raise ConfigError(f"redis.url {redact(config.url)!r}: a cluster has only db 0")


def cluster_client(config: RedisConfig, **overrides: Any) -> RedisCluster:
    """A `RedisCluster` seeded from ``config.url``; discovers the nodes on first use.

    Uses the same TLS files and URL credentials as `connection.client`, and every node
    connection authenticates as that ACL user.
    """
    _check_cluster_url(config)
    kwargs = connection_kwargs(config) | overrides
    return RedisCluster.from_url(config.url, **kwargs)


async def connect_cluster(config: RedisConfig, **overrides: Any) -> RedisCluster:
    """A cluster client that has loaded the slot map; RedisUnavailableError says why not.

    The user needs ``CLUSTER SLOTS``/``CLUSTER SHARDS`` and ``COMMAND`` (see
    deploy/users.acl), which redis-py reads to route commands.
    """
    check_tls_files(config)
    cluster = cluster_client(config, **overrides)
    where = redact(config.url)
    try:
        await cluster.initialize()
    except AuthenticationError as exc:
        await cluster.aclose()
        raise RedisUnavailableError(
            f"Redis Cluster at {where} refused the credentials: {exc}"
        ) from None
    except (RedisClusterException, RedisConnectionError, RedisTimeoutError, OSError) as exc:
        await cluster.aclose()
        raise RedisUnavailableError(
            f"cannot load the Redis Cluster slot map from {where}: {exc}. Is redis.url a "
            "node of a cluster whose state is ok, and may the user run CLUSTER SLOTS?"
        ) from None
    except ResponseError as exc:
        await cluster.aclose()
        raise RedisUnavailableError(f"Redis Cluster at {where} refused: {exc}") from None
    return cluster


def has_sharded_pubsub(cluster: RedisCluster) -> bool:
    """True when the (initialized) cluster's servers know SPUBLISH/SSUBSCRIBE (Redis 7+).

    Read from the command table redis-py loaded at `initialize`: no extra round trip.
    """
    return "spublish" in cluster.commands_parser.commands
