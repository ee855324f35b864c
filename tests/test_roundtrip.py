"""What the SMTP server receives from the queue equals what Django's SMTP backend sends.

Each message shape is sent twice to a real SMTP server on loopback: once
through Django's own SMTP backend, once queued and flushed through the smtp
transport. Date and Message-ID are fixed at enqueue, so the two must be equal
byte for byte, MIME boundaries aside.
"""

from __future__ import annotations

import copy
import re
import uuid
from email.mime.image import MIMEImage

import pytest
from django.core.mail import EmailMessage, EmailMultiAlternatives
from django.test import override_settings

from mailqueue_core import codec, convert
from mailqueue_core.backend import EmailBackend
from mailqueue_core.django_settings import get_store
from mailqueue_core.flusher import Flusher
from mailqueue_core.testing.smtpserver import FaultySMTPServer
from mailqueue_transports.smtp import SMTPTransport
from tests.helpers import django_smtp_backend

PNG = bytes.fromhex("89504e470d0a1a0a0000000d4948445200000001000000010806000000") + bytes(
    range(256)
)


def plain():
    return EmailMessage("Receipt", "Thanks for your order.", "shop@example.com", ["a@example.com"])


def html_alternative():
    m = EmailMultiAlternatives(
        "Receipt", "Text body", "Shop <shop@example.com>", ["a@example.com"]
    )
    m.attach_alternative("<p>HTML <b>body</b></p>", "text/html")
    return m


def attachments():
    m = EmailMessage("Files", "See attached", "shop@example.com", ["a@example.com"])
    m.attach("notes.txt", "some text\nline two", "text/plain")
    m.attach("data.bin", bytes(range(256)) * 4, "application/octet-stream")
    m.attach("report.pdf", b"%PDF-1.4 fake", "application/pdf")
    return m


def inline_image():
    m = EmailMultiAlternatives("Inline", "Text", "shop@example.com", ["a@example.com"])
    m.attach_alternative('<img src="cid:logo">', "text/html")
    if convert._MODERN:
        from email.message import MIMEPart

        part = MIMEPart()
        part.set_content(PNG, maintype="image", subtype="png", disposition="inline", cid="<logo>")
    else:
        part = MIMEImage(PNG, "png")
        part.add_header("Content-ID", "<logo>")
        part.add_header("Content-Disposition", "inline")
    m.attach(part)
    return m


def non_ascii():
    return EmailMessage(
        "Ünïcödé subject — ✉ ça marche",
        "Grüße aus Köln, 東京からこんにちは",
        "Jörg Müller <jorg@example.com>",
        ["Zoë Ÿ <zoe@example.com>", "plain@example.com"],
        cc=["Çedille <cc@example.com>"],
        bcc=["hidden@example.com"],
        reply_to=["Réponse <reply@example.com>"],
    )


def custom_headers():
    return EmailMessage(
        "Headers",
        "Body",
        "shop@example.com",
        ["a@example.com"],
        headers={
            "X-Order": "1234",
            "List-Unsubscribe": "<mailto:u@example.com>",
            "From": "Other <o@example.com>",
        },
    )


def html_only():
    m = EmailMessage("HTML", "<h1>Hello</h1>", "shop@example.com", ["a@example.com"])
    m.content_subtype = "html"
    return m


def long_lines_and_dots():
    body = ".leading dot\n" + "x" * 2000 + "\n..two dots\n.\nend"
    return EmailMessage("Dots", body, "shop@example.com", ["a@example.com"])


class SelfRendering(EmailMessage):
    def message(self, *args, **kwargs):
        msg = super().message(*args, **kwargs)
        msg["X-Rendered-By"] = "subclass"
        return msg


def self_rendering():
    return SelfRendering("Custom", "Body", "shop@example.com", ["a@example.com"])


SHAPES = [
    plain,
    html_alternative,
    attachments,
    inline_image,
    non_ascii,
    custom_headers,
    html_only,
    long_lines_and_dots,
    self_rendering,
]


def normalise(data: bytes) -> bytes:
    boundaries = dict.fromkeys(re.findall(rb'boundary="?([^";\r\n]+)"?', data))
    for i, boundary in enumerate(boundaries):  # in order of appearance
        data = data.replace(boundary, b"BOUNDARY-%d" % i)
    return data


@pytest.fixture(scope="module")
def server():
    with FaultySMTPServer() as s:
        yield s


@pytest.mark.parametrize("shape", SHAPES, ids=lambda f: f.__name__)
def test_queue_sends_what_django_would(server, shape):
    server.clear()
    store_url = f"memory://{uuid.uuid4().hex}"
    with override_settings(MAILQUEUE={"STORE": store_url}):
        message = shape()
        assert EmailBackend().send_messages([message]) == 1
        store = get_store(store_url, "default")
        (claim,) = store.fetch_due(2e9, 10, 60)
        queued = codec.decode(claim.record)
        store.release(claim)
        # Django's own backend, given the same Date and Message-ID.
        reference = copy.copy(shape())
        reference.extra_headers = {
            k: v for k, v in queued.headers.items() if k in ("Date", "Message-ID")
        } | reference.extra_headers
        reference_backend = django_smtp_backend(host=server.host, port=server.port)
        assert reference_backend.send_messages([reference]) == 1
        transport = SMTPTransport(f"smtp://{server.host}:{server.port}")
        result = Flusher(store, transport).flush()
        assert result.sent == 1
    django_sent, queue_sent = server.messages
    assert queue_sent.mail_from == django_sent.mail_from
    assert queue_sent.rcpt_tos == django_sent.rcpt_tos
    assert normalise(queue_sent.data) == normalise(django_sent.data)
    assert b"\nBcc:" not in queue_sent.data and b"hidden@example.com" not in queue_sent.data
