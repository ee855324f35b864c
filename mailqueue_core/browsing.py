"""What the console shows of a queued message, and searching a queue a page at a time.

A store never decodes a record's data (:mod:`mailqueue_core.store`), so what a
person reads about a message (its recipients, subject, bodies, attachments) is
decoded here, with the codec, into a :class:`Summary`. A record that cannot be
decoded, or that the store could not read whole, or that it lost, gives a
Summary that says so; nothing here raises for one bad record.

:func:`search` filters on decoded fields, so it cannot ask the store to do it:
it walks the store's pages from a cursor, decoding each record, and stops when
it has found ``limit`` matches or has examined ``budget`` records. On a very
deep queue a search is therefore a bounded scan, a page at a time: each call
costs at most ``budget`` decodes, and the cursor it returns goes on from the
last record it examined (whether or not that one matched).

Needs no Django project: attachments and bodies are read from the message's
structure, and a message rendered at enqueue (``raw``) is read with the
standard library's :mod:`email` parser.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import email
import email.message
import email.policy
import json
from typing import Any

from mailqueue_core import codec
from mailqueue_core.errors import CodecError
from mailqueue_core.message import Attachment, MimePart, Part, QueuedMessage
from mailqueue_core.store import Entry, SentRecord, State, Store

__all__ = [
    "BUDGET",
    "AttachmentInfo",
    "Found",
    "SentFound",
    "Summary",
    "search",
    "search_sent",
    "sent_matches",
    "summarize",
]

#: How many records :func:`search` examines at most in one call, by default.
BUDGET = 10_000

#: How many records :func:`search` asks the store for at a time.
PAGE = 500

_CURSOR_PREFIX = "search:"


@dataclasses.dataclass(frozen=True)
class AttachmentInfo:
    """One attachment as the console lists it: never its content."""

    filename: str | None
    content_type: str
    size: int | None
    """Bytes of the content; None for an attached Django message, whose size is
    known only once it is rendered."""

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class Summary:
    """A queued or dead message as people read it.

    The envelope (``sender``, ``recipients``) and the delivery state come from
    the record; the rest is decoded from its data. ``damage`` says why the
    message could not be read (the store's reason, or the codec's); the
    decoded fields are then empty. ``lost`` marks a message the store knows
    existed but can no longer read.

    ``headers``, ``text``, ``html`` and ``attachments`` are filled only by
    ``summarize(entry, detail=True)`` (what ``show`` prints).
    """

    id: str
    state: State
    sender: str
    recipients: tuple[str, ...]
    subject: str
    message_id: str | None
    size: int
    """Bytes of the stored record."""
    attempts: int
    created: float
    due: float
    expires: float | None
    buried: float | None
    reason: str | None
    """Why a dead letter was buried."""
    last_error: str | None
    damage: str | None = None
    lost: bool = False
    headers: tuple[tuple[str, str], ...] = ()
    text: str | None = None
    html: str | None = None
    """The HTML body's source."""
    attachments: tuple[AttachmentInfo, ...] = ()

    def matches(self, text: str) -> bool:
        """Whether ``text`` is in a recipient, the subject, the Message-ID or the
        queue id (case-insensitive)."""
        needle = text.casefold()
        fields = (*self.recipients, self.subject, self.message_id or "", self.id)
        return any(needle in field.casefold() for field in fields)

    def as_dict(self, *, detail: bool = False) -> dict[str, Any]:
        """JSON-ready fields; the detail (headers, bodies, attachments) only when asked."""
        out: dict[str, Any] = {
            "id": self.id,
            "state": self.state.value,
            "sender": self.sender,
            "recipients": list(self.recipients),
            "subject": self.subject,
            "message_id": self.message_id,
            "size": self.size,
            "attempts": self.attempts,
            "created": self.created,
            "due": self.due,
            "expires": self.expires,
            "buried": self.buried,
            "reason": self.reason,
            "last_error": self.last_error,
            "damage": self.damage,
            "lost": self.lost,
        }
        if detail:
            out["headers"] = [list(pair) for pair in self.headers]
            out["text"] = self.text
            out["html"] = self.html
            out["attachments"] = [a.as_dict() for a in self.attachments]
        return out


def summarize(entry: Entry, *, detail: bool = False) -> Summary:
    """What the console shows of ``entry``; never raises for a bad record."""
    record = entry.record
    base = Summary(
        id=record.id,
        state=entry.state,
        sender="",
        recipients=(),
        subject="",
        message_id=None,
        size=record.size,
        attempts=record.attempts,
        created=record.created,
        due=record.due,
        expires=entry.expires,
        buried=entry.buried,
        reason=entry.reason,
        last_error=record.last_error,
        damage=record.damage,
        lost=entry.lost,
    )
    if entry.lost or record.damage is not None:
        return base
    try:
        message = codec.decode(record)
    except CodecError as exc:
        return dataclasses.replace(base, damage=f"cannot be decoded: {exc}")
    base = dataclasses.replace(
        base,
        sender=message.envelope_from,
        recipients=tuple(message.recipients),
        subject=message.subject,
        message_id=message.message_id,
    )
    if not detail:
        return base
    text, html, attachments = _content(message)
    return dataclasses.replace(
        base, headers=_headers(message), text=text, html=html, attachments=attachments
    )


# -- the detail --------------------------------------------------------------------------


def _headers(message: QueuedMessage) -> tuple[tuple[str, str], ...]:
    """The headers the message is sent with (Bcc is never one)."""
    pairs = [("From", message.from_email)]
    for name, addresses in (("To", message.to), ("Cc", message.cc)):
        if addresses:
            pairs.append((name, ", ".join(addresses)))
    if message.reply_to:
        pairs.append(("Reply-To", ", ".join(message.reply_to)))
    pairs.append(("Subject", message.subject))
    pairs += list(message.headers.items())
    return tuple(pairs)


def _content(
    message: QueuedMessage,
) -> tuple[str | None, str | None, tuple[AttachmentInfo, ...]]:
    """(text body, HTML body, attachments) of the message."""
    if message.raw is not None:
        return _rendered_content(message.raw)
    text: str | None = None
    html: str | None = None
    if message.subtypes.get("content_subtype", "plain") == "html":
        html = message.body
    else:
        text = message.body
    for part in message.alternatives:
        body = _as_text(part.content)
        if part.mimetype == "text/html" and html is None:
            html = body
        elif part.mimetype == "text/plain" and text is None:
            text = body
    return text, html, tuple(_attachment(a) for a in message.attachments)


def _as_text(content: str | bytes | MimePart | QueuedMessage) -> str | None:
    if isinstance(content, str):
        return content
    if isinstance(content, bytes):
        return content.decode("utf-8", "replace")
    return None  # not a body: an alternative that is a whole message


def _attachment(attachment: Attachment) -> AttachmentInfo:
    if isinstance(attachment, MimePart):
        return _mime_attachment(_parse(attachment.raw))
    filename = attachment.filename
    if isinstance(filename, tuple):  # (charset, language, filename), as Django allows
        filename = filename[2]
    return AttachmentInfo(filename, attachment.mimetype, _size(attachment))


def _size(part: Part) -> int | None:
    content = part.content
    if isinstance(content, str):
        return len(content.encode("utf-8", "surrogateescape"))
    if isinstance(content, bytes):
        return len(content)
    if isinstance(content, MimePart):
        return len(content.raw)
    return len(content.raw) if content.raw is not None else None


def _parse(raw: bytes) -> email.message.EmailMessage:
    parsed = email.message_from_bytes(raw, policy=email.policy.default)
    assert isinstance(parsed, email.message.EmailMessage)  # what policy.default makes
    return parsed


def _payload_size(part: email.message.EmailMessage) -> int:
    if part.is_multipart():
        return len(part.as_bytes())
    payload = part.get_payload(decode=True)
    return len(payload) if isinstance(payload, bytes) else 0


def _mime_attachment(part: email.message.EmailMessage) -> AttachmentInfo:
    return AttachmentInfo(part.get_filename(), part.get_content_type(), _payload_size(part))


def _rendered_content(
    raw: bytes,
) -> tuple[str | None, str | None, tuple[AttachmentInfo, ...]]:
    """The bodies and attachments of a message rendered at enqueue."""
    text: str | None = None
    html: str | None = None
    attachments: list[AttachmentInfo] = []
    for part in _parse(raw).walk():
        assert isinstance(part, email.message.EmailMessage)  # what policy.default makes
        if part.is_multipart():
            continue
        kind = part.get_content_type()
        if part.is_attachment() or kind not in ("text/plain", "text/html"):
            attachments.append(_mime_attachment(part))
            continue
        body = _part_text(part)
        if kind == "text/html" and html is None:
            html = body
        elif kind == "text/plain" and text is None:
            text = body
    return text, html, tuple(attachments)


def _part_text(part: email.message.EmailMessage) -> str:
    try:
        content = part.get_content()
    except (LookupError, ValueError):  # an unknown charset, a broken encoding
        payload = part.get_payload(decode=True)
        return payload.decode("utf-8", "replace") if isinstance(payload, bytes) else ""
    return content if isinstance(content, str) else ""


# -- search -----------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Found:
    """What one :func:`search` call found."""

    matches: list[Summary]
    cursor: str | None
    """Where to go on from (the last record examined); None when the state was
    searched to its end."""
    examined: int
    """How many records were decoded to find them."""


@dataclasses.dataclass(frozen=True)
class _Resume:
    """A search cursor: the store's cursor of the page that held the last record
    examined, and that record's place in the order, to skip what came before it."""

    state: State
    newest_first: bool
    page: str | None
    key: float
    id: str

    def encode(self) -> str:
        doc = [self.state.value, self.newest_first, self.page, self.key, self.id]
        body = base64.urlsafe_b64encode(json.dumps(doc).encode()).decode("ascii")
        return f"{_CURSOR_PREFIX}{body}"

    @classmethod
    def decode(cls, cursor: str) -> _Resume:
        try:
            doc = json.loads(base64.urlsafe_b64decode(cursor[len(_CURSOR_PREFIX) :]))
            state, newest_first, page, key, mid = doc
            resume = cls(State(state), newest_first, page, float(key), mid)
        except (ValueError, TypeError, binascii.Error) as exc:
            raise ValueError(f"not a search cursor: {cursor!r}") from exc
        if not isinstance(resume.newest_first, bool) or not isinstance(resume.id, str):
            raise ValueError(f"not a search cursor: {cursor!r}")
        if resume.page is not None and not isinstance(resume.page, str):
            raise ValueError(f"not a search cursor: {cursor!r}")
        return resume

    def passed(self, entry: Entry) -> bool:
        """Whether ``entry`` comes at or before the last record examined."""
        here = (_key(entry), entry.id)
        last = (self.key, self.id)
        return here >= last if self.newest_first else here <= last


def _key(entry: Entry) -> float:
    """The state's own time, which :meth:`Store.browse` orders by."""
    if entry.state is State.DEAD:
        return entry.buried or 0.0
    if entry.state in (State.IN_FLIGHT, State.STUCK):
        return entry.expires or 0.0
    return entry.record.due


def search(
    store: Store,
    state: State,
    now: float,
    text: str,
    *,
    limit: int = 50,
    cursor: str | None = None,
    budget: int = BUDGET,
    newest_first: bool = False,
) -> Found:
    """Messages in ``state`` whose recipients, subject, Message-ID or queue id
    hold ``text`` (case-insensitive), in the store's order, from ``cursor`` on.

    Stops at ``limit`` matches or after examining ``budget`` records, whichever
    comes first; the returned cursor goes on from the last record examined.
    ``cursor`` is one this function returned, or a :class:`~mailqueue_core.store.Page`
    cursor of :meth:`Store.browse` in the same state and order (to search from
    where a listing stopped). A cursor for another state or order, or one
    nobody made, raises :class:`ValueError`, as the store does.
    """
    if limit < 1 or budget < 1:
        raise ValueError("limit and budget must be at least 1")
    resume: _Resume | None = None
    page_cursor = cursor
    if cursor is not None and cursor.startswith(_CURSOR_PREFIX):
        resume = _Resume.decode(cursor)
        if (resume.state, resume.newest_first) != (state, newest_first):
            raise ValueError("this search cursor was made for another state or order")
        page_cursor = resume.page
    matches: list[Summary] = []
    examined = 0
    while True:
        page = store.browse(
            state, now, limit=min(PAGE, budget), cursor=page_cursor, newest_first=newest_first
        )
        for i, entry in enumerate(page.entries):
            if resume is not None and resume.passed(entry):
                continue
            resume = None  # past what was examined before: the order holds from here on
            examined += 1
            summary = summarize(entry)
            if summary.matches(text):
                matches.append(summary)
            if len(matches) < limit and examined < budget:
                continue
            if i + 1 == len(page.entries):  # stopped at a page's end: the store's cursor
                return Found(matches, page.cursor, examined)
            here = _Resume(state, newest_first, page_cursor, _key(entry), entry.id)
            return Found(matches, here.encode(), examined)
        if page.cursor is None:
            return Found(matches, None, examined)
        page_cursor = page.cursor


# -- the sent log ------------------------------------------------------------------------


def sent_matches(record: SentRecord, text: str) -> bool:
    """Whether ``text`` is in a recipient, the subject, the Message-ID, the
    provider's id or the queue id of a sent log record (case-insensitive)."""
    needle = text.casefold()
    fields = (
        *record.recipients,
        record.subject,
        record.message_id or "",
        record.provider_id or "",
        record.id,
    )
    return any(needle in field.casefold() for field in fields)


@dataclasses.dataclass(frozen=True)
class SentFound:
    """What one :func:`search_sent` call found."""

    matches: list[SentRecord]
    cursor: str | None
    """The sent log's cursor to go on from; None at the log's end."""
    examined: int


def search_sent(
    store: Store,
    now: float,
    text: str,
    *,
    limit: int = 50,
    cursor: str | None = None,
    budget: int = BUDGET,
) -> SentFound:
    """Sent log records, newest first, that :func:`sent_matches` ``text``.

    Reads the log a page at a time from ``cursor`` and stops after the page on
    which ``limit`` matches were reached or ``budget`` records were read, so the
    cursor it returns is the store's own and nothing is skipped; the last page
    may add a few matches beyond ``limit``.
    """
    if limit < 1 or budget < 1:
        raise ValueError("limit and budget must be at least 1")
    matches: list[SentRecord] = []
    examined = 0
    while True:
        page = store.sent_log(now, limit=min(PAGE, budget - examined), cursor=cursor)
        examined += len(page.entries)
        matches += [record for record in page.entries if sent_matches(record, text)]
        cursor = page.cursor
        if cursor is None or len(matches) >= limit or examined >= budget:
            return SentFound(matches, cursor, examined)
