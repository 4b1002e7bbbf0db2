"""Fixtures of the consumer tests: the real local 3-master Redis Cluster of the deploy
tests (`LocalCluster`), started once for this directory's session and flushed per test."""

from __future__ import annotations

from tests.integration.deploy.conftest import cluster_url, local_cluster

__all__ = ["cluster_url", "local_cluster"]
