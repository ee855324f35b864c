"""One bad record never stops a queue: the flusher buries a damaged claim at once.

Records are damaged behind the store's back, as an operator or a stray client would
(``HDEL ... created``, ``attempts=1.5``, a ``DEL``; an ``UPDATE`` on the SQLite file),
with each store's own test hook, on a real redis-server and real SQLite files. The
flusher buries such a claim with the store's reason, never decodes or sends it, and
delivers the rest of the batch; ``status --check`` then fails on it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid

import pytest

from mailqueue_core.flusher import Flusher, FlushListener
from mailqueue_core.plugins import make_store
from mailqueue_core.store import Store
from mailqueue_core.testing import Damage
from mailqueue_transports.smtp import SMTPTransport
from tests.drills import delivered_counts
from tests.helpers import record
from tests.test_sqlite_damage import damage as damage_sqlite
from tests.test_store_redis import damage_record


class Heard(FlushListener):
    def __init__(self):
        self.burials = []

    def buried(self, message_id, message, reason):
        self.burials.append((message_id, message, reason))


def cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    return subprocess.run(
        [sys.executable, "-m", "mailqueue_core.cli", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )


@pytest.fixture(params=["sqlite", "redis"])
def url(request: pytest.FixtureRequest, tmp_path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/q.db?namespace={uuid.uuid4().hex}"
    redis_server = request.getfixturevalue("redis_server")
    return f"{redis_server.url}?namespace={uuid.uuid4().hex}"


@pytest.fixture
def store(url):
    s = make_store(url)
    yield s
    s.close()


def damage(request: pytest.FixtureRequest, store: Store, record_id: str, how: Damage) -> None:
    """With the store's own hook: a raw client on its server, or on its file."""
    if "redis_server" in request.fixturenames:
        with request.getfixturevalue("redis_server").client() as client:
            damage_record(client, store, record_id, how)
    else:
        damage_sqlite(store, record_id, how)


@pytest.mark.parametrize("how", [Damage.PARTIAL, Damage.MALFORMED])
def test_a_damaged_claim_is_buried_with_the_reason_and_the_rest_delivered(
    request, store, smtp, how
):
    now = time.time()
    records = [record(f"r{i}@example.com", created=now, subject=f"drill {i}") for i in range(5)]
    store.enqueue(records)
    damage(request, store, records[2].id, how)
    heard = Heard()
    transport = SMTPTransport(f"smtp://127.0.0.1:{smtp.port}")
    result = Flusher(store, transport, listener=heard).flush()
    assert (result.sent, result.buried) == (4, 1)
    assert sorted(delivered_counts(smtp.messages)) == [0, 1, 3, 4]  # never sent
    ((mid, message, reason),) = heard.burials
    assert (mid, message) == (records[2].id, None)  # never decoded
    (letter,) = store.dead_letters()
    assert letter.record.id == records[2].id
    assert letter.reason == reason and reason.startswith("damaged record: ")
    stats = store.stats(time.time())
    assert (stats.ready, stats.in_flight, stats.stuck, stats.dead) == (0, 0, 0, 1)


def test_a_record_gone_entirely_is_buried_or_reported_lost(request, store, smtp):
    now = time.time()
    records = [record(f"r{i}@example.com", created=now, subject=f"drill {i}") for i in range(3)]
    store.enqueue(records)
    damage(request, store, records[1].id, Damage.MISSING)
    transport = SMTPTransport(f"smtp://127.0.0.1:{smtp.port}")
    result = Flusher(store, transport).flush()
    assert result.sent == 2
    assert sorted(delivered_counts(smtp.messages)) == [0, 2]
    stats = store.stats(time.time())
    assert (stats.ready, stats.in_flight, stats.stuck) == (0, 0, 0)
    assert stats.dead + stats.lost == 1
    assert [d.record.id for d in store.dead_letters()] == [records[1].id]


def test_the_commands_report_a_damaged_record(request, url, store, smtp):
    now = time.time()
    records = [record(f"r{i}@example.com", created=now, subject=f"drill {i}") for i in range(3)]
    store.enqueue(records)
    damage(request, store, records[0].id, Damage.MALFORMED)
    done = cli("flush", "--store", url, "--transport", f"smtp://127.0.0.1:{smtp.port}")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("sent 2, deferred 0, buried 1")
    assert f"buried message {records[0].id}" in done.stderr
    assert "1 message(s) buried; see 'mailqueue dead'" in done.stderr
    (row,) = json.loads(cli("dead", "--store", url, "--json").stdout)
    assert row["id"] == records[0].id and row["error"].startswith("damaged record: ")
    check = cli("status", "--store", url, "--check")
    assert check.returncode == 1
    assert "1 dead letter(s)" in check.stderr


def test_a_damaged_record_in_the_fallback_store_is_buried_there(tmp_path, smtp):
    main, fallback = f"sqlite:///{tmp_path}/main.db", f"sqlite:///{tmp_path}/fallback.db"
    now = time.time()
    records = [record(f"r{i}@example.com", created=now, subject=f"drill {i}") for i in range(3)]
    with make_store(fallback) as store:
        store.enqueue(records)
        damage_sqlite(store, records[1].id, Damage.PARTIAL)
    (tmp_path / "fb_settings.py").write_text(
        f"MAILQUEUE = {{'STORE': {main!r}, 'FALLBACK_STORE': {fallback!r}, "
        f"'TRANSPORT': 'smtp://127.0.0.1:{smtp.port}'}}\n"
    )
    env = {**os.environ, "PYTHONPATH": f"{os.getcwd()}:{tmp_path}"}
    done = subprocess.run(
        [sys.executable, "-m", "mailqueue_core.cli", "flush", "--settings", "fb_settings"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert f"buried {records[1].id} in the fallback store: damaged record: " in done.stderr
    assert "moved 2 message(s) from the fallback store" in done.stderr
    assert sorted(delivered_counts(smtp.messages)) == [0, 2]
    with make_store(fallback) as store:
        assert [d.record.id for d in store.dead_letters()] == [records[1].id]
