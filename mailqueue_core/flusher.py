"""The flusher: claim due messages, send each, then ack, requeue or bury it.

Delivery is at-least-once. A message leaves the store only after the transport
accepted it, and it is acked right after its own send, so a crash duplicates at
most the one message in hand. A message is never sent once its lease is about
to run out (another flusher could hold it by then). When the store cannot be
reached to record an outcome, the flusher stops at once: sending more would
only widen the duplicate window. After the first lost lease (another flusher
took a claim over: its clock is ahead, or a send outlasted the lease) the rest
of the batch goes back to the store unsent.

:meth:`Flusher.run` is the service: a failing store is logged and tried again
after a capped backoff, never the end of the run; only ``stop`` ends it, or a
store that :meth:`~mailqueue_core.store.Store.verify` finds unfit
(:class:`~mailqueue_core.errors.ConfigurationError`).

Outcomes (see :mod:`mailqueue_core.errors` for the classification):

- accepted: ack;
- some recipients refused: the rest are done; transiently refused recipients
  go back to the queue as a message of their own, permanently refused ones
  become a dead letter of their own, then the original is acked;
- ``TransientError``: requeue with backoff, or bury once ``max_age`` is passed;
- ``ConnectError``: the same for the whole batch;
- ``SessionError``: the whole batch is requeued and nothing is ever buried for
  it (a wrong password must not dead-letter a day of mail); logged at ERROR;
- ``PermanentError``, an undecodable record, or a claim whose record the store
  could not read whole (``record.damage``): bury at once, with the reason;
- anything else (a bug in a plugin): logged with its traceback, treated as transient.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor

from mailqueue_core import codec
from mailqueue_core.errors import (
    CodecError,
    ConfigurationError,
    ConnectError,
    LeaseLost,
    PermanentError,
    SessionError,
    StoreError,
    TransientError,
)
from mailqueue_core.message import QueuedMessage
from mailqueue_core.policy import RetryPolicy
from mailqueue_core.ratelimit import RateLimiter
from mailqueue_core.store import Capability, Claim, Store
from mailqueue_core.text import cap, get_logger
from mailqueue_core.transport import Delivery, Transport

__all__ = ["FlushListener", "FlushResult", "Flusher", "Listeners"]

logger = get_logger("mailqueue.flusher")


@dataclasses.dataclass
class FlushResult:
    sent: int = 0
    deferred: int = 0
    buried: int = 0
    elapsed: float = 0.0

    def add(self, other: FlushResult) -> None:
        self.sent += other.sent
        self.deferred += other.deferred
        self.buried += other.buried

    def summary(self) -> str:
        return (
            f"sent {self.sent}, deferred {self.deferred}, buried {self.buried} "
            f"in {self.elapsed:.1f}s"
        )


class FlushListener:
    """Told about every outcome; the Django integration turns these into signals."""

    def sent(self, message_id: str, message: QueuedMessage, delivery: Delivery) -> None:
        pass

    def deferred(
        self, message_id: str, message: QueuedMessage | None, error: str, due: float
    ) -> None:
        pass

    def buried(self, message_id: str, message: QueuedMessage | None, reason: str) -> None:
        pass


class Listeners(FlushListener):
    """Several listeners heard as one."""

    def __init__(self, *listeners: FlushListener) -> None:
        self.listeners = listeners

    def sent(self, message_id: str, message: QueuedMessage, delivery: Delivery) -> None:
        for listener in self.listeners:
            listener.sent(message_id, message, delivery)

    def deferred(
        self, message_id: str, message: QueuedMessage | None, error: str, due: float
    ) -> None:
        for listener in self.listeners:
            listener.deferred(message_id, message, error, due)

    def buried(self, message_id: str, message: QueuedMessage | None, reason: str) -> None:
        for listener in self.listeners:
            listener.buried(message_id, message, reason)


def _recipients(claim: Claim, message: QueuedMessage | None) -> str:
    if message is not None:
        return ", ".join(message.recipients)
    if claim.record.damage is not None:
        return "(unknown: damaged record)"
    try:
        return ", ".join(codec.decode(claim.record).recipients)
    except CodecError:
        return "(unknown: undecodable record)"


#: The longest wait between two tries of a service whose store keeps failing.
MAX_BACKOFF = 60.0


class _Stop(Exception):
    """Internal: leave the batch, giving back what was not sent.

    ``why``: said in the log with how many messages went back (none for a
    plain stop). ``end_run``: end this flush too, instead of claiming the next
    batch (a rate limit slower than the lease: claiming again at once would
    only spin).
    """

    def __init__(self, why: str = "", *, level: int = logging.INFO, end_run: bool = False) -> None:
        super().__init__(why)
        self.why = why
        self.level = level
        self.end_run = end_run


_LEASE_LOST = (
    "another flusher took over a claim of this batch (is this machine's clock behind "
    "the other flushers'? does a send outlast LEASE?)"
)


class _Acker:
    """Acks message k on a thread while message k+1 is decoded and rendered.

    The next message is sent only after :meth:`settle` saw that ack through,
    so a crash still leaves at most one sent-but-unacked message, and a store
    that fails to ack still stops the flusher before its next send. An ack
    refused with ``LeaseLost`` is passed to ``lost``, which tells the flusher
    to send nothing more of the batch.
    """

    def __init__(self, store: Store, threaded: bool, lost: Callable[[Claim, str], None]) -> None:
        self.store = store
        self.lost = lost
        self.executor = (
            ThreadPoolExecutor(max_workers=1, thread_name_prefix="mailqueue-ack")
            if threaded
            else None
        )
        self.pending: tuple[Claim, Future[None]] | None = None

    def ack(self, claim: Claim) -> None:
        self.settle()
        if self.executor is None:
            self._done(claim, None)
            return
        self.pending = (claim, self.executor.submit(self.store.ack, claim))

    def settle(self) -> None:
        """Wait for the ack in flight; raises what the store raised (but LeaseLost)."""
        if self.pending is not None:
            claim, future = self.pending
            self.pending = None
            self._done(claim, future)

    def _done(self, claim: Claim, future: Future[None] | None) -> None:
        try:
            if future is None:
                self.store.ack(claim)
            else:
                future.result()
        except LeaseLost:
            self.lost(
                claim,
                "was delivered but its lease had been taken over; "
                "the other flusher may deliver it again",
            )

    def close(self) -> None:
        try:
            self.settle()
        finally:
            if self.executor is not None:
                self.executor.shutdown(wait=True)


class Flusher:
    """Delivers due messages from ``store`` through ``transport``.

    ``clock`` is injected so that a 24-hour policy can be tested in
    milliseconds. One Flusher is one worker: it holds at most one message in
    hand at a time. ``verify_every``: seconds (on ``clock``) between two
    checks of the store with :meth:`Store.verify`; the first is made when the
    flusher starts.
    """

    def __init__(
        self,
        store: Store,
        transport: Transport,
        *,
        policy: RetryPolicy | None = None,
        batch_size: int = 100,
        lease: float = 300.0,
        clock: Callable[[], float] = time.time,
        listener: FlushListener | None = None,
        limiter: RateLimiter | None = None,
        verify_every: float = 60.0,
    ) -> None:
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        if lease <= 0:
            raise ValueError("lease must be positive")
        self.store = store
        self.transport = transport
        self.policy = policy or RetryPolicy()
        self.batch_size = batch_size
        self.lease = lease
        self.clock = clock
        self.listener = listener or FlushListener()
        self.limiter = limiter
        self.verify_every = verify_every
        self._verified: float | None = None
        self._stop = threading.Event()
        # Stop sending a claim this long before its lease runs out, so that a
        # send in progress cannot overlap another flusher's claim.
        self.margin = min(lease / 5, 60.0)
        # Per batch: a lease was lost, and the claim sent but not yet recorded.
        self._lease_lost = False
        self._sending: Claim | None = None

    # -- checking the store ----------------------------------------------------------

    def verify(self) -> None:
        """Check that the store can keep its promises (:meth:`Store.verify`).

        Raises :class:`~mailqueue_core.errors.ConfigurationError` when it
        cannot (the flusher must not go on) and
        :class:`~mailqueue_core.errors.StoreUnavailable` when it cannot be
        reached.
        """
        self.store.verify()
        self._verified = self.clock()

    def _verify_if_due(self) -> None:
        now = self.clock()
        last = self._verified
        # A clock that went back also calls for a check: its interval is unknown.
        if last is None or not last <= now < last + self.verify_every:
            self.verify()

    # -- the loop ---------------------------------------------------------------

    def flush(
        self,
        *,
        limit: int | None = None,
        time_limit: float | None = None,
        stop: threading.Event | None = None,
        start_over: threading.Event | None = None,
    ) -> FlushResult:
        """Deliver what is due now, until the queue has nothing due, ``limit``
        messages were handled, ``time_limit`` seconds passed, or ``stop`` is set.

        ``start_over`` (set by SIGHUP in the commands): the message in hand is
        finished, the rest of the batch is given back, the store is verified
        again and the flush goes on with a fresh claim; the event is cleared.

        Raises :class:`~mailqueue_core.errors.StoreUnavailable` when the store
        fails (what was done until then is done, and the claims not sent are
        given back when the store still answers), and
        :class:`~mailqueue_core.errors.ConfigurationError` when
        :meth:`verify` finds the store unfit.
        """
        result = FlushResult()
        self._flush(result, limit, time_limit, stop or threading.Event(), start_over)
        return result

    def _flush(
        self,
        result: FlushResult,
        limit: int | None,
        time_limit: float | None,
        stop: threading.Event,
        start_over: threading.Event | None,
    ) -> None:
        self._stop = stop
        start = time.monotonic()
        deadline = None if time_limit is None else start + time_limit
        # An in-process store acks faster than a thread hand-off would take.
        self._acker = _Acker(self.store, Capability.SHARED in self.store.capabilities, self._lost)
        try:
            self._loop(stop, start_over or threading.Event(), limit, deadline, result)
        finally:
            try:
                self._acker.close()
            finally:
                result.elapsed = time.monotonic() - start

    def _loop(
        self,
        stop: threading.Event,
        start_over: threading.Event,
        limit: int | None,
        deadline: float | None,
        result: FlushResult,
    ) -> None:
        handled = 0
        while not stop.is_set():
            if start_over.is_set():
                start_over.clear()
                logger.info("starting over (SIGHUP): checking the store again")
                self._verified = None
            self._verify_if_due()
            if limit is not None and handled >= limit:
                break
            if deadline is not None and time.monotonic() >= deadline:
                break
            size = self.batch_size if limit is None else min(self.batch_size, limit - handled)
            claims = self.store.fetch_due(self.clock(), size, self.lease)
            if not claims:
                break
            done, go_on = self._batch(claims, result, stop, start_over, deadline)
            handled += done
            if not go_on:
                break

    def run(
        self,
        stop: threading.Event,
        *,
        interval: float = 5.0,
        on_result: Callable[[FlushResult], None] | None = None,
        start_over: threading.Event | None = None,
        max_backoff: float = MAX_BACKOFF,
    ) -> FlushResult:
        """Flush again and again, ``interval`` seconds apart, until ``stop`` is set
        (a service).

        A failing store does not end it: the failure is logged and the next
        try waits ``interval``, then twice as long, and so on up to
        ``max_backoff``; the first run that works again says so. Only a
        :class:`~mailqueue_core.errors.ConfigurationError` from :meth:`verify`
        ends it early (raised): a store found unfit must not be used on.
        """
        total = FlushResult()
        start = time.monotonic()
        failures = 0
        while not stop.is_set():
            result = FlushResult()
            wait = interval
            try:
                self._flush(result, None, None, stop, start_over)
            except ConfigurationError:
                raise
            except Exception as exc:
                failures += 1
                wait = min(interval * 2 ** min(failures - 1, 30), max(max_backoff, interval))
                self._report_failure(exc, failures, wait)
            else:
                if failures:
                    logger.warning(
                        "the store answers again, after %d failed tr%s",
                        failures,
                        "y" if failures == 1 else "ies",
                    )
                failures = 0
            total.add(result)
            if on_result is not None and (result.sent or result.deferred or result.buried):
                on_result(result)
            stop.wait(wait)
        total.elapsed = time.monotonic() - start
        return total

    @staticmethod
    def _report_failure(exc: Exception, failures: int, wait: float) -> None:
        if isinstance(exc, StoreError):
            logger.error(
                "the store failed (%s: %s); trying again in %g s (failure %d in a row)",
                type(exc).__name__,
                exc,
                wait,
                failures,
            )
        else:
            logger.exception(
                "the flusher failed unexpectedly; trying again in %g s (failure %d in a row)",
                wait,
                failures,
            )

    # -- one batch ----------------------------------------------------------------

    def _batch(
        self,
        claims: list[Claim],
        result: FlushResult,
        stop: threading.Event,
        start_over: threading.Event,
        deadline: float | None,
    ) -> tuple[int, bool]:
        """Deliver one batch: (how many claims it handled, whether the run goes on)."""
        pending = list(claims)
        self._lease_lost = False
        self._sending = None
        slot = None
        if self.limiter is not None and self.limiter.limit.connections:
            slot = self.limiter.acquire_connection(
                stop, claims[0].expires - self.margin, self.lease
            )
            if slot is None:
                logger.info("no transport connection slot is free; giving the batch back")
                self._release(pending)
                return 0, False
        try:
            try:
                self.transport.open()
            except (SessionError, ConnectError) as exc:
                self._defer_all(pending, exc, result)
                return len(claims), True
            except Exception as exc:
                logger.exception("transport %s failed to open", self.transport.describe())
                self._defer_all(pending, ConnectError(f"{type(exc).__name__}: {exc}"), result)
                return len(claims), True
            while pending:
                claim = pending[0]
                self._check_go_on(claim, stop, start_over, deadline)
                try:
                    self._one(claim, result)
                except (SessionError, ConnectError) as exc:
                    self._acker.settle()
                    self._defer_all(pending, exc, result)
                    return len(claims), True
                pending.pop(0)
            self._acker.settle()
        except _Stop as stopped:
            try:
                self._acker.settle()
            except StoreError:
                self._release(pending, quietly=True)
                raise
            if stopped.why and pending:
                logger.log(
                    stopped.level,
                    "%s; giving %d message(s) of the batch back unsent",
                    stopped.why,
                    len(pending),
                )
            self._release(pending)
            return len(claims) - len(pending), not stopped.end_run
        except StoreError:
            # The store failed: nothing more is sent. What was never sent goes
            # back at once if the store still answers (else by lease expiry).
            self._release([c for c in pending if c is not self._sending], quietly=True)
            raise
        finally:
            self.transport.close()
            if slot is not None:
                assert self.limiter is not None
                self.limiter.release_connection(slot)
        return len(claims), True

    def _check_go_on(
        self,
        claim: Claim,
        stop: threading.Event,
        start_over: threading.Event,
        deadline: float | None,
    ) -> None:
        """Raise _Stop when ``claim`` and the rest of the batch must not be sent."""
        if stop.is_set() or (deadline is not None and time.monotonic() >= deadline):
            raise _Stop
        if start_over.is_set():
            raise _Stop("starting over (SIGHUP)")
        if self.clock() >= claim.expires - self.margin:
            logger.warning(
                "lease of message %s is running out before it could be sent; "
                "giving the rest of the batch back (raise LEASE or lower BATCH_SIZE)",
                claim.id,
            )
            raise _Stop
        if self._lease_lost:
            raise _Stop(_LEASE_LOST, level=logging.WARNING)

    def _one(self, claim: Claim, result: FlushResult) -> None:
        self._sending = None
        message = None
        reason = claim.record.damage
        if reason is not None:
            reason = f"damaged record: {reason}"
        else:
            try:
                message = codec.decode(claim.record)
            except CodecError as exc:
                reason = f"undecodable record: {exc}"
            else:
                # Render while the previous message's ack is on its way; send only after it.
                self.transport.prepare(message)
        self._acker.settle()
        if self._lease_lost:
            # The previous ack was refused: this one is not sent either.
            raise _Stop(_LEASE_LOST, level=logging.WARNING)
        if message is None:
            assert reason is not None
            self._bury(claim, None, reason, result)
            return
        if self.limiter is not None and not self.limiter.wait_to_send(
            message, self._stop, claim.expires - self.margin
        ):
            if self._stop.is_set():
                raise _Stop(end_run=True)
            raise _Stop(
                f"the rate limit leaves no token before the lease of message {claim.id} "
                "runs out; the next run tries again",
                end_run=True,
            )
        self._sending = claim
        try:
            delivery = self.transport.send(message)
        except (SessionError, ConnectError):
            raise
        except TransientError as exc:
            self._retry(claim, message, str(exc), result)
            return
        except PermanentError as exc:
            self._bury(claim, message, str(exc), result)
            return
        except Exception as exc:
            logger.exception(
                "transport %s failed on message %s with an unexpected error; "
                "treating it as transient",
                self.transport.describe(),
                claim.id,
            )
            self._retry(claim, message, f"{type(exc).__name__}: {exc}", result)
            return
        if delivery.refused:
            self._split(claim, message, delivery, result)
        else:
            self._acker.ack(claim)
        accepted = [r for r in message.recipients if r not in delivery.refused]
        if accepted:
            result.sent += 1
            logger.info(
                "sent message %s to %s via %s%s",
                claim.id,
                ", ".join(accepted),
                delivery.transport or self.transport.describe(),
                f" (provider id {delivery.provider_id})" if delivery.provider_id else "",
            )
            self.listener.sent(claim.id, message, delivery)

    # -- outcomes -------------------------------------------------------------------

    def _lost(self, claim: Claim, what: str) -> None:
        """A claim of this batch was refused with LeaseLost: send nothing more of it."""
        logger.warning("message %s %s", claim.id, what)
        self._lease_lost = True

    def _retry(
        self, claim: Claim, message: QueuedMessage | None, error: str, result: FlushResult
    ) -> None:
        now = self.clock()
        record = claim.record
        if self.policy.expired(record.created, now):
            age = now - record.created
            self._bury(
                claim,
                message,
                f"gave up after {record.attempts + 1} attempts over {age:.0f}s: {error}",
                result,
            )
            return
        due = self.policy.next_due(record.created, record.attempts + 1, now)
        self._requeue(claim, message, due, error, result)

    def _requeue(
        self,
        claim: Claim,
        message: QueuedMessage | None,
        due: float,
        error: str,
        result: FlushResult,
    ) -> None:
        error = cap(error)
        try:
            self.store.requeue(claim, due, error)
        except LeaseLost:
            self._lost(claim, "could not be requeued: its lease was taken over")
            return
        result.deferred += 1
        logger.info(
            "deferred message %s to %s until %.0f: %s",
            claim.id,
            _recipients(claim, message),
            due,
            error,
        )
        self.listener.deferred(claim.id, message, error, due)

    def _bury(
        self, claim: Claim, message: QueuedMessage | None, reason: str, result: FlushResult
    ) -> None:
        reason = cap(reason)
        try:
            self.store.bury(claim, reason, self.clock())
        except LeaseLost:
            self._lost(claim, "could not be buried: its lease was taken over")
            return
        result.buried += 1
        logger.error("buried message %s to %s: %s", claim.id, _recipients(claim, message), reason)
        self.listener.buried(claim.id, message, reason)

    def _defer_all(self, claims: list[Claim], exc: Exception, result: FlushResult) -> None:
        error = str(exc)
        if isinstance(exc, SessionError):
            logger.error(
                "transport %s failed before any message was at fault; deferring %d "
                "message(s) and burying none. Check the transport's settings "
                "(host, port, TLS, user and password): %s",
                self.transport.describe(),
                len(claims),
                cap(error),
            )
            now = self.clock()
            for claim in claims:
                record = claim.record
                due = now + self.policy.delay(record.attempts + 1)
                if not self.policy.expired(record.created, now):
                    due = self.policy.next_due(record.created, record.attempts + 1, now)
                self._requeue(claim, None, due, error, result)
            return
        logger.warning(
            "transport %s is unreachable; deferring %d message(s): %s",
            self.transport.describe(),
            len(claims),
            cap(error),
        )
        for claim in claims:
            self._retry(claim, None, error, result)

    def _split(
        self, claim: Claim, message: QueuedMessage, delivery: Delivery, result: FlushResult
    ) -> None:
        now = self.clock()
        record = claim.record
        transient = {r: e for r, e in delivery.refused.items() if isinstance(e, TransientError)}
        permanent = {r: e for r, e in delivery.refused.items() if r not in transient}
        later: list[QueuedMessage] = []
        dead: list[QueuedMessage] = []
        # A part counts the attempt that split it off, as bury() counts the
        # attempt that buried a whole message.
        if transient:
            error = cap("; ".join(f"{r}: {e}" for r, e in transient.items()))
            part = message.for_recipients(list(transient), id=uuid.uuid4().hex)
            part.attempts = record.attempts + 1
            part.last_error = error
            if self.policy.expired(record.created, now):
                part.last_error = cap(f"gave up after {part.attempts} attempts: {error}")
                dead.append(part)
            else:
                part.due = self.policy.next_due(record.created, part.attempts, now)
                later.append(part)
        if permanent:
            part = message.for_recipients(list(permanent), id=uuid.uuid4().hex)
            part.attempts = record.attempts + 1
            part.last_error = cap("; ".join(f"{r}: {e}" for r, e in permanent.items()))
            dead.append(part)
        # Record what is left before the original goes: a crash in between
        # resends the original (the duplicate window), it never loses a recipient.
        if later:
            self.store.enqueue([codec.to_record(m) for m in later])
        if dead:
            self.store.add_dead([codec.to_record(m) for m in dead], now)
        self._acker.ack(claim)
        self._acker.settle()
        for part in later:
            result.deferred += 1
            logger.info(
                "deferred message %s (part of %s) to %s: %s",
                part.id,
                claim.id,
                ", ".join(part.recipients),
                part.last_error,
            )
            self.listener.deferred(part.id, part, part.last_error or "", part.due)
        for part in dead:
            result.buried += 1
            logger.error(
                "buried message %s (part of %s) to %s: %s",
                part.id,
                claim.id,
                ", ".join(part.recipients),
                part.last_error,
            )
            self.listener.buried(part.id, part, part.last_error or "")

    def _release(self, claims: list[Claim], *, quietly: bool = False) -> None:
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
