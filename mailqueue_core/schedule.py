"""Send times and expiries: when a message may leave, and until when.

A message sets them with the attributes ``send_at`` (the name anymail uses)
and ``expires_at``, or, where code can only set headers, with
``X-Mailqueue-Send-At`` and ``X-Mailqueue-Expires-At`` (stripped before
sending). Each takes an aware ``datetime``, a naive one (read in Django's
current time zone, as Django reads naive times), a ``date`` (its midnight in
that zone), or a Unix timestamp; a header takes ISO 8601, an RFC 5322 date or
a Unix timestamp.

The queue holds the message until its send time (it is ``scheduled``), and
``MAX_AGE`` counts from then. A message not sent before its expiry is buried
with the reason instead of being sent late.
"""

from __future__ import annotations

import datetime
import email.utils
import math
from typing import Any

__all__ = [
    "EXPIRES_ATTRIBUTE",
    "EXPIRES_HEADER",
    "SEND_AT_ATTRIBUTE",
    "SEND_AT_HEADER",
    "moment",
]

SEND_AT_ATTRIBUTE = "send_at"
EXPIRES_ATTRIBUTE = "expires_at"
SEND_AT_HEADER = "X-Mailqueue-Send-At"
EXPIRES_HEADER = "X-Mailqueue-Expires-At"


def moment(value: Any, what: str) -> float:
    """``value`` (see the module's docstring) as a Unix time; ValueError naming ``what``."""
    if isinstance(value, datetime.datetime):
        return _aware(value).timestamp()
    if isinstance(value, datetime.date):
        return _aware(datetime.datetime.combine(value, datetime.time())).timestamp()
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if math.isfinite(value):
            return float(value)
    elif isinstance(value, str):
        return _parse(value.strip(), what)
    raise ValueError(f"{what} must be a datetime, a date or a Unix timestamp, got {value!r}")


def _aware(value: datetime.datetime) -> datetime.datetime:
    if value.tzinfo is not None and value.utcoffset() is not None:
        return value
    from django.conf import settings
    from django.utils import timezone

    if settings.USE_TZ:
        return timezone.make_aware(value, timezone.get_current_timezone())
    return value.astimezone()  # the process's local time, as Django reads it then


def _parse(text: str, what: str) -> float:
    try:
        return moment(float(text), what)
    except ValueError:
        pass
    iso = text[:-1] + "+00:00" if text.endswith(("Z", "z")) else text
    try:
        return _aware(datetime.datetime.fromisoformat(iso)).timestamp()
    except ValueError:
        pass
    try:
        return _aware(email.utils.parsedate_to_datetime(text)).timestamp()
    except (TypeError, ValueError, IndexError):
        raise ValueError(
            f"{what} must be an ISO 8601 time (2026-12-24T09:00:00+01:00), an RFC 5322 "
            f"date or a Unix timestamp, got {text!r}"
        ) from None
