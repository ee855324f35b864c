"""MAILQUEUE["SENT_LOG"]: a record of delivered mail, kept for a set time."""

from __future__ import annotations

import io
import json
import logging
import uuid

import pytest
from django.core.management import call_command
from django.test import override_settings

from mailqueue_core import codec
from mailqueue_core.config import Config
from mailqueue_core.errors import ConfigurationError, PermanentError, StoreUnavailable
from mailqueue_core.flusher import Flusher
from mailqueue_core.sentlog import PRUNE_EVERY, SentLog
from mailqueue_core.transport import Delivery
from mailqueue_stores.memory import MemoryStore
from tests.helpers import Clock, ScriptedTransport, message, record

DAY = 86400.0


@pytest.fixture
def store() -> MemoryStore:
    return MemoryStore(f"memory://{uuid.uuid4().hex}")


@pytest.mark.parametrize(
    ("value", "says"),
    [
        ("30d", "must be None, or a dict"),
        ({}, "must be None, or a dict"),
        ({"KEEP": "a month"}, "not a duration"),
        ({"KEEP": 0}, "more than 0 seconds"),
        ({"KEEP": True}, "must be a duration"),
        ({"KEEP": "30d", "BODY": "yes"}, "True or False"),
        ({"KEEP": "30d", "BODIES": True}, "BODY"),
    ],
)
def test_bad_settings_are_refused_naming_the_key(value, says):
    with pytest.raises(ConfigurationError, match=says) as caught:
        Config.from_settings({"STORE": "memory://", "SENT_LOG": value})
    assert caught.value.key == "SENT_LOG"


def test_keep_takes_a_duration_or_seconds():
    assert Config.from_settings({"STORE": "memory://"}).sent_log is None
    assert SentLog.from_settings({"KEEP": "30d"}) == SentLog(30 * DAY)
    assert SentLog.from_settings({"KEEP": 3600, "BODY": True}) == SentLog(3600.0, True)


def test_delivered_mail_is_logged_with_what_the_flusher_knew(store):
    clock = Clock()
    msg = message("a@example.com", "b@example.com", created=clock.now, subject="Receipt")
    store.enqueue([codec.to_record(msg)])
    transport = ScriptedTransport(lambda m: Delivery(transport="relay", provider_id="p-1"))
    Flusher(store, transport, clock=clock, sent_log=SentLog(DAY)).flush()
    (logged,) = store.sent_log(clock.now).entries
    assert logged.id == msg.id and logged.sent == clock.now
    assert logged.recipients == ("a@example.com", "b@example.com")
    assert (logged.subject, logged.message_id) == ("Receipt", msg.message_id)
    assert (logged.transport, logged.provider_id, logged.attempts) == ("relay", "p-1", 1)
    assert logged.data == b""  # never the body unless asked for
    assert store.count_sent(clock.now - 1) == 1


def test_the_body_is_kept_only_when_asked_for(store):
    clock = Clock()
    rec = record("a@example.com", created=clock.now)
    store.enqueue([rec])
    Flusher(store, ScriptedTransport(), clock=clock, sent_log=SentLog(DAY, body=True)).flush()
    (logged,) = store.sent_log(clock.now).entries
    assert codec.decode(rec).subject == "Hello" and logged.data == rec.data


def test_only_the_accepted_recipients_are_logged(store):
    clock = Clock()
    store.enqueue([record("kept@example.com", "gone@example.com", created=clock.now)])

    def refuse_one(m):
        return Delivery(refused={"gone@example.com": PermanentError("550 no such user")})

    Flusher(store, ScriptedTransport(refuse_one), clock=clock, sent_log=SentLog(DAY)).flush()
    (logged,) = store.sent_log(clock.now).entries
    assert logged.recipients == ("kept@example.com",)


def test_old_records_are_pruned_every_so_often(store):
    clock = Clock()
    store.enqueue([record("a@example.com", created=clock.now)])
    flusher = Flusher(store, ScriptedTransport(), clock=clock, sent_log=SentLog(60))
    flusher.flush()
    clock.advance(100)
    flusher.flush()  # older than KEEP now, but the last prune was 100 s ago
    assert store.count_sent(0) == 1
    clock.advance(PRUNE_EVERY)
    flusher.flush()
    assert store.count_sent(0) == 0


class BrokenLog(MemoryStore):
    def log_sent(self, records, expires):
        raise StoreUnavailable("connection reset")

    def prune_sent(self, sent_before):
        raise StoreUnavailable("connection reset")


def test_a_log_the_store_cannot_write_costs_no_mail(caplog):
    store = BrokenLog(f"memory://{uuid.uuid4().hex}")
    clock = Clock()
    store.enqueue([record("a@example.com", created=clock.now) for _ in range(2)])
    with caplog.at_level(logging.WARNING, "mailqueue"):
        result = Flusher(store, ScriptedTransport(), clock=clock, sent_log=SentLog(DAY)).flush()
    assert result.sent == 2 and store.stats(clock.now).ready == 0
    assert "the sent log missed 2 delivered message(s)" in caplog.text
    assert "the sent log could not be pruned" in caplog.text


def test_a_store_without_a_sent_log_says_so_and_delivers(caplog):
    from mailqueue_core.store import Capability

    class Forgetful(MemoryStore):
        capabilities = MemoryStore.capabilities - {Capability.SENT_LOG}

    store = Forgetful(f"memory://{uuid.uuid4().hex}")
    clock = Clock()
    store.enqueue([record("a@example.com", created=clock.now)])
    with caplog.at_level(logging.WARNING, "mailqueue"):
        flusher = Flusher(store, ScriptedTransport(), clock=clock, sent_log=SentLog(DAY))
        assert flusher.flush().sent == 1
    assert "keeps no sent log" in caplog.text and flusher.sent_log is None


def test_list_state_sent_pages_and_searches():
    name = uuid.uuid4().hex
    settings = {
        "STORE": f"memory://{name}",
        "TRANSPORT": {
            "NAME": "django",
            "OPTIONS": {"BACKEND": "django.core.mail.backends.locmem.EmailBackend"},
        },
        "SENT_LOG": {"KEEP": "30d"},
    }
    store = MemoryStore(f"memory://{name}")
    clock = Clock()
    for i in range(5):
        store.enqueue(
            [record(f"customer{i}@example.com", created=clock.now, subject=f"Order {i}")]
        )
    Flusher(store, ScriptedTransport(), clock=clock, sent_log=SentLog(DAY)).flush()
    with override_settings(MAILQUEUE=settings):
        out = io.StringIO()
        call_command("mailqueue", "list", "--state", "sent", "--limit", "2", stdout=out)
        lines = out.getvalue().splitlines()
        assert len(lines) == 3 and lines[-1].startswith("next page: ")
        assert "subject 'Order" in lines[0] and "attempts 1" in lines[0]
        out = io.StringIO()
        call_command(
            "mailqueue", "list", "--state", "sent", "--search", "CUSTOMER3", "--json", stdout=out
        )
        doc = json.loads(out.getvalue())
    (found,) = doc["entries"]
    assert found["recipients"] == ["customer3@example.com"] and found["subject"] == "Order 3"
    assert doc["examined"] == 5 and doc["cursor"] is None


def test_list_state_sent_on_a_store_without_the_log():
    settings = {"STORE": f"memcached://127.0.0.1:1?namespace={uuid.uuid4().hex}"}
    err = io.StringIO()
    with override_settings(MAILQUEUE=settings), pytest.raises(SystemExit) as exit_:
        call_command("mailqueue", "list", "--state", "sent", stdout=io.StringIO(), stderr=err)
    assert exit_.value.code == 1
    assert "MemcachedStore cannot keep a log of sent mail" in err.getvalue()
