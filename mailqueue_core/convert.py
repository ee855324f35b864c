"""Record <-> Django ``EmailMessage``: the one place that knows Django's mail classes.

:func:`capture` runs at enqueue, inside the web request: it reads the
message's fields, fixes ``Date`` and ``Message-ID`` (of attached Django
messages too), and computes the envelope exactly as Django's SMTP backend
does. It renders nothing unless the structure cannot be kept as JSON (the
message's class renders itself, or its ``encoding`` is an
:class:`email.charset.Charset`): such a message is rendered by Django at
enqueue and kept as bytes. :func:`to_django` and :func:`render` run in the
flusher.

What Django's SMTP backend refuses at send (a newline in a header, a header
value the email package rejects, text UTF-8 cannot encode), the queue refuses
at enqueue with Django's own error, where a cheap look finds it; what only
rendering shows, :func:`render` reports as a
:class:`~mailqueue_core.errors.PermanentError` carrying Django's error, so the
flusher buries the message at once instead of retrying it for a day.

Django 6.0 rebuilt its mail classes on the modern ``email`` API; the few
differences are detected once here, by feature, not by version number.
"""

from __future__ import annotations

import email
import email.message
import email.policy
import email.utils
import functools
import inspect
import sys
from datetime import datetime, timezone
from email.mime.base import MIMEBase
from typing import Any

from django.conf import settings
from django.core import mail
from django.core.mail import EmailMessage, EmailMultiAlternatives
from django.utils.encoding import force_str

from mailqueue_core import codec
from mailqueue_core.errors import PermanentError
from mailqueue_core.message import Attachment, MimePart, Part, QueuedMessage
from mailqueue_core.schedule import (
    EXPIRES_ATTRIBUTE,
    EXPIRES_HEADER,
    SEND_AT_ATTRIBUTE,
    SEND_AT_HEADER,
    moment,
)
from mailqueue_core.text import get_logger

__all__ = ["capture", "render", "to_django"]

logger = get_logger("mailqueue.convert")

# Django >= 6.0: message(policy=...) builds an email.message.EmailMessage.
_MODERN = "policy" in inspect.signature(EmailMessage.message).parameters
_EmailAlternative = getattr(mail, "EmailAlternative", None)
_EmailAttachment = getattr(mail, "EmailAttachment", None)

#: A message chooses its transport route with this header (stripped before
#: sending) or this attribute.
ROUTE_HEADER = "X-Mailqueue-Transport"
ROUTE_ATTRIBUTE = "mailqueue_transport"

# Attributes of Django's message classes that capture() reads explicitly; any
# other public instance attribute is carried in ``extra``.
_KNOWN = frozenset(
    {
        "to", "cc", "bcc", "reply_to", "from_email", "subject", "body",
        "attachments", "alternatives", "extra_headers", "connection", "encoding",
        "content_subtype", "mixed_subtype", "alternative_subtype",
        # anymail sets this after sending; it describes a past send, not the message.
        "anymail_status",
        ROUTE_ATTRIBUTE, SEND_AT_ATTRIBUTE, EXPIRES_ATTRIBUTE,
    }
)  # fmt: skip
_SUBTYPES = ("content_subtype", "mixed_subtype", "alternative_subtype")

# Methods through which a subclass can change how a message renders. A class
# that overrides any of them is rendered at enqueue and stored as bytes.
_RENDER_METHODS = (
    "message", "_create_message", "_create_attachments", "_create_attachment",
    "_create_mime_attachment", "_create_alternatives", "_add_bodies",
    "_add_attachments", "_add_attachment", "_set_list_header_if_not_empty",
)  # fmt: skip


_RENDERS_ITSELF: dict[type, bool] = {}


def _renders_itself(cls: type) -> bool:
    known = _RENDERS_ITSELF.get(cls)
    if known is None:
        known = _RENDERS_ITSELF[cls] = _overrides_rendering(cls)
    return known


def _overrides_rendering(cls: type) -> bool:
    return any(
        getattr(cls, name, None)
        not in (getattr(EmailMessage, name, None), getattr(EmailMultiAlternatives, name, None))
        for name in _RENDER_METHODS
    )


def _unset_markers() -> tuple[Any, ...]:
    """Placeholders that stand for "not set" (anymail's ``UNSET``): not carried."""
    utils = sys.modules.get("anymail.utils")  # loaded if the message is anymail's
    marker = getattr(utils, "UNSET", None)
    return () if marker is None else (marker,)


@functools.lru_cache(maxsize=1)
def _address_preparer() -> Any:
    """Django's own envelope-address function for the installed version."""
    from django.core.mail.backends import smtp

    if hasattr(smtp.EmailBackend, "prep_address"):
        backend = smtp.EmailBackend.__new__(smtp.EmailBackend)
        return lambda addr, encoding: backend.prep_address(addr)
    from django.core.mail.message import sanitize_address

    return sanitize_address


def envelope_address(address: str, encoding: str) -> str:
    """``address`` as Django's SMTP backend puts it in MAIL FROM / RCPT TO."""
    return _address_preparer()(address, encoding)


def _date_header() -> str:
    if _MODERN:
        if settings.EMAIL_USE_LOCALTIME:
            from django.utils.timezone import get_current_timezone

            return email.utils.format_datetime(datetime.now(get_current_timezone()))
        return email.utils.format_datetime(datetime.now(timezone.utc))
    return email.utils.formatdate(localtime=settings.EMAIL_USE_LOCALTIME)


def _header_value(name: str, value: Any) -> str:
    """A header value as the text Django's rendering would make of it."""
    if not _MODERN or name.lower() == "from":
        return force_str(value)
    value = force_str(value, strings_only=True)
    if isinstance(value, str):
        return value
    # Django >= 6.0 hands a datetime, a number or None to the email package as
    # it is: a datetime becomes a formatted date, None an empty value, and what
    # the package refuses (a number) fails here as it fails Django's send.
    return str(email.policy.SMTP.header_factory(name, value))


def _fixed_headers(extra_headers: dict[str, Any]) -> dict[str, str]:
    """Date and Message-ID fixed now, placed where Django would put them."""
    names = {name.lower() for name in extra_headers}
    fixed: dict[str, str] = {}
    if "date" not in names:
        fixed["Date"] = _date_header()
    if "message-id" not in names:
        from django.core.mail.utils import DNS_NAME

        fixed["Message-ID"] = email.utils.make_msgid(domain=str(DNS_NAME))
    for name, value in extra_headers.items():
        fixed[str(name)] = _header_value(str(name), value)
    return fixed


def _wire_bytes(message: EmailMessage) -> bytes:
    """The bytes Django's SMTP backend would send for ``message``."""
    if _MODERN:
        return message.message(policy=email.policy.SMTP).as_bytes()
    return message.message().as_bytes(linesep="\r\n")


def _serialise(part: email.message.Message) -> bytes:
    """A Python email object as the generator of Django's SMTP backend writes it."""
    if _MODERN:
        return part.as_bytes(policy=email.policy.SMTP)
    return part.as_bytes()


def _has_newline(value: Any) -> bool:
    text = force_str(value)
    return "\n" in text or "\r" in text


def _unencodable(text: str) -> bool:
    """True for text with lone surrogates (bytes decoded with ``surrogateescape``)."""
    if text.isascii():
        return False
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _suspect(message: EmailMessage) -> bool:
    """Whether Django's SMTP backend may refuse ``message`` at send."""
    names = list(message.extra_headers)
    values = [message.subject, message.from_email, *message.extra_headers.values()]
    values += [*message.to, *message.cc, *message.reply_to]
    if any(_has_newline(v) for v in values) or any(_has_newline(n) for n in names):
        return True
    if isinstance(message.body, str) and _unencodable(message.body):
        return True
    if _MODERN:
        # Django >= 6.0 refuses a Bcc header and the legacy subtype attributes.
        return any(str(n).lower() == "bcc" for n in names) or any(
            hasattr(message, name) for name in ("mixed_subtype", "alternative_subtype")
        )
    return False


def _refuse_as_django(message: EmailMessage) -> None:
    """Fail as Django's backend fails at send, without rendering a sound message.

    The cheap scan finds the suspects; only then is the message rendered, so
    the error raised is Django's own, word for word.
    """
    if _suspect(message):
        _wire_bytes(message)


def _charset_name(encoding: Any) -> str | None:
    if encoding is None or isinstance(encoding, str):
        return encoding
    name = getattr(encoding, "input_charset", None)  # an email.charset.Charset
    return name if isinstance(name, str) else None


def _capture_part(content: Any, mimetype: str, filename: Any = None) -> Part:
    if isinstance(content, EmailMessage):  # a message/rfc822 attachment
        nested = _capture(content, dict(content.extra_headers))
        nested.id = ""  # part of its message, not a queue entry
        # Rendered at enqueue, it is what Django makes of it: a Python email object.
        content = nested if nested.raw is None else MimePart(nested.raw)
    elif isinstance(content, email.message.Message):
        content = MimePart(_serialise(content))
    elif isinstance(content, (bytearray, memoryview)):
        content = bytes(content)
    elif not isinstance(content, (str, bytes)):
        content = force_str(content)
    return Part(content, mimetype, filename)


def _capture_attachment(attachment: Any) -> Attachment:
    if isinstance(attachment, email.message.Message):
        return MimePart(_serialise(attachment))
    filename, content, mimetype = attachment
    return _capture_part(content, mimetype, filename)


def _extra(message: EmailMessage) -> dict[str, Any]:
    """Public attributes the message's class does not know: what providers' backends read."""
    unset = _unset_markers()
    extra = {}
    for name, value in vars(message).items():
        if name.startswith("_") or name in _KNOWN or any(value is m for m in unset):
            continue
        problem = codec.extra_problem(value)
        if problem is not None:
            # Django's SMTP backend ignores it; a request must not fail for it.
            logger.warning("message attribute %r is not queued: %s", name, problem)
            continue
        extra[name] = value
    return extra


def capture(message: EmailMessage) -> QueuedMessage:
    """The queue's record of a Django message; raises as Django's SMTP backend would.

    Callers must skip messages without recipients first (Django sends nothing
    for them).
    """
    encoding = message.encoding or settings.DEFAULT_CHARSET
    envelope_from = envelope_address(message.from_email, encoding)
    recipients = [envelope_address(a, encoding) for a in message.recipients()]
    route = getattr(message, ROUTE_ATTRIBUTE, None)
    # The attribute wins over the header; the header is stripped either way.
    times = {
        SEND_AT_HEADER: _set(message, SEND_AT_ATTRIBUTE),
        EXPIRES_HEADER: _set(message, EXPIRES_ATTRIBUTE),
    }
    extra_headers = dict(message.extra_headers)
    for name in list(extra_headers):
        if name.lower() == ROUTE_HEADER.lower():
            route = force_str(extra_headers.pop(name))
        for header in times:
            if name.lower() == header.lower():
                value = force_str(extra_headers.pop(name))
                times[header] = value if times[header] is None else times[header]
    send_at, expires = (
        None if value is None else moment(value, f"{what} (or the {header} header)")
        for (header, value), what in zip(
            times.items(), (SEND_AT_ATTRIBUTE, EXPIRES_ATTRIBUTE), strict=True
        )
    )
    queued = _capture(message, extra_headers)
    queued.envelope_from = envelope_from
    queued.recipients = recipients
    queued.transport = route
    queued.send_at, queued.expires = send_at, expires
    return queued


def _set(message: EmailMessage, name: str) -> Any:
    """The attribute ``name`` of ``message``, or None (anymail's ``UNSET`` is None too)."""
    value = getattr(message, name, None)
    return None if any(value is marker for marker in _unset_markers()) else value


def _capture(message: EmailMessage, extra_headers: dict[str, Any]) -> QueuedMessage:
    """``message``'s content, with ``extra_headers`` as its headers (envelope left empty)."""
    _refuse_as_django(message)
    headers = _fixed_headers(extra_headers)
    common: dict[str, Any] = {
        "from_email": force_str(message.from_email),
        "envelope_from": "",
        "recipients": [],
        "to": [force_str(a) for a in message.to],
        "cc": [force_str(a) for a in message.cc],
        "bcc": [force_str(a) for a in message.bcc],
        "reply_to": [force_str(a) for a in message.reply_to],
        "subject": force_str(message.subject),
        "headers": headers,
        "encoding": _charset_name(message.encoding),
        "extra": _extra(message),
    }
    if _renders_itself(type(message)) or not isinstance(message.encoding, (str, type(None))):
        saved = message.extra_headers
        message.extra_headers = headers
        try:
            raw = _wire_bytes(message)
        finally:
            message.extra_headers = saved
        return QueuedMessage(raw=raw, **common)
    subtypes = {
        name: getattr(message, name)
        for name in _SUBTYPES
        if hasattr(message, name)
        and getattr(message, name) != getattr(EmailMultiAlternatives, name, None)
    }
    alternatives = [_capture_part(c, m) for c, m in getattr(message, "alternatives", [])]
    # As Django >= 6.0 reads it (bytes decoded in the message's charset).
    body = force_str(
        message.body or "",
        encoding=common["encoding"] or settings.DEFAULT_CHARSET,
        errors="surrogateescape",
    )
    return QueuedMessage(
        body=body,
        alternatives=alternatives,
        attachments=[_capture_attachment(a) for a in message.attachments],
        multipart=isinstance(message, EmailMultiAlternatives),
        subtypes=subtypes,
        **common,
    )


class _KeepEmptyHeaders(email.policy.EmailPolicy):
    """Parses what :func:`_serialise` wrote so that it serialises the same again.

    A header object with an empty value is written ``Name:``; parsed back as
    text it would be written ``Name: ``. Parsed back as a header object, it is
    written as it was. (A text header, as a compat32 message holds them, was
    written ``Name: `` in the first place and stays text.)
    """

    def header_source_parse(self, sourcelines: list[str]) -> tuple[str, str]:
        name, value = super().header_source_parse(sourcelines)
        if not value and sourcelines[0].rstrip("\r\n").endswith(":"):
            return name, self.header_factory(name, "")
        return name, value


_KEEP_EMPTY = _KeepEmptyHeaders(linesep="\r\n")  # email.policy.SMTP, parsing as above


def _parse(raw: bytes) -> email.message.Message:
    """The Python email object :func:`_serialise` wrote as ``raw``."""
    if _MODERN:
        return email.message_from_bytes(raw, policy=_KEEP_EMPTY)
    return email.message_from_bytes(raw)


class _ParsedMIMEPart(MIMEBase):
    """A MIME part parsed from bytes, typed as the MIMEBase older Django expects."""

    def __init__(self, policy: Any = None) -> None:
        email.message.Message.__init__(self, policy=policy or email.policy.compat32)


def _rebuild_content(content: str | bytes | MimePart | QueuedMessage) -> Any:
    if isinstance(content, QueuedMessage):
        return to_django(content)
    if isinstance(content, MimePart):
        return _parse(content.raw)
    return content


def _rebuild_attachment(attachment: Attachment) -> Any:
    if isinstance(attachment, MimePart):
        if _MODERN:
            return _parse(attachment.raw)
        return email.message_from_bytes(attachment.raw, _class=_ParsedMIMEPart)
    filename = attachment.filename
    content = _rebuild_content(attachment.content)
    if _EmailAttachment is not None:
        return _EmailAttachment(filename, content, attachment.mimetype)
    return (filename, content, attachment.mimetype)


def _rebuild_alternative(part: Part) -> Any:
    content = _rebuild_content(part.content)
    if _EmailAlternative is not None:
        return _EmailAlternative(content, part.mimetype)
    return (content, part.mimetype)


class _RenderedMessage(email.message.Message):
    """A message rendered at enqueue, parsed for its headers; written out as those bytes.

    Parsed and generated again, its headers could come out folded or spaced
    otherwise than Django rendered them; and Django < 6.0's SMTP backend calls
    ``as_bytes(linesep=...)``, which only Django's own classes take.
    """

    rendered: bytes = b""  # CRLF line ends, as Django's SMTP backend sends

    def as_bytes(
        self, unixfrom: bool = False, policy: Any = None, linesep: str | None = None
    ) -> bytes:
        sep = linesep or (policy or self.policy).linesep
        return self.rendered if sep == "\r\n" else self.rendered.replace(b"\r\n", sep.encode())


class RawEmailMessage(EmailMessage):
    """A message rendered at enqueue: ``message()`` gives back those bytes."""

    raw: bytes = b""

    def message(self, *args: Any, **kwargs: Any) -> Any:
        policy = kwargs.get("policy", email.policy.compat32)
        parsed = email.message_from_bytes(self.raw, _RenderedMessage, policy=policy)
        parsed.rendered = self.raw
        return parsed


def to_django(message: QueuedMessage) -> EmailMessage:
    """A Django message equal to the one that was queued (all its recipients)."""
    cls: type[EmailMessage]
    if message.raw is not None:
        cls = RawEmailMessage
    elif message.multipart:
        cls = EmailMultiAlternatives
    else:
        cls = EmailMessage
    msg = cls(
        subject=message.subject,
        body=message.body,
        from_email=message.from_email,
        to=message.to,
        cc=message.cc,
        bcc=message.bcc,
        reply_to=message.reply_to,
        headers=dict(message.headers),
    )
    if isinstance(msg, RawEmailMessage):
        msg.raw = message.raw  # type: ignore[assignment]
    msg.attachments = [_rebuild_attachment(a) for a in message.attachments]
    if isinstance(msg, EmailMultiAlternatives):
        msg.alternatives = [_rebuild_alternative(p) for p in message.alternatives]
    for name, value in message.subtypes.items():
        setattr(msg, name, value)
    if message.encoding:
        msg.encoding = message.encoding
    for name, value in message.extra.items():
        setattr(msg, name, value)
    return msg


def render(message: QueuedMessage) -> bytes:
    """The bytes to put after DATA: what Django's SMTP backend would send.

    Raises :class:`PermanentError` with Django's error when Django cannot
    render the message: the same record fails the same way every time.
    """
    if message.raw is not None:
        return message.raw
    try:
        return _wire_bytes(to_django(message))
    except Exception as exc:
        raise PermanentError(
            f"Django cannot render this message: {type(exc).__name__}: {exc}"
        ) from exc
