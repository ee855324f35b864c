"""MAILQUEUE["STAGING"]: redirect-all and the domain allowlist, applied at delivery."""

from __future__ import annotations

import dataclasses
import email
import io
import logging
import uuid

import pytest
from django.core.mail import EmailMessage
from django.test import override_settings

from mailqueue_core import codec
from mailqueue_core.backend import EmailBackend
from mailqueue_core.config import Config
from mailqueue_core.errors import ConfigurationError
from mailqueue_core.flusher import Flusher
from mailqueue_core.staging import REDIRECTED_FROM, Staging
from mailqueue_stores.memory import MemoryStore
from mailqueue_transports.smtp import SMTPTransport
from tests.helpers import Clock, ScriptedTransport, message


@pytest.fixture
def store() -> MemoryStore:
    return MemoryStore(f"memory://{uuid.uuid4().hex}")


def flush(store, staging, transport=None):
    transport = transport or ScriptedTransport()
    clock = Clock()
    result = Flusher(store, transport, clock=clock, staging=staging).flush()
    return result, transport, clock


def queue(store, *recipients, **fields):
    msg = dataclasses.replace(message(*recipients, created=Clock().now), **fields)
    store.enqueue([codec.to_record(msg)])
    return msg


@pytest.mark.parametrize(
    ("value", "says"),
    [
        ("qa@example.com", "must be None, or a dict"),
        ({}, "needs ALLOWED_DOMAINS or REDIRECT_TO"),
        ({"REDIRECT_TO": "qa@example.com"}, "must be a list of strings"),
        ({"REDIRECT_TO": ["qa"]}, "not an address"),
        ({"ALLOWED_DOMAINS": [""]}, "non-empty strings"),
        ({"ALLOWED_DOMAINS": ["example.com"], "OTHERS": "keep"}, "'bury' or 'drop'"),
        ({"ALLOWED_DOMAIN": ["example.com"]}, "ALLOWED_DOMAINS"),  # did you mean
    ],
)
def test_bad_settings_are_refused_naming_the_key(value, says):
    with pytest.raises(ConfigurationError, match=says) as caught:
        Config.from_settings({"STORE": "memory://", "STAGING": value})
    assert caught.value.key == "STAGING"


def test_it_is_off_by_default_and_says_what_it_does():
    assert Config.from_settings({"STORE": "memory://"}).staging is None
    redirect = Staging.from_settings({"REDIRECT_TO": ["qa@example.com"]})
    assert redirect is not None
    assert redirect.describe() == "STAGING: all mail is redirected to qa@example.com"
    allow = Staging.from_settings({"ALLOWED_DOMAINS": ["Example.COM"], "OTHERS": "drop"})
    assert allow is not None
    assert allow.describe() == (
        "STAGING: mail to domains other than example.com is dropped, never sent"
    )
    assert allow.allows("a@example.com") and allow.allows("b@mail.example.com")
    assert not allow.allows("c@notexample.com") and not allow.allows("d@example.com.evil.org")


def test_redirect_sends_to_the_redirect_addresses_and_names_the_originals(store):
    staging = Staging.from_settings({"REDIRECT_TO": ["qa@example.com", "dev@example.com"]})
    queue(store, "customer@real.org", "other@real.org")
    result, transport, clock = flush(store, staging)
    (sent,) = transport.sent
    assert sent.recipients == ["qa@example.com", "dev@example.com"]
    assert sent.to == ["customer@real.org", "other@real.org"]  # the headers the site wrote
    assert sent.headers[REDIRECTED_FROM] == "customer@real.org, other@real.org"
    assert result.sent == 1 and store.stats(clock.now).ready == 0


def test_allowed_domains_go_as_addressed_and_the_rest_is_redirected(store):
    staging = Staging.from_settings(
        {"ALLOWED_DOMAINS": ["example.com"], "REDIRECT_TO": ["qa@example.com"]}
    )
    queue(store, "staff@example.com", "customer@real.org", "qa@example.com")
    _, transport, _ = flush(store, staging)
    (sent,) = transport.sent
    assert sent.recipients == ["staff@example.com", "qa@example.com"]
    assert sent.headers[REDIRECTED_FROM] == "customer@real.org"
    # Mail that only goes inside is not touched.
    queue(store, "staff@example.com")
    _, transport, _ = flush(store, staging)
    assert REDIRECTED_FROM not in transport.sent[0].headers


def test_recipients_outside_are_dead_lettered_with_the_reason(store):
    staging = Staging.from_settings({"ALLOWED_DOMAINS": ["example.com"]})
    queue(store, "staff@example.com", "customer@real.org")
    result, transport, clock = flush(store, staging)
    (sent,) = transport.sent
    assert sent.recipients == ["staff@example.com"]
    (dead,) = store.dead_letters()
    assert codec.decode(dead.record).recipients == ["customer@real.org"]
    assert "ALLOWED_DOMAINS" in dead.reason
    assert (result.sent, store.stats(clock.now).ready) == (1, 0)
    # A message with nobody inside is buried whole, never sent.
    queue(store, "customer@real.org")
    result, transport, _ = flush(store, staging)
    assert transport.sent == [] and result.buried == 1
    assert len(store.dead_letters()) == 2


def test_drop_leaves_recipients_outside_unsent_and_says_so(store, caplog):
    staging = Staging.from_settings({"ALLOWED_DOMAINS": ["example.com"], "OTHERS": "drop"})
    queue(store, "staff@example.com", "customer@real.org")
    queue(store, "customer@real.org")
    with caplog.at_level(logging.WARNING, "mailqueue"):
        result, transport, clock = flush(store, staging)
    assert [m.recipients for m in transport.sent] == [["staff@example.com"]]
    assert result.sent == 1 and result.buried == 0
    assert store.dead_letters() == []
    stats = store.stats(clock.now)
    assert (stats.ready, stats.in_flight) == (0, 0)
    assert caplog.text.count("not sent to customer@real.org") == 2
    assert all(r.levelname == "ERROR" for r in caplog.records if "not sent to" in r.getMessage())


def test_a_message_rendered_at_enqueue_gets_the_header_too(store):
    staging = Staging.from_settings({"REDIRECT_TO": ["qa@example.com"]})
    raw = b"From: site@example.com\r\nTo: customer@real.org\r\nSubject: Hi\r\n\r\nBody\r\n"
    queue(store, "customer@real.org", raw=raw)
    _, transport, _ = flush(store, staging)
    (sent,) = transport.sent
    parsed = email.message_from_bytes(sent.raw)
    assert parsed[REDIRECTED_FROM] == "customer@real.org" and parsed["To"] == "customer@real.org"


def test_through_the_smtp_server_and_the_settings(smtp):
    name = uuid.uuid4().hex
    settings = {
        "STORE": f"memory://{name}",
        "TRANSPORT": f"smtp://127.0.0.1:{smtp.port}",
        "STAGING": {"REDIRECT_TO": ["qa@example.com"]},
    }
    with override_settings(MAILQUEUE=settings):
        EmailBackend().send_messages(
            [EmailMessage("Receipt", "Thanks", "shop@example.com", ["customer@real.org"])]
        )
        conf = Config.from_settings(settings)
        store = MemoryStore(f"memory://{name}")
        transport = SMTPTransport(f"smtp://127.0.0.1:{smtp.port}")
        result = Flusher(store, transport, staging=conf.staging).flush()
    assert result.sent == 1
    (received,) = smtp.messages
    assert received.rcpt_tos == ["qa@example.com"]
    parsed = email.message_from_bytes(received.data)
    assert parsed["To"] == "customer@real.org"
    assert parsed[REDIRECTED_FROM] == "customer@real.org"


def test_status_says_it_is_on():
    from django.core.management import call_command

    settings = {
        "STORE": f"memory://{uuid.uuid4().hex}",
        "STAGING": {"ALLOWED_DOMAINS": ["example.com"]},
    }
    out = io.StringIO()
    with override_settings(MAILQUEUE=settings):
        call_command("mailqueue", "status", stdout=out)
    assert "STAGING: mail to domains other than example.com is dead-lettered" in out.getvalue()


def test_the_deploy_check_warns_that_it_is_on():
    from django.core.management import call_command
    from django.core.management.base import SystemCheckError

    settings = {
        "STORE": f"memory://{uuid.uuid4().hex}",
        "STAGING": {"REDIRECT_TO": ["qa@example.com"]},
    }
    err = io.StringIO()
    with override_settings(MAILQUEUE=settings):
        try:
            call_command("check", "--deploy", "--tag", "mailqueue", stderr=err, stdout=err)
        except SystemCheckError as exc:  # only errors raise; the warning is printed
            raise AssertionError(str(exc)) from exc
    assert "mailqueue.W007" in err.getvalue()
    assert "all mail is redirected to qa@example.com" in err.getvalue()
