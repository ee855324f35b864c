"""Record <-> Django message: every field comes back, and the django transport gets it whole."""

from __future__ import annotations

import datetime
import email
import email.message
import email.policy
import time
import uuid

import pytest
from django.core import mail
from django.core.mail import EmailMessage, EmailMultiAlternatives
from django.test import override_settings
from django.utils.translation import gettext_lazy

from mailqueue_core import codec, convert
from mailqueue_core.flusher import Flusher
from mailqueue_core.plugins import make_transport
from mailqueue_stores.memory import MemoryStore

LOCMEM = "django:django.core.mail.backends.locmem.EmailBackend"


def through_the_queue(message: EmailMessage) -> EmailMessage:
    """Capture, encode, decode, rebuild: what the django transport hands on."""
    queued = convert.capture(message)
    return convert.to_django(codec.decode(codec.to_record(queued)))


def test_fields_survive():
    m = EmailMultiAlternatives(
        gettext_lazy("Lazy subject"),
        "Body",
        "Shop <shop@example.com>",
        ["a@example.com"],
        cc=["c@example.com"],
        bcc=["b@example.com"],
        reply_to=["r@example.com"],
        headers={"X-Tag": gettext_lazy("5")},
    )
    m.attach_alternative("<p>hi</p>", "text/html")
    m.attach("Grüße.txt", "text", "text/plain")
    m.attach("blob.bin", bytearray(b"\x00\x01"), "application/octet-stream")
    back = through_the_queue(m)
    assert isinstance(back, EmailMultiAlternatives)
    assert back.subject == "Lazy subject"
    assert (back.to, back.cc, back.bcc, back.reply_to) == (m.to, m.cc, m.bcc, m.reply_to)
    assert back.extra_headers["X-Tag"] == "5"
    assert "Message-ID" in back.extra_headers and "Date" in back.extra_headers
    assert [tuple(a) for a in back.alternatives] == [("<p>hi</p>", "text/html")]
    assert tuple(back.attachments[0]) == ("Grüße.txt", "text", "text/plain")
    assert tuple(back.attachments[1])[1] == b"\x00\x01"
    assert b"Gr" in back.message().as_bytes()


def test_message_attachments():
    inner = EmailMessage("Inner", "inner body", "a@example.com", ["b@example.com"])
    parsed = email.message_from_string("Subject: parsed\n\nparsed body")
    m = EmailMessage("Outer", "outer", "a@example.com", ["b@example.com"])
    m.attach("inner.eml", inner, "message/rfc822")
    m.attach("parsed.eml", parsed, "message/rfc822")
    rendered = convert.render(codec.decode(codec.to_record(convert.capture(m))))
    assert b"Subject: Inner" in rendered and b"Subject: parsed" in rendered


def test_attached_messages_come_back_as_the_objects_they_were():
    inner = EmailMessage("Inner", "inner body", "a@example.com", ["b@example.com"])
    inner.tags = ["inner"]
    parsed = email.message_from_string("Subject: parsed\n\nparsed body")
    m = EmailMessage("Outer", "outer", "a@example.com", ["b@example.com"])
    m.attach("inner.eml", inner, "message/rfc822")
    m.attach("parsed.eml", parsed, "message/rfc822")
    back = through_the_queue(m)
    (_, django_child, _), (_, python_child, _) = back.attachments
    # A provider's backend reads a Django message attached, as the site gave it.
    assert isinstance(django_child, EmailMessage) and django_child.subject == "Inner"
    assert django_child.tags == ["inner"]
    assert {"Date", "Message-ID"} <= set(django_child.extra_headers)
    assert isinstance(python_child, email.message.Message)
    assert python_child["Subject"] == "parsed"


def test_a_message_rendered_at_enqueue_is_written_out_as_rendered():
    q = convert.capture(SelfRendering("S", "B", "a@example.com", ["b@example.com"]))
    back = convert.to_django(codec.decode(codec.to_record(q)))
    assert isinstance(back, convert.RawEmailMessage)
    assert back.message()["X-Custom"] == "yes"
    assert back.message().as_bytes(linesep="\r\n") == q.raw  # Django < 6.0's SMTP backend
    assert back.message(policy=email.policy.SMTP).as_bytes() == q.raw  # Django >= 6.0's
    assert back.message().as_bytes() == q.raw.replace(b"\r\n", b"\n")


def test_extra_attributes_reach_the_wrapped_backend():
    m = EmailMessage("S", "B", "a@example.com", ["b@example.com"])
    m.tags = ["receipt"]
    m.metadata = {"order": 42}
    m.sent_on = datetime.datetime(2026, 1, 1, tzinfo=datetime.timezone.utc)
    m._private = object()  # private attributes are not the queue's business
    back = through_the_queue(m)
    assert back.tags == ["receipt"]
    assert back.metadata == {"order": 42}
    assert back.sent_on == m.sent_on  # a datetime keeps its type and zone
    assert not hasattr(back, "_private")


def test_subclass_content_subtype_and_encoding():
    class HTMLEmail(EmailMessage):
        content_subtype = "html"

    m = HTMLEmail("S", "<b>x</b>", "a@example.com", ["b@example.com"])
    m.encoding = "iso-8859-1"
    back = through_the_queue(m)
    assert back.content_subtype == "html" and back.encoding == "iso-8859-1"
    assert b"text/html" in back.message().as_bytes()


def test_localtime_date():
    with override_settings(EMAIL_USE_LOCALTIME=True, TIME_ZONE="Europe/Berlin"):
        q = convert.capture(EmailMessage("S", "B", "a@example.com", ["b@example.com"]))
    assert q.headers["Date"].endswith(("+0100", "+0200"))


class SelfRendering(EmailMessage):
    def message(self, *args, **kwargs):
        msg = super().message(*args, **kwargs)
        msg["X-Custom"] = "yes"
        return msg


@pytest.fixture
def store():
    return MemoryStore(f"memory://{uuid.uuid4().hex}")


def queued(message):
    q = convert.capture(message)
    q.created = q.due = time.time()
    return q


def deliver_with_locmem(store, *messages, recipients=None):
    records = []
    for m in messages:
        q = queued(m)
        if recipients is not None:
            q.recipients = recipients
        records.append(codec.to_record(q))
    store.enqueue(records)
    mail.outbox = []
    result = Flusher(store, make_transport(LOCMEM)).flush()
    return result, list(mail.outbox)


def test_django_transport_delivers_self_rendering_messages_as_rendered(store):
    result, outbox = deliver_with_locmem(
        store, SelfRendering("S", "B", "a@example.com", ["b@example.com"])
    )
    assert result.sent == 1
    assert outbox[0].message()["X-Custom"] == "yes"


def test_django_transport_retries_only_remaining_recipients(store):
    m = EmailMessage("S", "B", "a@example.com", ["one@example.com", "two@example.com"])
    _, outbox = deliver_with_locmem(store, m, recipients=["two@example.com"])
    assert outbox[0].recipients() == ["two@example.com"]


def test_django_transport_backend_that_sends_nothing_is_transient(store):
    class Silent:
        def __init__(self, **kwargs):
            pass

        def open(self):
            pass

        def close(self):
            pass

        def send_messages(self, messages):
            return 0

    import sys
    import types

    module = types.ModuleType("silent_backend_for_tests")
    module.EmailBackend = Silent
    sys.modules[module.__name__] = module
    try:
        store.enqueue([codec.to_record(queued(EmailMessage("S", "B", "a@x.com", ["b@x.com"])))])
        transport = make_transport("django:silent_backend_for_tests.EmailBackend")
        result = Flusher(store, transport).flush()
    finally:
        del sys.modules[module.__name__]
    assert (result.sent, result.deferred) == (0, 1)
