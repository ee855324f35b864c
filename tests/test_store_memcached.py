"""The memcached store against real memcached servers (started by tests/servers/memcached.py)."""

from __future__ import annotations

import json
import logging
import os
import re
import sys
import uuid

import pytest
from pymemcache.client.base import Client

from mailqueue_core.errors import (
    ConfigurationError,
    LeaseLost,
    MessageTooLarge,
    StoreError,
    StoreUnavailable,
)
from mailqueue_core.store import Store
from mailqueue_core.testing import Damage, StoreContract, run_store_model
from mailqueue_core.testing.contract import LEASE, make_record
from mailqueue_stores.memcached import MemcachedStore
from mailqueue_stores.memcached.client import MemcachedClient
from mailqueue_stores.memcached.keys import Keys
from mailqueue_stores.memcached.options import DEFAULT_MAX_ITEM_SIZE, read
from mailqueue_stores.memcached.rings import Rings
from tests.servers.memcached import FAR_CLOCK, free_port, raw_item


def fresh_namespace() -> str:
    return f"t-{uuid.uuid4().hex}"


@pytest.fixture
def now(no_wall_clock) -> float:
    return FAR_CLOCK


@pytest.fixture
def connect():
    """Build stores (and raw clients) that are closed when the test ends."""
    opened: list = []

    def make(location: str, **options) -> MemcachedStore:
        s = MemcachedStore(location, **options)
        opened.append(s)
        return s

    def raw(port: int) -> Client:
        c = Client(("127.0.0.1", port))
        opened.append(c)
        return c

    make.raw = raw  # type: ignore[attr-defined]
    yield make
    for thing in opened:
        thing.close()


@pytest.fixture
def store(memcached_server, connect):
    return connect(memcached_server.url, namespace=fresh_namespace())


def damage_through_the_server(store: Store, record_id: str, how: Damage) -> None:
    """What an operator or a stray client could do to a queued record's items."""
    keys = Keys(store.namespace)
    raw, header = raw_item(store.location, keys.header(record_id))
    try:
        fields = json.loads(header)
        data = keys.data(record_id, fields["gen"])
        if how is Damage.MISSING:
            raw.delete(keys.header(record_id))
            raw.delete(data)
        elif how is Damage.PARTIAL:
            raw.set(data, raw.get(data)[:7])  # the data item cut short
        else:
            raw.set(keys.header(record_id), json.dumps({**fields, "attempts": "1.5"}).encode())
    finally:
        raw.close()


class TestMemcachedStore(StoreContract):
    @pytest.fixture
    def store(self, memcached_server):
        s = MemcachedStore(memcached_server.url, namespace=fresh_namespace())
        yield s
        s.close()

    def damage(self, store: Store, record_id: str, how: Damage) -> None:
        damage_through_the_server(store, record_id, how)


class TestMemcachedStoreOnTwoServers(StoreContract):
    """On two servers, and on a clock far from the wall clock: the store reads none."""

    def damage(self, store: Store, record_id: str, how: Damage) -> None:
        damage_through_the_server(store, record_id, how)

    @pytest.fixture
    def now(self, no_wall_clock) -> float:
        return FAR_CLOCK

    @pytest.fixture
    def store(self, memcached_pair):
        one, two = memcached_pair
        s = MemcachedStore(f"memcached://{one.address},{two.address}", namespace=fresh_namespace())
        yield s
        s.close()


def test_memcached_store_model(memcached_server):
    """The stateful model test, each generated run in a namespace of its own."""
    run_store_model(lambda: MemcachedStore(memcached_server.url, namespace=fresh_namespace()))


@pytest.mark.drill
def test_memcached_store_model_on_two_servers(memcached_pair):
    """The same on two servers, where every message is also named in a journal."""
    url = "memcached://" + ",".join(s.address for s in memcached_pair)
    run_store_model(lambda: MemcachedStore(url, namespace=fresh_namespace()))


# -- configuration ------------------------------------------------------------


def test_url_with_several_servers_and_query_options() -> None:
    s = read("memcached://h1:1,h2,[::1]:3?namespace=site&timeout=2.5", {})
    assert s.servers == [("h1", 1), ("h2", 11211), ("::1", 3)]
    assert (s.namespace, s.options.timeout, s.options.connect_timeout) == ("site", 2.5, None)
    assert s.options.max_item_size == DEFAULT_MAX_ITEM_SIZE


def test_query_and_keyword_options_merge_through_the_one_parser() -> None:
    s = read("memcached://h:1?namespace=a", {"max_item_size": "4000", "timeout": 1})
    assert (s.namespace, s.options.max_item_size, s.options.timeout) == ("a", 4000, 1.0)
    # A keyword option wins, so a store can be rebuilt from its location in another namespace.
    assert read("memcached://h:1?namespace=a&timeout=2", {"namespace": "b"}).namespace == "b"


@pytest.mark.parametrize("servers", [["h1:1", "h2:2"], "h1:1,h2:2", ("h1:1", "h2:2")])
def test_servers_option(servers: object) -> None:
    assert read("memcached://", {"servers": servers}).servers == [("h1", 1), ("h2", 2)]
    assert read("memcached://?servers=h1:1,h2:2", {}).servers == [("h1", 1), ("h2", 2)]


@pytest.mark.parametrize(
    ("location", "options", "complaint"),
    [
        (
            "memcached://h:1",
            {"pool": 3},
            "unknown option 'pool' in the OPTIONS; valid options: connect_timeout, "
            "max_item_size, namespace, servers, timeout",
        ),
        ("memcached://h:1", {"timout": 3}, "did you mean 'timeout'?"),
        ("memcached://h:1?colour=red", {}, "unknown option 'colour' in the URL"),
        ("memcached://h:1?timeout=1&timeout=2", {}, "gives 'timeout' more than once"),
        ("redis://h:1", {}, "memcached://"),
        ("memcached://h:99999", {}, "bad port"),
        ("memcached://h:port", {}, "bad port"),
        ("memcached://[::1", {}, "cannot parse"),
        ("memcached://[::1]x", {}, "bad memcached server"),
        ("memcached://h:1/0", {}, "takes only servers"),
        ("memcached://user:pw@h:1", {}, "takes only servers"),
        ("memcached://", {}, "names no server"),
        ("memcached://:11211", {}, "expected host:port"),
        ("memcached://h:1", {"servers": ["h2:1"]}, "not both"),
        ("memcached://", {"servers": []}, "list of 'host:port'"),
        ("memcached://", {"servers": 7}, "list of 'host:port'"),
        ("memcached://?servers=", {}, "list of 'host:port'"),
        ("memcached://h:1", {"timeout": -1}, "seconds >= 0"),
        ("memcached://h:1?connect_timeout=0", {}, "seconds > 0"),
        ("memcached://h:1", {"timeout": "soon"}, "must be a number"),
        ("memcached://h:1", {"max_item_size": True}, "must be a number"),
        ("memcached://h:1?max_item_size=0", {}, "whole number >= 1"),
        ("memcached://h:1", {"namespace": ""}, "non-empty"),
    ],
)
def test_bad_configuration_is_named(location: str, options: dict, complaint: str) -> None:
    with pytest.raises(ConfigurationError, match=re.escape(complaint)):
        MemcachedStore(location, **options)


@pytest.mark.parametrize(
    ("location", "options"),
    [
        ("memcached://user:s3cret@h:1", {}),
        ("memcached://user:s3cret@h:1/0", {}),
        ("memcached://user:s3cret@[::1", {}),
        ("redis://user:s3cret@h:1", {}),
        ("memcached://user:s3cret@h:1#frag", {}),
        ("memcached://", {"servers": ["user:s3cret@h:1"]}),
        ("memcached://", {"servers": "h:1,[::1]:s3cret@x"}),
    ],
)
def test_a_password_in_a_url_never_reaches_an_error_message(location, options) -> None:
    with pytest.raises(ConfigurationError) as info:
        MemcachedStore(location, **options)
    assert "s3cret" not in str(info.value)
    assert "***" in str(info.value)


def test_options_are_kept_to_rebuild_the_store(memcached_server) -> None:
    with MemcachedStore(memcached_server.url, namespace="n", timeout=3, connect_timeout=1) as s:
        assert s.options == {"timeout": 3, "connect_timeout": 1}
        assert "namespace='n'" in repr(s)
        assert s.max_record_size == DEFAULT_MAX_ITEM_SIZE


def test_missing_pymemcache_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pymemcache", None)
    with pytest.raises(ConfigurationError, match=r"pip install mailqueue\[memcached\]"):
        MemcachedStore("memcached://127.0.0.1:1")


# -- an unreachable server ----------------------------------------------------------


def test_closed_port_is_store_unavailable(connect, now: float) -> None:
    url = f"memcached://127.0.0.1:{free_port()}"
    s = connect(url, connect_timeout=1, timeout=1)
    s.enqueue([])  # nothing to write: no server is asked
    fresh = connect(url, connect_timeout=1, timeout=1)  # never given a time: asks the clock
    for call in (
        fresh.dead_letters,
        lambda: s.enqueue([make_record(now)]),
        lambda: s.fetch_due(now, 10, LEASE),
        lambda: s.stats(now),
        s.dead_letters,
    ):
        with pytest.raises(StoreUnavailable) as info:
            call()
        assert isinstance(info.value.__cause__, OSError)


def test_one_of_two_servers_down_is_an_error_not_a_miss(
    connect, memcached_server_factory, now
) -> None:
    one, two = memcached_server_factory(), memcached_server_factory()
    s = connect(f"memcached://{one.address},{two.address}", namespace="down")
    s.enqueue([make_record(now) for _ in range(20)])
    two.stop()
    with pytest.raises(StoreUnavailable):
        s.fetch_due(now, 100, LEASE)
    with pytest.raises(StoreUnavailable):
        s.stats(now)


def test_several_servers_share_the_work(connect, memcached_server_factory, now) -> None:
    servers = [memcached_server_factory() for _ in range(3)]
    url = "memcached://" + ",".join(srv.address for srv in servers)
    s = connect(url, namespace="spread")
    records = [make_record(now, data=b"x" * 1000) for _ in range(60)]
    s.enqueue(records)
    for srv in servers:  # every server holds a share of the items
        assert int(connect.raw(srv.port).stats()[b"curr_items"]) > 10
    twin = connect(url, namespace="spread")
    got = twin.fetch_due(now, 100, LEASE)
    assert sorted(c.id for c in got) == sorted(r.id for r in records)
    for claim in got:
        s.ack(claim)
    assert s.stats(now).in_flight == 0


# -- time: the caller's --------------------------------------------------------------


def test_a_record_created_long_ago_is_indexed_as_of_now(connect, memcached_server, now) -> None:
    """A message moved in from the fallback store hours after it was queued is still found.

    Its ``created`` is hours old, but a write is never indexed behind the low
    cursor as read (a fresh process) nor before the latest time a store was given.
    """
    namespace = fresh_namespace()
    flusher = connect(memcached_server.url, namespace=namespace)
    flusher.enqueue([make_record(now)])
    (claim,) = flusher.fetch_due(now, 10, LEASE)
    flusher.ack(claim)
    assert flusher.stats(now).ready == 0  # the walk moved the low cursor up to now
    mover = connect(memcached_server.url, namespace=namespace)
    old, older = make_record(now - 6 * 3600), make_record(now - 7 * 3600)
    mover.enqueue([old])
    flusher.enqueue([older])
    assert {c.id for c in flusher.fetch_due(now, 10, LEASE)} == {old.id, older.id}


# -- keys and namespaces --------------------------------------------------------------


def test_any_namespace_and_id_make_safe_keys(connect, memcached_server, now) -> None:
    odd = ["site one/ü", "x" * 300, "tab\tand\nnewline"]
    stores = [connect(memcached_server.url, namespace=ns) for ns in odd]
    for i, s in enumerate(stores):
        s.enqueue([make_record(now, id=f"<{i} id with spaces ✉ {'y' * 300}>")])
    for i, s in enumerate(stores):
        (claim,) = s.fetch_due(now, 10, LEASE)
        assert claim.id.startswith(f"<{i} id with spaces ✉")
        s.ack(claim)


def test_two_namespaces_on_one_server_never_see_each_other(connect, memcached_server, now) -> None:
    a = connect(memcached_server.url, namespace=fresh_namespace())
    b = connect(memcached_server.url, namespace=fresh_namespace())
    shared = make_record(now, id="same-id-in-both")
    a.enqueue([shared, make_record(now)])
    b.enqueue([shared])
    a.add_dead([make_record(now, last_error="550")], now)
    assert (a.stats(now).ready, b.stats(now).ready) == (2, 1)
    assert (a.stats(now).dead, b.stats(now).dead) == (1, 0)
    (theirs,) = b.fetch_due(now, 10, LEASE)
    with pytest.raises(LeaseLost):
        a.ack(theirs)
    assert len(a.fetch_due(now, 10, LEASE)) == 2
    assert b.purge(now + 1) == 0
    assert len(a.dead_letters()) == 1


# -- size limit ------------------------------------------------------------------------


def test_too_large_is_refused_whole_naming_the_fix(store, now) -> None:
    ok = make_record(now)
    big = make_record(now, data=b"x" * (DEFAULT_MAX_ITEM_SIZE + 1))
    with pytest.raises(MessageTooLarge, match=r"memcached -I 4m.*max_item_size"):
        store.enqueue([ok, big])
    with pytest.raises(MessageTooLarge):
        store.add_dead([big], now)
    assert store.fetch_due(now, 10, LEASE) == []
    assert store.stats(now) == type(store.stats(now))()
    store.enqueue([make_record(now, data=b"x" * DEFAULT_MAX_ITEM_SIZE)])
    (claim,) = store.fetch_due(now, 10, LEASE)
    assert claim.record.size == DEFAULT_MAX_ITEM_SIZE


def test_larger_items_with_a_larger_server_limit(connect, memcached_server_factory, now) -> None:
    server = memcached_server_factory("-I", "4m")
    s = connect(server.url, max_item_size=3_000_000)
    assert s.max_record_size == 3_000_000
    data = os.urandom(2_500_000)
    s.enqueue([make_record(now, data=data)])
    (claim,) = s.fetch_due(now, 1, LEASE)
    assert claim.record.data == data


def test_option_above_the_server_limit_leaves_nothing_half_written(
    connect, memcached_server, now
) -> None:
    s = connect(memcached_server.url, namespace=fresh_namespace(), max_item_size=3_000_000)
    with pytest.raises(MessageTooLarge, match="-I 4m"):
        s.enqueue([make_record(now), make_record(now, data=b"x" * 2_000_000)])
    assert s.fetch_due(now, 10, LEASE) == []
    stats = s.stats(now)
    assert (stats.ready, stats.lost) == (0, 0)
    s.enqueue([make_record(now)])  # and the store goes on
    assert len(s.fetch_due(now, 10, LEASE)) == 1


# -- losses -----------------------------------------------------------------------------


def test_evicted_messages_are_reported_lost_one_by_one(
    connect, memcached_server_factory, now, caplog: pytest.LogCaptureFixture
) -> None:
    server = memcached_server_factory("-m", "2", "-I", "512k")
    s = connect(server.url, max_item_size=400_000)
    records = [make_record(now, data=os.urandom(100_000)) for _ in range(60)]  # 6 MB into 2
    for record in records:
        s.enqueue([record])
    with caplog.at_level(logging.ERROR, logger="mailqueue.stores.memcached"):
        stats = s.stats(now)
    lost = {d.record.id: d for d in s.dead_letters() if d.lost}
    assert stats.lost == len(lost) > 20
    assert stats.ready == len(records) - len(lost)
    logged = {r.getMessage() for r in caplog.records if r.levelno == logging.ERROR}
    for mid, letter in lost.items():
        assert any(mid in line for line in logged)
        assert letter.record.data == b""
        assert letter.record.created == pytest.approx(now)
        assert "evicted" in letter.reason
    claimed = []
    while batch := s.fetch_due(now, 25, LEASE):
        claimed.extend(batch)
    by_id = {r.id: r for r in records}
    assert all(c.record.data == by_id[c.id].data for c in claimed)
    assert {c.id for c in claimed}.isdisjoint(lost)
    assert {c.id for c in claimed} | set(lost) == set(by_id)
    assert s.stats(now).lost == len(lost)  # reported once, not at every look
    assert s.purge(now + 1) == len(lost)
    assert s.stats(now).lost == 0


def test_restart_reports_what_was_queued_as_lost(
    connect, memcached_server_factory, now, caplog: pytest.LogCaptureFixture
) -> None:
    server = memcached_server_factory()
    web = connect(server.url, namespace="site")
    flusher = connect(server.url, namespace="site")
    web.enqueue([make_record(now) for _ in range(3)])
    flusher.stats(now)
    server.restart()
    with caplog.at_level(logging.ERROR, logger="mailqueue.stores.memcached"):
        assert web.stats(now).lost == 3
        assert flusher.stats(now).lost == 3  # one report, whoever sees it first
    (letter,) = web.dead_letters()
    assert letter.lost
    assert "emptied" in letter.reason and "3 queued" in letter.reason
    assert any("emptied" in r.getMessage() for r in caplog.records)
    web.enqueue([make_record(now)])
    assert len(flusher.fetch_due(now, 10, LEASE)) == 1


def test_restart_after_an_empty_queue_is_still_told(
    connect, memcached_server_factory, now
) -> None:
    server = memcached_server_factory()
    s = connect(server.url)
    s.stats(now)
    server.restart()
    stats = s.stats(now)
    assert stats.lost == 1
    (letter,) = s.dead_letters()
    assert "unknown number" in letter.reason


def test_evicted_header_is_reported_lost(connect, memcached_server, store, now) -> None:
    record = make_record(now, attempts=2)
    store.enqueue([record])
    connect.raw(memcached_server.port).delete(Keys(store.namespace).header(record.id))
    assert store.fetch_due(now, 10, LEASE) == []
    (letter,) = store.dead_letters()
    assert (letter.record.id, letter.lost) == (record.id, True)
    assert store.stats(now).lost == 1


def test_dead_letter_whose_data_was_evicted_is_listed_lost(connect, memcached_server, store, now):
    record = make_record(now, last_error="550 no")
    store.add_dead([record], now)
    raw = connect.raw(memcached_server.port)
    keys = Keys(store.namespace)
    header = json.loads(raw.get(keys.dead(record.id)))
    raw.delete(keys.data(record.id, header["gen"]))
    (letter,) = store.dead_letters()
    assert (letter.record.id, letter.lost, letter.record.data) == (record.id, True, b"")
    assert store.stats(now).lost == 1
    assert store.stats(now).dead == 0
    assert store.revive(None, now) == 0


# -- races and interrupted clients ---------------------------------------------------------
#
# Another client acting between two steps of a call is simulated by running its
# action just before a chosen client call; a client that dies half-way by making
# a call fail. Only public classes and the documented key layout are used.


@pytest.fixture
def before(monkeypatch: pytest.MonkeyPatch):
    """``before(method, action, when=...)``: run ``action`` before the first matching call."""

    def arm(method: str, action, when=lambda *a: True) -> None:
        real = getattr(MemcachedClient, method)
        armed = [True]

        def wrapper(self, *args, **kwargs):
            if armed[0] and when(*args):
                armed[0] = False
                action()
            return real(self, *args, **kwargs)

        monkeypatch.setattr(MemcachedClient, method, wrapper)

    return arm


def rewrite(raw: Client, key: str):
    """An action: another client writes ``key`` (same bytes, so only its cas changes)."""
    return lambda: raw.set(key, raw.get(key), noreply=False)


def fail() -> None:
    raise StoreUnavailable("the client died here")


@pytest.fixture
def raw(connect, memcached_server) -> Client:
    return connect.raw(memcached_server.port)


def header_key(store: MemcachedStore, mid: str) -> str:
    return Keys(store.namespace).header(mid)


def test_claim_race_lost_to_another_client_takes_the_next(store, connect, before, now) -> None:
    other = connect(store.location, namespace=store.namespace)
    first, second = make_record(now - 2), make_record(now - 1)
    store.enqueue([first, second])
    before("cas", lambda: other.fetch_due(now, 1, LEASE), when=lambda key, *a: "m:" in key)
    (claim,) = store.fetch_due(now, 1, LEASE)
    assert claim.id == second.id


def test_data_evicted_before_a_claim_is_reported_lost(store, raw, now) -> None:
    record = make_record(now)
    store.enqueue([record])
    gen = json.loads(raw.get(header_key(store, record.id)))["gen"]
    raw.delete(Keys(store.namespace).data(record.id, gen))
    assert store.fetch_due(now, 10, LEASE) == []
    (letter,) = store.dead_letters()
    assert (letter.record.id, letter.lost) == (record.id, True)


@pytest.mark.parametrize("action", ["ack", "release", "bury", "requeue-here", "requeue-later"])
def test_a_write_between_read_and_cas_is_lease_lost(store, raw, before, now, action) -> None:
    record = make_record(now)
    store.enqueue([record])
    (claim,) = store.fetch_due(now, 10, LEASE)
    key = header_key(store, record.id)
    before("cas", rewrite(raw, key), when=lambda k, *a: k == key)
    with pytest.raises(LeaseLost):
        if action == "ack":
            store.ack(claim)
        elif action == "release":
            store.release(claim)
        elif action == "bury":
            store.bury(claim, "550", now)
        else:
            store.requeue(claim, now if action == "requeue-here" else now + 3600, "451")
    assert store.dead_letters() == []
    assert store.stats(now).in_flight == 1


@pytest.mark.parametrize("step", ["announce", "confirm"])
def test_requeue_losing_its_lease_mid_move_leaves_no_slot(store, connect, before, now, step):
    other = connect(store.location, namespace=store.namespace)
    store.enqueue([make_record(now)])
    (claim,) = store.fetch_due(now, 10, 1.0)
    if step == "announce":  # the lease is taken before the new slot is announced
        before("cas", lambda: other.fetch_due(now + 2, 10, LEASE))
    else:  # ... or after the new slot is written, before the move is confirmed
        written: list[int] = []
        before("add", lambda: written.append(1), when=lambda k, *a: ":p:" in k)
        before("gets", lambda: other.fetch_due(now + 2, 10, LEASE), when=lambda k: written)
    with pytest.raises(LeaseLost):
        store.requeue(claim, now + 3600, "451")
    assert store.stats(now + 3).in_flight == 1
    (again,) = store.fetch_due(now + 4000, 10, LEASE)  # once: no second slot names it
    assert again.record.attempts == 0
    assert store.stats(now + 4000).lost == 0


def test_requeue_whose_lease_ran_out_mid_move_and_was_cleaned_up(store, connect, before, now):
    """A walk dropped the half-written slot (the lease had run out): the move must fail."""
    other = connect(store.location, namespace=store.namespace)
    record = make_record(now)
    store.enqueue([record])
    (claim,) = store.fetch_due(now, 10, 1.0)
    written: list[int] = []
    key = header_key(store, record.id)
    before("add", lambda: written.append(1), when=lambda k, *a: ":p:" in k)
    before("gets", lambda: other.stats(now + 2), when=lambda k: written and k == key)
    with pytest.raises(LeaseLost):
        store.requeue(claim, now + 3600, "451")
    assert store.stats(now + 3).stuck == 1
    (again,) = store.fetch_due(now + 3, 10, LEASE)  # still in its place, whole
    assert again.record.attempts == 0


def test_requeue_that_died_mid_move_is_recovered(store, before, monkeypatch, now) -> None:
    record = make_record(now)
    store.enqueue([record])
    (claim,) = store.fetch_due(now, 10, 1000.0)
    monkeypatch.setattr(Rings, "raise_top", lambda self, bucket: fail())
    with pytest.raises(StoreUnavailable):
        store.requeue(claim, now + 120, "451")
    monkeypatch.undo()
    # The half-written slot is left alone while the lease lives...
    assert store.fetch_due(now + 200, 10, LEASE) == []
    assert store.stats(now + 200).in_flight == 1
    # ... and dropped once it has run out; the message is claimable as it was.
    (again,) = store.fetch_due(now + 1001, 10, LEASE)
    assert (again.id, again.record.attempts) == (record.id, 0)
    store.ack(again)
    assert store.stats(now + 5000) == type(store.stats(now))()


def test_requeue_that_died_before_dropping_its_old_slot(store, raw, before, now) -> None:
    record = make_record(now)
    store.enqueue([record])
    (claim,) = store.fetch_due(now, 10, LEASE)
    old = json.loads(raw.get(header_key(store, record.id)))["ptr"]
    before("delete", fail, when=lambda key: key == old)
    with pytest.raises(StoreUnavailable):
        store.requeue(claim, now + 120, "451")
    assert store.fetch_due(now + 60, 10, LEASE) == []  # the old slot is stale, not lost
    (again,) = store.fetch_due(now + 120, 10, LEASE)
    store.requeue(again, now + 240, "451")  # a second move drops the first's leftover
    (third,) = store.fetch_due(now + 240, 10, LEASE)
    assert third.record.attempts == 2
    store.ack(third)
    assert store.stats(now + 300).lost == 0


def test_ack_that_died_half_way_is_finished_by_the_next_reader(store, before, now) -> None:
    store.enqueue([make_record(now)])
    (claim,) = store.fetch_due(now, 10, LEASE)
    before("delete_many", fail)
    with pytest.raises(StoreUnavailable):
        store.ack(claim)
    assert store.fetch_due(now + 100, 10, LEASE) == []
    stats = store.stats(now + 100)
    assert (stats.ready, stats.in_flight, stats.lost) == (0, 0, 0)


def test_enqueue_that_died_before_its_slot_can_be_retried(store, before, now) -> None:
    record = make_record(now)
    before("set_many", fail)
    before("delete_many", fail)  # and could not clean up either
    with pytest.raises(StoreUnavailable):
        store.enqueue([record])
    store.enqueue([record])  # the retry takes over the orphaned header
    (claim,) = store.fetch_due(now, 10, LEASE)
    assert claim.record.data == record.data


def test_enqueue_of_an_id_being_acked_or_dead_is_a_duplicate(store, raw, now) -> None:
    record = make_record(now)
    store.enqueue([record])
    store.fetch_due(now, 10, LEASE)
    key = header_key(store, record.id)
    raw.set(key, b'{"done":true,"slots":[],"data":true}', noreply=False)
    store.enqueue([record])
    assert store.fetch_due(now + 100, 10, LEASE) == []
    dead = make_record(now, last_error="550")
    store.add_dead([dead], now)
    store.enqueue([dead])
    assert store.fetch_due(now + 100, 10, LEASE) == []


def test_revive_leaves_a_dead_letter_whose_id_is_queued_again(store, now) -> None:
    record = make_record(now)
    store.enqueue([record])
    store.add_dead([make_record(now, id=record.id, last_error="550")], now)
    assert store.revive(None, now) == 0
    assert len(store.dead_letters()) == 1


def test_evicted_dead_letter_header_is_reported(store, raw, now) -> None:
    record = make_record(now, last_error="550")
    store.add_dead([record], now)
    raw.delete(Keys(store.namespace).dead(record.id))
    assert store.stats(now).lost == 1
    assert [d.record.id for d in store.dead_letters()] == [record.id]


def test_memcached_errors_are_translated(store, monkeypatch, now) -> None:
    from pymemcache.exceptions import (
        MemcacheClientError,
        MemcacheServerError,
        MemcacheUnexpectedCloseError,
    )

    def broken(exc):
        def call(*args, **kwargs):
            raise exc

        return call

    cases = [
        (MemcacheServerError("out of memory storing object"), StoreUnavailable),
        (MemcacheUnexpectedCloseError(), StoreUnavailable),
        (MemcacheClientError("cannot increment or decrement non-numeric value"), StoreError),
    ]
    for exc, expected in cases:
        monkeypatch.setattr("pymemcache.client.base.Client.get_many", broken(exc))
        with pytest.raises(expected) as info:
            store.stats(now)
        assert type(info.value) is expected
        assert info.value.__cause__ is exc
    monkeypatch.undo()
    monkeypatch.setattr("pymemcache.client.base.Client.set_many", lambda *a, **k: ["x"])
    with pytest.raises(StoreUnavailable, match="did not store"):
        store.add_dead([make_record(now)], now)
