"""The store contract against a real 3-node Redis Cluster (tests/servers/redis.py)."""

from __future__ import annotations

import uuid

import pytest
import redis.cluster

from mailqueue_core.testing import StoreContract, run_store_model
from mailqueue_core.testing.contract import LEASE, make_record
from mailqueue_stores.redis import RedisStore
from tests.servers.redis import HOST
from tests.test_store_redis import damage_record


class TestRedisClusterStore(StoreContract):
    @pytest.fixture
    def store(self, redis_cluster):
        self.cluster = redis_cluster
        s = RedisStore(redis_cluster.url, namespace=uuid.uuid4().hex)
        yield s
        s.close()

    def damage(self, store, record_id, how):
        node = self.cluster.nodes[0]
        with redis.cluster.RedisCluster(host=HOST, port=node.port) as client:
            damage_record(client, store, record_id, how)


def test_cluster_option_on_a_plain_url(redis_cluster, now=1_000_000.0):
    node = redis_cluster.nodes[1]
    with RedisStore(f"redis://127.0.0.1:{node.port}", cluster=True, namespace="opt") as s:
        s.enqueue([make_record(now)])
        (claim,) = s.fetch_due(now, 1, LEASE)
        s.ack(claim)
        assert s.stats(now).ready == 0


def test_scripts_come_back_after_flush_on_every_node(redis_cluster):
    now = 1_000_000.0
    with RedisStore(redis_cluster.url, namespace=uuid.uuid4().hex) as s:
        s.enqueue([make_record(now)])
        for node in redis_cluster.nodes:
            with node.client() as client:
                client.script_flush()
        (claim,) = s.fetch_due(now, 1, LEASE)
        s.ack(claim)


@pytest.mark.drill
def test_redis_cluster_store_model(redis_cluster):
    """The stateful model test through the Cluster client, each run in a namespace of its own."""
    run_store_model(lambda: RedisStore(redis_cluster.url, namespace=uuid.uuid4().hex))
