"""``RedisStore.verify()`` refuses a Redis that would evict queued mail (issue 11, item 2).

The policy is read from ``INFO memory`` (``CONFIG GET`` is often disabled on
managed Redis), on every primary of a Cluster. The drills show why: under an
``allkeys-*`` policy a full Redis drops queued mail; under ``noeviction`` or a
``volatile-*`` policy it refuses new mail and keeps every queued message.
"""

from __future__ import annotations

import contextlib
import time
import uuid

import pytest

from mailqueue_core.errors import ConfigurationError, LeaseLost, StoreUnavailable
from mailqueue_core.testing.contract import LEASE, make_record
from mailqueue_stores.redis import RedisStore
from tests.servers.redis import HOST, free_port

RECORD = b"x" * 4096


def fill(store: RedisStore, now: float, count: int) -> int:
    """Enqueue up to ``count`` records one by one; how many the store took."""
    taken = 0
    for _ in range(count):
        try:
            store.enqueue([make_record(now, data=RECORD)])
        except StoreUnavailable:
            break
        taken += 1
    return taken


def test_noeviction_passes(redis_server):
    with RedisStore(redis_server.url) as store:
        store.verify()


@pytest.mark.parametrize("policy", ["allkeys-lru", "allkeys-lfu", "allkeys-random"])
def test_an_evicting_policy_is_refused_naming_the_fix(redis_server_factory, policy):
    server = redis_server_factory("--maxmemory-policy", policy, appendonly=False)
    with RedisStore(server.url) as store, pytest.raises(ConfigurationError) as info:
        store.verify()
    message = str(info.value)
    assert f"maxmemory-policy {policy}" in message
    assert "maxmemory-policy noeviction" in message
    assert "allow_eviction=true" in message


def test_the_operator_can_accept_the_risk(redis_server_factory):
    server = redis_server_factory("--maxmemory-policy", "allkeys-lru", appendonly=False)
    with RedisStore(server.url, allow_eviction=True) as store:
        store.verify()
    with RedisStore(server.url + "?allow_eviction=true") as store:
        store.verify()
    with pytest.raises(ConfigurationError, match=r"'allow_eviction' \(in the URL\) must be true"):
        RedisStore(server.url + "?allow_eviction=perhaps")


def test_the_password_is_not_in_the_message(redis_server_factory):
    server = redis_server_factory(
        "--requirepass", "hunter2", "--maxmemory-policy", "allkeys-lru", appendonly=False
    )
    with (
        RedisStore(f"redis://:hunter2@{HOST}:{server.port}/0") as store,
        pytest.raises(ConfigurationError) as info,
    ):
        store.verify()
    assert "hunter2" not in str(info.value)
    assert f"redis://:***@{HOST}:{server.port}/0" in str(info.value)


def test_info_denied_by_an_acl_is_refused_unless_accepted(redis_server_factory):
    server = redis_server_factory(appendonly=False)
    with server.client() as client:
        client.execute_command("ACL", "SETUSER", "mq", "on", ">pw", "~*", "+@all", "-info")
    url = f"redis://mq:pw@{HOST}:{server.port}/0"
    with RedisStore(url) as store:
        with pytest.raises(ConfigurationError, match="does not tell its maxmemory-policy"):
            store.verify()
        # The queue itself works for such a user (scripts need no INFO).
        store.enqueue([make_record(time.time())])
        assert store.stats(time.time()).ready == 1
    with RedisStore(url, allow_eviction=True) as store:
        store.verify()


def test_an_unreachable_server_is_unavailable():
    with (
        RedisStore(f"redis://{HOST}:{free_port()}/0", socket_connect_timeout=1) as store,
        pytest.raises(StoreUnavailable),
    ):
        store.verify()


def test_every_cluster_primary_is_checked(redis_cluster):
    with RedisStore(redis_cluster.url, namespace=uuid.uuid4().hex) as store:
        store.verify()
        node = redis_cluster.nodes[2]
        with node.client() as client:
            client.config_set("maxmemory-policy", "allkeys-lfu")
            try:
                with pytest.raises(ConfigurationError) as info:
                    store.verify()
            finally:
                client.config_set("maxmemory-policy", "noeviction")
        assert f"{HOST}:{node.port}" in str(info.value)
        assert "maxmemory-policy allkeys-lfu" in str(info.value)
        store.verify()


# -- the drills: what each policy does to a full queue ---------------------------


@pytest.mark.parametrize("policy", ["noeviction", "volatile-lru"])
def test_a_policy_that_keeps_the_queue_refuses_new_mail_and_loses_none(
    redis_server_factory, policy
):
    server = redis_server_factory("--maxmemory", "2mb", "--maxmemory-policy", policy)
    now = time.time()
    with RedisStore(server.url, namespace="full") as store:
        store.verify()
        taken = fill(store, now, 2000)
        assert 0 < taken < 2000  # it filled up, and said so
        claimed = 0
        while batch := store.fetch_due(now, 100, LEASE):
            claimed += len(batch)
            for claim in batch:
                store.ack(claim)
        stats = store.stats(now)
    print(f"\n{policy}, maxmemory 2mb: {taken} queued, {claimed} claimed, {stats.lost} lost")
    assert claimed == taken
    assert stats.lost == 0


def test_an_allkeys_policy_loses_queued_mail(redis_server_factory):
    # Why verify() refuses it: the server drops queued mail to make room, silently.
    server = redis_server_factory("--maxmemory", "2mb", "--maxmemory-policy", "allkeys-lru")
    now = time.time()
    with RedisStore(server.url, namespace="evicting", allow_eviction=True) as store:
        taken = fill(store, now, 1200)
        acked = 0
        while batch := store.fetch_due(now, 100, LEASE):
            for claim in batch:
                with contextlib.suppress(LeaseLost):  # evicted even while claimed
                    store.ack(claim)
                    acked += 1
        stats = store.stats(now)
    print(
        f"\nallkeys-lru, maxmemory 2mb: {taken} queued and acknowledged, {acked} delivered, "
        f"{stats.lost} reported lost by the claims"
    )
    assert taken == 1200  # every enqueue said yes
    assert acked < taken
