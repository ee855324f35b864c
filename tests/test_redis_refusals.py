"""A Redis that refuses writes for now makes the store say ``StoreUnavailable`` (issue 11, item 4).

``NOREPLICAS``, ``READONLY``, ``MASTERDOWN``, ``LOADING``, ``CLUSTERDOWN``,
``TRYAGAIN`` (and ``OOM``, in test_redis_oom.py) are translated in
``RedisClient.translated``, so the backend falls back (``FALLBACK_STORE``) or
keeps quiet (``fail_silently``) as for an outage. Each is provoked on a real
server here.
"""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis.cluster
from django.core.mail import EmailMessage, send_mail
from django.test import override_settings

from mailqueue_core.backend import EmailBackend
from mailqueue_core.errors import StoreError, StoreUnavailable
from mailqueue_core.testing.contract import LEASE, make_record
from mailqueue_stores.redis import RedisStore
from mailqueue_stores.redis.connection import refusal
from tests.servers.redis import HOST, RedisServer, free_port, wait_for_replicas, wait_until

#: A master sends its replicas the data at once (Redis waits 5 s by default for more).
QUICK_SYNC = ("--repl-diskless-sync-delay", "0")


@pytest.fixture
def now() -> float:
    return time.time()


def test_noreplicas_is_unavailable_and_reads_still_work(redis_server_factory, now):
    server = redis_server_factory("--min-replicas-to-write", "1", appendonly=False)
    with RedisStore(server.url, namespace="noreplicas") as store:
        with pytest.raises(StoreUnavailable, match="NOREPLICAS") as info:
            store.enqueue([make_record(now)])
        assert type(info.value.__cause__).__module__.startswith("redis")
        with pytest.raises(StoreUnavailable, match="NOREPLICAS"):
            store.fetch_due(now, 10, LEASE)
        assert store.stats(now).ready == 0
        assert store.dead_letters() == []


def test_noreplicas_sends_the_mail_to_the_fallback_store(redis_server_factory, redis_server):
    server = redis_server_factory("--min-replicas-to-write", "1", appendonly=False)
    url = f"{server.url}?namespace={uuid.uuid4().hex}"
    fallback = f"{redis_server.url}?namespace={uuid.uuid4().hex}"
    with override_settings(MAILQUEUE={"STORE": url, "FALLBACK_STORE": fallback}):
        assert send_mail("s", "b", "site@example.com", ["a@example.com"]) == 1
    with RedisStore(fallback) as store:
        assert store.stats(time.time()).ready == 1
    with override_settings(MAILQUEUE={"STORE": url}):
        assert _send_quietly() == 0


def test_a_replica_is_readonly(redis_server_factory, now):
    master = redis_server_factory(*QUICK_SYNC, appendonly=False)
    replica = redis_server_factory("--replicaof", HOST, str(master.port), appendonly=False)
    wait_for_replicas(master, 1)
    with RedisStore(replica.url, namespace="readonly") as store:
        with pytest.raises(StoreUnavailable, match="READONLY"):
            store.enqueue([make_record(now)])
        with pytest.raises(StoreUnavailable, match="READONLY"):
            store.fetch_due(now, 1, LEASE)
        assert store.stats(now).ready == 0  # reads are served by a replica


def test_a_replica_cut_off_from_its_master_says_masterdown(redis_server_factory, now):
    master = redis_server_factory(*QUICK_SYNC, appendonly=False)
    replica = redis_server_factory(
        "--replicaof",
        HOST,
        str(master.port),
        "--replica-serve-stale-data",
        "no",
        appendonly=False,
    )
    wait_for_replicas(master, 1)
    master.stop()
    wait_until(
        lambda: replica.info("replication")["master_link_status"] == "down", "the link to drop"
    )
    with RedisStore(replica.url, namespace="masterdown") as store:
        with pytest.raises(StoreUnavailable, match="MASTERDOWN"):
            store.stats(now)
        with pytest.raises(StoreUnavailable, match=r"READONLY|MASTERDOWN"):
            store.enqueue([make_record(now)])


def test_a_server_loading_its_data_says_loading(tmp_path, now):
    directory = tmp_path / "loading"
    plain = ("--save", "", "--appendonly", "no")
    server = RedisServer(directory, *plain).start()
    with server.client() as client:
        pipe = client.pipeline(transaction=False)
        for i in range(20_000):
            pipe.set(f"filler:{i}", i)
        pipe.execute()
        client.save()
    server.stop()
    # 200 µs a key: some seconds of loading, during which clients are answered.
    slow = ("--key-load-delay", "200", "--loading-process-events-interval-bytes", "1024")
    server = RedisServer(directory, *plain, *slow, port=server.port)
    server.executor.start()  # the port is open; the data is still loading
    try:
        with (
            RedisStore(server.url, namespace="loading") as store,
            pytest.raises(StoreUnavailable, match="LOADING"),
        ):
            store.enqueue([make_record(now)])
    finally:
        server.kill()


def test_a_cluster_node_without_the_slot_says_clusterdown(tmp_path, now):
    directory = tmp_path / "lonely"
    config = ("--cluster-enabled", "yes", "--cluster-port", str(free_port()))
    config += ("--cluster-config-file", str(directory / "nodes.conf"))
    server = RedisServer(directory, "--save", "", "--appendonly", "no", *config).start()
    try:
        # A plain client on a node that serves no slot: the node refuses.
        with (
            RedisStore(server.url, namespace="down") as store,
            pytest.raises(StoreUnavailable, match="CLUSTERDOWN"),
        ):
            store.enqueue([make_record(now)])
        # The Cluster client finds no node for the slots at all.
        cluster_url = f"redis+cluster://{HOST}:{server.port}"
        with RedisStore(cluster_url, namespace="down") as store, pytest.raises(StoreUnavailable):
            store.stats(now)
        # Given every slot, the node is a Cluster of one primary, and all is well.
        with server.client() as client:
            client.execute_command("CLUSTER", "ADDSLOTSRANGE", 0, 16383)
            wait_until(
                lambda: client.cluster("info")["cluster_state"] == "ok", "a one-node cluster"
            )
        with RedisStore(cluster_url, namespace="up") as store:
            store.verify()
            store.enqueue([make_record(now)])
            assert store.stats(now).ready == 1
    finally:
        server.stop()


@contextlib.contextmanager
def slot_migrating(cluster: Any, namespace: str) -> Iterator[redis.Redis]:
    """The namespace's slot half-way to another primary; a client on its node, which has it."""
    with redis.cluster.RedisCluster(host=HOST, port=cluster.nodes[0].port) as client:
        slot = client.keyslot(f"{{{namespace}}}")
        source = client.get_node_from_key(f"{{{namespace}}}")
        target = next(n for n in client.get_primaries() if n.name != source.name)
        source_id = client.cluster_myid(source)
        target_id = client.cluster_myid(target)
    source_server = next(n for n in cluster.nodes if n.port == source.port)
    target_server = next(n for n in cluster.nodes if n.port == target.port)
    with target_server.client() as t, source_server.client() as s:
        t.execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", source_id)
        s.execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", target_id)
        try:
            yield s
        finally:
            for client in (s, t):
                client.execute_command("CLUSTER", "SETSLOT", slot, "NODE", source_id)


def test_a_slot_on_the_move_is_unavailable(redis_cluster, now):
    namespace = uuid.uuid4().hex
    prefix = f"mailqueue:{{{namespace}}}:"
    store = RedisStore(redis_cluster.url, namespace=namespace)
    durable = RedisStore(redis_cluster.url, namespace=namespace, min_replicas=1)
    record = make_record(now)
    store.enqueue([record])  # some keys of the slot exist, others do not
    with slot_migrating(redis_cluster, namespace) as source, store, durable:
        # Some declared keys are missing here: the client is sent to the
        # target (ASK), which has none of them: TRYAGAIN, until redis-py
        # gives up. Enqueue declares the new record's keys, so it is
        # refused before it runs, as the claim is.
        with pytest.raises(StoreUnavailable, match=r"TTL exhausted|TRYAGAIN"):
            store.fetch_due(now, 10, LEASE)
        with pytest.raises(StoreUnavailable, match=r"TTL exhausted|TRYAGAIN"):
            store.enqueue([make_record(now)])
        with pytest.raises(StoreUnavailable, match="TRYAGAIN"):
            durable.enqueue([make_record(now)])
        # With no key of the slot left here, the shard reached directly
        # (for WAIT) answers ASK.
        # A wait reads the wake-up stream on its node, which still has it.
        assert store.wait_for_mail(0.01) is False
        source.delete(prefix + "due", prefix + "created", prefix + "m:" + record.id)
        source.delete(prefix + "wake")
        with pytest.raises(StoreUnavailable, match="moved"):
            durable.enqueue([make_record(now)])
        with pytest.raises(StoreUnavailable, match="moved"):
            store.wait_for_mail(0.01)


def test_a_message_moved_before_its_index_stops_the_claim(redis_cluster, now):
    """The claim builds message keys from the ids it reads (the one script that does).

    Every key it declares is on the node, so Redis lets it run; a message
    whose hash a reshard already moved stops it where it reaches it, and it
    is ``StoreUnavailable`` like the rest of the move.
    """
    namespace = uuid.uuid4().hex
    prefix = f"mailqueue:{{{namespace}}}:"
    with RedisStore(redis_cluster.url, namespace=namespace) as store:
        # The five indexes the claim declares, each holding something.
        lost, dead, held, moved = (make_record(now - age) for age in (30, 20, 10, 0))
        store.enqueue([lost])
        with redis.cluster.RedisCluster(host=HOST, port=redis_cluster.nodes[0].port) as client:
            client.delete(prefix + "m:" + lost.id)
        assert store.fetch_due(now - 30, 10, LEASE) == []  # reported lost
        store.enqueue([dead])
        store.bury(*store.fetch_due(now - 20, 1, LEASE), "550", now)
        store.enqueue([held])
        assert len(store.fetch_due(now - 10, 1, LEASE)) == 1
        store.enqueue([moved])
        stats = store.stats(now)
        assert (stats.ready, stats.in_flight, stats.dead, stats.lost) == (1, 1, 1, 1)
        with slot_migrating(redis_cluster, namespace) as source:
            source.delete(prefix + "m:" + moved.id)  # gone ahead of the indexes
            with pytest.raises(StoreUnavailable, match="slot on the move"):
                store.fetch_due(now, 10, LEASE)


@pytest.mark.parametrize(
    ("reply", "code"),
    [
        ("NOREPLICAS Not enough good replicas to write.", "NOREPLICAS"),
        ("-MASTERDOWN Link with MASTER is down", "MASTERDOWN"),
        ("ERR unknown command", None),
        ("WRONGTYPE Operation against a key holding the wrong kind of value", None),
    ],
)
def test_refusal_codes_are_read_from_the_reply(reply, code):
    assert refusal(redis.exceptions.ResponseError(reply), redis) == code


def test_other_server_errors_stay_store_errors(redis_server, now):
    with RedisStore(redis_server.url, namespace=uuid.uuid4().hex) as store:
        with redis_server.client() as client:
            client.set(f"mailqueue:{{{store.namespace}}}:due", "not a zset")
        with pytest.raises(StoreError) as info:
            store.fetch_due(now, 1, LEASE)
        assert not isinstance(info.value, StoreUnavailable)


def _send_quietly() -> int:
    # fail_silently on the backend itself: Django 6.1 deprecates send_mail's argument.
    message = EmailMessage("s", "b", "site@example.com", ["a@x.org"])
    return EmailBackend(fail_silently=True).send_messages([message])
