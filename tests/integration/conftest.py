"""Fixtures shared by the integration tests: one real 3-master Redis Cluster per session."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest
import redis.asyncio as aioredis

from tests.support.cluster import LocalCluster


@pytest.fixture(scope="session")
def local_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    """One 3-master cluster for the session (flushed per test by `cluster_url`)."""
    cluster = LocalCluster(tmp_path_factory.mktemp("cluster"))
    cluster.start()
    yield cluster
    cluster.stop()


@pytest.fixture
async def cluster_url(local_cluster: LocalCluster) -> AsyncIterator[str]:
    """URL of one node of the session cluster; every master is emptied first."""
    for node in local_cluster.nodes:
        redis = aioredis.Redis.from_url(node.url)
        try:
            await redis.flushall()
        finally:
            await redis.aclose()
    yield local_cluster.url
