"""One flush: claim a batch, turn each claim into an outcome and act on it, claim again."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import threading
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

from mailqueue_core import codec
from mailqueue_core.errors import (
    CodecError,
    ConnectError,
    PermanentError,
    SessionError,
    StoreError,
    TransientError,
)
from mailqueue_core.flusher.outcomes import (
    Buried,
    DeferBatch,
    Deferred,
    Dropped,
    EndRun,
    GiveBack,
    Outcome,
    Sent,
    Split,
    after_failure,
)
from mailqueue_core.flusher.recording import Recorder
from mailqueue_core.flusher.results import FlushResult
from mailqueue_core.message import QueuedMessage
from mailqueue_core.store import Claim
from mailqueue_core.text import get_logger

if TYPE_CHECKING:
    from mailqueue_core.flusher.worker import Flusher

__all__ = ["FlushRun"]

logger = get_logger("mailqueue.flusher")

_LEASE_LOST = GiveBack(
    "another flusher took over a claim of this batch (is this machine's clock behind "
    "the other flushers'? does a send outlast LEASE?)",
    logging.WARNING,
)


class FlushRun:
    """One :meth:`~mailqueue_core.flusher.Flusher.flush`: its limits, counts,
    acks and events, from the first claim to the last.

    Each claim of a batch comes to one outcome
    (:mod:`~mailqueue_core.flusher.outcomes`); the batch loop records it and
    goes on, or ends the batch as the outcome says. ``sending`` is the claim
    sent and not recorded yet: when the store fails, it is the one claim not
    given back (its lease brings it back; it may have been delivered).
    """

    def __init__(
        self,
        flusher: Flusher,
        *,
        stop: threading.Event,
        start_over: threading.Event,
        limit: int | None = None,
        time_limit: float | None = None,
    ) -> None:
        self.flusher = flusher
        self.stop = stop
        self.start_over = start_over
        self.limit = limit
        self.started = time.monotonic()
        self.deadline = None if time_limit is None else self.started + time_limit
        # Claims sent, deferred or buried (not those given back): what ``limit`` counts.
        self.handled = 0
        self.result = FlushResult()
        self.recorder = Recorder(
            flusher.store,
            flusher.transport,
            flusher.policy,
            flusher.clock,
            flusher.listener,
            self.result,
            flusher.sent_log,
        )
        self.sending: Claim | None = None

    def execute(self) -> FlushResult:
        """Deliver until nothing due is left, the limits are reached or ``stop`` is set."""
        try:
            while not self.stop.is_set():
                if not self._next_batch():
                    break
        finally:
            try:
                self.recorder.close()
            finally:
                self.result.elapsed = time.monotonic() - self.started
        return self.result

    def _next_batch(self) -> bool:
        """Claim and deliver one batch: whether the run goes on."""
        flusher = self.flusher
        if self.start_over.is_set():
            self.start_over.clear()
            logger.info("starting over (SIGHUP): checking the store again")
            flusher.verify()
        else:
            flusher.verify_if_due()
        flusher.beat_if_due()
        flusher.prune_sent_log_if_due()
        if flusher.held_by_pause():
            self.result.paused = True
            return False
        size = self._room()
        claims = flusher.store.fetch_due(flusher.clock(), size, flusher.lease) if size else []
        if not claims:
            return False
        pending = list(claims)
        go_on = self._batch(pending)
        self.handled += len(claims) - len(pending)
        return go_on

    def _room(self) -> int:
        """How many claims the next batch may take: none once the limits are reached."""
        if self._out_of_time() or (self.limit is not None and self.handled >= self.limit):
            return 0
        size = self.flusher.batch_size
        return size if self.limit is None else min(size, self.limit - self.handled)

    def _out_of_time(self) -> bool:
        return self.deadline is not None and time.monotonic() >= self.deadline

    # -- one batch ----------------------------------------------------------------

    def _batch(self, pending: list[Claim]) -> bool:
        """Deliver one batch, taking each claim handled off ``pending``: whether
        the run goes on."""
        self.recorder.lease_lost = False
        self.sending = None
        with self._connection_slot(pending[0]) as free:
            if not free:
                logger.info("no transport connection slot is free; giving the batch back")
                self.recorder.release(pending)
                return False
            try:
                end = self._deliver(pending)
                go_on = end is None or self._give_back(pending, end)
            finally:
                self.flusher.transport.close()
            self.recorder.write_sent_log()
            return go_on

    @contextlib.contextmanager
    def _connection_slot(self, first: Claim) -> Iterator[bool]:
        """Hold a transport connection slot for the batch when ``CONNECTIONS``
        caps them; False when none came free before the lease of ``first``
        runs out."""
        limiter = self.flusher.limiter
        if limiter is None or not limiter.limit.connections:
            yield True
            return
        slot = limiter.acquire_connection(
            self.stop, first.expires - self.flusher.margin, self.flusher.lease
        )
        if slot is None:
            yield False
            return
        try:
            yield True
        finally:
            limiter.release_connection(slot)

    def _deliver(self, pending: list[Claim]) -> GiveBack | None:
        """Open the transport and deliver ``pending``; the give-back that ended
        the batch early, if one did."""
        try:
            end = self._open() or self._each(pending)
            if isinstance(end, DeferBatch):
                self.recorder.settle()
                self.recorder.defer_batch(pending, end.error)
                pending.clear()
                return None
            return end
        except StoreError:
            # The store failed: nothing more is sent. What was never sent goes
            # back at once if the store still answers (else by lease expiry).
            self.recorder.release([c for c in pending if c is not self.sending], quietly=True)
            raise

    def _open(self) -> DeferBatch | None:
        transport = self.flusher.transport
        try:
            transport.open()
        except (SessionError, ConnectError) as exc:
            return DeferBatch(exc)
        except Exception as exc:
            logger.exception("transport %s failed to open", transport.describe())
            return DeferBatch(ConnectError(f"{type(exc).__name__}: {exc}"))
        return None

    def _each(self, pending: list[Claim]) -> DeferBatch | GiveBack | None:
        """The batch loop: each claim in turn to an outcome, recorded, until
        one ends the batch."""
        while pending:
            outcome = self._check(pending[0]) or self._handle(pending[0])
            if isinstance(outcome, (DeferBatch, GiveBack)):
                return outcome
            self.recorder.record(outcome)
            del pending[0]
        self.recorder.settle()
        return None

    def _give_back(self, pending: list[Claim], end: GiveBack) -> bool:
        """Give ``pending`` back unsent: whether the run goes on."""
        try:
            self.recorder.settle()
        except StoreError:
            self.recorder.release(pending, quietly=True)
            raise
        if end.why:
            logger.log(
                end.level,
                "%s; giving %d message(s) of the batch back unsent",
                end.why,
                len(pending),
            )
        self.recorder.release(pending)
        return not isinstance(end, EndRun)

    # -- one claim ----------------------------------------------------------------

    def _check(self, claim: Claim) -> GiveBack | None:
        """Whether ``claim`` and the rest of the batch must go back unsent."""
        if self.stop.is_set() or self._out_of_time():
            return GiveBack()
        if self.start_over.is_set():
            return GiveBack("starting over (SIGHUP)")
        if self.flusher.clock() >= claim.expires - self.flusher.margin:
            logger.warning(
                "lease of message %s is running out before it could be sent; "
                "giving the rest of the batch back (raise LEASE or lower BATCH_SIZE)",
                claim.id,
            )
            return GiveBack()
        return _LEASE_LOST if self.recorder.lease_lost else None

    def _handle(self, claim: Claim) -> Outcome:
        """Decode, render, wait for a token and send ``claim``: what it came to."""
        self.sending = None
        decoded = self._decode(claim)
        # The previous message's ack went on while this one was rendered:
        # it must be through before this one is sent.
        self.recorder.settle()
        if self.recorder.lease_lost:
            return _LEASE_LOST  # the previous ack was refused: send nothing more
        if isinstance(decoded, (Buried, Dropped)):
            return decoded
        outgoing = decoded.message if isinstance(decoded, _Staged) else decoded
        return self._wait_for_token(claim, outgoing) or self._send(claim, outgoing, decoded)

    def _decode(self, claim: Claim) -> QueuedMessage | _Staged | Buried | Dropped:
        """The message, rendered ahead of its send (as ``STAGING`` makes it);
        or its burial when it cannot be read."""
        if claim.record.damage is not None:
            return Buried(claim, None, f"damaged record: {claim.record.damage}")
        try:
            message = codec.decode(claim.record)
        except CodecError as exc:
            return Buried(claim, None, f"undecodable record: {exc}")
        if message.expires is not None and self.flusher.clock() >= message.expires:
            when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(message.expires))
            return Buried(claim, message, f"expired: not sent before its expiry ({when})")
        staging = self.flusher.staging
        if staging is None:
            self.flusher.transport.prepare(message)
            return message
        staged = staging.apply(message)
        if staged.dropped:
            # Never silent: a drop left on where the site went live is heard.
            logger.error(
                "message %s: not sent to %s (STAGING drops recipients outside ALLOWED_DOMAINS)",
                claim.id,
                ", ".join(staged.dropped),
            )
        if staged.message is None:
            if staged.refused:
                return Buried(claim, message, str(next(iter(staged.refused.values()))))
            return Dropped(claim)
        self.flusher.transport.prepare(staged.message)
        return _Staged(staged.message, staged.refused, message)

    def _wait_for_token(self, claim: Claim, message: QueuedMessage) -> EndRun | None:
        limiter = self.flusher.limiter
        if limiter is None or limiter.wait_to_send(
            message, self.stop, claim.expires - self.flusher.margin
        ):
            return None
        if self.stop.is_set():
            return EndRun()
        return EndRun(
            f"the rate limit leaves no token before the lease of message {claim.id} "
            "runs out; the next run tries again"
        )

    def _send(
        self, claim: Claim, message: QueuedMessage, decoded: QueuedMessage | _Staged
    ) -> Outcome:
        transport = self.flusher.transport
        self.sending = claim
        try:
            delivery = transport.send(message)
        except (SessionError, ConnectError) as exc:
            return DeferBatch(exc)
        except TransientError as exc:
            return self._failed(claim, message, str(exc))
        except PermanentError as exc:
            return Buried(claim, message, str(exc))
        except Exception as exc:
            logger.exception(
                "transport %s failed on message %s with an unexpected error; "
                "treating it as transient",
                transport.describe(),
                claim.id,
            )
            return self._failed(claim, message, f"{type(exc).__name__}: {exc}")
        if isinstance(decoded, _Staged) and decoded.refused:
            # Staging refused some recipients of the original message: they
            # are split off from it, dead, as refusals by the server would be.
            refused = {**decoded.refused, **delivery.refused}
            return Split(claim, decoded.original, dataclasses.replace(delivery, refused=refused))
        if delivery.refused:
            return Split(claim, message, delivery)
        return Sent(claim, message, delivery)

    def _failed(self, claim: Claim, message: QueuedMessage, error: str) -> Deferred | Buried:
        """A transient failure: retried, or buried by the give-up rule."""
        now = self.flusher.clock()
        return after_failure(self.flusher.policy, claim.record, error, now).outcome(claim, message)


@dataclasses.dataclass(frozen=True)
class _Staged:
    """A message as ``STAGING`` made it, the recipients it refused, and the
    message it was made from (which the refused ones are split off)."""

    message: QueuedMessage
    refused: dict[str, PermanentError]
    original: QueuedMessage
