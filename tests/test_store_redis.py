"""The Redis store against real redis-server processes (see tests/servers/redis.py)."""

from __future__ import annotations

import math
import operator
import socket
import sys
import threading
import time
import uuid
from urllib.parse import quote

import pytest

from mailqueue_core.errors import (
    ConfigurationError,
    MessageTooLarge,
    StoreError,
    StoreUnavailable,
)
from mailqueue_core.options import BOOLEAN, describe
from mailqueue_core.store import State
from mailqueue_core.testing import Damage, StoreContract, run_store_model
from mailqueue_core.testing.contract import LEASE, make_record
from mailqueue_stores.redis import RedisStore
from mailqueue_stores.redis.keys import RedisKeys
from mailqueue_stores.redis.options import RedisOptions
from mailqueue_stores.redis.scripts import script_source, supports_flags
from tests.servers.redis import HOST, free_port


def scan_namespace(server, namespace: str, *, wake: bool = False) -> list[bytes]:
    """The namespace's keys; the wake-up stream only with ``wake``, since it
    outlives the queue by design (it expires an hour after its last entry)."""
    leave_out = b"" if wake else RedisKeys(namespace).wake.encode()
    with server.client() as client:
        found = client.scan_iter(match=f"mailqueue:{{{namespace}}}:*")
        return [name for name in found if name != leave_out]


@pytest.fixture
def now() -> float:
    return float(int(time.time()))


def damage_record(client, store: RedisStore, record_id: str, how: Damage) -> None:
    """Damage a queued record as an operator or a stray client would, with redis-cli's verbs."""
    key = f"mailqueue:{{{store.namespace}}}:m:{record_id}"
    if how is Damage.MISSING:
        assert client.delete(key) == 1
    elif how is Damage.PARTIAL:
        assert client.hdel(key, "created") == 1
    else:
        client.hset(key, mapping={"attempts": "1.5", "created": "abc"})


class TestRedisStore(StoreContract):
    @pytest.fixture
    def store(self, redis_server):
        self.server = redis_server
        s = RedisStore(redis_server.url, namespace=uuid.uuid4().hex)
        yield s
        s.close()

    def damage(self, store, record_id, how):
        with self.server.client() as client:
            damage_record(client, store, record_id, how)


# -- what only the Redis store promises ---------------------------------------


@pytest.fixture
def store(redis_server):
    s = RedisStore(redis_server.url, namespace=uuid.uuid4().hex)
    yield s
    s.close()


def test_keyspace_is_empty_after_everything(store, redis_server, now):
    records = [make_record(now) for _ in range(6)]
    store.enqueue(records)
    acked, requeued, released, buried, revived, dead = store.fetch_due(now, 10, LEASE)
    store.ack(acked)
    store.requeue(requeued, now, "451")
    store.release(released)
    store.bury(buried, "550", now - 100)
    store.bury(revived, "550", now)
    store.bury(dead, "550", now)
    store.add_dead([make_record(now, last_error="550 one recipient")], now)
    assert store.purge(now - 50) == 1
    assert store.revive([revived.id], now) == 1
    assert store.purge(now + 1) == 2
    while batch := store.fetch_due(now + 10 * LEASE, 10, LEASE):
        for claim in batch:
            store.ack(claim)
    stats = store.stats(now + 10 * LEASE)
    assert (stats.ready, stats.scheduled, stats.in_flight, stats.dead) == (0, 0, 0, 0)
    # The wake-up stream stays, one entry long, until it expires an hour after the last.
    wake = RedisKeys(store.namespace).wake.encode()
    assert scan_namespace(redis_server, store.namespace, wake=True) == [wake]
    with redis_server.client() as client:
        assert client.xlen(wake) == 1
        assert 3590 < client.ttl(wake) <= 3600


def test_two_namespaces_in_one_redis(redis_server, now):
    a = RedisStore(redis_server.url + "?namespace=" + uuid.uuid4().hex)
    b = RedisStore(redis_server.url, namespace=uuid.uuid4().hex)
    try:
        a.enqueue([make_record(now - 10), make_record(now + 60)])
        b.enqueue([make_record(now)])
        b.add_dead([make_record(now, last_error="x")], now - 3600)
        assert (a.stats(now).ready, a.stats(now).scheduled, a.stats(now).dead) == (1, 1, 0)
        assert (b.stats(now).ready, b.stats(now).scheduled, b.stats(now).dead) == (1, 0, 1)
        assert a.purge(now) == 0
        assert a.revive(None, now) == 0
        assert len(b.dead_letters()) == 1
        (claim,) = a.fetch_due(now, 10, LEASE)
        a.ack(claim)
        assert scan_namespace(redis_server, b.namespace)
        assert b.purge(now) == 1
        (claim,) = b.fetch_due(now, 10, LEASE)
        b.ack(claim)
        assert scan_namespace(redis_server, b.namespace) == []
        assert a.stats(now + 60).ready == 1
    finally:
        a.close()
        b.close()


def test_a_megabyte_of_binary_round_trips(store, now):
    data = bytes(range(256)) * 4096
    store.enqueue([make_record(now, data=data)])
    (claim,) = store.fetch_due(now, 1, LEASE)
    assert claim.record.data == data
    store.bury(claim, "too big for the relay", now)
    (letter,) = store.dead_letters()
    assert letter.record.data == data


def test_record_over_the_limit_is_refused(store, now, monkeypatch):
    monkeypatch.setattr(RedisStore, "max_record_size", 10)
    with pytest.raises(MessageTooLarge):
        store.enqueue([make_record(now, data=b"x" * 11)])
    assert store.stats(now).ready == 0


def test_empty_calls_do_nothing(store, now):
    store.enqueue([])
    store.add_dead([], now)
    assert store.fetch_due(now, 0, LEASE) == []
    assert store.dead_letters(limit=0) == []
    assert store.revive([], now) == 0


def test_revive_and_purge_in_chunks(store, now):
    records = [make_record(now, last_error="550") for _ in range(1200)]
    store.add_dead(records, now - 10)
    assert store.stats(now).dead == 1200
    assert store.revive([r.id for r in records[:700]], now) == 700
    assert store.purge(now) == 500
    assert store.stats(now).ready == 700


def test_oldest_ready_age_past_many_scheduled(store, now):
    # Over a thousand older messages wait for later: the walk gives up and
    # the oldest of the ready ones is still found among the longest due.
    store.enqueue([make_record(now + 600, created=now - 500) for _ in range(1001)])
    store.enqueue([make_record(now - 5, created=now - 100), make_record(now - 1, created=now - 1)])
    assert store.stats(now).oldest_ready_age == pytest.approx(100)


def test_ids_read_by_an_earlier_call_are_checked_again(store, redis_server, now):
    """Purge, the dead-letter listing and stats read ids, then declare their keys to a script.

    The script checks each id again: one settled in between is skipped, and a
    claim taken in between (its id not declared) is in flight, not stuck.
    """
    k = RedisKeys(store.namespace)
    with redis_server.client() as raw:

        def run(name: str, keys: list[str], args: list[object]) -> object:
            return raw.eval(script_source(name), len(keys), *keys, *args)

        letter = make_record(now, last_error="550")
        store.add_dead([letter], now - 10)
        assert store.revive([letter.id], now) == 1  # after purge and listing read its id
        assert run("purge", [k.dead, k.dead_letter(letter.id)], [repr(now), letter.id]) == 0
        assert (
            run("read_letters", [k.dead, k.dead_letter(letter.id)], [1, "data", letter.id]) == []
        )
        (claim,) = store.fetch_due(now, 1, LEASE)
        later = now + 100  # the lease ran out by this clock, not by the server's within 60 s
        keys, args = [k.due, k.held, k.created, k.dead, k.lost], [repr(later), 1000, "60"]
        in_flight, stuck = 2, 3
        taken_after_the_read = run("stats", keys, args)
        read = run("stats", [*keys, k.live(claim.id)], [*args, claim.id])
        assert isinstance(taken_after_the_read, list) and isinstance(read, list)
        assert (taken_after_the_read[in_flight], taken_after_the_read[stuck]) == (1, 0)
        assert (read[in_flight], read[stuck]) == (0, 1)
    assert store.stats(later).stuck == 1


def test_scripts_come_back_after_script_flush(store, redis_server, now):
    store.enqueue([make_record(now)])
    with redis_server.client() as client:
        client.script_flush()
    (claim,) = store.fetch_due(now, 1, LEASE)
    store.ack(claim)


def test_restart_with_appendonly_loses_nothing(redis_server_factory, now):
    server = redis_server_factory()
    s = RedisStore(server.url, namespace="restart")
    try:
        records = [make_record(now - i) for i in range(3)]
        s.enqueue(records)
        (claim,) = s.fetch_due(now, 1, LEASE)
        s.requeue(claim, now, "451 later")
        server.kill()
        with pytest.raises(StoreUnavailable):
            s.stats(now)
        server.start()
        claims = s.fetch_due(now, 10, LEASE)  # scripts are loaded again
        assert sorted(c.id for c in claims) == sorted(r.id for r in records)
        assert sorted(c.record.attempts for c in claims) == [0, 0, 1]
    finally:
        s.close()


@pytest.mark.parametrize("call", ["enqueue", "fetch_due", "stats", "ping", "browse", "paused"])
def test_unreachable_server_is_store_unavailable(call, now):
    s = RedisStore(f"redis://{HOST}:{free_port()}/0", socket_connect_timeout=1)
    try:
        with pytest.raises(StoreUnavailable) as info:
            if call == "enqueue":
                s.enqueue([make_record(now)])
            elif call == "fetch_due":
                s.fetch_due(now, 10, LEASE)
            elif call == "browse":
                s.browse(State.READY, now)
            else:
                getattr(s, call)(*([now] if call == "stats" else []))
        cause = info.value.__cause__
        assert cause is not None
        assert type(cause).__module__.startswith("redis")
    finally:
        s.close()


def test_unreachable_cluster_is_store_unavailable(now):
    s = RedisStore(f"redis+cluster://{HOST}:{free_port()}", socket_connect_timeout=1)
    with pytest.raises(StoreUnavailable) as info:
        s.stats(now)
    assert info.value.__cause__ is not None


def test_server_errors_are_store_errors(redis_server_factory, now):
    server = redis_server_factory("--maxmemory", "1mb", appendonly=False)
    with RedisStore(server.url, namespace="full") as s:
        with pytest.raises(StoreUnavailable, match="maxmemory"):
            s.enqueue([make_record(now, data=b"x" * 2_000_000)])
        with server.client() as client:
            client.config_set("maxmemory", "0")
            client.set("mailqueue:{full}:due", "not a zset")
        with pytest.raises(StoreError) as info:
            s.fetch_due(now, 1, LEASE)
        assert not isinstance(info.value, StoreUnavailable)
        assert type(info.value.__cause__).__module__.startswith("redis")


def test_unix_socket(redis_server_factory, tmp_path, now):
    socket_path = tmp_path / "redis.sock"
    server = redis_server_factory("--unixsocket", str(socket_path), appendonly=False)
    with RedisStore(f"unix://{socket_path}?db=2&namespace=u") as s:
        s.enqueue([make_record(now)])
        assert s.stats(now).ready == 1
    with server.client(db=2) as client:
        assert client.zcard("mailqueue:{u}:due") == 1


def test_password_in_url(redis_server_factory, now):
    server = redis_server_factory("--requirepass", "s3cr:t", appendonly=False)
    with RedisStore(f"redis://:s3cr%3At@{HOST}:{server.port}/0") as s:
        s.ping()
    with (
        RedisStore(f"redis://:wrong@{HOST}:{server.port}/0") as s,
        pytest.raises(StoreUnavailable),
    ):
        s.ping()


def test_sentinel_finds_the_master(redis_sentinel, redis_server, now):
    host, port, service = redis_sentinel
    for s in (
        RedisStore(f"redis+sentinel://{host}:{port}/{service}/0", namespace=uuid.uuid4().hex),
        RedisStore("", sentinels=[(host, port)], service_name=service, namespace="sentinel"),
    ):
        with s:
            s.enqueue([make_record(now)])
            (claim,) = s.fetch_due(now, 1, LEASE)
            s.ack(claim)
            assert scan_namespace(redis_server, s.namespace) == []


def test_rediss_verifies_the_certificate(redis_tls_server, now):
    server, ca_file = redis_tls_server
    with RedisStore(server.url, tls_ca_certs=str(ca_file)) as s:
        s.ping()
    with RedisStore(server.url.replace(HOST, "localhost") + f"?tls_ca_certs={ca_file}") as s:
        s.ping()
    # The system's trust store does not know the test CA: refused.
    with RedisStore(server.url) as s, pytest.raises(StoreUnavailable, match="certificate"):
        s.ping()
    with RedisStore(server.url + "?tls_verify=false") as s:
        s.ping()
    with RedisStore(server.url, tls_verify=False) as s:
        s.ping()


def test_missing_redis_py_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "redis", None)
    with pytest.raises(ConfigurationError, match=r"pip install mailqueue\[redis\]"):
        RedisStore("redis://localhost/0")


def test_options_are_kept_for_rebuilding(redis_server):
    s = RedisStore(redis_server.url, namespace="x", socket_timeout=2, client_options={})
    assert s.options == {"socket_timeout": 2, "client_options": {}}
    assert s.namespace == "x"
    assert s.capabilities == frozenset(
        {"shared", "durable", "rate_limit", "browse", "pause", "heartbeat", "sent_log", "wake"}
    )


# -- URLs and options -----------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "options", "expected"),
    [
        ("", {}, {"mode": "single", "host": "localhost", "port": 6379, "db": 0}),
        ("redis://h:7000/3", {}, {"host": "h", "port": 7000, "db": 3, "tls": False}),
        ("redis://u:p%40ss@h/1?db=4", {}, {"username": "u", "password": "p@ss", "db": 4}),
        ("redis://:pw@[::1]:7001", {}, {"host": "::1", "port": 7001, "password": "pw"}),
        ("redis://[::1]", {}, {"host": "::1", "port": 6379, "username": None}),
        (
            "rediss://h",
            {},
            {"tls": True, "options.tls_verify": True, "options.tls_ca_certs": None},
        ),
        ("rediss://h?tls_verify=no", {}, {"options.tls_verify": False}),
        (
            "rediss://h",
            {"tls_verify": "off", "tls_ca_certs": "/ca.pem"},
            {"options.tls_verify": False, "options.tls_ca_certs": "/ca.pem"},
        ),
        ("unix:///run/redis.sock?db=5", {}, {"unix_path": "/run/redis.sock", "db": 5}),
        (
            "redis+sentinel://:pw@s1:5000,s2/mymaster/2",
            {},
            {
                "mode": "sentinel",
                "nodes": (("s1", 5000), ("s2", 26379)),
                "service_name": "mymaster",
                "db": 2,
                "password": "pw",
            },
        ),
        (
            "redis://:pw@/1",
            {"sentinels": [("s1", 5000), ["s2", "5001"]], "service_name": "m"},
            {"mode": "sentinel", "nodes": (("s1", 5000), ("s2", 5001)), "db": 1},
        ),
        ("redis+cluster://a:1,b:2", {}, {"mode": "cluster", "nodes": (("a", 1), ("b", 2))}),
        ("rediss+cluster://a:1", {}, {"mode": "cluster", "tls": True}),
        ("redis://a:1", {"cluster": True}, {"mode": "cluster", "nodes": (("a", 1),)}),
        (
            "redis://h?socket_timeout=0.5",
            {"socket_connect_timeout": 2, "client_options": {"health_check_interval": 30}},
            {
                "options.socket_timeout": 0.5,
                "options.socket_connect_timeout": 2.0,
                "options.client_options": {"health_check_interval": 30},
            },
        ),
        ("redis://h", {}, {"options.socket_timeout": 5.0, "options.socket_connect_timeout": 5.0}),
        ("redis://h/1", {"db": 3}, {"db": 3}),
        ("unix:///s.sock", {"db": 2}, {"unix_path": "/s.sock", "db": 2}),
        ("redis://h?cluster=on", {}, {"mode": "cluster", "nodes": (("h", 6379),)}),
        ("redis://h", {"max_clock_skew": "Infinity"}, {"options.max_clock_skew": math.inf}),
        ("redis://h?max_clock_skew=0", {}, {"options.max_clock_skew": 0.0}),
    ],
)
def test_url_and_options(url, options, expected):
    settings = RedisStore(url, **options).settings
    for field, value in expected.items():
        assert operator.attrgetter(field)(settings) == value, field


def test_namespace_from_url_and_option():
    assert RedisStore("redis://h?namespace=site1").namespace == "site1"
    assert RedisStore("redis://h?namespace=site1", namespace="site2").namespace == "site2"
    assert RedisStore("redis://h").namespace == "default"


def test_options_win_over_the_url_query():
    store = RedisStore("redis://h/1?socket_timeout=1&db=2", socket_timeout=2, db=3)
    assert (store.settings.options.socket_timeout, store.settings.db) == (2.0, 3)


@pytest.mark.parametrize("given", ["", " ", " yes ", "ON", "0", "false", "maybe", 1, None])
@pytest.mark.parametrize("name", ["tls_verify", "allow_eviction", "cluster"])
def test_flags_read_as_the_core_reads_them(name, given):
    """Every flag goes through the core's BOOLEAN: the same words, the same errors.

    Before, the store had a reader of its own: it refused ``" yes "``, which
    the core takes, and its error named neither the words it takes nor where
    the value was given.
    """
    try:
        expected: bool | None = BOOLEAN.parse(given)
    except ValueError:
        expected = None
    sources = [{name: given}]
    if isinstance(given, str):
        sources.append({"_url": f"redis://h?{name}={quote(given)}"})
    for options in sources:
        url = str(options.pop("_url", "redis://h"))
        if expected is None:
            with pytest.raises(ConfigurationError, match=f"{name}.*must be true or false"):
                RedisStore(url, **options)
        else:
            assert getattr(RedisStore(url, **options).settings.options, name) is expected


@pytest.mark.parametrize(
    ("url", "options", "message"),
    [
        # The URL's value was dropped unread when OPTIONS gave one too.
        ("redis://h?tls_verify=maybe", {"tls_verify": False}, "tls_verify"),
        ("redis://h?min_replicas=-1", {"min_replicas": 1}, "min_replicas"),
        # A parameter given twice: the last one won.
        ("redis://h?socket_timeout=1&socket_timeout=2", {}, "more than once"),
        # Empty values were taken: db 0, a CA file named "".
        ("redis://h/1?db=", {}, "'db'"),
        ("rediss://h?tls_ca_certs=", {}, "tls_ca_certs"),
        # Timeouts could be infinite; only the clock check may be turned off so.
        ("redis://h?socket_timeout=inf", {}, "socket_timeout"),
        ("redis://h", {"replica_timeout": 1e400}, "replica_timeout"),
        # OPTIONS-only values cannot come in a URL.
        ("redis://h?client_options=x", {}, "cannot be given in the URL"),
        ("redis://h?sentinels=s:1", {}, "cannot be given in the URL"),
    ],
)
def test_what_the_one_parser_refuses(url, options, message):
    with pytest.raises(ConfigurationError, match=message):
        RedisStore(url, **options)


@pytest.mark.parametrize(
    ("url", "options", "near"),
    [("redis://h?min_replica=1", {}, "min_replicas"), ("redis://h", {"socket_timeut": 1}, None)],
)
def test_unknown_options_list_the_valid_ones(url, options, near):
    with pytest.raises(ConfigurationError) as info:
        RedisStore(url, **options)
    text = str(info.value)
    assert "valid options: " in text
    for row in describe(RedisOptions):
        assert row.name in text
    if near:
        assert f"did you mean {near!r}" in text


def test_every_declared_option_takes_its_own_default():
    for row in describe(RedisOptions):
        store = RedisStore("redis://h", **{row.name: row.default})
        if row.name != "namespace":
            assert getattr(store.settings.options, row.name) == row.default


def test_settings_never_show_the_password():
    settings = RedisStore("redis://u:hunter2@h/0").settings
    assert settings.password == "hunter2"
    assert "hunter2" not in repr(settings)


@pytest.mark.parametrize(
    ("url", "options", "message"),
    [
        ("memcached://h", {}, "scheme"),
        ("redis://h", {"nope": 1, "other": 2}, "unknown option 'nope'"),
        ("redis://h?colour=blue", {}, "colour"),
        ("redis://:hunter2@h?colour=blue", {}, "colour"),
        ("redis://h:port/0", {}, "port"),
        ("redis://h/zero", {}, "db"),
        ("redis://h/-1", {}, "db"),
        ("redis://a:1,b:2", {}, "several hosts"),
        ("redis://:1", {}, "empty host"),
        ("unix://", {}, "socket path"),
        ("redis+sentinel://s1:5000", {}, "service name"),
        ("redis+cluster://a:1/2", {}, "db 0"),
        ("redis://h", {"socket_timeout": 0}, "socket_timeout"),
        ("redis://h", {"socket_timeout": "soon"}, "socket_timeout"),
        ("redis://h", {"socket_connect_timeout": True}, "socket_connect_timeout"),
        ("redis://h?tls_verify=maybe", {}, "tls_verify"),
        ("redis://h", {"tls_verify": None}, "tls_verify"),
        ("redis://h", {"tls_ca_certs": 3}, "tls_ca_certs"),
        ("redis://h", {"client_options": [1]}, "client_options"),
        ("redis://h", {"cluster": "maybe"}, "cluster"),
        ("unix:///s.sock", {"cluster": True}, "cluster"),
        ("redis://h", {"sentinels": [("s", 1)], "service_name": "m"}, "no host"),
        ("redis://", {"sentinels": [("s", 1)], "cluster": True, "service_name": "m"}, "cluster"),
        ("redis://", {"sentinels": [("s", 1)]}, "service_name"),
        ("redis://", {"sentinels": "s:1", "service_name": "m"}, "sentinels"),
        ("redis://", {"sentinels": [("s", "x")], "service_name": "m"}, "sentinels"),
        ("redis://", {"sentinels": [], "service_name": "m"}, "sentinels"),
        ("redis://", {"sentinels": ["12"], "service_name": "m"}, "sentinels"),
        ("redis://", {"service_name": "m"}, "only used with sentinels"),
        ("redis://", {"namespace": "a{b}"}, "braces"),
        ("redis://", {"namespace": 3}, "namespace"),
        ("redis://?namespace=a%7Bb", {}, "braces"),
        ("redis://", {"namespace": ""}, "namespace"),
    ],
)
def test_bad_urls_and_options(url, options, message):
    with pytest.raises(ConfigurationError, match=message):
        RedisStore(url, **options)


@pytest.mark.parametrize(
    ("url", "options"),
    [
        ("redis://user:hunter2@h:bad/0", {}),
        ("redis://user:hun/ter2@h/0", {}),  # the port read "hun" and was shown
        ("redis+sentinel://:hunter2@s1:5000/m", {"cluster": True}),
        ("redis+sentinel://:hunter2@s1:5000", {}),
        ("redis://:hunter2@h", {"sentinels": [("s", 1)], "service_name": "m"}),
        ("redis://:hunter2@a:1,b:2", {}),
        ("memcached://:hunter2@h", {}),
        ("redis://:hunter2@h?colour=blue", {}),
    ],
)
def test_password_never_in_error_messages(url, options):
    with pytest.raises(ConfigurationError) as info:
        RedisStore(url, **options)
    text = str(info.value)
    assert "hunter2" not in text and "hun" not in text
    assert "***" in text or "://" not in text


def test_a_server_that_is_not_redis_is_a_store_error(now):
    # Something else listens on the port and answers garbage: redis-py's own
    # protocol error must still come out as a store error.
    with socket.socket() as listener:
        listener.bind((HOST, 0))
        listener.listen(1)

        def answer_garbage() -> None:
            conn, _ = listener.accept()
            with conn:
                conn.recv(4096)
                conn.sendall(b"SSH-2.0-OpenSSH\r\n")

        thread = threading.Thread(target=answer_garbage)
        thread.start()
        store = RedisStore(f"redis://{HOST}:{listener.getsockname()[1]}/0")
        try:
            with pytest.raises(StoreError) as info:
                store.stats(now)
        finally:
            store.close()
            thread.join()
        assert type(info.value.__cause__).__module__.startswith("redis")


def test_redis_store_model(redis_server):
    """The stateful model test, each generated run in a namespace of its own."""
    run_store_model(lambda: RedisStore(redis_server.url, namespace=uuid.uuid4().hex))


@pytest.mark.parametrize(
    ("version", "flags"),
    [("7.0.15", True), ("7.2.4", True), ("8.0.0", True), ("6.2.14", False), ("", True)],
)
def test_script_flags_only_for_servers_that_read_them(version, flags):
    assert supports_flags(version) is flags
    source = script_source("claim", flags)
    assert source.startswith("#!lua flags=allow-oom\n") is flags
    assert script_source("enqueue", True).startswith("#!lua\nlocal function wake")
    assert script_source("stats", True).startswith("#!lua flags=no-writes\n")
    assert not script_source("enqueue", False).startswith("#!")
