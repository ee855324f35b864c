"""Record <-> Django ``EmailMessage``: the one place that knows Django's mail classes.

:func:`capture` runs at enqueue, inside the web request: it reads the
message's fields, fixes ``Date`` and ``Message-ID``, and computes the envelope
exactly as Django's SMTP backend does; it renders nothing unless the message's
class renders itself. :func:`to_django` and :func:`render` run in the flusher.

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

from mailqueue_core.message import Attachment, MimePart, Part, QueuedMessage

__all__ = ["capture", "render", "to_django"]

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
        ROUTE_ATTRIBUTE,
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
        fixed[str(name)] = force_str(value)
    return fixed


def _wire_bytes(message: EmailMessage) -> bytes:
    """The bytes Django's SMTP backend would send for ``message``."""
    if _MODERN:
        return message.message(policy=email.policy.SMTP).as_bytes()
    return message.message().as_bytes(linesep="\r\n")


def _has_newline(value: Any) -> bool:
    text = force_str(value)
    return "\n" in text or "\r" in text


def _check_headers(message: EmailMessage) -> None:
    """Fail as Django's backend fails on header injection, without rendering.

    The cheap scan finds the suspects; only then is the message rendered, so
    the error raised is Django's own, word for word.
    """
    values = [message.subject, message.from_email, *message.extra_headers.values()]
    values += [*message.to, *message.cc, *message.reply_to]
    if any(_has_newline(v) for v in values) or any(_has_newline(n) for n in message.extra_headers):
        message.message()


def _capture_part(content: Any, mimetype: str, filename: Any = None) -> Part:
    if isinstance(content, EmailMessage):  # a message/rfc822 attachment
        content = _wire_bytes(content)
    elif isinstance(content, email.message.Message):
        content = content.as_bytes()
    elif isinstance(content, (bytearray, memoryview)):
        content = bytes(content)
    elif not isinstance(content, (str, bytes)):
        content = force_str(content)
    return Part(content, mimetype, filename)


def _capture_attachment(attachment: Any) -> Attachment:
    if isinstance(attachment, email.message.Message):
        return MimePart(attachment.as_bytes())
    filename, content, mimetype = attachment
    return _capture_part(content, mimetype, filename)


def capture(message: EmailMessage) -> QueuedMessage:
    """The queue's record of a Django message; raises as Django's SMTP backend would.

    Callers must skip messages without recipients first (Django sends nothing
    for them).
    """
    encoding = message.encoding or settings.DEFAULT_CHARSET
    envelope_from = envelope_address(message.from_email, encoding)
    recipients = [envelope_address(a, encoding) for a in message.recipients()]
    _check_headers(message)
    route = getattr(message, ROUTE_ATTRIBUTE, None)
    extra_headers = dict(message.extra_headers)
    for name in list(extra_headers):
        if name.lower() == ROUTE_HEADER.lower():
            route = force_str(extra_headers.pop(name))
    headers = _fixed_headers(extra_headers)
    common: dict[str, Any] = {
        "from_email": force_str(message.from_email),
        "envelope_from": envelope_from,
        "recipients": recipients,
        "to": [force_str(a) for a in message.to],
        "cc": [force_str(a) for a in message.cc],
        "bcc": [force_str(a) for a in message.bcc],
        "reply_to": [force_str(a) for a in message.reply_to],
        "subject": force_str(message.subject),
        "headers": headers,
        "encoding": message.encoding,
        "transport": route,
    }
    unset = _unset_markers()
    extra = {
        k: v
        for k, v in vars(message).items()
        if not k.startswith("_") and k not in _KNOWN and not any(v is m for m in unset)
    }
    if _renders_itself(type(message)):
        saved = message.extra_headers
        message.extra_headers = headers
        try:
            raw = _wire_bytes(message)
        finally:
            message.extra_headers = saved
        return QueuedMessage(raw=raw, extra=extra, **common)
    subtypes = {
        name: getattr(message, name)
        for name in _SUBTYPES
        if hasattr(message, name)
        and getattr(message, name) != getattr(EmailMultiAlternatives, name, None)
    }
    alternatives = [_capture_part(c, m) for c, m in getattr(message, "alternatives", [])]
    return QueuedMessage(
        body=force_str(message.body),
        alternatives=alternatives,
        attachments=[_capture_attachment(a) for a in message.attachments],
        multipart=isinstance(message, EmailMultiAlternatives),
        subtypes=subtypes,
        extra=extra,
        **common,
    )


class _ParsedMIMEPart(MIMEBase):
    """A MIME part parsed from bytes, typed as the MIMEBase older Django expects."""

    def __init__(self, policy: Any = None) -> None:
        email.message.Message.__init__(self, policy=policy or email.policy.compat32)


def _rebuild_attachment(attachment: Attachment) -> Any:
    if isinstance(attachment, MimePart):
        if _MODERN:
            return email.message_from_bytes(attachment.raw, policy=email.policy.default)
        return email.message_from_bytes(attachment.raw, _class=_ParsedMIMEPart)
    filename = attachment.filename
    if _EmailAttachment is not None:
        return _EmailAttachment(filename, attachment.content, attachment.mimetype)
    return (filename, attachment.content, attachment.mimetype)


def _rebuild_alternative(part: Part) -> Any:
    if _EmailAlternative is not None:
        return _EmailAlternative(part.content, part.mimetype)
    return (part.content, part.mimetype)


class RawEmailMessage(EmailMessage):
    """A message rendered at enqueue: ``message()`` gives back those bytes."""

    raw: bytes = b""

    def message(self, *args: Any, **kwargs: Any) -> Any:
        policy = kwargs.get("policy", email.policy.compat32)
        return email.message_from_bytes(self.raw, policy=policy)


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
    """The bytes to put after DATA: what Django's SMTP backend would send."""
    if message.raw is not None:
        return message.raw
    return _wire_bytes(to_django(message))
