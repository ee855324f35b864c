"""Send one message shape through the queue and through Django's SMTP backend, and compare.

The queue's side: ``EmailBackend(fail_silently=True).send_messages()`` into a
fresh memory store, then a flush to a real SMTP server through the smtp
transport, or through the django transport wrapping Django's SMTP backend.
Django's side: the same shape built again, given the ``Date`` and
``Message-ID`` the queue fixed at enqueue (in the message and in every Django
message attached as ``message/rfc822``), sent by Django's own SMTP backend to
the same server. The two outcomes must be the same: the same envelope and the
same bytes (MIME boundaries aside), or the same exception at send.
"""

from __future__ import annotations

import email
import email.policy
import inspect
import re
import uuid
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import django
from django.core import mail
from django.core.mail import EmailMessage
from django.test import override_settings

from mailqueue_core import codec
from mailqueue_core.backend import EmailBackend
from mailqueue_core.django_settings import get_store
from mailqueue_core.flusher import Flusher
from mailqueue_core.testing.smtpserver import FaultySMTPServer, Received
from mailqueue_core.transport import Transport
from mailqueue_transports.django import DjangoTransport
from mailqueue_transports.smtp import SMTPTransport
from tests.helpers import RemovedInDjango2028Warning, django_smtp_backend

#: The transports a queued message can go through to an SMTP server.
TRANSPORTS = ("smtp", "django")

#: Django >= 6.0 builds messages with the modern email API (``message(policy=...)``).
MODERN = "policy" in inspect.signature(EmailMessage.message).parameters
#: Django >= 5.2 has the EmailAlternative / EmailAttachment named tuples.
NAMED_TUPLES = hasattr(mail, "EmailAttachment")


def always() -> bool:
    return True


def modern() -> bool:
    return MODERN


@dataclass(frozen=True)
class Shape:
    """A message as one of Django's mail tests builds it; ``build`` makes a fresh one."""

    name: str
    build: Callable[[], EmailMessage]
    when: Callable[[], bool] = always
    """The Djangos that can build it (an API another version lacks)."""

    def __str__(self) -> str:
        return self.name


@dataclass
class Outcome:
    """What one side did with the message."""

    sent: int = 0
    error: BaseException | None = None
    received: Received | None = None
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def error_text(self) -> tuple[type, str] | None:
        return None if self.error is None else (type(self.error), str(self.error))


def build(shape: Shape) -> EmailMessage:
    # Django 6.1 deprecates some of the 5.x layout's APIs (MIMEBase attachments);
    # the shapes use them on purpose, as sites still do.
    with warnings.catch_warnings():
        if RemovedInDjango2028Warning is not None:
            warnings.simplefilter("ignore", RemovedInDjango2028Warning)
        return shape.build()


def normalise(data: bytes) -> bytes:
    """MIME boundaries replaced by their order of appearance."""
    boundaries = dict.fromkeys(re.findall(rb'boundary="?([^";\r\n]+)"?', data))
    for i, boundary in enumerate(boundaries):
        data = data.replace(boundary, b"BOUNDARY-%d" % i)
    return data


def _is_rfc822(attachment: Any) -> bool:
    return (
        isinstance(attachment, tuple)
        and len(attachment) == 3
        and attachment[2] == "message/rfc822"
    )


def _rfc822_children(parsed: email.message.Message) -> list[email.message.Message]:
    """The messages attached as message/rfc822 directly under ``parsed``, in order."""
    parts = parsed.get_payload() if parsed.is_multipart() else []
    return [part.get_payload()[0] for part in parts if part.get_content_type() == "message/rfc822"]


def _give_nested_ids(message: EmailMessage, parsed: email.message.Message) -> None:
    """Give each attached Django message the Date and Message-ID the queue sent it with."""
    children = iter(_rfc822_children(parsed))
    for attachment in message.attachments:
        if not _is_rfc822(attachment):
            continue
        child = next(children, None)
        if child is not None and isinstance(attachment[1], EmailMessage):
            ids = {k: child[k] for k in ("Date", "Message-ID") if child[k] is not None}
            _give_ids(attachment[1], ids)
            _give_nested_ids(attachment[1], child)


def _give_ids(message: EmailMessage, ids: dict[str, str]) -> None:
    """Put Date and Message-ID first in ``extra_headers`` unless the shape set them."""
    names = {name.lower() for name in message.extra_headers}
    given = {k: v for k, v in ids.items() if k.lower() not in names}
    message.extra_headers = given | dict(message.extra_headers)


def make_transport(kind: str, server: FaultySMTPServer) -> Transport:
    if kind == "smtp":
        return SMTPTransport(f"smtp://{server.host}:{server.port}")
    # Django's SMTP backend, as a site wraps it (or a provider's backend).
    return DjangoTransport(
        "",
        BACKEND="django.core.mail.backends.smtp.EmailBackend",
        **_backend_options(server),
    )


def _backend_options(server: FaultySMTPServer) -> dict[str, Any]:
    options: dict[str, Any] = {"host": server.host, "port": server.port}
    options |= {"username": "", "password": "", "use_tls": False, "use_ssl": False}
    if django.VERSION >= (6, 1):
        options["alias"] = "fidelity"
    return options


def through_queue(
    server: FaultySMTPServer, shape: Shape, transport: str = "smtp"
) -> tuple[Outcome, dict[str, str]]:
    store_url = f"memory://{uuid.uuid4().hex}"
    outcome = Outcome()
    headers: dict[str, str] = {}
    with override_settings(MAILQUEUE={"STORE": store_url}):
        message = build(shape)
        try:
            outcome.sent = EmailBackend(fail_silently=True).send_messages([message])
        except Exception as exc:
            outcome.error = exc
        store = get_store(store_url, "default")
        claims = store.fetch_due(2e9, 10, 60)
        outcome.details["queued"] = len(claims)
        if claims:
            queued = codec.decode(claims[0].record)
            headers = dict(queued.headers)
            for claim in claims:
                store.release(claim)
            before = len(server.messages)
            result = Flusher(store, make_transport(transport, server)).flush()
            outcome.details["flushed"] = result.sent
            if result.buried:
                outcome.details["buried"] = [d.reason for d in store.dead_letters()]
            if len(server.messages) > before:
                outcome.received = server.messages[-1]
    return outcome, headers


def through_django(
    server: FaultySMTPServer, shape: Shape, queue: Outcome, headers: dict
) -> Outcome:
    reference = build(shape)
    _give_ids(reference, {k: v for k, v in headers.items() if k in ("Date", "Message-ID")})
    if queue.received is not None:
        parsed = email.message_from_bytes(queue.received.data, policy=email.policy.compat32)
        _give_nested_ids(reference, parsed)
    outcome = Outcome()
    before = len(server.messages)
    backend = django_smtp_backend(host=server.host, port=server.port)
    try:
        outcome.sent = backend.send_messages([reference])
    except Exception as exc:
        outcome.error = exc
        backend.close()  # Django 4.2 leaves its connection open when a message fails
    if len(server.messages) > before:
        outcome.received = server.messages[-1]
    return outcome


def compare(
    server: FaultySMTPServer, shape: Shape, transport: str = "smtp"
) -> tuple[Outcome, Outcome]:
    """(queue, django): both outcomes, the queue's first."""
    queue, headers = through_queue(server, shape, transport)
    queue.details["transport"] = transport
    return queue, through_django(server, shape, queue, headers)


def assert_same(queue: Outcome, django: Outcome) -> None:
    """The queue did what Django's SMTP backend did with the same message."""
    if django.error is not None:
        # Django refuses it at send, whatever fail_silently says. The queue
        # refuses it too, with Django's own error, where that costs no
        # rendering; else the flusher buries it at once, with Django's error.
        if queue.error is not None:
            assert queue.error_text == django.error_text
            assert queue.details["queued"] == 0
        elif queue.details["transport"] == "django":
            # The wrapped backend fails inside its own send_messages(), which
            # the django transport reports as an unexpected error: never sent.
            assert queue.details.get("flushed") == 0 and queue.received is None
        else:
            assert queue.details.get("flushed") == 0 and queue.received is None
            (reason,) = queue.details.get("buried", [None])
            assert reason is not None and str(django.error) in reason
            assert type(django.error).__name__ in reason
        return
    assert queue.error is None, f"the queue refused what Django sends: {queue.error!r}"
    assert "buried" not in queue.details, queue.details
    assert queue.sent == django.sent
    if not django.sent:
        return
    assert queue.details["queued"] == queue.details["flushed"] == 1
    assert queue.received is not None and django.received is not None
    assert queue.received.mail_from == django.received.mail_from
    assert queue.received.rcpt_tos == django.received.rcpt_tos
    assert normalise(queue.received.data).decode(errors="replace") == normalise(
        django.received.data
    ).decode(errors="replace")
    assert normalise(queue.received.data) == normalise(django.received.data)
