"""What a console page shows of one message, made safe to show.

Recipients, subjects, headers and error replies come from outside (the site's
users, other people's mail servers). Templates escape markup; here control
characters are written as escapes (``\\x1b``) with
:func:`~mailqueue_core.text.printable`, so a subject cannot hide text or break a
line, and bodies keep only their line breaks and tabs.
"""

from __future__ import annotations

import dataclasses
import datetime

from django.contrib.admin.utils import quote

from mailqueue_core.browsing import Summary
from mailqueue_core.moments import span, state_time
from mailqueue_core.store import SentRecord, State
from mailqueue_core.text import printable

__all__ = ["AttachmentRow", "Row", "SentRow", "ago", "row", "sent_row", "when"]

#: How many recipients a list shows before "(+N more)".
SHOWN_RECIPIENTS = 3


def when(moment: float) -> datetime.datetime:
    """A store's time as an aware datetime (templates show it in the site's zone)."""
    return datetime.datetime.fromtimestamp(moment, datetime.timezone.utc)


def ago(moment: float, now: float) -> str:
    """How long ago ``moment`` was: "12s ago" (a moment a little ahead of ``now``, another
    machine's clock, reads "0s ago")."""
    return f"{span(max(0.0, now - moment))} ago"


def _short_list(recipients: tuple[str, ...]) -> str:
    shown = ", ".join(recipients[:SHOWN_RECIPIENTS])
    more = len(recipients) - SHOWN_RECIPIENTS
    return f"{shown} (+{more} more)" if more > 0 else shown


def _when(moment: float | None) -> datetime.datetime | None:
    return None if moment is None else when(moment)


def _body(text: str | None) -> str | None:
    if text is None:
        return None
    return "\n".join(printable(line) for line in text.replace("\r\n", "\n").split("\n"))


@dataclasses.dataclass(frozen=True)
class AttachmentRow:
    name: str
    content_type: str
    size: int | None


@dataclasses.dataclass(frozen=True)
class Row:
    """One message on a page; every text field is printable (escapes, no controls)."""

    id: str
    """The queue id as the store has it (form values; templates escape it)."""
    key: str
    """The id quoted for a URL path, as the admin quotes primary keys."""
    state: State
    sender: str
    recipients: tuple[str, ...]
    subject: str
    message_id: str
    size: int
    attempts: int
    created: datetime.datetime
    age: str
    moment: str
    """The time that matters in its state: "due in 5m", "lease ends in 4m", "buried 2h ago"."""
    due: datetime.datetime | None
    expires: datetime.datetime | None
    buried: datetime.datetime | None
    reason: str | None
    last_error: str | None
    damage: str | None
    lost: bool
    headers: tuple[tuple[str, str], ...]
    text: str | None
    html: str | None
    """The HTML body's source, escaped as text: shown as source, never as markup."""
    attachments: tuple[AttachmentRow, ...]

    @property
    def recipients_short(self) -> str:
        return _short_list(self.recipients)

    @property
    def problem(self) -> str | None:
        """What went wrong last: the damage, the burial reason or the last error."""
        return self.damage or self.reason or self.last_error


def _moment(summary: Summary, now: float) -> str:
    if summary.state in (State.READY, State.SCHEDULED) and summary.due <= now:
        return "due now"  # "due 3s ago" reads as late; the list of ready mail is about now
    return state_time(summary, now)


def _optional(text: str | None) -> str | None:
    return None if text is None else printable(text)


def row(summary: Summary, now: float) -> Row:
    """The row of ``summary`` at ``now``."""
    return Row(
        id=summary.id,
        key=quote(summary.id),
        state=summary.state,
        sender=printable(summary.sender),
        recipients=tuple(printable(r) for r in summary.recipients),
        subject=printable(summary.subject),
        message_id=printable(summary.message_id or ""),
        size=summary.size,
        attempts=summary.attempts,
        created=when(summary.created),
        age=span(now - summary.created),
        moment=_moment(summary, now),
        due=when(summary.due) if summary.state in (State.READY, State.SCHEDULED) else None,
        expires=_when(summary.expires),
        buried=_when(summary.buried),
        reason=_optional(summary.reason),
        last_error=_optional(summary.last_error),
        damage=_optional(summary.damage),
        lost=summary.lost,
        headers=tuple((printable(k), printable(v)) for k, v in summary.headers),
        text=_body(summary.text),
        html=_body(summary.html),
        attachments=tuple(
            AttachmentRow(printable(a.filename or "(no name)"), printable(a.content_type), a.size)
            for a in summary.attachments
        ),
    )


@dataclasses.dataclass(frozen=True)
class SentRow:
    """One delivered message in the sent log; every text field is printable."""

    id: str
    sent: datetime.datetime
    ago: str
    recipients: tuple[str, ...]
    subject: str
    message_id: str
    transport: str
    provider_id: str
    attempts: int

    @property
    def recipients_short(self) -> str:
        return _short_list(self.recipients)


def sent_row(record: SentRecord, now: float) -> SentRow:
    """The row of a sent log record at ``now``."""
    return SentRow(
        id=record.id,
        sent=when(record.sent),
        ago=ago(record.sent, now),
        recipients=tuple(printable(r) for r in record.recipients),
        subject=printable(record.subject),
        message_id=printable(record.message_id or ""),
        transport=printable(record.transport),
        provider_id=printable(record.provider_id or ""),
        attempts=record.attempts,
    )
