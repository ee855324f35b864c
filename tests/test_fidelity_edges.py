"""The edges issue 11 found: what once failed at send, or arrived otherwise than Django sends it.

Each test goes through a real SMTP server on loopback: the queue's delivery
against what Django's own SMTP backend sends (see :mod:`tests.fidelity`).
"""

from __future__ import annotations

import email
import email.charset
import email.policy
import logging
import time
import uuid
from datetime import datetime, timezone

import pytest
from django.core.mail import EmailMessage, EmailMultiAlternatives
from django.test import override_settings

from mailqueue_core import codec, convert
from mailqueue_core.backend import EmailBackend
from mailqueue_core.django_settings import get_store
from mailqueue_core.flusher import Flusher
from mailqueue_core.message import Part, QueuedMessage
from mailqueue_core.testing.smtpserver import FaultySMTPServer
from mailqueue_transports.smtp import SMTPTransport

pytest.register_assert_rewrite("tests.fidelity")
from tests.fidelity import MODERN, Shape, assert_same, compare  # noqa: E402


@pytest.fixture(scope="module")
def server():
    with FaultySMTPServer() as s:
        yield s


def charset_message() -> EmailMessage:
    m = EmailMessage("Charset", "Grüße aus Köln", "shop@example.com", ["a@example.com"])
    m.encoding = email.charset.Charset("utf-8")
    return m


@pytest.mark.parametrize("transport", ["smtp", "django"])
def test_a_charset_encoding_is_queued_even_with_fail_silently_and_sent_as_django_sends_it(
    server, transport
):
    queue, django = compare(server, Shape("charset", charset_message), transport)
    assert_same(queue, django)
    if MODERN:
        # Django >= 6.0 refuses a Charset at send; so does the queue, with its error.
        assert isinstance(queue.error, TypeError) and "Charset" in str(queue.error)
    else:
        assert (queue.sent, queue.details["flushed"]) == (1, 1)
        assert b"Content-Transfer-Encoding: base64" in queue.received.data


def test_a_charset_message_is_stored_rendered_with_its_charset_name():
    conf = {"STORE": f"memory://{uuid.uuid4().hex}"}
    m = charset_message()
    m.encoding = email.charset.Charset("iso-8859-1")
    with override_settings(MAILQUEUE=conf):
        if MODERN:
            with pytest.raises(TypeError, match="Charset"):
                EmailBackend(fail_silently=True).send_messages([m])
            return
        assert EmailBackend(fail_silently=True).send_messages([m]) == 1
        (claim,) = get_store(conf["STORE"], "default").fetch_due(2e9, 10, 60)
    queued = codec.decode(claim.record)
    assert queued.raw is not None and b'charset="iso-8859-1"' in queued.raw
    assert queued.encoding == "iso-8859-1" and queued.body == ""


def test_a_datetime_date_header_arrives_as_the_date_django_sends(server):
    when = datetime(2001, 11, 9, 1, 8, 47, tzinfo=timezone.utc)
    shape = Shape(
        "date",
        lambda: EmailMessage("S", "B", "a@example.com", ["b@example.com"], headers={"Date": when}),
    )
    queue, django = compare(server, shape)
    assert_same(queue, django)
    date = email.message_from_bytes(queue.received.data, policy=email.policy.default)["Date"]
    # Django >= 6.0 formats it as a date; older Django writes str(datetime).
    assert date == ("Fri, 09 Nov 2001 01:08:47 +0000" if MODERN else str(when))


@pytest.mark.parametrize("transport", ["smtp", "django"])
def test_an_attached_message_without_subject_keeps_its_empty_subject(server, transport):
    def build():
        m = EmailMultiAlternatives("Outer", "text", "a@example.com", ["b@example.com"])
        m.attach_alternative("<p>HTML</p>", "text/html")
        m.attach(None, EmailMessage(body="inner"), "message/rfc822")
        return m

    queue, django = compare(server, Shape("nested", build), transport)
    assert_same(queue, django)
    assert (b"\r\nSubject:\r\n" in queue.received.data) is MODERN


def test_an_attached_message_is_sent_the_same_at_every_attempt():
    inner = EmailMessage("Inner", "inner body", "a@example.com", ["b@example.com"])
    outer = EmailMessage("Outer", "outer", "a@example.com", ["b@example.com"])
    outer.attach("inner.eml", inner, "message/rfc822")
    queued = codec.decode(codec.to_record(convert.capture(outer)))
    (part,) = queued.attachments
    assert isinstance(part.content, QueuedMessage)  # kept as a structure, not rendered
    assert {"Date", "Message-ID"} <= set(part.content.headers)  # fixed at enqueue
    first = email.message_from_bytes(convert.render(queued))
    again = email.message_from_bytes(convert.render(queued))
    (first_inner,) = first.get_payload()[1].get_payload()
    (again_inner,) = again.get_payload()[1].get_payload()
    assert first_inner.items() == again_inner.items()
    assert first_inner["Message-ID"] == part.content.headers["Message-ID"]


def test_an_attribute_json_cannot_hold_is_left_out_with_a_warning(server, caplog):
    def build():
        m = EmailMessage("S", "Body", "a@example.com", ["b@example.com"])
        m.tags = ["receipt"]
        m.user = object()  # a site's own bookkeeping; Django's SMTP backend ignores it
        return m

    with caplog.at_level(logging.WARNING, logger="mailqueue.convert"):
        queue, django = compare(server, Shape("attribute", build))
    assert_same(queue, django)
    (record,) = [r for r in caplog.records if r.name == "mailqueue.convert"]
    assert "'user'" in record.getMessage() and "not JSON serializable" in record.getMessage()
    assert "Body" not in record.getMessage()


def test_a_message_django_cannot_render_is_buried_at_once_with_djangos_error(server):
    store_url = f"memory://{uuid.uuid4().hex}"
    now = time.time()
    broken = QueuedMessage(
        "a@example.com",
        "a@example.com",
        ["b@example.com"],
        body="Body",
        headers={"Message-ID": "<broken@example.com>", "Date": "Fri, 09 Nov 2001 01:08:47 -0000"},
        attachments=[Part(b"data", "no-slash-mimetype", "data.bin")],
        created=now,
        due=now,
    )
    with override_settings(MAILQUEUE={"STORE": store_url}):
        store = get_store(store_url, "default")
        store.enqueue([codec.to_record(broken)])
        before = len(server.messages)
        transport = SMTPTransport(f"smtp://{server.host}:{server.port}")
        result = Flusher(store, transport).flush()
    assert (result.sent, result.deferred, result.buried) == (0, 0, 1)
    assert len(server.messages) == before
    (dead,) = store.dead_letters()
    assert dead.reason.startswith("Django cannot render this message: ValueError")
