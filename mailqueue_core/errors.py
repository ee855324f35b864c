"""The errors mailqueue raises.

Runtime errors share one root, so that a caller can catch "anything the queue
raised at run time" in one place; configuration errors stand outside it on
purpose, so that no catch-all in the flusher can swallow a bad setting::

    MailQueueError                  runtime root
    +-- StoreError                  a store could not do what was asked
    |   +-- StoreUnavailable        (also ConnectionError) cannot reach the store
    |   +-- LeaseLost               the claim was taken by a newer one
    |   +-- MessageTooLarge         (also ValueError) a record over a size limit
    +-- CodecError                  (also ValueError) a record cannot be decoded
    +-- DeliveryError               a transport failed to deliver
        +-- TransientError          try again later (4xx to the message)
        |   +-- ConnectError        the server cannot be reached (refused, timeout,
        |   |                       DNS): defer the batch, each under MAX_AGE
        |   +-- SessionError        the session itself failed (AUTH, STARTTLS,
        |                           greeting, 421): defer the batch, bury nothing
        +-- PermanentError          will never succeed (5xx to the message)

    ConfigurationError              (ImproperlyConfigured) a bad setting or URL
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable

from django.core.exceptions import ImproperlyConfigured

__all__ = [
    "CodecError",
    "ConfigurationError",
    "ConnectError",
    "DeliveryError",
    "LeaseLost",
    "MailQueueError",
    "MessageTooLarge",
    "PermanentError",
    "SessionError",
    "StoreError",
    "StoreUnavailable",
    "TransientError",
    "reject_unknown_keys",
]


class MailQueueError(Exception):
    """Root of every error mailqueue raises at run time."""


class StoreError(MailQueueError):
    """A store could not do what was asked."""


class StoreUnavailable(StoreError, ConnectionError):
    """The store cannot be reached; nothing was changed by the failed call."""


class LeaseLost(StoreError):
    """The claim's lease expired and another claim now holds the message."""


class MessageTooLarge(StoreError, ValueError):
    """The record is larger than a configured or store-imposed limit."""


class CodecError(MailQueueError, ValueError):
    """A stored record cannot be decoded (corrupt, wrong types, unknown version)."""


class DeliveryError(MailQueueError):
    """A transport failed to deliver a message.

    ``code`` is the SMTP reply code (or a provider's status) when there is one.
    Recipients refused while others were accepted are not errors: they are in
    :attr:`mailqueue_core.transport.Delivery.refused`, each with its own error.
    """

    def __init__(self, message: str, *, code: int | None = None) -> None:
        super().__init__(message)
        self.code = code


class TransientError(DeliveryError):
    """Delivery may succeed later: requeue with backoff until MAX_AGE."""


class ConnectError(TransientError):
    """The transport cannot reach its server (refused, timeout, DNS).

    Not the message's fault and the same for every message: the flusher
    defers the whole batch, each message under the usual MAX_AGE rule.
    """


class SessionError(TransientError):
    """The session failed before any message was at fault.

    Authentication, STARTTLS, a greeting refused or a 421: the site's
    configuration or the server's state. The whole batch is deferred and
    nothing is buried for it, however old.
    """


class PermanentError(DeliveryError):
    """Delivery will never succeed: bury at once."""


class ConfigurationError(ImproperlyConfigured):
    """A setting, URL or option is wrong. Raised at startup, never swallowed.

    ``key``: the top-level ``MAILQUEUE`` key at fault, when the error is about
    one (the system check's hint then says what that key takes).
    """

    def __init__(self, message: str = "", *, key: str | None = None) -> None:
        super().__init__(message)
        self.key = key


def reject_unknown_keys(
    setting: str, given: Iterable[object], known: Iterable[str], *, key: str | None = None
) -> None:
    """Raise a ConfigurationError naming the keys of ``given`` that are not ``known``,
    each with the nearest known key when one is close, and listing the known keys."""
    known = list(known)
    unknown = sorted(map(str, set(given) - set(known)))
    if not unknown:
        return
    named = []
    for name in unknown:
        # Settings keys are upper case; a key typed in lower case is still near.
        near = difflib.get_close_matches(name, known, n=1) or difflib.get_close_matches(
            name.upper(), known, n=1
        )
        named.append(f"{name} (did you mean {near[0]!r}?)" if near else name)
    raise ConfigurationError(
        f"{setting} has unknown key(s): {', '.join(named)}. Known keys: {', '.join(known)}",
        key=key,
    )
