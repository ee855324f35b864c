"""What handling one claim comes to, and the one rule for giving up on a message.

A flush turns each claim of a batch into one outcome and acts on it:
:class:`Sent`, :class:`Split`, :class:`Deferred` and :class:`Buried` are
recorded (:mod:`~mailqueue_core.flusher.recording`) and the batch goes on;
:class:`DeferBatch` defers this claim and the rest of the batch;
:class:`GiveBack` gives them back to the store unsent, and :class:`EndRun`
ends the flush as well.

:func:`after_failure` is the give-up rule, the same for a whole message that
failed transiently, for the batch of a transport that could not connect, and
for the recipients split off a message the server took in part. A session
failure follows it too, but is never buried (the caller's choice: the session
failed, not the message).
"""

from __future__ import annotations

import dataclasses
import logging
from typing import TypeAlias

from mailqueue_core.errors import ConnectError, SessionError
from mailqueue_core.message import QueuedMessage
from mailqueue_core.policy import RetryPolicy
from mailqueue_core.store import Claim, Record
from mailqueue_core.transport import Delivery

__all__ = [
    "Buried",
    "DeferBatch",
    "Deferred",
    "Dropped",
    "EndRun",
    "GiveBack",
    "GiveUp",
    "Outcome",
    "Recorded",
    "Retry",
    "Sent",
    "Split",
    "after_failure",
    "counted",
]


@dataclasses.dataclass(frozen=True, slots=True)
class Sent:
    """The transport took the message for every recipient: ack it."""

    claim: Claim
    message: QueuedMessage
    delivery: Delivery


@dataclasses.dataclass(frozen=True, slots=True)
class Split:
    """The transport refused some recipients (``delivery.refused``): they are
    split off as messages of their own, then the claim is acked."""

    claim: Claim
    message: QueuedMessage
    delivery: Delivery


@dataclasses.dataclass(frozen=True, slots=True)
class Deferred:
    """Requeue the claim until ``due``, with ``error``."""

    claim: Claim
    message: QueuedMessage | None
    due: float
    error: str


@dataclasses.dataclass(frozen=True, slots=True)
class Buried:
    """Bury the claim with ``reason``."""

    claim: Claim
    message: QueuedMessage | None
    reason: str


@dataclasses.dataclass(frozen=True, slots=True)
class Dropped:
    """Staging left the message no recipient (``STAGING`` with ``OTHERS:
    "drop"``): ack it unsent."""

    claim: Claim


@dataclasses.dataclass(frozen=True, slots=True)
class DeferBatch:
    """The transport failed before any message was at fault: this claim and the
    rest of the batch are deferred."""

    error: SessionError | ConnectError


@dataclasses.dataclass(frozen=True, slots=True)
class GiveBack:
    """Send nothing more of the batch: this claim and the rest go back unsent,
    and the flush claims again.

    ``why`` is logged at ``level`` with how many went back; a plain stop says
    nothing.
    """

    why: str = ""
    level: int = logging.INFO


@dataclasses.dataclass(frozen=True, slots=True)
class EndRun(GiveBack):
    """Give the batch back and end the flush: claiming again at once would only
    spin (a rate limit slower than the lease)."""


#: The outcomes recorded for the claim in hand, after which the batch goes on.
Recorded: TypeAlias = Sent | Split | Deferred | Buried | Dropped
#: Everything handling one claim can come to.
Outcome: TypeAlias = Recorded | DeferBatch | GiveBack


@dataclasses.dataclass(frozen=True, slots=True)
class Retry:
    """The give-up rule's word on a failed attempt: try again at ``due``."""

    attempts: int
    due: float
    error: str

    def outcome(self, claim: Claim, message: QueuedMessage | None) -> Deferred:
        return Deferred(claim, message, self.due, self.error)


@dataclasses.dataclass(frozen=True, slots=True)
class GiveUp:
    """The give-up rule's word on a failed attempt: bury, with ``reason``."""

    attempts: int
    reason: str

    def outcome(self, claim: Claim, message: QueuedMessage | None) -> Buried:
        return Buried(claim, message, self.reason)


def counted(record: Record) -> int:
    """The attempts of ``record`` counting the one that just failed.

    :meth:`~mailqueue_core.store.Store.bury` and
    :meth:`~mailqueue_core.store.Store.requeue` count it in the store; a part
    split off a message carries it, so that a dead letter says the same
    whether it was buried whole or split off.
    """
    return record.attempts + 1


def after_failure(policy: RetryPolicy, record: Record, error: str, now: float) -> Retry | GiveUp:
    """The give-up rule: what an attempt at ``record`` that failed at ``now`` with
    ``error`` comes to.

    Given up once ``policy`` finds the message too old (counted from when it
    was queued, whatever part of it is left), the reason saying after how many
    attempts and how long; else retried on the policy's backoff, never later
    than its last chance.
    """
    attempts = counted(record)
    if policy.expired(record.created, now):
        age = now - record.created
        return GiveUp(attempts, f"gave up after {attempts} attempts over {age:.0f}s: {error}")
    return Retry(attempts, policy.next_due(record.created, attempts, now), error)
