"""Transport failover lists and per-message routes, against real SMTP servers."""

from __future__ import annotations

import logging
import time
import uuid

import pytest
from django.core.mail import EmailMessage
from django.test import override_settings

from mailqueue_core import codec
from mailqueue_core.backend import EmailBackend
from mailqueue_core.django_settings import get_config, get_store
from mailqueue_core.errors import ConfigurationError
from mailqueue_core.flusher import Flusher
from mailqueue_core.plugins import make_routes, make_transport
from mailqueue_core.routing import FailoverTransport
from mailqueue_core.testing.smtpserver import FaultySMTPServer
from mailqueue_stores.memory import MemoryStore
from tests.helpers import message as queued_message


@pytest.fixture
def primary():
    with FaultySMTPServer() as server:
        yield server


@pytest.fixture
def secondary():
    with FaultySMTPServer() as server:
        yield server


def url(server) -> str:
    return f"smtp://127.0.0.1:{server.port}?timeout=2"


def queue_and_flush(conf: dict, *messages: EmailMessage):
    with override_settings(MAILQUEUE=conf):
        assert EmailBackend().send_messages(list(messages)) == len(messages)
        config = get_config()
        store = get_store(config.store, config.namespace)
        transport = make_routes(config.transport, config.transports)
        return Flusher(store, transport, policy=config.policy).flush(), store


def mail(to="r@example.com", **headers) -> EmailMessage:
    return EmailMessage("S", "B", "site@example.com", [to], headers=headers)


@pytest.mark.parametrize("failure", ["refused", "421", "auth"])
def test_failover_to_the_secondary(primary, secondary, failure, caplog):
    if failure == "refused":
        primary.fault("connect", action="refuse")
    elif failure == "421":
        primary.fault("greeting", "421 4.3.2 Down for maintenance")
    else:
        primary.fault("auth", "535 5.7.8 Bad credentials")
    first = url(primary) + ("&starttls=false" if failure != "auth" else "")
    transports = [
        {"NAME": first, "OPTIONS": {"username": "u", "password": "p"}}
        if failure == "auth"
        else first,
        url(secondary),
    ]
    conf = {"STORE": f"memory://{uuid.uuid4().hex}", "TRANSPORT": transports}
    result, _ = queue_and_flush(conf, mail(), mail())
    assert result.sent == 2
    assert primary.messages == [] and len(secondary.messages) == 2
    assert any(
        "failing over" in r.getMessage() or "trying the next" in r.getMessage()
        for r in caplog.records
    )
    sent_logs = [r.getMessage() for r in caplog.records if r.getMessage().startswith("sent ")]
    assert all(f":{secondary.port}" in line for line in sent_logs)


def test_failover_mid_batch_and_back_to_primary_next_batch(primary, secondary):
    primary.fault("mail", "421 4.3.2 Shutting down", times=1)
    conf = {"STORE": f"memory://{uuid.uuid4().hex}", "TRANSPORT": [url(primary), url(secondary)]}
    result, _ = queue_and_flush(conf, mail(), mail())
    assert result.sent == 2
    assert (len(primary.messages), len(secondary.messages)) == (0, 2)
    result, _ = queue_and_flush(conf, mail())
    assert len(primary.messages) == 1  # the primary is tried first again


def test_permanent_failure_is_not_retried_elsewhere(primary, secondary):
    primary.fault("rcpt", "550 5.1.1 No such user")
    conf = {"STORE": f"memory://{uuid.uuid4().hex}", "TRANSPORT": [url(primary), url(secondary)]}
    result, _ = queue_and_flush(conf, mail())
    assert (result.sent, result.buried) == (0, 1)
    assert secondary.messages == []


def test_all_down_defers(primary, secondary):
    primary.fault("connect", action="refuse")
    secondary.fault("connect", action="refuse")
    conf = {"STORE": f"memory://{uuid.uuid4().hex}", "TRANSPORT": [url(primary), url(secondary)]}
    result, _ = queue_and_flush(conf, mail())
    assert (result.sent, result.deferred, result.buried) == (0, 1, 0)


def test_failover_list_needs_a_transport():
    with pytest.raises(ConfigurationError, match="empty list"):
        make_transport([])
    with pytest.raises(ValueError):
        FailoverTransport([])


def test_messages_choose_their_route(primary, secondary):
    conf = {
        "STORE": f"memory://{uuid.uuid4().hex}",
        "TRANSPORT": url(primary),
        "TRANSPORTS": {"bulk": url(secondary)},
    }
    by_attribute = mail("attr@example.com")
    by_attribute.mailqueue_transport = "bulk"
    result, _ = queue_and_flush(
        conf,
        mail("default@example.com"),
        mail("header@example.com", **{"X-Mailqueue-Transport": "bulk"}),
        by_attribute,
    )
    assert result.sent == 3
    assert [m.rcpt_tos for m in primary.messages] == [["default@example.com"]]
    assert sorted(m.rcpt_tos[0] for m in secondary.messages) == [
        "attr@example.com",
        "header@example.com",
    ]
    assert all(b"X-Mailqueue-Transport" not in m.data for m in secondary.messages)


def test_unknown_route_fails_at_send_time():
    conf = {"STORE": f"memory://{uuid.uuid4().hex}", "TRANSPORTS": {"bulk": "smtp"}}
    with override_settings(MAILQUEUE=conf), pytest.raises(ConfigurationError, match="'nope'"):
        EmailBackend().send_messages([mail(**{"X-Mailqueue-Transport": "nope"})])


def test_unknown_route_at_flush_time_is_deferred(primary, caplog):
    caplog.set_level(logging.INFO)
    store = MemoryStore(f"memory://{uuid.uuid4().hex}")
    msg = queued_message(created=time.time())
    msg.transport = "gone"
    store.enqueue([codec.to_record(msg)])
    transport = make_routes(url(primary), {"bulk": url(primary)})
    result = Flusher(store, transport).flush()
    assert result.deferred == 1
    assert any(
        "not in MAILQUEUE['TRANSPORTS']" in r.getMessage()
        for r in caplog.records
        if r.levelno >= logging.INFO
    )


def test_bad_routes_setting():
    with pytest.raises(ConfigurationError, match="TRANSPORTS"):
        get_config({"STORE": "memory://", "TRANSPORTS": ["smtp"]})


def test_a_wrong_password_on_the_primary_buries_nothing_when_all_fail(primary, secondary):
    primary.fault("auth", "535 5.7.8 Bad credentials")
    secondary.fault("connect", action="refuse")
    transports = [
        {"NAME": url(primary), "OPTIONS": {"username": "u", "password": "p"}},
        url(secondary),
    ]
    store = MemoryStore(f"memory://{uuid.uuid4().hex}")
    old = queued_message(created=time.time() - 2 * 86400)
    store.enqueue([codec.to_record(old)])
    result = Flusher(store, make_transport(transports)).flush()
    assert (result.deferred, result.buried) == (1, 0)
