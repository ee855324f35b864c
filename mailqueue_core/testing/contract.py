"""The store contract as a pytest test class, for bundled and third-party stores.

Use it by subclassing and providing a ``store`` fixture that yields a fresh,
empty store in a namespace of its own::

    from mailqueue_core.testing import StoreContract

    class TestMyStore(StoreContract):
        @pytest.fixture
        def store(self, tmp_path):
            s = MyStore(f"mystore://{tmp_path}", namespace="test")
            yield s
            s.close()

The ``store_factory`` fixture builds more stores on the same location (another
namespace, or a second client on the same one); by default it calls
``type(store)(store.location, namespace=..., **store.options)``. Override it
when your store is built differently.

Tests that need a capability the store lacks (see ``Store.capabilities``) are
skipped by capability, never by store name.

A store whose records can be damaged behind its back (by an operator, an
eviction, a bug in another client) overrides :meth:`StoreContract.damage` to
do that through the store's own server, as such an actor would; the damaged
record tests then prove that one bad record never stops the queue. A test
class that does not override it has those tests skipped, saying why.
"""

from __future__ import annotations

import enum
import threading
import time
import uuid
from collections.abc import Callable, Iterator

import pytest

from mailqueue_core.errors import LeaseLost
from mailqueue_core.store import Capability, Claim, Record, Store
from mailqueue_core.testing.console_contract import ConsoleContract

__all__ = ["Damage", "StoreContract", "make_record"]

LEASE = 30.0


def make_record(
    due: float,
    *,
    created: float | None = None,
    data: bytes | None = None,
    id: str | None = None,
    attempts: int = 0,
    last_error: str | None = None,
) -> Record:
    """A record with a unique id, for tests."""
    mid = id or uuid.uuid4().hex
    return Record(
        id=mid,
        data=data if data is not None else b'{"test": "%s"}' % mid.encode(),
        created=due if created is None else created,
        due=due,
        attempts=attempts,
        last_error=last_error,
    )


class Damage(enum.Enum):
    """Ways a record can be damaged behind a store's back (see ``StoreContract.damage``)."""

    MISSING = "missing"
    """The record is gone entirely, but the store's index still names its id."""
    PARTIAL = "partial"
    """Part of the record is gone: a field the store needs (the created time, the data)."""
    MALFORMED = "malformed"
    """A field holds a value of the wrong type (``attempts = "1.5"``, a key of another type)."""


class StoreContract(ConsoleContract):
    """Every promise of :class:`mailqueue_core.store.Store`, as tests."""

    def damage(self, store: Store, record_id: str, how: Damage) -> None:
        """Damage the queued record ``record_id`` of ``store`` as ``how`` says.

        Override it in a store's test class, working through the store's own
        server or files (as an operator or a stray client would), never
        through the store object's private attributes.
        """
        pytest.skip(f"{type(self).__name__} does not override damage()")

    @pytest.fixture
    def store(self) -> Store:  # pragma: no cover - subclasses provide it
        raise NotImplementedError("a StoreContract subclass must provide a 'store' fixture")

    @pytest.fixture
    def store_factory(self, store: Store) -> Iterator[Callable[..., Store]]:
        made: list[Store] = []

        def factory(namespace: str | None = None) -> Store:
            options = dict(getattr(store, "options", {}))
            s = type(store)(store.location, namespace=namespace or store.namespace, **options)
            made.append(s)
            return s

        yield factory
        for s in made:
            s.close()

    @pytest.fixture
    def now(self) -> float:
        # Real wall-clock time, so stores that use server-side expiry as a
        # safety net still agree with the injected clock within a margin.
        return float(int(time.time()))

    # -- enqueue and fetch ---------------------------------------------------

    def test_empty_store_has_nothing_due(self, store: Store, now: float) -> None:
        assert store.fetch_due(now, 10, LEASE) == []
        stats = store.stats(now)
        assert (stats.ready, stats.scheduled, stats.in_flight, stats.dead) == (0, 0, 0, 0)
        assert stats.oldest_ready_age is None
        assert store.dead_letters() == []

    def test_claims_come_in_due_order_up_to_limit(self, store: Store, now: float) -> None:
        records = [make_record(now - i) for i in range(5)]
        store.enqueue(records)
        claims = store.fetch_due(now, 3, LEASE)
        assert [c.id for c in claims] == [r.id for r in reversed(records)][:3]
        rest = store.fetch_due(now, 10, LEASE)
        assert [c.id for c in rest] == [records[1].id, records[0].id]

    def test_record_round_trips_exactly(self, store: Store, now: float) -> None:
        data = bytes(range(256)) * 64 + "ünïcødé ✉".encode()
        record = make_record(now, created=now - 50, data=data, attempts=2, last_error="451 later")
        store.enqueue([record])
        (claim,) = store.fetch_due(now, 10, LEASE)
        assert claim.record.data == data
        assert claim.record.id == record.id
        assert claim.record.created == pytest.approx(now - 50, abs=1e-3)
        assert claim.record.attempts == 2
        assert claim.record.last_error == "451 later"
        assert claim.expires == pytest.approx(now + LEASE, abs=1e-3)
        assert claim.token

    def test_not_due_is_not_claimed(self, store: Store, now: float) -> None:
        later = make_record(now + 60)
        store.enqueue([later])
        assert store.fetch_due(now, 10, LEASE) == []
        assert store.stats(now).scheduled == 1
        (claim,) = store.fetch_due(now + 60, 10, LEASE)
        assert claim.id == later.id

    def test_enqueue_same_id_twice_keeps_one_copy(self, store: Store, now: float) -> None:
        record = make_record(now)
        store.enqueue([record])
        store.enqueue([record])
        assert len(store.fetch_due(now, 10, LEASE)) == 1
        assert store.fetch_due(now, 10, LEASE) == []

    def test_enqueue_many_at_once(self, store: Store, now: float) -> None:
        records = [make_record(now) for _ in range(250)]
        store.enqueue(records)
        got: list[Claim] = []
        while batch := store.fetch_due(now, 100, LEASE):
            got.extend(batch)
        assert sorted(c.id for c in got) == sorted(r.id for r in records)

    # -- leases ----------------------------------------------------------------

    def test_claimed_message_is_invisible_until_lease_expires(
        self, store: Store, now: float
    ) -> None:
        store.enqueue([make_record(now)])
        (first,) = store.fetch_due(now, 10, LEASE)
        assert store.fetch_due(now + LEASE - 1, 10, LEASE) == []
        stats = store.stats(now + 1)
        assert (stats.ready, stats.in_flight) == (0, 1)
        (second,) = store.fetch_due(now + LEASE + 1, 10, LEASE)
        assert second.id == first.id
        assert second.token != first.token
        assert second.record.attempts == first.record.attempts

    def test_claims_report_the_original_due_and_release_restores_it(
        self, store: Store, now: float
    ) -> None:
        first, second = make_record(now - 20), make_record(now - 10)
        store.enqueue([first, second])
        (claim,) = store.fetch_due(now, 1, LEASE)
        assert claim.record.due == pytest.approx(now - 20, abs=1e-3)
        claims = {c.id: c for c in store.fetch_due(now + LEASE + 1, 2, LEASE)}
        # Both come back (in either order: a store may keep an expired claim
        # where it was, or put it at its expiry), each with its original due.
        assert set(claims) == {first.id, second.id}
        assert claims[first.id].record.due == pytest.approx(now - 20, abs=1e-3)
        assert claims[second.id].record.due == pytest.approx(now - 10, abs=1e-3)
        store.release(claims[first.id])
        store.release(claims[second.id])
        again = store.fetch_due(now + LEASE + 1, 2, LEASE)
        assert [c.id for c in again] == [first.id, second.id]

    def test_expired_lease_counts_as_stuck(self, store: Store, now: float) -> None:
        store.enqueue([make_record(now)])
        store.fetch_due(now, 10, LEASE)
        stats = store.stats(now + LEASE + 1)
        assert (stats.ready, stats.in_flight, stats.stuck) == (0, 0, 1)
        (again,) = store.fetch_due(now + LEASE + 1, 10, LEASE)
        stats = store.stats(now + LEASE + 2)
        assert (stats.ready, stats.in_flight, stats.stuck) == (0, 1, 0)
        store.ack(again)

    @pytest.mark.parametrize("action", ["ack", "requeue", "release", "bury"])
    def test_stale_claim_is_refused_and_newer_claim_wins(
        self, store: Store, now: float, action: str
    ) -> None:
        store.enqueue([make_record(now)])
        (stale,) = store.fetch_due(now, 10, LEASE)
        (fresh,) = store.fetch_due(now + LEASE + 1, 10, LEASE)
        with pytest.raises(LeaseLost):
            self._act(store, stale, action, now + LEASE + 2)
        # Nothing changed: the newer claim still holds the message and can ack it.
        assert store.stats(now + LEASE + 2).in_flight == 1
        assert store.dead_letters() == []
        store.ack(fresh)
        assert store.fetch_due(now + 10 * LEASE, 10, LEASE) == []

    @pytest.mark.parametrize("action", ["ack", "requeue", "release", "bury"])
    def test_claim_on_a_finished_message_is_refused(
        self, store: Store, now: float, action: str
    ) -> None:
        store.enqueue([make_record(now)])
        (claim,) = store.fetch_due(now, 10, LEASE)
        store.ack(claim)
        with pytest.raises(LeaseLost):
            self._act(store, claim, action, now)

    def test_expired_but_unclaimed_lease_can_still_ack(self, store: Store, now: float) -> None:
        store.enqueue([make_record(now)])
        (claim,) = store.fetch_due(now, 10, LEASE)
        store.ack(claim)  # no one else took it: the token still holds
        assert store.fetch_due(now + LEASE + 1, 10, LEASE) == []

    def _act(self, store: Store, claim: Claim, action: str, now: float) -> None:
        if action == "ack":
            store.ack(claim)
        elif action == "requeue":
            store.requeue(claim, now, "451 try later")
        elif action == "release":
            store.release(claim)
        else:
            store.bury(claim, "550 no", now)

    # -- outcomes --------------------------------------------------------------

    def test_ack_removes_the_message(self, store: Store, now: float) -> None:
        store.enqueue([make_record(now)])
        (claim,) = store.fetch_due(now, 10, LEASE)
        store.ack(claim)
        assert store.fetch_due(now + 10 * LEASE, 10, LEASE) == []
        stats = store.stats(now + 10 * LEASE)
        assert (stats.ready, stats.scheduled, stats.in_flight, stats.dead) == (0, 0, 0, 0)

    def test_requeue_counts_attempt_and_waits_until_due(self, store: Store, now: float) -> None:
        record = make_record(now, created=now - 5)
        store.enqueue([record])
        (claim,) = store.fetch_due(now, 10, LEASE)
        store.requeue(claim, now + 120, "451 greylisted")
        assert store.fetch_due(now + 119, 10, LEASE) == []
        stats = store.stats(now + 1)
        assert (stats.scheduled, stats.in_flight) == (1, 0)
        (again,) = store.fetch_due(now + 120, 10, LEASE)
        assert again.id == record.id
        assert again.record.attempts == 1
        assert again.record.last_error == "451 greylisted"
        assert again.record.data == record.data
        assert again.record.created == pytest.approx(now - 5, abs=1e-3)

    def test_requeue_for_now_is_claimable_at_once(self, store: Store, now: float) -> None:
        store.enqueue([make_record(now)])
        (claim,) = store.fetch_due(now, 10, LEASE)
        store.requeue(claim, now, None)
        (again,) = store.fetch_due(now, 10, LEASE)
        assert again.record.attempts == 1

    def test_release_gives_back_untouched(self, store: Store, now: float) -> None:
        store.enqueue([make_record(now, attempts=3, last_error="x")])
        (claim,) = store.fetch_due(now, 10, LEASE)
        store.release(claim)
        (again,) = store.fetch_due(now, 10, LEASE)
        assert again.id == claim.id
        assert again.record.attempts == 3
        assert again.record.last_error == "x"

    def test_bury_moves_to_dead_letters(self, store: Store, now: float) -> None:
        record = make_record(now, attempts=2)
        store.enqueue([record])
        (claim,) = store.fetch_due(now, 10, LEASE)
        store.bury(claim, "550 5.1.1 no such user", now + 1)
        assert store.fetch_due(now + 10 * LEASE, 10, LEASE) == []
        (letter,) = store.dead_letters()
        assert letter.record.id == record.id
        assert letter.record.data == record.data
        assert letter.record.attempts == 3  # the attempt that buried it counts
        assert letter.reason == "550 5.1.1 no such user"
        assert letter.buried == pytest.approx(now + 1, abs=1e-3)
        assert not letter.lost
        stats = store.stats(now + 1)
        assert (stats.ready, stats.in_flight, stats.dead) == (0, 0, 1)

    def test_add_dead_records_directly(self, store: Store, now: float) -> None:
        record = make_record(now, last_error="550 refused")
        store.add_dead([record], now)
        assert store.fetch_due(now, 10, LEASE) == []
        (letter,) = store.dead_letters()
        assert (letter.record.id, letter.reason) == (record.id, "550 refused")

    def test_dead_letters_oldest_first_with_limit(self, store: Store, now: float) -> None:
        records = [make_record(now) for _ in range(3)]
        store.enqueue(records)
        claims = {c.id: c for c in store.fetch_due(now, 10, LEASE)}
        for offset, record in enumerate(records):
            store.bury(claims[record.id], f"reason {offset}", now + offset)
        assert [d.record.id for d in store.dead_letters()] == [r.id for r in records]
        assert [d.record.id for d in store.dead_letters(limit=2)] == [r.id for r in records[:2]]

    def test_revive_by_id_and_all(self, store: Store, now: float) -> None:
        records = [make_record(now - 100, created=now - 100) for _ in range(3)]
        store.enqueue(records)
        for claim in store.fetch_due(now, 10, LEASE):
            store.requeue(claim, now, "451")
        for claim in store.fetch_due(now, 10, LEASE):
            store.bury(claim, "too old", now)
        assert store.revive([records[0].id, "no-such-id"], now + 10) == 1
        (claim,) = store.fetch_due(now + 10, 10, LEASE)
        assert claim.id == records[0].id
        assert claim.record.attempts == 0
        assert claim.record.created == pytest.approx(now + 10, abs=1e-3)
        assert len(store.dead_letters()) == 2
        assert store.revive(None, now + 20) == 2
        assert store.dead_letters() == []
        assert {c.id for c in store.fetch_due(now + 20, 10, LEASE)} == {
            records[1].id,
            records[2].id,
        }

    def test_purge_deletes_only_older_dead_letters(self, store: Store, now: float) -> None:
        old, new = make_record(now), make_record(now)
        store.enqueue([old, new])
        claims = {c.id: c for c in store.fetch_due(now, 10, LEASE)}
        store.bury(claims[old.id], "old", now - 3600)
        store.bury(claims[new.id], "new", now)
        assert store.purge(now - 60) == 1
        assert [d.record.id for d in store.dead_letters()] == [new.id]
        assert store.stats(now).dead == 1
        assert store.purge(now + 1) == 1
        assert store.dead_letters() == []

    def test_stats_counts_each_state(self, store: Store, now: float) -> None:
        store.enqueue([make_record(now - 30, created=now - 30), make_record(now - 10)])
        store.enqueue([make_record(now + 100)])
        store.enqueue([make_record(now - 5)])
        held = store.fetch_due(now, 1, LEASE)  # the oldest
        assert len(held) == 1
        store.enqueue([make_record(now)])
        (to_bury,) = store.fetch_due(now, 1, LEASE)
        store.bury(to_bury, "550", now)
        stats = store.stats(now)
        assert (stats.ready, stats.scheduled, stats.in_flight, stats.dead) == (2, 1, 1, 1)
        assert stats.oldest_ready_age == pytest.approx(5, abs=1e-3)
        assert stats.lost == 0

    # -- damaged records (the test class's damage() hook) ----------------------

    @pytest.mark.parametrize("how", [Damage.PARTIAL, Damage.MALFORMED])
    def test_a_damaged_record_is_claimed_for_burial_and_the_rest_go_on(
        self, store: Store, now: float, how: Damage
    ) -> None:
        records = [make_record(now - 3), make_record(now - 2), make_record(now - 1)]
        store.enqueue(records)
        self.damage(store, records[1].id, how)
        claims = {c.id: c for c in store.fetch_due(now, 10, LEASE)}
        for good in (records[0], records[2]):
            assert claims[good.id].record.damage is None
            assert claims[good.id].record.data == good.data
            store.ack(claims[good.id])
        bad = claims.get(records[1].id)
        if bad is not None:
            assert bad.record.damage, "a damaged record must say what is wrong"
            store.bury(bad, f"damaged record: {bad.record.damage}", now)
        self._assert_only_dead_left(store, now, records[1].id)

    def test_a_missing_record_is_reported_and_never_recreated(
        self, store: Store, now: float
    ) -> None:
        records = [make_record(now - 3), make_record(now - 2), make_record(now - 1)]
        store.enqueue(records)
        self.damage(store, records[1].id, Damage.MISSING)
        claims = {c.id: c for c in store.fetch_due(now, 10, LEASE)}
        for good in (records[0], records[2]):
            store.ack(claims[good.id])
        bad = claims.get(records[1].id)
        if bad is not None:
            assert bad.record.damage
            assert bad.record.data == b""
            store.bury(bad, f"damaged record: {bad.record.damage}", now)
        self._assert_only_dead_left(store, now, records[1].id)

    def test_damage_found_by_a_later_claim_does_not_hold_the_batch(
        self, store: Store, now: float
    ) -> None:
        records = [make_record(now - 2), make_record(now - 1)]
        store.enqueue(records)
        (first,) = store.fetch_due(now, 1, LEASE)
        store.release(first)
        self.damage(store, records[0].id, Damage.MALFORMED)
        claims = store.fetch_due(now, 10, LEASE)
        assert records[1].id in {c.id for c in claims}
        for claim in claims:
            if claim.record.damage:
                store.bury(claim, claim.record.damage, now)
            else:
                store.ack(claim)
        self._assert_only_dead_left(store, now, records[0].id)

    def _assert_only_dead_left(self, store: Store, now: float, dead_id: str) -> None:
        assert store.fetch_due(now + 10 * LEASE, 10, LEASE) == []
        stats = store.stats(now + 10 * LEASE)
        assert (stats.ready, stats.scheduled, stats.in_flight, stats.stuck) == (0, 0, 0, 0)
        assert stats.dead + stats.lost == 1
        assert [d.record.id for d in store.dead_letters()] == [dead_id]

    # -- isolation and concurrency --------------------------------------------

    def test_namespaces_never_see_each_other(
        self, store: Store, store_factory: Callable[..., Store], now: float
    ) -> None:
        other = store_factory(namespace=store.namespace + "-other")
        mine = make_record(now)
        store.enqueue([mine])
        other.enqueue([make_record(now)])
        assert other.stats(now).ready == 1
        (theirs,) = other.fetch_due(now, 10, LEASE)
        other.bury(theirs, "550", now - 7200)
        assert store.dead_letters() == []
        assert store.purge(now) == 0
        assert store.revive(None, now) == 0
        assert len(other.dead_letters()) == 1
        stats = store.stats(now)
        assert (stats.ready, stats.dead) == (1, 0)
        with pytest.raises(LeaseLost):
            store.ack(theirs)
        (claim,) = store.fetch_due(now, 10, LEASE)
        assert claim.id == mine.id

    def test_second_client_sees_the_same_queue(
        self, store: Store, store_factory: Callable[..., Store], now: float
    ) -> None:
        twin = store_factory()
        record = make_record(now)
        store.enqueue([record])
        (claim,) = twin.fetch_due(now, 10, LEASE)
        assert claim.id == record.id
        assert store.fetch_due(now, 10, LEASE) == []
        store.ack(claim)
        assert twin.stats(now + 10 * LEASE).in_flight == 0

    def test_concurrent_claimers_get_disjoint_messages(
        self, store: Store, store_factory: Callable[..., Store], now: float
    ) -> None:
        records = [make_record(now) for _ in range(400)]
        store.enqueue(records)
        clients = [store_factory() for _ in range(4)]
        got: list[list[str]] = [[] for _ in clients]
        start = threading.Barrier(len(clients))

        def claim_all(i: int) -> None:
            start.wait()
            while batch := clients[i].fetch_due(now, 7, LEASE):
                got[i].extend(c.id for c in batch)

        threads = [threading.Thread(target=claim_all, args=(i,)) for i in range(len(clients))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        every = [mid for ids in got for mid in ids]
        assert len(every) == len(set(every)) == len(records)

    # -- shared rate limits (capability "rate_limit") -------------------------------

    @pytest.fixture
    def limits(self, store: Store) -> Store:
        if Capability.RATE_LIMIT not in store.capabilities:
            pytest.skip(f"{type(store).__name__} does not declare the 'rate_limit' capability")
        return store

    def test_token_bucket(self, limits: Store, now: float) -> None:
        assert [limits.take_token("b", 1.0, 3, now) for _ in range(3)] == [0.0, 0.0, 0.0]
        assert limits.take_token("b", 1.0, 3, now) == pytest.approx(1.0, abs=1e-3)
        assert limits.take_token("b", 1.0, 3, now + 0.5) == pytest.approx(0.5, abs=1e-3)
        assert limits.take_token("b", 1.0, 3, now + 1.0) == 0.0
        # Refills up to the burst, never beyond.
        later = now + 100
        assert [limits.take_token("b", 1.0, 3, later) for _ in range(4)][:3] == [0.0] * 3
        assert limits.take_token("other", 1.0, 3, now) == 0.0  # buckets are apart

    def test_buckets_are_shared_by_clients_and_apart_by_namespace(
        self, limits: Store, store_factory: Callable[..., Store], now: float
    ) -> None:
        twin = store_factory()
        assert limits.take_token("b", 0.5, 1, now) == 0.0
        assert twin.take_token("b", 0.5, 1, now) == pytest.approx(2.0, abs=1e-3)
        other = store_factory(namespace=limits.namespace + "-other")
        assert other.take_token("b", 0.5, 1, now) == 0.0

    def test_concurrent_takers_never_exceed_the_bucket(
        self, limits: Store, store_factory: Callable[..., Store], now: float
    ) -> None:
        clients = [store_factory() for _ in range(4)]
        taken: list[int] = [0] * len(clients)
        start = threading.Barrier(len(clients))

        def take(i: int) -> None:
            start.wait()
            for _ in range(20):
                if clients[i].take_token("shared", 0.001, 25, now) == 0.0:
                    taken[i] += 1

        threads = [threading.Thread(target=take, args=(i,)) for i in range(len(clients))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sum(taken) == 25

    def test_connection_slots(
        self, limits: Store, store_factory: Callable[..., Store], now: float
    ) -> None:
        twin = store_factory()
        first = limits.acquire_slot("conn", 2, 30, now)
        second = twin.acquire_slot("conn", 2, 30, now)
        assert first and second and first != second
        assert limits.acquire_slot("conn", 2, 30, now) is None
        twin.release_slot("conn", second)
        third = limits.acquire_slot("conn", 2, 30, now)
        assert third is not None
        # A holder that died gives its slot back when the lease runs out.
        assert twin.acquire_slot("conn", 2, 30, now + 31) is not None
        limits.release_slot("conn", "no-such-token")
