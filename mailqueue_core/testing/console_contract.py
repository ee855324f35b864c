"""The console's part of the store contract: browsing, single-record actions and
the pause flag (capabilities ``browse`` and ``pause``).

Mixed into :class:`mailqueue_core.testing.StoreContract`; a store that lacks a
capability has its tests skipped, saying so.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from mailqueue_core.store import Capability, Entry, Record, SentRecord, State, Store

__all__ = ["ConsoleContract"]

LEASE = 30.0


def _record(due: float, mid: str, **fields: object) -> Record:
    from mailqueue_core.testing.contract import make_record

    return make_record(due, id=mid, **fields)  # type: ignore[arg-type]


def _walk(
    store: Store,
    state: State,
    now: float,
    limit: int,
    *,
    newest_first: bool = False,
    cursor: str | None = None,
) -> list[str]:
    """Every id of ``state`` from ``cursor`` on, page by page; fails on a
    cursor that never ends."""
    ids: list[str] = []
    for _ in range(1000):
        page = store.browse(state, now, limit=limit, cursor=cursor, newest_first=newest_first)
        assert len(page.entries) <= limit
        assert all(entry.state is state for entry in page.entries)
        ids += [entry.id for entry in page.entries]
        cursor = page.cursor
        if cursor is None:
            return ids
    raise AssertionError("browse() kept returning a cursor")


class ConsoleContract:
    """Tests of :meth:`Store.browse`, :meth:`Store.get`, :meth:`Store.delete`,
    :meth:`Store.send_now`, :meth:`Store.paused` and :meth:`Store.set_paused`."""

    damage: Callable[..., None]

    @pytest.fixture
    def console(self, store: Store) -> Store:
        if Capability.BROWSE not in store.capabilities:
            pytest.skip(f"{type(store).__name__} does not declare the 'browse' capability")
        return store

    @pytest.fixture
    def pausable(self, store: Store) -> Store:
        if Capability.PAUSE not in store.capabilities:
            pytest.skip(f"{type(store).__name__} does not declare the 'pause' capability")
        return store

    def _one_of_each(self, store: Store, now: float) -> dict[State, list[str]]:
        """Records in every state: ready r0..r2, scheduled s0 s1, in flight f0
        (due at now - 28, lease until now + 32), stuck k0 (lease ran out at
        now - 10) and dead d0 (buried at ``now``)."""
        store.enqueue([_record(now - 30, "k0")])
        (stuck,) = store.fetch_due(now - 30, 1, 20.0)
        store.enqueue([_record(now - 29, "d0")])
        (dead,) = store.fetch_due(now - 29, 1, LEASE)
        store.bury(dead, "refused for good", now)
        store.enqueue([_record(now - 28, "f0")])
        (flying,) = store.fetch_due(now - 28, 1, 60.0)
        store.enqueue([_record(now - 3 + i, f"r{i}") for i in range(3)])
        store.enqueue([_record(now + 100, "s1"), _record(now + 50, "s0")])
        assert stuck.id == "k0" and flying.id == "f0"
        return {
            State.READY: ["r0", "r1", "r2"],
            State.SCHEDULED: ["s0", "s1"],
            State.IN_FLIGHT: ["f0"],
            State.STUCK: ["k0"],
            State.DEAD: ["d0"],
        }

    def test_each_state_is_listed_in_its_order(self, console: Store, now: float) -> None:
        expected = self._one_of_each(console, now)
        for state, ids in expected.items():
            assert _walk(console, state, now, 10) == ids, state
            assert _walk(console, state, now, 10, newest_first=True) == ids[::-1], state

    def test_entries_carry_the_record_and_its_state_times(
        self, console: Store, now: float
    ) -> None:
        self._one_of_each(console, now)
        record = _record(now - 1, "full", attempts=2, last_error="421 try later", created=now - 60)
        console.enqueue([record])
        listed = {e.id: e for e in console.browse(State.READY, now, limit=10).entries}
        assert listed["full"].record == record
        assert listed["full"].expires is None and listed["full"].buried is None
        (flying,) = console.browse(State.IN_FLIGHT, now).entries
        assert flying.record.due == now - 28 and flying.expires == pytest.approx(now + 32)
        (stuck,) = console.browse(State.STUCK, now).entries
        assert stuck.expires == pytest.approx(now - 10)
        (dead,) = console.browse(State.DEAD, now).entries
        assert dead.reason == "refused for good" and dead.buried == pytest.approx(now)
        assert dead.record.attempts == 1 and not dead.lost

    def test_pages_follow_each_other_without_gap_or_repeat(
        self, console: Store, now: float
    ) -> None:
        ids = [f"m{i:02d}" for i in range(11)]
        # Three share a due time: ties are ordered by id, across page ends too.
        dues = [now - 20 + i for i in range(8)] + [now - 5] * 3
        console.enqueue([_record(due, mid) for due, mid in zip(dues, ids, strict=True)])
        for limit in (1, 3, 4, 50):
            assert _walk(console, State.READY, now, limit) == ids
            assert _walk(console, State.READY, now, limit, newest_first=True) == ids[::-1]

    def test_a_cursor_survives_changes_between_pages(self, console: Store, now: float) -> None:
        console.enqueue([_record(now - 20 + i, f"m{i:02d}") for i in range(10)])
        first = console.browse(State.READY, now, limit=4)
        assert [e.id for e in first.entries] == ["m00", "m01", "m02", "m03"]
        assert first.cursor is not None
        # The last listed record goes, one ahead goes, and new ones arrive
        # on both sides of the cursor.
        (claim,) = console.fetch_due(now - 20 + 3.5, 1, LEASE)
        assert claim.id == "m00"
        console.ack(claim)
        assert console.delete(["m03", "m05"], now) == 2
        console.enqueue([_record(now - 30, "early"), _record(now - 1, "late")])
        rest = _walk(console, State.READY, now, 4, cursor=first.cursor)
        assert rest == ["m04", "m06", "m07", "m08", "m09", "late"]

    def test_a_cursor_the_store_did_not_make_is_refused(self, console: Store, now: float) -> None:
        console.enqueue([_record(now - 1, "m0")])
        for junk in ("", "not a cursor", "{}", "[1, 2, 3]", "\x00" * 8):
            with pytest.raises(ValueError):
                console.browse(State.READY, now, cursor=junk)
        with pytest.raises(ValueError):
            console.browse(State.READY, now, limit=0)

    def test_scheduled_dead_and_lost_pages_work_deep(self, console: Store, now: float) -> None:
        console.enqueue([_record(now + 10 + i, f"s{i}") for i in range(7)])
        assert _walk(console, State.SCHEDULED, now, 2) == [f"s{i}" for i in range(7)]
        console.enqueue([_record(now - 100 + i, f"d{i}") for i in range(5)])
        for claim in console.fetch_due(now, 5, LEASE):
            console.bury(claim, "no", now + int(claim.id[1:]))
        assert _walk(console, State.DEAD, now, 2) == [f"d{i}" for i in range(5)]
        assert _walk(console, State.DEAD, now, 2, newest_first=True) == [
            f"d{i}" for i in reversed(range(5))
        ]

    def test_get_finds_a_record_in_any_state(self, console: Store, now: float) -> None:
        expected = self._one_of_each(console, now)
        for state, ids in expected.items():
            for mid in ids:
                entry = console.get(mid, now)
                assert isinstance(entry, Entry) and entry.state is state and entry.id == mid
        assert console.get("no-such-id", now) is None
        # Time moves on: the in-flight claim becomes stuck, the scheduled ready.
        later = console.get("f0", now + 100)
        assert later is not None and later.state is State.STUCK
        ready = console.get("s0", now + 50)
        assert ready is not None and ready.state is State.READY

    def test_browse_and_get_change_nothing(self, console: Store, now: float) -> None:
        self._one_of_each(console, now)
        before = console.stats(now)
        for state in State:
            console.browse(state, now)
        console.get("k0", now)
        assert console.stats(now) == before
        # The stuck record is still claimable; the in-flight one still is not.
        assert {c.id for c in console.fetch_due(now, 10, LEASE)} == {"k0", "r0", "r1", "r2"}

    def test_delete_removes_queued_and_dead_but_never_in_flight(
        self, console: Store, now: float
    ) -> None:
        self._one_of_each(console, now)
        assert console.delete(["r1", "s0", "d0", "k0", "f0", "unknown"], now) == 4
        for gone in ("r1", "s0", "d0", "k0"):
            assert console.get(gone, now) is None
        flying = console.get("f0", now)
        assert flying is not None and flying.state is State.IN_FLIGHT
        stats = console.stats(now)
        assert (stats.ready, stats.scheduled, stats.in_flight, stats.stuck, stats.dead) == (
            2,
            1,
            1,
            0,
            0,
        )
        assert {c.id for c in console.fetch_due(now + 1000, 10, LEASE)} == {"f0", "r0", "r2", "s1"}

    def test_a_deleted_stuck_record_refuses_its_old_claim(
        self, console: Store, now: float
    ) -> None:
        from mailqueue_core.errors import LeaseLost

        console.enqueue([_record(now - 30, "k0")])
        (claim,) = console.fetch_due(now - 30, 1, 5.0)
        assert console.delete(["k0"], now) == 1
        with pytest.raises(LeaseLost):
            console.ack(claim)

    def test_send_now_makes_waiting_records_due_and_keeps_attempts(
        self, console: Store, now: float
    ) -> None:
        self._one_of_each(console, now)
        console.enqueue([_record(now + 500, "retry", attempts=3, last_error="421")])
        changed = console.send_now(["s1", "retry", "r0", "f0", "d0", "unknown"], now)
        assert changed == 2
        ready = _walk(console, State.READY, now, 10)
        assert set(ready) == {"r0", "r1", "r2", "s1", "retry"}
        entry = console.get("retry", now)
        assert entry is not None and entry.record.attempts == 3
        assert entry.record.last_error == "421" and entry.record.due == now
        assert _walk(console, State.SCHEDULED, now, 10) == ["s0"]
        assert _walk(console, State.DEAD, now, 10) == ["d0"]
        claimed = [c.id for c in console.fetch_due(now, 10, LEASE)]
        assert set(claimed) == {"k0", "r0", "r1", "r2", "s1", "retry"}

    def test_a_damaged_record_never_stops_a_listing(self, console: Store, now: float) -> None:
        from mailqueue_core.testing.contract import Damage

        console.enqueue([_record(now - 10 + i, f"m{i}") for i in range(3)])
        self.damage(console, "m1", Damage.MALFORMED)
        listed = console.browse(State.READY, now, limit=10).entries
        good = [e.id for e in listed if e.record.damage is None]
        assert good == ["m0", "m2"]
        assert all(e.id == "m1" for e in listed if e.record.damage is not None)
        console.get("m1", now)  # answers without raising

    def test_namespaces_never_see_each_others_records(
        self, console: Store, store_factory: Callable[..., Store], now: float
    ) -> None:
        other = store_factory(namespace=f"{console.namespace}-other")
        console.enqueue([_record(now - 1, "mine")])
        other.enqueue([_record(now - 1, "theirs")])
        assert _walk(console, State.READY, now, 10) == ["mine"]
        assert console.get("theirs", now) is None
        assert console.delete(["theirs"], now) == 0
        assert console.send_now(["theirs"], now) == 0
        assert _walk(other, State.READY, now, 10) == ["theirs"]

    # -- the sent log ---------------------------------------------------------------

    @pytest.fixture
    def sent_logging(self, store: Store) -> Store:
        if Capability.SENT_LOG not in store.capabilities:
            pytest.skip(f"{type(store).__name__} does not declare the 'sent_log' capability")
        return store

    def _sent(self, now: float, n: int, **fields: object) -> list[SentRecord]:
        return [
            SentRecord(
                id=f"s{i:02d}",
                sent=now - 100 + i,
                recipients=(f"to{i}@example.com", "cc@example.org"),
                subject=f"Receipt {i}",
                message_id=f"<{i}@shop.example.com>",
                transport="smtp relay:25",
                provider_id=None if i % 2 else f"p-{i}",
                attempts=1 + i % 3,
                created=now - 200 + i,
                **fields,  # type: ignore[arg-type]
            )
            for i in range(n)
        ]

    def test_the_sent_log_pages_newest_first_and_round_trips(
        self, sent_logging: Store, now: float
    ) -> None:
        records = self._sent(now, 7)
        sent_logging.log_sent(records[:3], now + 3600)
        sent_logging.log_sent(records[3:], now + 3600)
        for limit in (1, 3, 50):
            pages, cursor = [], None
            while True:
                page = sent_logging.sent_log(now, limit=limit, cursor=cursor)
                assert len(page.entries) <= limit
                pages += page.entries
                if (cursor := page.cursor) is None:
                    break
            assert pages == records[::-1]
        oldest = sent_logging.sent_log(now, limit=2, newest_first=False)
        assert [r.id for r in oldest.entries] == ["s00", "s01"]
        with pytest.raises(ValueError):
            sent_logging.sent_log(now, cursor="not a cursor")

    def test_the_sent_log_keeps_a_body_only_when_given_one(
        self, sent_logging: Store, now: float
    ) -> None:
        (record,) = self._sent(now, 1, data=b'{"body": "kept"}')
        sent_logging.log_sent([record], now + 60)
        assert sent_logging.sent_log(now).entries == [record]

    def test_the_sent_log_counts_prunes_and_never_doubles(
        self, sent_logging: Store, now: float
    ) -> None:
        records = self._sent(now, 6)
        sent_logging.log_sent(records, now + 3600)
        sent_logging.log_sent(records[:2], now + 3600)  # a batch logged again
        assert sent_logging.count_sent(now - 200) == 6
        assert sent_logging.count_sent(now - 97) == 3  # s03, s04, s05
        assert sent_logging.prune_sent(now - 97) == 3
        assert [r.id for r in sent_logging.sent_log(now).entries] == ["s05", "s04", "s03"]
        assert sent_logging.prune_sent(now - 97) == 0

    def test_the_sent_log_is_shared_and_kept_per_namespace(
        self, sent_logging: Store, store_factory: Callable[..., Store], now: float
    ) -> None:
        twin = store_factory()
        other = store_factory(namespace=f"{sent_logging.namespace}-other")
        sent_logging.log_sent(self._sent(now, 2), now + 3600)
        assert [r.id for r in twin.sent_log(now).entries] == ["s01", "s00"]
        assert other.sent_log(now).entries == [] and other.count_sent(0) == 0
        assert other.prune_sent(now + 1) == 0
        assert twin.count_sent(0) == 2

    # -- wake-ups -------------------------------------------------------------------

    @pytest.fixture
    def waking(self, store: Store) -> Store:
        if Capability.WAKE not in store.capabilities:
            pytest.skip(f"{type(store).__name__} does not declare the 'wake' capability")
        return store

    def test_an_enqueue_wakes_a_waiting_client(
        self, waking: Store, store_factory: Callable[..., Store], now: float
    ) -> None:
        import threading
        import time

        waiter = store_factory()
        waiter.fetch_due(now, 10, LEASE)
        answers: list[tuple[bool, float]] = []

        def wait() -> None:
            started = time.monotonic()
            answers.append((waiter.wait_for_mail(10.0), time.monotonic() - started))

        thread = threading.Thread(target=wait)
        thread.start()
        time.sleep(0.2)
        waking.enqueue([_record(now, "new")])
        thread.join(15)
        ((woken, waited),) = answers
        assert woken and waited < 9.0  # woken, not timed out

    def test_a_wait_with_nothing_new_times_out(
        self, waking: Store, store_factory: Callable[..., Store], now: float
    ) -> None:
        import time

        waiter = store_factory()
        waiter.fetch_due(now, 10, LEASE)
        started = time.monotonic()
        assert waiter.wait_for_mail(0.3) is False
        assert time.monotonic() - started >= 0.25

    def test_mail_queued_after_a_claim_wakes_the_next_wait_once(
        self, waking: Store, store_factory: Callable[..., Store], now: float
    ) -> None:
        waiter = store_factory()
        assert waiter.fetch_due(now, 10, LEASE) == []
        waking.enqueue([_record(now, "between")])  # before the wait began
        assert waiter.wait_for_mail(5.0) is True
        assert waiter.wait_for_mail(0.2) is False  # answered once

    def test_a_release_and_a_requeue_for_now_wake_too(
        self, waking: Store, store_factory: Callable[..., Store], now: float
    ) -> None:
        waiter = store_factory()
        waking.enqueue([_record(now - 2, "a"), _record(now - 1, "b")])
        first, second = waking.fetch_due(now, 2, LEASE)
        waiter.fetch_due(now, 10, LEASE)
        waking.release(first)
        assert waiter.wait_for_mail(5.0) is True
        waiter.fetch_due(now, 10, LEASE)
        waking.requeue(second, now, "421 try again")
        assert waiter.wait_for_mail(5.0) is True

    # -- heartbeats -----------------------------------------------------------------

    @pytest.fixture
    def beating(self, store: Store) -> Store:
        if Capability.HEARTBEAT not in store.capabilities:
            pytest.skip(f"{type(store).__name__} does not declare the 'heartbeat' capability")
        return store

    def test_heartbeats_are_shared_kept_per_namespace_and_expire(
        self, beating: Store, store_factory: Callable[..., Store], now: float
    ) -> None:
        twin = store_factory()
        other = store_factory(namespace=f"{beating.namespace}-other")
        assert beating.beats(now) == {}
        beating.beat("web1:101", now - 5, now + 60)
        twin.beat("web2:202", now - 1, now + 10)
        beating.beat("web1:101", now, now + 60)  # a later beat replaces the earlier
        assert twin.beats(now) == {"web1:101": now, "web2:202": now - 1}
        assert other.beats(now) == {}
        assert beating.beats(now + 30) == {"web1:101": now}  # web2's note expired

    # -- the pause flag -------------------------------------------------------------

    def test_pause_is_shared_and_kept_per_namespace(
        self, pausable: Store, store_factory: Callable[..., Store]
    ) -> None:
        twin = store_factory()
        other = store_factory(namespace=f"{pausable.namespace}-other")
        assert not pausable.paused()
        pausable.set_paused(True)
        assert pausable.paused() and twin.paused() and not other.paused()
        pausable.set_paused(True)  # pausing twice is no error
        twin.set_paused(False)
        assert not pausable.paused()
