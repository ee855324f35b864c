"""Staging safety: keep a test site's mail away from real people.

``MAILQUEUE["STAGING"]`` takes any of:

- ``ALLOWED_DOMAINS``: recipients at these domains (or their subdomains) get
  their mail as addressed; the others are *outside*. Without it, every
  recipient is outside.
- ``REDIRECT_TO``: addresses that receive, instead, the mail meant for the
  recipients outside (once per message, whoever it was meant for). The
  message keeps its To and Cc headers, and gains
  ``X-Mailqueue-Redirected-From`` naming the envelope recipients it replaced.
- ``OTHERS``: without ``REDIRECT_TO``, what happens to recipients outside:
  ``"bury"`` (the default: a dead letter of their own, with the reason, that
  ``mailqueue retry`` can send after all) or ``"drop"`` (logged at ERROR, never sent).

The flusher applies it at delivery, so it holds for mail queued before the
setting was turned on, and the queue, the console and ``mailqueue show`` keep
the addresses the site meant. ``mailqueue status`` and ``check --deploy`` say
that it is on.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

from mailqueue_core.errors import ConfigurationError, PermanentError, reject_unknown_keys
from mailqueue_core.message import QueuedMessage

__all__ = ["REDIRECTED_FROM", "Staged", "Staging"]

#: The header that names the envelope recipients a redirect replaced.
REDIRECTED_FROM = "X-Mailqueue-Redirected-From"

_KEYS = {"ALLOWED_DOMAINS": "", "REDIRECT_TO": "", "OTHERS": ""}
ALLOWED = (
    "None, or a dict with ALLOWED_DOMAINS (a list of domains), REDIRECT_TO (a list of "
    "addresses) and OTHERS ('bury' or 'drop'), at least one of the first two"
)


@dataclasses.dataclass(frozen=True)
class Staged:
    """What staging makes of one message."""

    message: QueuedMessage | None
    """What to send (None when no recipient is left)."""
    refused: dict[str, PermanentError] = dataclasses.field(default_factory=dict)
    """Recipients to bury, each with the reason."""
    dropped: list[str] = dataclasses.field(default_factory=list)
    """Recipients left out, never sent to."""


@dataclasses.dataclass(frozen=True)
class Staging:
    allowed_domains: tuple[str, ...] = ()
    redirect_to: tuple[str, ...] = ()
    others: str = "bury"

    @classmethod
    def from_settings(cls, value: Any) -> Staging | None:
        if value is None:
            return None
        if not isinstance(value, Mapping):
            raise ConfigurationError(
                f"MAILQUEUE['STAGING'] must be {ALLOWED}, got {value!r}", key="STAGING"
            )
        reject_unknown_keys("MAILQUEUE['STAGING']", value, _KEYS, key="STAGING")
        domains = _strings(value, "ALLOWED_DOMAINS")
        redirect = _strings(value, "REDIRECT_TO")
        others = value.get("OTHERS", "bury")
        if others not in ("bury", "drop"):
            raise ConfigurationError(
                f"MAILQUEUE['STAGING']['OTHERS'] must be 'bury' or 'drop', got {others!r}",
                key="STAGING",
            )
        if not domains and not redirect:
            raise ConfigurationError(
                "MAILQUEUE['STAGING'] needs ALLOWED_DOMAINS or REDIRECT_TO (or both): "
                "as it stands it lets every message through",
                key="STAGING",
            )
        bad = [a for a in redirect if "@" not in a.strip("@")]
        if bad:
            raise ConfigurationError(
                f"MAILQUEUE['STAGING']['REDIRECT_TO'] holds {bad[0]!r}, not an address",
                key="STAGING",
            )
        return cls(tuple(d.lower().strip(".") for d in domains), tuple(redirect), str(others))

    def describe(self) -> str:
        """One line for ``status`` and the console: what it does to mail."""
        outside = (
            f"mail to domains other than {', '.join(self.allowed_domains)}"
            if self.allowed_domains
            else "all mail"
        )
        if self.redirect_to:
            return f"STAGING: {outside} is redirected to {', '.join(self.redirect_to)}"
        verb = "dead-lettered" if self.others == "bury" else "dropped"
        return f"STAGING: {outside} is {verb}, never sent"

    def allows(self, address: str) -> bool:
        domain = address.rpartition("@")[2].lower().rstrip(">").strip()
        return any(domain == d or domain.endswith("." + d) for d in self.allowed_domains)

    def apply(self, message: QueuedMessage) -> Staged:
        inside = [r for r in message.recipients if self.allows(r)]
        outside = [r for r in message.recipients if r not in inside]
        if not outside:
            return Staged(message)
        if self.redirect_to:
            recipients = list(dict.fromkeys([*inside, *self.redirect_to]))
            return Staged(_redirected(message, recipients, outside))
        left = message.for_recipients(inside, id=message.id) if inside else None
        if self.others == "drop":
            return Staged(left, dropped=outside)
        reason = PermanentError(
            "not sent: the recipient's domain is not in MAILQUEUE['STAGING']['ALLOWED_DOMAINS']"
        )
        return Staged(left, refused=dict.fromkeys(outside, reason))


def _redirected(
    message: QueuedMessage, recipients: list[str], replaced: Sequence[str]
) -> QueuedMessage:
    note = ", ".join(replaced).replace("\r", " ").replace("\n", " ")
    if message.raw is not None:
        raw = f"{REDIRECTED_FROM}: {note}\r\n".encode() + message.raw
        return dataclasses.replace(message, recipients=recipients, raw=raw)
    headers = {**message.headers, REDIRECTED_FROM: note}
    return dataclasses.replace(message, recipients=recipients, headers=headers)


def _strings(value: Mapping[str, Any], key: str) -> list[str]:
    items = value.get(key) or []
    if isinstance(items, str) or not isinstance(items, (list, tuple)):
        raise ConfigurationError(
            f"MAILQUEUE['STAGING']['{key}'] must be a list of strings, got {items!r}",
            key="STAGING",
        )
    if not all(isinstance(i, str) and i.strip() for i in items):
        raise ConfigurationError(
            f"MAILQUEUE['STAGING']['{key}'] must be a list of non-empty strings, got {items!r}",
            key="STAGING",
        )
    return [i.strip() for i in items]
