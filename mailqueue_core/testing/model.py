"""A stateful model test of the store contract (Hypothesis ``RuleBasedStateMachine``).

It drives a store through random sequences of enqueue, fetch_due, ack,
requeue, release, bury, revive, purge, lease expiry (on an injected clock) and
stale-claim attempts, and checks every step against a small reference model:
nothing lost, nothing duplicated, no message claimed twice while leased,
stats always equal to the model.

Use it from a store's tests::

    from mailqueue_core.testing import store_model_test

    TestMyStoreModel = store_model_test(lambda: MyStore("mystore://...", namespace=uuid4().hex))

The factory is called once per generated run and must return an empty store
of its own; the store is closed after the run.
"""

from __future__ import annotations

import dataclasses
import time
import uuid
from collections.abc import Callable
from typing import Any

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    initialize,
    invariant,
    multiple,
    rule,
    run_state_machine_as_test,
)

from mailqueue_core.errors import LeaseLost
from mailqueue_core.store import Claim, Record, Store

__all__ = ["StoreModel", "run_store_model", "store_model_test"]

LEASE = 30.0


@dataclasses.dataclass
class _Msg:
    record: Record
    due: float
    attempts: int = 0
    token: str | None = None
    expires: float = 0.0
    before_claim: float = 0.0
    dead: bool = False
    buried: float = 0.0
    error: str | None = None


class StoreModel(RuleBasedStateMachine):
    """Subclass with ``make_store`` set (see :func:`store_model_test`)."""

    make_store: Callable[[], Store]
    claims = Bundle("claims")

    def __init__(self) -> None:
        super().__init__()
        self.store = type(self).make_store()
        self.now = float(int(time.time()))
        self.model: dict[str, _Msg] = {}
        self.seq = 0

    def teardown(self) -> None:
        self.store.close()

    # -- helpers ---------------------------------------------------------------

    def _live(self) -> list[_Msg]:
        return [m for m in self.model.values() if not m.dead]

    def _held(self, m: _Msg) -> bool:
        return m.token is not None and m.expires > self.now

    def _due_free(self) -> list[_Msg]:
        ready = [m for m in self._live() if not self._held(m) and m.due <= self.now]
        return sorted(ready, key=lambda m: m.due)

    def _valid(self, claim: Claim) -> bool:
        m = self.model.get(claim.id)
        return m is not None and not m.dead and m.token == claim.token

    # -- rules -------------------------------------------------------------------

    @initialize()
    def start(self) -> None:
        assert self.store.stats(self.now).ready == 0

    @rule(
        count=st.integers(1, 5),
        delay=st.sampled_from([0.0, 0.0, 10.0, 100.0]),
        size=st.integers(0, 300),
    )
    def enqueue(self, count: int, delay: float, size: int) -> None:
        records = []
        for _ in range(count):
            self.seq += 1
            mid = uuid.uuid4().hex
            # Distinct due times keep "due order" unambiguous.
            due = self.now + delay + self.seq * 1e-3
            data = mid.encode() + bytes(range(256))[: size % 256] * (size // 256 + 1)
            records.append(Record(mid, data, self.now, due))
        self.store.enqueue(records)
        for record in records:
            self.model[record.id] = _Msg(record, record.due)

    @rule(target=claims, limit=st.integers(1, 6))
    def fetch(self, limit: int) -> Any:
        free = self._due_free()
        got = self.store.fetch_due(self.now, limit, LEASE)
        assert len({c.id for c in got}) == len(got) == min(limit, len(free))
        assert {c.id for c in got} <= {m.record.id for m in free}
        # Messages waiting since they were (re)queued come in due order, and none
        # is passed over for a later one; equal due times (revived together) in
        # any order. A message whose lease expired may come back before them: a
        # store may keep it where it was claimed (memcached) or at the expiry.
        taken = {c.id for c in got}
        waiting = [m for m in free if m.token is None]
        taken_waiting = [self.model[c.id] for c in got if self.model[c.id].token is None]
        dues = [m.due for m in taken_waiting]
        assert dues == sorted(dues)
        if dues:
            assert all(m.record.id in taken for m in waiting if m.due < dues[-1])
        for claim in got:
            m = self.model[claim.id]
            assert claim.record.data == m.record.data
            assert claim.record.attempts == m.attempts
            # A claim whose lease runs out is due again from its expiry.
            if m.token is None:
                m.before_claim = m.due
            m.token, m.expires, m.due = claim.token, self.now + LEASE, self.now + LEASE
        return multiple(*got)

    @rule(seconds=st.sampled_from([1.0, 15.0, LEASE + 1, 120.0]))
    def time_passes(self, seconds: float) -> None:
        self.now += seconds

    @rule(claim=consumes(claims))
    def ack(self, claim: Claim) -> None:
        if self._valid(claim):
            self.store.ack(claim)
            del self.model[claim.id]
        else:
            self._refused(lambda: self.store.ack(claim))

    @rule(claim=consumes(claims), delay=st.sampled_from([0.0, 5.0, 60.0]))
    def requeue(self, claim: Claim, delay: float) -> None:
        if self._valid(claim):
            self.store.requeue(claim, self.now + delay, "451 later")
            m = self.model[claim.id]
            m.token, m.due, m.attempts, m.error = (
                None,
                self.now + delay,
                m.attempts + 1,
                "451 later",
            )
        else:
            self._refused(lambda: self.store.requeue(claim, self.now, "x"))

    @rule(claim=consumes(claims))
    def release(self, claim: Claim) -> None:
        if self._valid(claim):
            self.store.release(claim)
            m = self.model[claim.id]
            m.token, m.due = None, m.before_claim
        else:
            self._refused(lambda: self.store.release(claim))

    @rule(claim=consumes(claims))
    def bury(self, claim: Claim) -> None:
        if self._valid(claim):
            self.store.bury(claim, "550 no", self.now)
            m = self.model[claim.id]
            m.dead, m.token, m.buried, m.error = True, None, self.now, "550 no"
            m.attempts += 1
        else:
            self._refused(lambda: self.store.bury(claim, "x", self.now))

    def _refused(self, call: Callable[[], None]) -> None:
        before = self.store.stats(self.now)
        try:
            call()
        except LeaseLost:
            pass
        else:
            raise AssertionError("a stale claim was not refused")
        assert self.store.stats(self.now) == before

    @rule(everything=st.booleans())
    def revive(self, everything: bool) -> None:
        dead = sorted((m for m in self.model.values() if m.dead), key=lambda m: m.buried)
        chosen = dead if everything else dead[:1]
        ids = None if everything else [m.record.id for m in chosen] + ["no-such-id"]
        assert self.store.revive(ids, self.now) == len(chosen)
        for m in chosen:
            m.dead, m.due, m.attempts, m.token = False, self.now, 0, None
            m.record = dataclasses.replace(m.record, created=self.now)

    @rule(age=st.sampled_from([0.0, 30.0, 300.0]))
    def purge(self, age: float) -> None:
        old = [m for m in self.model.values() if m.dead and m.buried < self.now - age]
        assert self.store.purge(self.now - age) == len(old)
        for m in old:
            del self.model[m.record.id]

    # -- invariants ----------------------------------------------------------------

    @invariant()
    def stats_match_the_model(self) -> None:
        live = self._live()
        stats = self.store.stats(self.now)
        in_flight = sum(1 for m in live if self._held(m))
        stuck = sum(1 for m in live if m.token is not None and not self._held(m))
        scheduled = sum(1 for m in live if m.token is None and m.due > self.now)
        ready = len(live) - in_flight - stuck - scheduled
        dead = len(self.model) - len(live)
        assert (
            stats.ready,
            stats.scheduled,
            stats.in_flight,
            stats.stuck,
            stats.dead,
            stats.lost,
        ) == (ready, scheduled, in_flight, stuck, dead, 0)

    @invariant()
    def dead_letters_match_the_model(self) -> None:
        letters = self.store.dead_letters()
        dead = {m.record.id: m for m in self.model.values() if m.dead}
        assert sorted(d.record.id for d in letters) == sorted(dead)
        for letter in letters:
            assert letter.record.data == dead[letter.record.id].record.data
            assert letter.reason == dead[letter.record.id].error
            assert letter.record.attempts == dead[letter.record.id].attempts


def _machine(make_store: Callable[[], Store]) -> type[StoreModel]:
    return type("Model", (StoreModel,), {"make_store": staticmethod(make_store)})


def _settings(max_examples: int, steps: int) -> settings:
    return settings(max_examples=max_examples, stateful_step_count=steps, deadline=None)


def store_model_test(
    make_store: Callable[[], Store], *, max_examples: int = 40, steps: int = 40
) -> type:
    """A pytest-collectable TestCase running :class:`StoreModel` on ``make_store``."""
    machine = _machine(make_store)
    machine.TestCase.settings = _settings(max_examples, steps)
    return machine.TestCase


def run_store_model(
    make_store: Callable[[], Store], *, max_examples: int = 40, steps: int = 40
) -> None:
    """Run :class:`StoreModel` now: for use inside a test that has fixtures (a server)."""
    run_state_machine_as_test(_machine(make_store), settings=_settings(max_examples, steps))
