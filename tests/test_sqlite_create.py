"""``create=false``: open an existing queue only, for what only reads.

Before, ``mailqueue status --check`` on a mistyped SQLite path created an
empty queue there and exited 0: a typo in monitoring always looked healthy.
A store built with ``create=false`` (or made by ``without_creating()``)
creates nothing and raises StoreUnavailable naming the path instead.
"""

from __future__ import annotations

import contextlib
import sqlite3
import subprocess
import sys
from collections.abc import Callable

import pytest

from mailqueue_core.errors import StoreUnavailable
from mailqueue_core.testing import make_record
from mailqueue_stores.sqlite import SQLiteStore

NOW = 1_700_000_000.0


def reads(store: SQLiteStore) -> list[Callable[[], object]]:
    return [
        lambda: store.stats(NOW),
        lambda: store.dead_letters(),
        lambda: store.fetch_due(NOW, 10, 60.0),
    ]


@pytest.mark.parametrize("how", ["option", "url", "twin"])
def test_a_missing_queue_is_unavailable_and_nothing_is_created(tmp_path, how):
    location = f"sqlite:///{tmp_path}/typo.db"
    store = {
        "option": lambda: SQLiteStore(location, create=False),
        "url": lambda: SQLiteStore(location + "?create=false"),
        "twin": lambda: SQLiteStore(location).without_creating(),
    }[how]()
    for call in reads(store):
        with pytest.raises(StoreUnavailable) as info:
            call()
        assert str(info.value) == (
            f"sqlite store: there is no queue at {tmp_path}/typo.db (no such file); nothing "
            "was created, as this use opens an existing queue only: check the path"
        )
    with pytest.raises(StoreUnavailable, match="no such file"):
        store.verify()
    store.close()
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("content", ["empty file", "no tables", "other tables"])
def test_a_file_with_no_queue_in_it_is_left_as_it_was(tmp_path, content):
    path = tmp_path / "queue.db"
    path.touch()
    if content != "empty file":
        with contextlib.closing(sqlite3.connect(path)) as conn:
            conn.execute("PRAGMA user_version = 7")
            if content == "other tables":
                conn.execute("CREATE TABLE orders (id INTEGER PRIMARY KEY)")
            conn.commit()
    before = path.read_bytes()
    with SQLiteStore(f"sqlite:///{path}", create=False) as store:
        with pytest.raises(StoreUnavailable, match="no queue tables in it"):
            store.stats(NOW)
        if content != "other tables":  # verify names another program's database itself
            with pytest.raises(StoreUnavailable, match="no queue tables in it"):
                store.verify()
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["queue.db"]


def test_an_existing_queue_is_used_as_usual(tmp_path):
    location = f"sqlite:///{tmp_path}/queue.db?reserve=0"
    with SQLiteStore(location) as site:
        site.enqueue([record := make_record(NOW)])
    with SQLiteStore(location, create=False) as reader:
        reader.verify()
        assert reader.stats(NOW).ready == 1
        (claim,) = reader.fetch_due(NOW, 10, 60.0)
        assert claim.id == record.id
        reader.ack(claim)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["queue.db"]


def test_the_twin_keeps_everything_else(tmp_path):
    store = SQLiteStore(f"sqlite:///{tmp_path}/q.db?namespace=shop", mode=0o660, timeout=2)
    twin = store.without_creating()
    assert (twin.namespace, twin.path, twin.create) == ("shop", store.path, False)
    assert twin.options == {**store.options, "create": False}
    assert store.create and "create" not in store.options


def test_status_check_on_a_mistyped_path_exits_2_naming_it(tmp_path):
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "mailqueue_core.cli",
            "status",
            "--check",
            "--store",
            f"sqlite:///{tmp_path}/typo.db?create=false",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2, done.stderr
    assert f"there is no queue at {tmp_path}/typo.db" in done.stderr
    assert list(tmp_path.iterdir()) == []
