"""Recording outcomes: in the store, then in the counts, the log and the listener."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping

from mailqueue_core import codec
from mailqueue_core.errors import (
    CodecError,
    ConnectError,
    DeliveryError,
    LeaseLost,
    SessionError,
    StoreError,
    TransientError,
)
from mailqueue_core.flusher.acker import Acker
from mailqueue_core.flusher.outcomes import (
    Buried,
    Deferred,
    Dropped,
    GiveUp,
    Recorded,
    Sent,
    Split,
    after_failure,
    counted,
)
from mailqueue_core.flusher.results import FlushListener, FlushResult
from mailqueue_core.message import QueuedMessage
from mailqueue_core.policy import RetryPolicy
from mailqueue_core.sentlog import SentLog
from mailqueue_core.store import Capability, Claim, SentRecord, Store
from mailqueue_core.text import cap, get_logger
from mailqueue_core.transport import Transport

__all__ = ["Recorder"]

logger = get_logger("mailqueue.flusher")


def _recipients(claim: Claim, message: QueuedMessage | None) -> str:
    if message is not None:
        return ", ".join(message.recipients)
    if claim.record.damage is not None:
        return "(unknown: damaged record)"
    try:
        return ", ".join(codec.decode(claim.record).recipients)
    except CodecError:
        return "(unknown: undecodable record)"


def _part(
    message: QueuedMessage, refused: Mapping[str, DeliveryError], attempts: int
) -> QueuedMessage:
    part = message.for_recipients(list(refused), id=uuid.uuid4().hex)
    part.attempts = attempts
    return part


def _refusals(refused: Mapping[str, DeliveryError]) -> str:
    return "; ".join(f"{r}: {e}" for r, e in refused.items())


class Recorder:
    """Records the outcomes of one flush, and learns from the store whether a
    lease of the batch was lost.

    ``LeaseLost`` from the store (another flusher took the claim over) is no
    failure here: the claim is the other flusher's now. It is logged and
    :attr:`lease_lost` is set, so that nothing more of the batch is sent. Any
    other store error propagates: the flush stops at once.
    """

    def __init__(
        self,
        store: Store,
        transport: Transport,
        policy: RetryPolicy,
        clock: Callable[[], float],
        listener: FlushListener,
        result: FlushResult,
        sent_log: SentLog | None = None,
    ) -> None:
        self.store = store
        self.transport = transport
        self.policy = policy
        self.clock = clock
        self.listener = listener
        self.result = result
        # An in-process store acks faster than a thread hand-off would take.
        self.acker = Acker(store, Capability.SHARED in store.capabilities, self.lost)
        #: A claim of this batch was taken over (reset with each batch).
        self.lease_lost = False
        self.sent_log = sent_log
        #: The sent log's records of this batch, written once it is acked.
        self.logged: list[SentRecord] = []

    def record(self, outcome: Recorded) -> None:
        """Record the outcome of the claim in hand: ack, split, requeue or bury."""
        if isinstance(outcome, Sent):
            self.acker.ack(outcome.claim)
            self._sent(outcome)
        elif isinstance(outcome, Split):
            self._split(outcome)
            self._sent(outcome)
        elif isinstance(outcome, Deferred):
            self._requeue(outcome)
        elif isinstance(outcome, Dropped):
            self.acker.ack(outcome.claim)
        else:
            self._bury(outcome)

    def defer_batch(self, claims: list[Claim], error: SessionError | ConnectError) -> None:
        """Defer ``claims`` for a transport that failed before any message was at fault."""
        if isinstance(error, SessionError):
            logger.error(
                "transport %s failed before any message was at fault; deferring %d "
                "message(s) and burying none. Check the transport's settings "
                "(host, port, TLS, user and password): %s",
                self.transport.describe(),
                len(claims),
                cap(str(error)),
            )
        else:
            logger.warning(
                "transport %s is unreachable; deferring %d message(s): %s",
                self.transport.describe(),
                len(claims),
                cap(str(error)),
            )
        for claim in claims:
            self.record(self._deferral(claim, error))

    def _deferral(self, claim: Claim, error: SessionError | ConnectError) -> Deferred | Buried:
        now = self.clock()
        verdict = after_failure(self.policy, claim.record, str(error), now)
        if isinstance(verdict, GiveUp) and isinstance(error, SessionError):
            # The session failed, not the message: a wrong password must not
            # dead-letter a day of mail.
            return Deferred(claim, None, now + self.policy.delay(verdict.attempts), str(error))
        return verdict.outcome(claim, None)

    def settle(self) -> None:
        """Wait for the ack in flight (see :class:`~mailqueue_core.flusher.acker.Acker`)."""
        self.acker.settle()

    def close(self) -> None:
        self.acker.close()

    def lost(self, claim: Claim, what: str) -> None:
        """A claim of this batch was refused with LeaseLost: send nothing more of it."""
        logger.warning("message %s %s", claim.id, what)
        self.lease_lost = True

    def release(self, claims: list[Claim], *, quietly: bool = False) -> None:
        """Give claims back; a claim taken over meanwhile is the other's now.

        ``quietly``: the store just failed, so this is a best effort: a store
        that still fails leaves the claims to run out by their lease.
        """
        for claim in claims:
            try:
                self.store.release(claim)
            except LeaseLost:
                pass
            except StoreError:
                if not quietly:
                    raise
                return

    # -- each outcome ------------------------------------------------------------------

    def _sent(self, outcome: Sent | Split) -> None:
        claim, message, delivery = outcome.claim, outcome.message, outcome.delivery
        accepted = [r for r in message.recipients if r not in delivery.refused]
        if not accepted:
            return
        self.result.sent += 1
        logger.info(
            "sent message %s to %s via %s%s",
            claim.id,
            ", ".join(accepted),
            delivery.transport or self.transport.describe(),
            f" (provider id {delivery.provider_id})" if delivery.provider_id else "",
        )
        self.listener.sent(claim.id, message, delivery)
        if self.sent_log is not None:
            entry = self.sent_log.entry(claim.record, message, delivery, accepted, self.clock())
            self.logged.append(entry)

    def write_sent_log(self) -> None:
        """Log the batch's delivered messages (``SENT_LOG``), once they are acked.

        The log is a record, not the queue: a store that fails here costs
        these records (said at WARNING), never a message.
        """
        if not self.logged or self.sent_log is None:
            return
        records, self.logged = self.logged, []
        try:
            self.store.log_sent(records, self.clock() + self.sent_log.keep)
        except StoreError as exc:
            logger.warning(
                "the sent log missed %d delivered message(s): the store failed: %s",
                len(records),
                cap(str(exc)),
            )

    def _requeue(self, deferred: Deferred) -> None:
        claim, error = deferred.claim, cap(deferred.error)
        try:
            self.store.requeue(claim, deferred.due, error)
        except LeaseLost:
            self.lost(claim, "could not be requeued: its lease was taken over")
            return
        self.result.deferred += 1
        logger.info(
            "deferred message %s to %s until %.0f: %s",
            claim.id,
            _recipients(claim, deferred.message),
            deferred.due,
            error,
        )
        self.listener.deferred(claim.id, deferred.message, error, deferred.due)

    def _bury(self, buried: Buried) -> None:
        claim, reason = buried.claim, cap(buried.reason)
        try:
            self.store.bury(claim, reason, self.clock())
        except LeaseLost:
            self.lost(claim, "could not be buried: its lease was taken over")
            return
        self.result.buried += 1
        logger.error(
            "buried message %s to %s: %s", claim.id, _recipients(claim, buried.message), reason
        )
        self.listener.buried(claim.id, buried.message, reason)

    def _split(self, split: Split) -> None:
        now = self.clock()
        later, dead = self._parts(split, now)
        # Record what is left before the original goes: a crash in between
        # resends the original (the duplicate window), it never loses a recipient.
        if later:
            self.store.enqueue([codec.to_record(m) for m in later])
        if dead:
            self.store.add_dead([codec.to_record(m) for m in dead], now)
        self.acker.ack(split.claim)
        self.acker.settle()
        for part in later:
            self.result.deferred += 1
            logger.info(
                "deferred message %s (part of %s) to %s: %s",
                part.id,
                split.claim.id,
                ", ".join(part.recipients),
                part.last_error,
            )
            self.listener.deferred(part.id, part, part.last_error or "", part.due)
        for part in dead:
            self.result.buried += 1
            logger.error(
                "buried message %s (part of %s) to %s: %s",
                part.id,
                split.claim.id,
                ", ".join(part.recipients),
                part.last_error,
            )
            self.listener.buried(part.id, part, part.last_error or "")

    def _parts(self, split: Split, now: float) -> tuple[list[QueuedMessage], list[QueuedMessage]]:
        """The refused recipients as parts of their own: (to retry, to bury).

        Transiently refused ones are one part, retried or given up by the same
        rule as a whole message; permanently refused ones are one dead part.
        """
        record, refused = split.claim.record, split.delivery.refused
        transient = {r: e for r, e in refused.items() if isinstance(e, TransientError)}
        permanent = {r: e for r, e in refused.items() if r not in transient}
        later: list[QueuedMessage] = []
        dead: list[QueuedMessage] = []
        if transient:
            verdict = after_failure(self.policy, record, _refusals(transient), now)
            part = _part(split.message, transient, verdict.attempts)
            if isinstance(verdict, GiveUp):
                part.last_error = cap(verdict.reason)
                dead.append(part)
            else:
                part.last_error = cap(verdict.error)
                part.due = verdict.due
                later.append(part)
        if permanent:
            part = _part(split.message, permanent, counted(record))
            part.last_error = cap(_refusals(permanent))
            dead.append(part)
        return later, dead
