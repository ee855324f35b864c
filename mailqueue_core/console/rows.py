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
from mailqueue_core.store import State
from mailqueue_core.text import printable

__all__ = ["AttachmentRow", "Row", "relative", "row", "span", "when"]

#: How many recipients a list shows before "(+N more)".
SHOWN_RECIPIENTS = 3


def span(seconds: float) -> str:
    """A duration as the console shows it: 42s, 15m, 5h, 3d (as ``list`` prints it)."""
    seconds = abs(seconds)
    for unit, size, up_to in (("s", 1, 100), ("m", 60, 100 * 60), ("h", 3600, 48 * 3600)):
        if seconds < up_to:
            return f"{seconds / size:.0f}{unit}"
    return f"{seconds / 86400:.0f}d"


def relative(moment: float, now: float) -> str:
    return f"in {span(moment - now)}" if moment > now else f"{span(now - moment)} ago"


def when(moment: float) -> datetime.datetime:
    """A store's time as an aware datetime (templates show it in the site's zone)."""
    return datetime.datetime.fromtimestamp(moment, datetime.timezone.utc)


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
        shown = ", ".join(self.recipients[:SHOWN_RECIPIENTS])
        more = len(self.recipients) - SHOWN_RECIPIENTS
        return f"{shown} (+{more} more)" if more > 0 else shown

    @property
    def problem(self) -> str | None:
        """What went wrong last: the damage, the burial reason or the last error."""
        return self.damage or self.reason or self.last_error


def _moment(summary: Summary, now: float) -> str:
    if summary.state is State.DEAD:
        return "buried" if summary.buried is None else f"buried {relative(summary.buried, now)}"
    if summary.state in (State.IN_FLIGHT, State.STUCK):
        verb = "ends" if summary.state is State.IN_FLIGHT else "ran out"
        return f"lease {verb} {relative(summary.expires or now, now)}"
    return f"due {relative(summary.due, now)}" if summary.due > now else "due now"


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
