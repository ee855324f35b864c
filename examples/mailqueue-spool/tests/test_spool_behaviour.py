"""What the contract does not cover: configuration, a broken spool, crash windows, processes.

Some tests here look at the spool directory itself: its layout is documented
in ``mailqueue_spool.store`` and ``mailqueue_spool.files``, and operators see it.
"""

from __future__ import annotations

import multiprocessing
import os
import shutil
import time
from pathlib import Path
from typing import Any

import pytest
from mailqueue_spool import SpoolStore
from mailqueue_spool.files import MAX_ID_LENGTH

from mailqueue_core.errors import ConfigurationError, LeaseLost, StoreUnavailable
from mailqueue_core.plugins import make_store
from mailqueue_core.store import Stats
from mailqueue_core.testing import make_record

LEASE = 30.0


@pytest.fixture
def now() -> float:
    return float(int(time.time()))


@pytest.fixture
def store(tmp_path: Path) -> SpoolStore:
    return SpoolStore(f"spool://{tmp_path}")


# -- configuration ---------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "spool://somehost/var/spool/mq",
        "spool:var/spool/mq",
        "spool:///",
        "spool://",
        "file:///var/spool/mq",
        "",
        "spool:///var/spool/mq?namespace=a&namespace=b",
    ],
)
def test_bad_urls_are_refused(url: str) -> None:
    with pytest.raises(ConfigurationError, match="spool store"):
        SpoolStore(url)


def test_unknown_options_are_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="unknown option 'colour' in the URL; valid"):
        SpoolStore(f"spool://{tmp_path}?colour=red", size=3)
    with pytest.raises(ConfigurationError, match=r"'fsnyc' .*did you mean 'fsync'"):
        SpoolStore(f"spool://{tmp_path}", fsnyc=False)
    with pytest.raises(ConfigurationError, match=r"STORE: .*valid options: fsync, namespace"):
        make_store(f"spool://{tmp_path}?colour=red")


@pytest.mark.parametrize("options", [{"fsync": "maybe"}, {"fsync": 2}, {"namespace": ""}])
def test_bad_option_values_are_refused(tmp_path: Path, options: dict[str, Any]) -> None:
    with pytest.raises(ConfigurationError):
        SpoolStore(f"spool://{tmp_path}", **options)


def test_keyword_options_win_over_the_query_string(tmp_path: Path) -> None:
    store = SpoolStore(f"spool://{tmp_path}?namespace=a&fsync=no", namespace="b", fsync=True)
    assert (store.namespace, store.options, store.root) == ("b", {"fsync": True}, str(tmp_path))
    assert repr(store) == f"<SpoolStore root={str(tmp_path)!r} namespace='b'>"


def test_nothing_is_touched_until_first_use(tmp_path: Path) -> None:
    SpoolStore(f"spool://{tmp_path}/spool")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("namespace", ["..", ".", "../../escape", "a/b", "ünï cødé"])
def test_any_namespace_stays_inside_the_spool(tmp_path: Path, namespace: str, now: float) -> None:
    root = tmp_path / "spool"
    mine = SpoolStore(f"spool://{root}", namespace=namespace)
    other = SpoolStore(f"spool://{root}")
    mine.enqueue([make_record(now)])
    assert (mine.stats(now).ready, other.stats(now).ready) == (1, 0)
    assert [p.name for p in tmp_path.iterdir()] == ["spool"]
    assert len(list(root.iterdir())) == 2


def test_ids_of_any_character_round_trip(store: SpoolStore, now: float) -> None:
    odd = make_record(now, id="a,b/c d%2C.ü")
    store.enqueue([odd])
    (claim,) = store.fetch_due(now, 10, LEASE)
    assert claim.id == odd.id
    store.bury(claim, "550", now)
    assert [d.record.id for d in store.dead_letters()] == [odd.id]


def test_an_id_too_long_for_a_file_name_is_refused_before_anything_is_written(
    store: SpoolStore, now: float
) -> None:
    records = [make_record(now), make_record(now, id="x" * (MAX_ID_LENGTH + 1))]
    with pytest.raises(ValueError, match="ids must be 1 to"):
        store.enqueue(records)
    with pytest.raises(ValueError, match="ids must be 1 to"):
        store.add_dead(records, now)
    assert store.stats(now).ready == 0
    assert store.dead_letters() == []


# -- a spool that cannot be used -----------------------------------------------


def test_a_spool_under_a_file_is_unavailable(tmp_path: Path, now: float) -> None:
    (tmp_path / "plain-file").write_text("not a directory")
    store = SpoolStore(f"spool://{tmp_path}/plain-file/spool")
    with pytest.raises(StoreUnavailable, match="plain-file") as info:
        store.enqueue([make_record(now)])
    assert isinstance(info.value.__cause__, OSError)
    with pytest.raises(StoreUnavailable):
        store.stats(now)


def test_a_spool_removed_under_a_running_store_is_unavailable(tmp_path: Path, now: float) -> None:
    root = tmp_path / "spool"
    store = SpoolStore(f"spool://{root}")
    store.enqueue([make_record(now)])
    (claim,) = store.fetch_due(now, 10, LEASE)
    shutil.rmtree(root)
    calls = [
        lambda: store.enqueue([make_record(now)]),
        lambda: store.fetch_due(now, 10, LEASE),
        lambda: store.stats(now),
        lambda: store.dead_letters(),
        lambda: store.revive(None, now),
        lambda: store.purge(now),
        lambda: store.add_dead([make_record(now)], now),
    ]
    for call in calls:
        with pytest.raises(StoreUnavailable):
            call()
    with pytest.raises(StoreUnavailable):  # cannot even write the new content
        store.requeue(claim, now, "451")
    with pytest.raises(LeaseLost):  # the message is gone with the directory
        store.ack(claim)


def test_a_foreign_file_in_the_queue_is_named_when_claimed_and_buried(
    store: SpoolStore, tmp_path: Path, now: float
) -> None:
    good = make_record(now)
    store.enqueue([good])
    queue = tmp_path / "default" / "queue"
    (queue / f"w,{now - 1!r},1,{now!r},intruder").write_bytes(b"not json\n")
    (queue / "README").write_text("ignored: not a spool name")
    assert store.stats(now).ready == 2
    bad, ok = store.fetch_due(now, 10, LEASE)
    assert ok.record == good
    assert bad.id == "intruder"
    assert bad.record.damage is not None
    assert "not a readable spool file" in bad.record.damage
    store.bury(bad, bad.record.damage, now)
    store.ack(ok)
    (letter,) = store.dead_letters()
    assert (letter.record.id, letter.record.data) == ("intruder", b"")


# -- all or nothing, and crash windows --------------------------------------------


def _fail_on_call(monkeypatch: pytest.MonkeyPatch, name: str, number: int) -> None:
    """Make ``os.<name>`` fail with EIO on its ``number``-th call from now on."""
    real = getattr(os, name)
    calls = 0

    def flaky(*args: Any, **kwargs: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls == number:
            raise OSError(5, "Input/output error (injected)")
        return real(*args, **kwargs)

    monkeypatch.setattr(os, name, flaky)


def test_enqueue_that_fails_half_way_leaves_nothing(
    store: SpoolStore, tmp_path: Path, now: float, monkeypatch: pytest.MonkeyPatch
) -> None:
    records = [make_record(now) for _ in range(3)]
    with monkeypatch.context() as patch:
        _fail_on_call(patch, "rename", 2)
        with pytest.raises(StoreUnavailable, match="injected"):
            store.enqueue(records)
    assert store.stats(now).ready == 0
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []
    store.enqueue(records)  # the ids are free again
    assert len(store.fetch_due(now, 10, LEASE)) == 3


def test_add_dead_keeps_the_first_copy_of_an_id(store: SpoolStore, now: float) -> None:
    live = make_record(now)
    store.enqueue([live])
    dead = make_record(now, last_error="550 no")
    store.add_dead([dead, dead, make_record(now, id=live.id, last_error="550")], now)
    assert [(d.record.id, d.reason) for d in store.dead_letters()] == [(dead.id, "550 no")]
    assert store.stats(now).ready == 1


def test_an_id_left_reserved_by_a_crash_can_be_queued(
    store: SpoolStore, tmp_path: Path, now: float
) -> None:
    record = make_record(now)
    store.stats(now)  # creates the spool
    (tmp_path / "default" / "ids" / record.id).touch()  # as a crash before the rename leaves it
    store.enqueue([record])
    assert [c.id for c in store.fetch_due(now, 10, LEASE)] == [record.id]


@pytest.mark.parametrize("action", ["requeue", "bury"])
def test_a_crash_in_the_middle_of_a_rewrite_gives_the_message_back_later(
    store: SpoolStore, now: float, monkeypatch: pytest.MonkeyPatch, action: str
) -> None:
    record = make_record(now)
    store.enqueue([record])
    (claim,) = store.fetch_due(now, 10, LEASE)
    with monkeypatch.context() as patch:
        _fail_on_call(patch, "rename", 2)  # the take succeeds, the final rename fails
        with pytest.raises(StoreUnavailable):
            if action == "requeue":
                store.requeue(claim, now, "451 later")
            else:
                store.bury(claim, "550 no", now)
    # Held out of reach meanwhile: not lost, not sent twice.
    assert store.stats(now + LEASE + 1).in_flight == 1
    with pytest.raises(LeaseLost):
        store.ack(claim)
    later = now + LEASE + 601
    (again,) = store.fetch_due(later, 10, LEASE)
    assert again.id == record.id
    assert again.record.data == record.data
    store.ack(again)
    assert store.stats(later) == Stats()


def test_a_second_client_finds_nothing_left_to_revive_or_purge(tmp_path: Path, now: float) -> None:
    store = SpoolStore(f"spool://{tmp_path}")
    twin = SpoolStore(f"spool://{tmp_path}")
    store.add_dead([make_record(now, last_error="550") for _ in range(3)], now)
    assert store.revive(None, now) == 3
    assert twin.revive(None, now) == 0
    assert twin.purge(now + 1) == 0
    assert len(twin.fetch_due(now, 10, LEASE)) == 3


def test_fsync_off_keeps_the_same_behaviour(tmp_path: Path, now: float) -> None:
    store = SpoolStore(f"spool://{tmp_path}?fsync=off")
    store.enqueue([make_record(now)])
    (claim,) = store.fetch_due(now, 10, LEASE)
    store.bury(claim, "550", now)
    assert store.revive(None, now) == 1
    (claim,) = store.fetch_due(now, 10, LEASE)
    store.ack(claim)
    assert store.stats(now).ready == 0


def test_limit_zero_claims_nothing(store: SpoolStore, now: float) -> None:
    store.enqueue([make_record(now)])
    assert store.fetch_due(now, 0, LEASE) == []


# -- several processes -----------------------------------------------------------


def _claim_everything(location: str, now: float, start: Any, results: Any) -> None:
    store = SpoolStore(location)
    start.wait()
    got: list[str] = []
    while batch := store.fetch_due(now, 5, LEASE):
        got.extend(c.id for c in batch)
    results.put(got)


def test_processes_claiming_at_once_get_disjoint_messages(tmp_path: Path, now: float) -> None:
    location = f"spool://{tmp_path}"
    records = [make_record(now) for _ in range(300)]
    SpoolStore(location).enqueue(records)
    context = multiprocessing.get_context("spawn")
    start = context.Barrier(3)
    results = context.Queue()
    workers = [
        context.Process(target=_claim_everything, args=(location, now, start, results))
        for _ in range(3)
    ]
    for worker in workers:
        worker.start()
    got = [results.get(timeout=120) for _ in workers]
    for worker in workers:
        worker.join(timeout=120)
        assert worker.exitcode == 0
    every = [mid for ids in got for mid in ids]
    assert len(every) == len(set(every)) == len(records)
