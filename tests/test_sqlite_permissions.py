"""The queue file holds password-reset links: created private whatever the umask, and said so.

Before, the file and its ``-wal``/``-shm`` were created 0644 under the usual
umask (022): any local user could read the queued mail.
"""

from __future__ import annotations

import contextlib
import logging
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from mailqueue_core.errors import ConfigurationError
from mailqueue_core.testing import make_record
from mailqueue_stores.sqlite import SQLiteStore

NOW = 1_700_000_000.0
FILES = ("queue.db", "queue.db-wal", "queue.db-shm", "queue.db-reserve")


@contextlib.contextmanager
def umask(mask: int):
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


def modes(directory: Path) -> dict[str, int]:
    return {p.name: stat.S_IMODE(p.stat().st_mode) for p in sorted(directory.iterdir())}


@pytest.mark.parametrize("mask", [0o000, 0o002, 0o022, 0o077])
def test_files_are_created_0600_whatever_the_umask(tmp_path, mask):
    with umask(mask):
        store = SQLiteStore(f"sqlite:///{tmp_path}/queue.db")
        store.enqueue([make_record(NOW)])
    assert modes(tmp_path) == dict.fromkeys(FILES, 0o600)
    store.close()


def test_a_process_with_umask_000_creates_private_files(tmp_path):
    """A real process under umask 000 (the read-only commands create nothing, so it enqueues)."""
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from mailqueue_stores.sqlite import SQLiteStore; "
            "from mailqueue_core.testing import make_record; "
            "SQLiteStore(sys.argv[1]).enqueue([make_record(0.0)])",
            f"sqlite:///{tmp_path}/queue.db",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        preexec_fn=lambda: os.umask(0),  # the point of the test
    )
    assert done.returncode == 0, done.stderr
    assert set(modes(tmp_path).values()) == {0o600}
    assert "queue.db" in modes(tmp_path)


@pytest.mark.parametrize("mode", [0o660, "0660", "0o660", "660"])
def test_a_group_mode_can_be_chosen(tmp_path, mode):
    with umask(0o077):
        store = SQLiteStore(f"sqlite:///{tmp_path}/queue.db", mode=mode)
        store.enqueue([make_record(NOW)])
    assert modes(tmp_path) == dict.fromkeys(FILES, 0o660)
    assert store.options["mode"] == 0o660
    assert repr(store.options["mode"]) == "0o660"  # as the docs' table shows it
    store.close()


def test_mode_in_the_url(tmp_path):
    store = SQLiteStore(f"sqlite:///{tmp_path}/queue.db?mode=0640")
    assert store.mode == 0o640


@pytest.mark.parametrize("mode", [0o644, 0o666, "0606", 0o400, 0o1600, "rw", -1, True, None])
def test_a_mode_open_to_others_or_unusable_is_refused(tmp_path, mode):
    with pytest.raises(ConfigurationError, match="mode"):
        SQLiteStore(f"sqlite:///{tmp_path}/queue.db", mode=mode)


def test_an_existing_file_open_to_others_is_warned_about_once(tmp_path, caplog):
    first = SQLiteStore(f"sqlite:///{tmp_path}/queue.db")
    first.enqueue([make_record(NOW)])  # keeps the -wal there
    for name in ("queue.db", "queue.db-wal"):
        (tmp_path / name).chmod(0o644)
    with caplog.at_level(logging.WARNING, logger="mailqueue.stores.sqlite"):
        for _ in range(2):
            store = SQLiteStore(f"sqlite:///{tmp_path}/queue.db")
            store.enqueue([make_record(NOW)])
            store.close()
    first.close()
    (warning,) = [r for r in caplog.records if "other users" in r.getMessage()]
    assert warning.levelno == logging.WARNING
    assert f"{tmp_path}/queue.db (-rw-r--r--)" in warning.getMessage()
    assert f"{tmp_path}/queue.db-wal (-rw-r--r--)" in warning.getMessage()
    assert "queue.db-shm" not in warning.getMessage()
    # Left as it is: the store never changes the mode of a file it did not create.
    assert stat.S_IMODE((tmp_path / "queue.db").stat().st_mode) == 0o644


def test_a_private_existing_file_is_not_warned_about(tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="mailqueue.stores.sqlite"):
        store = SQLiteStore(f"sqlite:///{tmp_path}/queue.db", mode=0o640)
        store.enqueue([make_record(NOW)])
        store.close()
    assert not [r for r in caplog.records if "other users" in r.getMessage()]


@pytest.mark.parametrize(
    "location",
    [
        "sqlite://admin:s3cret@host/queue.db",
        "sqlite3://admin:s3cret@host/queue.db",
        "postgres://admin:s3cret@host/queue",
    ],
)
def test_urls_in_errors_are_redacted(location):
    with pytest.raises(ConfigurationError) as info:
        SQLiteStore(location)
    assert "s3cret" not in str(info.value)
    assert "***" in str(info.value)
