"""The sent log: a record of delivered mail, kept for a set time.

``MAILQUEUE["SENT_LOG"] = {"KEEP": "30d"}`` turns it on (it is off by
default): for each message a transport accepted, the flusher logs when, to
whom, the subject, the Message-ID, the transport, the provider's id and the
attempts it took, in the store (capability ``sent_log``), so that "did we send
the receipt to this customer?" has an answer (``mailqueue list --state sent``,
the admin). ``"BODY": True`` keeps the message itself too; off by default,
since a log of bodies is a copy of every password-reset link sent.

The flusher logs a batch's records once the batch is acked and prunes records
older than ``KEEP`` every :data:`PRUNE_EVERY` seconds. The log is a record,
not the queue: a flusher killed between an ack and the end of its batch
leaves that batch's sent messages out of it (they were delivered).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from mailqueue_core.errors import ConfigurationError, reject_unknown_keys
from mailqueue_core.message import QueuedMessage
from mailqueue_core.store import Record, SentRecord
from mailqueue_core.text import duration
from mailqueue_core.transport import Delivery

__all__ = ["ALLOWED", "PRUNE_EVERY", "SentLog"]

ALLOWED = "None, or a dict with KEEP (a duration: seconds, or '12h', '30d') and BODY (a bool)"

#: Seconds between two prunes of the sent log by one flusher.
PRUNE_EVERY = 600.0

_KEYS = {"KEEP": "", "BODY": ""}


@dataclasses.dataclass(frozen=True)
class SentLog:
    keep: float
    """Seconds a record is kept."""
    body: bool = False
    """Whether the record keeps the message itself."""

    @classmethod
    def from_settings(cls, value: Any) -> SentLog | None:
        if value is None:
            return None
        if not isinstance(value, Mapping) or "KEEP" not in value:
            raise ConfigurationError(
                f"MAILQUEUE['SENT_LOG'] must be {ALLOWED}, got {value!r}", key="SENT_LOG"
            )
        reject_unknown_keys("MAILQUEUE['SENT_LOG']", value, _KEYS, key="SENT_LOG")
        keep = value["KEEP"]
        try:
            seconds = duration(keep) if isinstance(keep, str) else _positive(keep)
        except ValueError as exc:
            raise ConfigurationError(
                f"MAILQUEUE['SENT_LOG']['KEEP']: {exc}", key="SENT_LOG"
            ) from None
        if seconds <= 0:
            raise ConfigurationError(
                "MAILQUEUE['SENT_LOG']['KEEP'] must be more than 0 seconds", key="SENT_LOG"
            )
        body = value.get("BODY", False)
        if not isinstance(body, bool):
            raise ConfigurationError(
                f"MAILQUEUE['SENT_LOG']['BODY'] must be True or False, got {body!r}",
                key="SENT_LOG",
            )
        return cls(seconds, body)

    def entry(
        self,
        record: Record,
        message: QueuedMessage,
        delivery: Delivery,
        accepted: list[str],
        now: float,
    ) -> SentRecord:
        """The sent log's record of ``message``, just accepted for ``accepted``."""
        return SentRecord(
            id=record.id,
            sent=now,
            recipients=tuple(accepted),
            subject=message.subject,
            message_id=message.message_id,
            transport=delivery.transport,
            provider_id=delivery.provider_id,
            attempts=record.attempts + 1,
            created=record.created,
            data=record.data if self.body else b"",
        )


def _positive(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"must be a duration (seconds, or '12h', '30d'), got {value!r}")
    return float(value)
