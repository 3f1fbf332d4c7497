"""The store tests' view of the session's Redis Cluster (tests/conftest.py starts it: 3
masters, 3 replicas): node ports, the masters' ports, and emptying it, healed first of
whatever an earlier test did to it (a killed or paused node)."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from scripts.rediscluster import LocalRedisCluster


@dataclass
class StoreCluster:
    cluster: LocalRedisCluster
    url: str  # the seed URL: every node

    @property
    def ports(self) -> list[int]:
        return [n.port for n in self.cluster.nodes]

    def masters(self) -> list[int]:
        return [m.port for m in self.cluster.masters()]

    def flushall(self) -> None:
        self.cluster.flushall()


@pytest.fixture
def _store_cluster(redis_cluster: LocalRedisCluster, cluster_url: str) -> StoreCluster:
    return StoreCluster(redis_cluster, cluster_url)
