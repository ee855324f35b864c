"""The memcached store's typed values: what each header writes, reads back and rules.

No server needed: these are the values the store keeps in items, read from bytes
as the store reads them from memcached (damaged ones included).
"""

from __future__ import annotations

import json
import time
import types

import pytest

from mailqueue_core.testing.contract import make_record
from mailqueue_stores.memcached.headers import (
    DeadHeader,
    Header,
    QueuedHeader,
    State,
    Tombstone,
)
from mailqueue_stores.memcached.keys import Keys
from mailqueue_stores.memcached.losses import LossReport
from mailqueue_stores.memcached.rings import Slot
from tests.servers.memcached import FAR_CLOCK

NOW = FAR_CLOCK
SLOT = Slot(ring=410244480, n=3, key="mq:ns:p:410244480:3", value=b"m1")


def queued(**changes: object) -> QueuedHeader:
    record = make_record(NOW - 5, id="m1", data=b"hello", attempts=1, last_error="451")
    header = QueuedHeader.new(Header.of_record(record, "0123456789ab", None), SLOT.key, SLOT.ring)
    return header if not changes else QueuedHeader(**{**vars(header), **changes})


def test_a_header_keeps_its_wire_format() -> None:
    """Short keys, in this order: the store's items stay readable across this change."""
    stored = json.loads(queued().encode())
    assert list(stored) == [
        "id", "created", "due", "attempts", "err", "size", "sum", "gen",
        "ptr", "pend", "tok", "exp", "ring",
    ]  # fmt: skip
    assert (stored["tok"], stored["exp"], stored["pend"], stored["size"]) == (None, 0.0, None, 5)
    assert QueuedHeader.whole(queued().encode(), "m1") == queued()


def test_claim_rules_at_now() -> None:
    free = queued()
    held = free.claimed("t1", NOW + 30)
    assert (free.claimable(NOW), free.state(NOW), free.due_again) == (True, State.READY, NOW - 5)
    assert (held.held(NOW), held.claimable(NOW), held.state(NOW)) == (True, False, State.IN_FLIGHT)
    assert (held.claimable(NOW + 31), held.waiting(NOW + 31)) == (True, False)
    assert (held.state(NOW + 31), held.due_again) == (State.STUCK, NOW + 30)
    assert queued(due=NOW + 60).state(NOW) is State.SCHEDULED
    again = held.retried(NOW + 120, "452")
    assert (again.token, again.expires, again.attempts, again.error) == (None, 0.0, 2, "452")


def test_a_requeue_moves_in_two_steps_and_a_tombstone_names_every_slot() -> None:
    announced = queued().claimed("t1", NOW + 30).moving_to("p:new")
    moved = announced.retried(NOW + 120, None).moved("p:new", 410244492)
    assert (announced.pending, moved.ptr, moved.old, moved.pending) == (
        "p:new",
        "p:new",
        SLOT.key,
        None,
    )
    done = Tombstone.read(moved.tombstone(keep_data=False).encode())
    assert done is not None and done.slots == ("p:new", SLOT.key) and done.data
    assert done.items(Keys("ns"), "m1")[-1] == Keys("ns").data("m1", "0123456789ab")
    assert Tombstone.read(queued().encode()) is None


def test_burial_and_revival() -> None:
    dead = DeadHeader.of(queued().last_attempt("550"), "p:x:1", NOW)
    assert (dead.attempts, dead.error, dead.buried) == (2, "550", NOW)
    assert DeadHeader.whole(dead.encode(), "m1") == dead
    back = dead.revived(NOW + 1, "p:1:1", 1)
    assert (back.created, back.due, back.attempts, back.error, back.token) == (
        NOW + 1,
        NOW + 1,
        0,
        "550",
        None,
    )


@pytest.mark.parametrize(
    ("raw", "says"),
    [
        (b"\x00junk", "its header is unreadable (not JSON, 5 bytes)"),
        (b"[1]", "not a JSON object"),
        (json.dumps({"id": "m1", "due": "soon"}).encode(), "its header has no 'created'"),
        (json.dumps({"id": "m1", "due": "soon"}).encode(), "its header holds due='soon'"),
        (json.dumps({"id": "other"}).encode(), "names another message ('other')"),
    ],
)
def test_a_damaged_header_reads_as_broken_never_raises(raw: bytes, says: str) -> None:
    assert QueuedHeader.whole(raw, "m1") is None
    header = QueuedHeader.read(raw, "m1", SLOT, NOW)
    assert header.broken and says in (header.damage or "")
    assert (header.id, header.ptr, header.ring, header.gen) == ("m1", SLOT.key, SLOT.ring, "")
    assert (header.created, header.claimable(NOW), header.state(NOW)) == (
        SLOT.ring * 10.0,
        True,
        State.READY,
    )


def test_what_a_cut_header_still_says_is_kept() -> None:
    raw = queued().encode()
    cut = raw[: raw.index(b'"ptr"')]
    header = QueuedHeader.read(cut, "m1", SLOT, NOW)
    assert header.broken and (header.gen, header.size, header.attempts) == ("0123456789ab", 5, 1)
    assert header.data_problem(b"hello") is None
    assert "4 bytes; 5 were written" in (header.data_problem(b"hell") or "")
    assert "checksum" in (header.data_problem(b"hellO") or "")


def test_a_damage_note_is_kept_once_claimed() -> None:
    broken = QueuedHeader.read(b"junk", "m1", SLOT, NOW)
    claimed = QueuedHeader.whole(broken.claimed("t", NOW + 30).encode(), "m1")
    assert claimed is None  # its data key was lost with the header: still broken
    noted = QueuedHeader.read(queued(damage="was bad").encode(), "m1", SLOT, NOW)
    assert (noted.broken, noted.record(b"x").damage) == (False, "was bad")


def test_a_loss_report_reads_whole_or_as_a_stand_in() -> None:
    report = LossReport.of("m1", queued(), "evicted", NOW)
    assert LossReport.read(report.encode()) == report
    letter = report.letter()
    assert (letter.lost, letter.record.created, letter.record.attempts) == (True, NOW - 5, 1)
    assert LossReport.read(b"\x00").reason == "a loss report that is itself damaged"
    partial = json.dumps({"id": "m2", "reason": "r", "detected": NOW, "count": 1, "due": "x"})
    assert LossReport.read(partial.encode()).due is None


def test_the_spy_catches_the_store_reading_the_wall_clock(no_wall_clock: list[str]) -> None:
    """The fixture the store's tests run under, proved on a stand-in module of the package."""

    def read_clock() -> float:
        return time.time()

    stand_in = {"__name__": "mailqueue_stores.memcached.stand_in", "time": time}
    types.FunctionType(read_clock.__code__, stand_in)()
    time.time()  # a test may read it: only the store may not
    assert no_wall_clock == ["mailqueue_stores.memcached.stand_in"]
    no_wall_clock.clear()
