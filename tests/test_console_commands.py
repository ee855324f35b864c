"""The console's verbs: list, show, send-now, delete, pause, resume (and status's pause line).

In-process through ``manage.py mailqueue`` on the memory store, and each verb once
through the standalone ``mailqueue`` command on a SQLite file.
"""

from __future__ import annotations

import dataclasses
import io
import json
import re
import shlex
import time
import uuid
from collections.abc import Iterable
from contextlib import redirect_stderr, redirect_stdout

import pytest
from django.core.mail import EmailMultiAlternatives
from django.test import override_settings

from mailqueue_core import cli, codec
from mailqueue_core.commands import console
from mailqueue_core.convert import capture
from mailqueue_core.django_settings import get_store
from mailqueue_core.plugins import make_store
from mailqueue_core.store import Capability, Entry, Page, Record, State, Store
from mailqueue_stores.memory import MemoryStore
from tests.helpers import record
from tests.test_commands import manage
from tests.test_configuration import install_stores

VERBS = [
    ["list", "--state", "ready"],
    ["show", "abc"],
    ["send-now", "abc"],
    ["delete", "abc"],
    ["pause"],
    ["resume"],
]


@pytest.fixture
def conf():
    c = {"STORE": f"memory://{uuid.uuid4().hex}"}
    with override_settings(MAILQUEUE=c):
        yield c


@pytest.fixture
def store(conf) -> Store:
    return get_store(conf["STORE"], "default")


def _queue(store: Store, *recipients: str, ago: float = 60, due_in: float = 0, **kw) -> str:
    """One message queued ``ago`` seconds ago, due ``due_in`` from now; its id."""
    now = time.time()
    rec = record(*recipients, created=now - ago, **kw)
    rec = dataclasses.replace(rec, due=now + due_in if due_in else now - ago)
    store.enqueue([rec])
    return rec.id


def _states(store: Store) -> dict[str, str]:
    """One message in each state; state name -> id."""
    now = time.time()
    ids = {"dead": _queue(store, "dead@example.com", ago=2500)}
    (dead,) = store.fetch_due(now - 2400, 1, 30)
    store.bury(dead, "550 5.1.1 no such user", now - 30)
    ids["in-flight"] = _queue(store, "flying@example.com", ago=2300)
    (flying,) = store.fetch_due(now - 2200, 1, 2500)  # the lease ends in 5m
    ids["stuck"] = _queue(store, "stuck@example.com", ago=2100)
    (stuck,) = store.fetch_due(now - 2000, 1, 10)  # the lease ran out 1990s ago
    assert (stuck.id, dead.id, flying.id) == (ids["stuck"], ids["dead"], ids["in-flight"])
    ids["ready"] = _queue(store, "ready@example.com", ago=120, subject="Ready one")
    ids["scheduled"] = _queue(store, "later@example.com", due_in=600, subject="Later")
    return ids


# -- list -------------------------------------------------------------------------------------


def test_list_shows_one_line_per_message_in_each_state(store):
    ids = _states(store)
    expected = {
        "ready": ["due 2m ago", "age 2m", "to ready@example.com", "subject 'Ready one'"],
        "scheduled": ["due in 10m", "to later@example.com", "subject 'Later'"],
        "in-flight": ["lease ends in 5m", "age 38m", "to flying@example.com"],
        "stuck": ["lease ran out 33m ago", "age 35m", "to stuck@example.com"],
        "dead": ["buried 30s ago", "attempts 1", "error '550 5.1.1 no such user'"],
    }
    for state, parts in expected.items():
        code, out, err = manage("list", "--state", state)
        assert (code, err) == (0, "")
        (line,) = out.splitlines()
        assert line.startswith(f"{ids[state]}  ")
        for part in parts:
            assert f"  {part}" in line, (state, part, line)


def test_list_says_when_there_is_nothing(conf):
    assert manage("list", "--state", "dead") == (0, "no dead messages\n", "")
    assert manage("list", "--state", "in-flight", "--search", "x")[1] == (
        "no in-flight messages with 'x'\n0 found among 0 message(s) read\n"
    )


def test_list_json(store):
    ids = _states(store)
    code, out, _ = manage("list", "--state", "dead", "--json")
    doc = json.loads(out)
    assert code == 0 and doc["cursor"] is None and "examined" not in doc
    (entry,) = doc["entries"]
    assert entry["id"] == ids["dead"] and entry["state"] == "dead"
    assert entry["recipients"] == ["dead@example.com"] and entry["attempts"] == 1
    assert entry["reason"] == "550 5.1.1 no such user" and entry["buried"] is not None
    assert entry["damage"] is None and entry["lost"] is False and "headers" not in entry


def _next(out: str) -> list[str]:
    """The arguments of the 'next page:' line."""
    last = out.splitlines()[-1]
    assert last.startswith("next page: python manage.py mailqueue list ")
    return shlex.split(last.removeprefix("next page: python manage.py mailqueue "))


def test_list_pages_with_the_cursor_it_prints(store):
    ids = [_queue(store, f"r{i}@example.com", ago=100 - i) for i in range(5)]
    seen: list[str] = []
    args = ["list", "--state", "ready", "--limit", "2"]
    for _ in range(3):
        code, out, _ = manage(*args)
        assert code == 0
        seen += [line.split()[0] for line in out.splitlines() if not line.startswith("next")]
        if "next page:" not in out:
            break
        args = _next(out)
        assert args[:5] == ["list", "--state", "ready", "--limit", "2"]
    assert seen == ids
    newest = manage("list", "--state", "ready", "--newest", "--limit", "3")[1]
    assert [line.split()[0] for line in newest.splitlines()[:3]] == ids[::-1][:3]
    assert "--newest" in _next(newest)
    # JSON carries the cursor instead.
    doc = json.loads(manage("list", "--state", "ready", "--limit", "4", "--json")[1])
    rest = json.loads(manage("list", "--state", "ready", "--json", "--cursor", doc["cursor"])[1])
    assert [e["id"] for e in doc["entries"] + rest["entries"]] == ids
    assert rest["cursor"] is None


def test_list_search_across_pages_with_a_small_budget(store):
    hits = [
        _queue(store, "needle@example.com" if i % 4 == 0 else f"hay{i}@example.com", ago=99 - i)
        for i in range(12)
    ]
    hits = hits[::4]
    code, out, _ = manage("list", "--state", "ready", "--search", "NEEDLE", "--budget", "5")
    assert code == 0
    lines = out.splitlines()
    assert [line.split()[0] for line in lines[:2]] == hits[:2]
    assert lines[2] == "2 found among 5 message(s) read"
    args = _next(out)
    assert args[:5] == ["list", "--state", "ready", "--search", "NEEDLE"]
    assert "--budget" not in args  # not carried over: the reader's choice
    rest = manage(*args, "--budget", "5")[1].splitlines()
    assert rest[0].split()[0] == hits[2] and rest[1] == "1 found among 5 message(s) read"
    doc = json.loads(manage("list", "--state", "ready", "--search", "needle", "--json")[1])
    assert [e["id"] for e in doc["entries"]] == hits
    assert doc["examined"] == 12 and doc["cursor"] is None


def test_list_escapes_control_characters_and_shortens(store):
    mid = _queue(store, "a@example.com", subject="Hi \x1b[2J" + "x" * 100)
    now = time.time()
    (claim,) = store.fetch_due(now, 1, 30)
    store.requeue(claim, now + 60, "421 \x1b]0;owned\x07 " + "y" * 100)
    out = manage("list", "--state", "scheduled")[1]
    assert "\x1b" not in out and "\x07" not in out
    assert f"{mid}  due in 60s" in out or f"{mid}  due in 59s" in out
    assert "subject 'Hi \\x1b[2Jxxx" in out and "x...'" in out
    assert "error '421 \\x1b]0;owned\\x07 yyy" in out and "y...'" in out


def test_list_marks_undecodable_records(store):
    now = time.time()
    store.enqueue([Record("bad", b"not json", now - 5, now - 5)])
    out = manage("list", "--state", "ready")[1]
    assert out.startswith("bad [DAMAGED]  due 5s ago  age 5s  to ?  subject ''  attempts 0")
    assert "error 'cannot be decoded: record bad is not valid JSON" in out


def test_list_refuses_a_cursor_the_store_did_not_make(conf):
    for extra in ([], ["--search", "x"]):
        code, out, err = manage("list", "--state", "ready", "--cursor", "junk", *extra)
        assert code == 1 and out == ""
        assert err.startswith("mailqueue list: --cursor is not one this queue gave: ")
        assert len(err.splitlines()) == 1


# -- show -------------------------------------------------------------------------------------


def test_show_prints_everything_of_a_message(store):
    mail = EmailMultiAlternatives(
        "Your order \x1b[31m",
        "Thanks!\r\nSee you.",
        "Shop <shop@example.com>",
        ["to@example.com"],
        bcc=["hidden@example.com"],
    )
    mail.attach_alternative("<p onclick='x'>\x1b[2JThanks</p>", "text/html")
    mail.attach("report.pdf", b"%PDF-1.4", "application/pdf")
    mail.attach(None, "inline", "text/plain")
    queued = capture(mail)
    store.enqueue([dataclasses.replace(codec.to_record(queued), created=time.time() - 90)])
    code, out, _ = manage("show", queued.id)
    assert code == 0
    assert "\x1b" not in out
    for line in (
        f"id           {queued.id}",
        "state        ready",
        # The envelope sender, as this Django prepares it (6.1: the bare address).
        f"from         {queued.envelope_from}",
        "to           to@example.com, hidden@example.com",
        "subject      'Your order \\x1b[31m'",
        f"message-id   {queued.message_id}",
        "attempts     0",
        "headers:",
        "    From: Shop <shop@example.com>",
        "    Subject: Your order \\x1b[31m",
        "text body:",
        "    Thanks!",
        "    See you.",
        "HTML body (source):",
        "    <p onclick='x'>\\x1b[2JThanks</p>",
        "attachments:",
        "    report.pdf  application/pdf  8 bytes",
        "    (no name)  text/plain  6 bytes",
    ):
        assert line in out.splitlines(), line
    assert "Bcc" not in out and "%PDF" not in out
    assert re.search(r"^created      \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC \(9\ds ago\)$", out, re.M)
    doc = json.loads(manage("show", queued.id, "--json")[1])
    assert doc["id"] == queued.id and doc["html"].startswith("<p onclick")
    assert doc["attachments"][0] == {
        "filename": "report.pdf",
        "content_type": "application/pdf",
        "size": 8,
    }


def test_show_states_and_their_times(store):
    ids = _states(store)
    flying = manage("show", ids["in-flight"])[1]
    assert "state        in-flight" in flying and "lease ends   " in flying
    dead = manage("show", ids["dead"])[1]
    assert "reason       550 5.1.1 no such user" in dead and "buried       " in dead
    assert "due          " not in dead
    later = manage("show", ids["scheduled"])[1]
    assert "due          " in later and "(in 10m)" in later
    now = time.time()
    (claim,) = store.fetch_due(now, 1, 30)
    store.requeue(claim, now + 60, "421 try later")
    assert "last error   421 try later" in manage("show", claim.id)[1]


def test_show_says_what_is_wrong_with_a_bad_record(store):
    now = time.time()
    store.enqueue([Record("bad", b'{"v": 99}', now, now)])
    code, out, _ = manage("show", "bad")
    assert code == 0
    assert "damage       cannot be decoded: record bad has codec version 99" in out
    assert "from         ?" in out and "headers:" not in out


def test_show_an_unknown_id_exits_1(conf):
    assert manage("show", "nope") == (
        1,
        "",
        "mailqueue show: no message 'nope' in the queue or the dead letters\n",
    )


# -- send-now ---------------------------------------------------------------------------------


def test_send_now_makes_scheduled_messages_due_and_names_the_others(store):
    ids = _states(store)
    other = _queue(store, "b@example.com", due_in=900)
    code, out, err = manage("send-now", ids["scheduled"], other, ids["scheduled"])
    assert (code, out, err) == (0, "made 2 message(s) due now\n", "")
    assert manage("list", "--state", "scheduled")[1] == "no scheduled messages\n"
    code, out, err = manage(
        "send-now", ids["ready"], ids["in-flight"], ids["stuck"], ids["dead"], "nope"
    )
    assert code == 1
    assert out == f"made 0 message(s) due now\n{ids['ready']}: already due\n"
    assert err.splitlines() == [
        f"mailqueue send-now: {ids['in-flight']}: in flight: a flusher holds it and may be "
        "sending it now",
        f"mailqueue send-now: {ids['stuck']}: held past its lease by a flusher that stopped; "
        "the next flush takes it back",
        f"mailqueue send-now: {ids['dead']}: a dead letter ('retry' sends it again)",
        "mailqueue send-now: nope: no such message",
    ]


def test_send_now_all_scheduled_walks_every_page(store, monkeypatch):
    monkeypatch.setattr(console, "PAGE", 2)
    for i in range(5):
        _queue(store, f"s{i}@example.com", due_in=100 + i)
    ready = _queue(store, "r@example.com")
    assert manage("send-now", "--all-scheduled") == (0, "made 5 message(s) due now\n", "")
    assert json.loads(manage("status", "--json")[1])["ready"] == 6
    assert ready in manage("list", "--state", "ready")[1]
    assert manage("send-now", "--all-scheduled")[1] == "made 0 message(s) due now\n"


def test_send_now_needs_ids_or_all_scheduled(conf):
    expected = (1, "", "mailqueue send-now: give either --all-scheduled or message ids\n")
    assert manage("send-now") == expected
    assert manage("send-now", "--all-scheduled", "abc") == expected


# -- delete -----------------------------------------------------------------------------------


def test_delete_queued_stuck_and_dead_but_never_in_flight(store):
    ids = _states(store)
    doomed = [ids[state] for state in ("ready", "scheduled", "stuck", "dead")]
    code, out, err = manage("delete", *doomed, ids["in-flight"], "nope")
    assert code == 1 and out == "deleted 4 message(s)\n"
    assert err.splitlines() == [
        f"mailqueue delete: {ids['in-flight']}: kept, in flight: a flusher holds it and may "
        "be sending it now (its lease ends in 5m)",
        "mailqueue delete: nope: no such message",
    ]
    stats = json.loads(manage("status", "--json")[1])
    assert (stats["ready"], stats["scheduled"], stats["stuck"], stats["dead"]) == (0, 0, 0, 0)
    assert stats["in_flight"] == 1
    assert manage("delete", ids["in-flight"])[1] == "deleted 0 message(s)\n"


def test_delete_of_existing_ids_exits_0(store):
    mid = _queue(store, "a@example.com")
    assert manage("delete", mid, mid) == (0, "deleted 1 message(s)\n", "")
    assert manage("show", mid)[0] == 1


def test_delete_needs_ids(conf):
    from django.core.management import CommandError

    with pytest.raises(CommandError, match="the following arguments are required: ID"):
        manage("delete")


class Racing(MemoryStore):
    """A flusher claims every message between the command's look and its action."""

    def send_now(self, ids: Iterable[str], now: float) -> int:
        self.fetch_due(now + 10_000, 100, 30)
        return super().send_now(ids, now)

    def delete(self, ids: Iterable[str], now: float) -> int:
        self.fetch_due(now + 10_000, 100, 30)
        return super().delete(ids, now)


def test_a_message_claimed_meanwhile_is_left_and_said(tmp_path, monkeypatch):
    install_stores(tmp_path, monkeypatch, racing=Racing)
    spec = f"racing://{uuid.uuid4().hex}"
    with override_settings(MAILQUEUE={"STORE": spec}):
        store = get_store(spec, "default")
        later = _queue(store, "a@example.com", due_in=60)
        code, out, err = manage("send-now", later)
        assert (code, out) == (1, "made 0 message(s) due now\n")
        assert err == (
            "mailqueue send-now: 1 of the scheduled message(s) changed meanwhile (claimed or "
            "deleted) and were left as they were\n"
        )
        code, out, err = manage("delete", _queue(store, "b@example.com"))
        assert (code, out) == (1, "deleted 0 message(s)\n")
        assert err == (
            "mailqueue delete: 1 message(s) changed meanwhile (claimed by a flusher, or gone) "
            "and were not deleted\n"
        )


# -- pause, resume, status --------------------------------------------------------------------


def test_pause_and_resume_show_in_status(conf):
    assert json.loads(manage("status", "--json")[1])["paused"] is False
    assert "PAUSED" not in manage("status")[1]
    code, out, _ = manage("pause")
    assert code == 0
    assert out == (
        "delivery paused: flushers hold delivery until 'resume' (the site still queues "
        "mail meanwhile)\n"
    )
    out = manage("status")[1]
    assert out.startswith("delivery is PAUSED: flushers send nothing until 'resume'\nready ")
    assert json.loads(manage("status", "--json")[1])["paused"] is True
    assert manage("pause")[0] == 0  # twice is no error
    assert manage("resume") == (
        0,
        "delivery resumed: the next flush delivers what is due\n",
        "",
    )
    assert json.loads(manage("status", "--json")[1])["paused"] is False


# -- a store that cannot -------------------------------------------------------------------


class Blind(MemoryStore):
    """A store that lists nothing and keeps no pause flag (as memcached)."""

    capabilities = MemoryStore.capabilities - {Capability.BROWSE, Capability.PAUSE}


class Lost(MemoryStore):
    """A store that lost one message and still lists it (as memcached does)."""

    def _lost(self, now: float) -> Entry:
        gone = Record("gone", b"", now - 100, now - 100, attempts=2)
        return Entry(gone, State.DEAD, buried=now - 50, reason="evicted", lost=True)

    def browse(self, state: State, now: float, **kwargs: object) -> Page:
        return Page([self._lost(now)] if state is State.DEAD else [])

    def get(self, record_id: str, now: float) -> Entry | None:
        return self._lost(now) if record_id == "gone" else None


@pytest.mark.parametrize("verb", VERBS, ids=lambda v: v[0])
def test_a_store_without_the_capability_is_one_line_and_exit_1(verb, tmp_path, monkeypatch):
    install_stores(tmp_path, monkeypatch, blind=Blind)
    with override_settings(MAILQUEUE={"STORE": f"blind://{uuid.uuid4().hex}"}):
        code, out, err = manage(*verb)
    lacks = "'pause' capability" if verb[0] in ("pause", "resume") else "'browse' capability"
    assert (code, out) == (1, "")
    (line,) = err.splitlines()
    assert line.startswith(f"mailqueue {verb[0]}: Blind cannot ")
    assert line.endswith(f"(it lacks the {lacks})")


def test_the_memcached_store_is_refused_before_it_is_reached(unused_tcp_port):
    spec = f"memcached://127.0.0.1:{unused_tcp_port}"
    with override_settings(MAILQUEUE={"STORE": spec}):
        code, _, err = manage("list", "--state", "ready")
    assert code == 1
    assert err == (
        "mailqueue list: MemcachedStore cannot list its messages or act on single ones "
        "(it lacks the 'browse' capability)\n"
    )


def test_a_lost_message_is_listed_and_shown_as_lost(tmp_path, monkeypatch):
    install_stores(tmp_path, monkeypatch, lost=Lost)
    with override_settings(MAILQUEUE={"STORE": f"lost://{uuid.uuid4().hex}"}):
        out = manage("list", "--state", "dead")[1]
        assert out.startswith("gone [LOST]  buried 50s ago  age 2m  to ?  subject ''")
        assert out.rstrip().endswith("attempts 2  error 'evicted'")
        shown = manage("show", "gone")[1]
    assert "state        dead (lost by the store)" in shown and "reason       evicted" in shown


# -- the standalone command on a SQLite file ----------------------------------------------------


@pytest.fixture
def sqlite_queue(tmp_path) -> tuple[str, Store]:
    url = f"sqlite:///{tmp_path}/queue.db"
    store = make_store(url)
    store.stats(time.time())  # its first use creates the queue, as the site's first mail does
    return url, store


def standalone(*args: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = cli.main(list(args))
    return code, out.getvalue(), err.getvalue()


def test_standalone_list_and_show_on_sqlite(sqlite_queue):
    url, store = sqlite_queue
    ids = [_queue(store, f"r{i}@example.com", ago=50 - i, subject=f"S{i}") for i in range(3)]
    code, out, _ = standalone("list", "--state", "ready", "--limit", "2", "--store", url)
    assert code == 0
    lines = out.splitlines()
    assert [line.split()[0] for line in lines[:2]] == ids[:2]
    assert lines[2].startswith("next page: mailqueue list --state ready --limit 2 --cursor ")
    assert url not in out  # a store URL can hold a password: never printed
    more = shlex.split(lines[2].removeprefix("next page: mailqueue "))
    assert standalone(*more, "--store", url)[1].split()[0] == ids[2]
    found = standalone("list", "--state", "ready", "--search", "s1", "--json", "--store", url)
    assert [e["id"] for e in json.loads(found[1])["entries"]] == [ids[1]]
    code, out, _ = standalone("show", ids[0], "--store", url)
    assert code == 0 and "to           r0@example.com" in out and "subject      'S0'" in out
    assert standalone("show", "nope", "--store", url)[0] == 1


def test_standalone_send_now_and_delete_on_sqlite(sqlite_queue):
    url, store = sqlite_queue
    later = _queue(store, "a@example.com", due_in=600)
    other = _queue(store, "b@example.com", due_in=700)
    assert standalone("send-now", later, "--store", url) == (
        0,
        "made 1 message(s) due now\n",
        "",
    )
    assert standalone("send-now", "--all-scheduled", "--store", url)[1] == (
        "made 1 message(s) due now\n"
    )
    assert json.loads(standalone("status", "--json", "--store", url)[1])["ready"] == 2
    assert standalone("delete", later, other, "--store", url) == (0, "deleted 2 message(s)\n", "")
    code, _, err = standalone("delete", later, "--store", url)
    assert code == 1 and err == f"mailqueue delete: {later}: no such message\n"


def test_standalone_pause_and_resume_on_sqlite(sqlite_queue):
    url, _ = sqlite_queue
    assert standalone("pause", "--store", url)[0] == 0
    assert json.loads(standalone("status", "--json", "--store", url)[1])["paused"] is True
    assert make_store(url).paused()  # kept in the file, for every flusher
    assert standalone("resume", "--store", url)[0] == 0
    assert json.loads(standalone("status", "--json", "--store", url)[1])["paused"] is False


@pytest.mark.parametrize("verb", VERBS, ids=lambda v: v[0])
def test_the_verbs_never_create_a_queue(verb, tmp_path):
    typo = tmp_path / "queu.db"
    code, out, err = standalone(*verb, "--store", f"sqlite:///{typo}")
    assert (code, out) == (1, "")
    assert err.startswith(
        f"mailqueue: the store cannot be reached: sqlite store: there is no queue at {typo}"
    )
    assert list(tmp_path.iterdir()) == []
