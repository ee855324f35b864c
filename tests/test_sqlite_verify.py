"""``SQLiteStore.verify``: a queue this process cannot use is reported before the first send.

Before, the quick start's ``sqlite:////var/spool/mailqueue/queue.db`` on a
fresh machine passed ``manage.py check`` and the first ``send_mail()`` raised
``StoreUnavailable ... unable to open database file`` (a 500). Each problem is
now a ConfigurationError naming the path and ending in ``Fix: <command>``,
which the deploy check shows as mailqueue.E004 with the command as its hint.
Permissions are tried for real, as the ``nobody`` user (the tests run as root).
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.core.checks import run_checks
from django.test import override_settings

from mailqueue_core.errors import ConfigurationError, StoreUnavailable
from mailqueue_core.testing import make_record
from mailqueue_stores.sqlite import SQLiteStore

NOW = 1_700_000_000.0
NOBODY = 65534


@contextlib.contextmanager
def as_nobody(uid: int = NOBODY) -> Iterator[None]:
    """This process acting as ``nobody`` for the block (its real user stays root)."""
    os.setegid(uid)
    os.seteuid(uid)
    try:
        yield
    finally:
        os.seteuid(0)
        os.setegid(0)


@pytest.fixture
def open_dir() -> Iterator[Path]:
    """A directory every user can reach (``tmp_path`` is private to root)."""
    where = Path(tempfile.mkdtemp(prefix="mq-verify-"))
    where.chmod(0o755)
    yield where
    for path in sorted(where.rglob("*"), reverse=True):
        path.rmdir() if path.is_dir() else path.unlink()
    where.rmdir()


def refusal(location: str, **options: object) -> str:
    with SQLiteStore(location, **options) as store, pytest.raises(ConfigurationError) as info:
        store.verify()
    return str(info.value)


def queue_file(path: Path) -> None:
    with SQLiteStore(f"sqlite:///{path}") as store:
        store.enqueue([make_record(NOW)])


# -- what passes, and touches nothing ----------------------------------------------------


def test_a_new_queue_in_a_writable_directory_passes_and_nothing_is_created(tmp_path):
    with SQLiteStore(f"sqlite:///{tmp_path}/queue.db") as store:
        store.verify()
    assert list(tmp_path.iterdir()) == []


def test_an_existing_queue_passes_and_is_left_as_it_was(tmp_path):
    queue_file(tmp_path / "queue.db")
    before = sorted(p.name for p in tmp_path.iterdir())
    with SQLiteStore(f"sqlite:///{tmp_path}/queue.db") as store:
        store.verify()
        assert store.stats(NOW).ready == 1
        store.verify()  # beside the store's own open connection
    assert sorted(p.name for p in tmp_path.iterdir()) == before


@pytest.mark.parametrize("content", [b"", None])
def test_an_empty_file_or_database_passes(tmp_path, content):
    path = tmp_path / "queue.db"
    if content is None:
        with contextlib.closing(sqlite3.connect(path)) as conn:
            conn.execute("PRAGMA user_version = 1")  # a database with no table
    else:
        path.write_bytes(content)
    with SQLiteStore(f"sqlite:///{path}") as store:
        store.verify()
        store.enqueue([make_record(NOW)])


# -- the directory -------------------------------------------------------------------------


def test_a_missing_directory_names_the_mkdir(tmp_path):
    """The quick start on a fresh machine."""
    message = refusal(f"sqlite:///{tmp_path}/spool/mailqueue/queue.db")
    spool = f"{tmp_path}/spool/mailqueue"
    assert f"the directory {spool} of the queue {spool}/queue.db does not exist." in message
    assert f"Fix: mkdir -p {spool} && chown root {spool} (this process runs as root" in message
    assert not (tmp_path / "spool").exists()


def test_a_group_mode_names_the_group_and_its_setgid_directory(tmp_path):
    message = refusal(f"sqlite:///{tmp_path}/spool/queue.db?mode=0660")
    assert f"chown root:root {tmp_path}/spool && chmod 2770 {tmp_path}/spool" in message


def test_a_directory_this_user_cannot_write(open_dir):
    with as_nobody():
        message = refusal(f"sqlite:///{open_dir}/queue.db")
    assert f"this process (nobody) cannot create files in {open_dir}" in message
    assert "-wal and -shm" in message
    assert f"Fix: chown nobody {open_dir}" in message


def test_a_user_and_group_with_no_name_are_given_by_number(open_dir):
    with as_nobody(54321):
        message = refusal(f"sqlite:///{open_dir}/queue.db?mode=0660")
    assert f"this process (54321) cannot create files in {open_dir}" in message
    assert f"Fix: chown 54321:54321 {open_dir} && chmod 2770 {open_dir}" in message


def test_a_directory_this_user_cannot_reach(tmp_path):
    with as_nobody():
        message = refusal(f"sqlite:///{tmp_path}/queue.db")
    assert f"this process (nobody) cannot reach the directory {tmp_path}" in message
    assert "Permission denied. Fix: let nobody search every directory" in message


def test_a_file_where_the_directory_should_be(tmp_path):
    (tmp_path / "spool").write_text("")
    message = refusal(f"sqlite:///{tmp_path}/spool/queue.db")
    assert f"{tmp_path}/spool is not a directory. Fix:" in message


# -- the file --------------------------------------------------------------------------------


def test_a_file_this_user_cannot_write(open_dir):
    queue_file(open_dir / "queue.db")
    os.chown(open_dir, NOBODY, NOBODY)
    with as_nobody():
        message = refusal(f"sqlite:///{open_dir}/queue.db")
    assert f"this process (nobody) cannot read and write {open_dir}/queue.db" in message
    assert f"Fix: chown nobody {open_dir}/queue.db" in message


def test_a_directory_where_the_file_should_be(tmp_path):
    (tmp_path / "queue.db").mkdir()
    assert f"{tmp_path}/queue.db is not a file. Fix:" in refusal(f"sqlite:///{tmp_path}/queue.db")


def test_a_file_that_is_not_a_database(tmp_path):
    path = tmp_path / "queue.db"
    path.write_bytes(b"this is no database\n" * 400)
    message = refusal(f"sqlite:///{path}")
    assert f"{path} is not a SQLite queue (file is not a database)" in message
    assert "Fix: point the store at a path of its own" in message
    assert path.read_bytes() == b"this is no database\n" * 400


def test_another_programs_database(tmp_path):
    path = tmp_path / "db.sqlite3"
    with contextlib.closing(sqlite3.connect(path)) as conn:
        for table in ("auth_user", "django_session", "orders", "shop"):
            conn.execute(f"CREATE TABLE {table} (id INTEGER PRIMARY KEY)")
        conn.commit()
    message = refusal(f"sqlite:///{path}")
    assert "no mailqueue queue in it (tables: auth_user, django_session, orders, ...)" in message
    assert "set the store option django_database to its alias" in message
    with SQLiteStore(f"sqlite:///{path}", django_database="default") as store:
        store.verify()  # the site's own database: the queue joins it


def test_a_queue_from_a_newer_release(tmp_path):
    path = tmp_path / "future.db"
    with contextlib.closing(sqlite3.connect(path)) as conn:
        conn.execute("CREATE TABLE mailqueue_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
        conn.execute("INSERT INTO mailqueue_meta VALUES ('schema_version', '99')")
        conn.commit()
    message = refusal(f"sqlite:///{path}")
    assert "schema version 99, newer than this mailqueue understands" in message
    assert "Fix: upgrade mailqueue" in message


def test_a_lock_held_past_the_timeout_is_unavailable(tmp_path):
    path = tmp_path / "plain.db"
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("CREATE TABLE other (x)")
    holder.execute("BEGIN EXCLUSIVE")
    try:
        with (
            SQLiteStore(f"sqlite:///{path}", timeout=0) as store,
            pytest.raises(StoreUnavailable, match="locked"),
        ):
            store.verify()
    finally:
        holder.execute("ROLLBACK")
        holder.close()


# -- a relative path -------------------------------------------------------------------------


def test_a_relative_path_is_named_once_per_process(tmp_path, monkeypatch, caplog):
    monkeypatch.chdir(tmp_path)
    with caplog.at_level(logging.WARNING, logger="mailqueue.stores.sqlite"):
        for _ in range(2):
            with SQLiteStore("sqlite:///relative.db") as store:
                store.verify()
    (warning,) = caplog.records
    message = warning.getMessage()
    assert f"relative path 'relative.db', so the queue is {tmp_path}/relative.db" in message
    assert f"Use sqlite:///{tmp_path}/relative.db (four slashes" in message


def test_an_error_about_a_relative_path_says_what_it_was_resolved_against(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    message = refusal("sqlite:///later/queue.db")
    assert f"{tmp_path}/later/queue.db (the URL's relative path 'later/queue.db'" in message


# -- where people see it ----------------------------------------------------------------------


def test_the_deploy_check_shows_the_fix_as_its_hint(tmp_path):
    location = f"sqlite:///{tmp_path}/spool/queue.db"
    with override_settings(MAILQUEUE={"STORE": location}):
        (error,) = run_checks(tags=["mailqueue"], include_deployment_checks=True)
    assert error.id == "mailqueue.E004"
    assert error.msg == (
        f"MAILQUEUE['STORE']: sqlite store: the directory {tmp_path}/spool of the queue "
        f"{tmp_path}/spool/queue.db does not exist."
    )
    assert error.hint.startswith(f"mkdir -p {tmp_path}/spool && chown root {tmp_path}/spool")


def test_a_call_that_fails_on_the_files_says_how_to_fix_them(tmp_path):
    with (
        SQLiteStore(f"sqlite:///{tmp_path}/spool/queue.db") as store,
        pytest.raises(StoreUnavailable) as info,
    ):
        store.enqueue([make_record(NOW)])
    assert "unable to open database file; the directory" in str(info.value)
    assert f"Fix: mkdir -p {tmp_path}/spool" in str(info.value)
    assert isinstance(info.value.__cause__, sqlite3.Error)
