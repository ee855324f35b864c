"""QueuedMessage: one message's structure, its envelope, and its delivery state.

The record holds the message's *structure* (what Django's ``EmailMessage``
holds), not its rendered bytes: encoding a few fields as JSON costs tens of
microseconds inside the web request, rendering costs a millisecond. The
flusher renders the message when it delivers it (:mod:`mailqueue_core.convert`).
A message whose structure cannot be kept as JSON (its class renders itself in
its own way, or its ``encoding`` is a :class:`email.charset.Charset`) is
rendered at enqueue and kept in ``raw``.

``Message-ID`` and ``Date`` are fixed in ``headers`` at enqueue, so every
delivery attempt sends the same message.
"""

from __future__ import annotations

import dataclasses
import uuid
from typing import Any

__all__ = ["Attachment", "Part", "QueuedMessage"]


@dataclasses.dataclass(frozen=True)
class MimePart:
    """A MIME part or message object (Python's ``email`` package): kept whole, as its bytes."""

    raw: bytes


@dataclasses.dataclass(frozen=True)
class Part:
    """An alternative body, or an attachment given as (filename, content, mimetype).

    ``content`` is ``str`` for text and ``bytes`` otherwise; for a
    ``message/rfc822`` attachment it may be the attached message: a
    :class:`MimePart` for a Python email message, a :class:`QueuedMessage` for
    a Django one (its structure, rendered with the message that carries it).
    ``filename`` may be a (charset, language, filename) triple, as Django allows.
    """

    content: str | bytes | MimePart | QueuedMessage
    mimetype: str
    filename: str | tuple[str, str, str] | None = None


Attachment = Part | MimePart


@dataclasses.dataclass
class QueuedMessage:
    """A message in the queue. Content fields mirror Django's ``EmailMessage``."""

    from_email: str
    envelope_from: str
    recipients: list[str]
    """Envelope recipients: to + cc + bcc at enqueue, or the subset still to try."""
    subject: str = ""
    body: str = ""
    to: list[str] = dataclasses.field(default_factory=list)
    cc: list[str] = dataclasses.field(default_factory=list)
    bcc: list[str] = dataclasses.field(default_factory=list)
    reply_to: list[str] = dataclasses.field(default_factory=list)
    headers: dict[str, str] = dataclasses.field(default_factory=dict)
    alternatives: list[Part] = dataclasses.field(default_factory=list)
    attachments: list[Attachment] = dataclasses.field(default_factory=list)
    multipart: bool = False
    """Built as ``EmailMultiAlternatives`` (else ``EmailMessage``)."""
    subtypes: dict[str, str] = dataclasses.field(default_factory=dict)
    """Instance overrides of ``content_subtype``, ``mixed_subtype``, ``alternative_subtype``."""
    encoding: str | None = None
    """A charset name; a ``Charset`` object's message is kept in ``raw``, with its name here."""
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)
    """Attributes that providers' backends read (anymail's ``tags``, ``metadata``...)."""
    raw: bytes | None = None
    """Rendered at enqueue, for message classes that render themselves."""
    transport: str | None = None
    send_at: float | None = None
    """Not to be sent before this Unix time (``send_at``); the queue's due time
    holds it once queued, so it is not stored with the content."""
    expires: float | None = None
    """Not to be sent at or after this Unix time (``expires_at``): buried instead."""

    # Delivery state (kept by the store beside the encoded content).
    id: str = dataclasses.field(default_factory=lambda: uuid.uuid4().hex)
    created: float = 0.0
    due: float = 0.0
    attempts: int = 0
    last_error: str | None = None

    @property
    def message_id(self) -> str | None:
        for name, value in self.headers.items():
            if name.lower() == "message-id":
                return value
        return None

    def for_recipients(self, recipients: list[str], *, id: str) -> QueuedMessage:
        """The same message, to be delivered to ``recipients`` only."""
        return dataclasses.replace(self, recipients=list(recipients), id=id)
