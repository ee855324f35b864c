"""The flusher as one worker: its settings, one flush, and the service that repeats it."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable

from mailqueue_core.errors import ConfigurationError, StoreError
from mailqueue_core.flusher.results import FlushListener, FlushResult
from mailqueue_core.flusher.run import FlushRun
from mailqueue_core.policy import RetryPolicy
from mailqueue_core.ratelimit import RateLimiter
from mailqueue_core.sentlog import PRUNE_EVERY, SentLog
from mailqueue_core.staging import Staging
from mailqueue_core.store import Capability, Store
from mailqueue_core.text import get_logger
from mailqueue_core.transport import Transport

__all__ = ["MAX_BACKOFF", "Flusher"]

logger = get_logger("mailqueue.flusher")

#: The longest wait between two tries of a service whose store keeps failing.
MAX_BACKOFF = 60.0

#: The longest a service waits in one call for a wake-up, so that it answers
#: SIGTERM and SIGHUP within that time.
WAKE_SLICE = 0.5

#: Seconds between two heartbeats of a running flusher, and how long one is kept.
BEAT_EVERY = 10.0
BEAT_KEPT = 86400.0


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
        staging: Staging | None = None,
        sent_log: SentLog | None = None,
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
        #: ``MAILQUEUE["STAGING"]``: whom mail may reach (see :mod:`mailqueue_core.staging`).
        self.staging = staging
        #: ``MAILQUEUE["SENT_LOG"]`` (see :mod:`mailqueue_core.sentlog`), or None.
        self.sent_log = sent_log
        if sent_log is not None and Capability.SENT_LOG not in store.capabilities:
            logger.warning(
                "SENT_LOG is set but %s keeps no sent log (it lacks the 'sent_log' "
                "capability): delivered mail is not recorded",
                type(store).__name__,
            )
            self.sent_log = None
        self._pruned: float | None = None
        #: What the console's overview calls this flusher (its host).
        self.name = socket.gethostname() or "flusher"
        self._beaten: float | None = None
        self._verified: float | None = None
        self._paused: bool | None = None
        # Stop sending a claim this long before its lease runs out, so that a
        # send in progress cannot overlap another flusher's claim.
        self.margin = min(lease / 5, 60.0)

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

    def verify_if_due(self) -> None:
        """:meth:`verify`, when ``verify_every`` seconds passed since the last check."""
        now = self.clock()
        last = self._verified
        # A clock that went back also calls for a check: its interval is unknown.
        if last is None or not last <= now < last + self.verify_every:
            self.verify()

    def _wait_for_mail(
        self, seconds: float, stop: threading.Event, start_over: threading.Event
    ) -> None:
        """Wait ``seconds`` between runs, or less: until the store says mail
        may be due (:meth:`Store.wait_for_mail`), a stop, or a start over."""
        deadline = time.monotonic() + seconds
        while not (stop.is_set() or start_over.is_set()):
            left = deadline - time.monotonic()
            if left <= 0:
                return
            try:
                if self.store.wait_for_mail(min(left, WAKE_SLICE)):
                    return
            except StoreError:
                return  # the next run meets the failure, reports it and backs off

    def beat_if_due(self) -> None:
        """Tell the store this flusher is active (:meth:`Store.beat`), every
        :data:`BEAT_EVERY` seconds at most; kept a day, so that the overview
        shows a flusher run from cron too."""
        if Capability.HEARTBEAT not in self.store.capabilities:
            return
        now = self.clock()
        last = self._beaten
        if last is not None and last <= now < last + BEAT_EVERY:
            return
        self._beaten = now
        try:
            self.store.beat(self.name, now, now + BEAT_KEPT)
        except StoreError as exc:
            # The claim that follows meets the same failure and reports it.
            logger.debug("heartbeat not recorded: %s", exc)

    def prune_sent_log_if_due(self) -> None:
        """Delete sent log records older than ``SENT_LOG["KEEP"]``, every
        :data:`~mailqueue_core.sentlog.PRUNE_EVERY` seconds at most."""
        if self.sent_log is None:
            return
        now = self.clock()
        last = self._pruned
        if last is not None and last <= now < last + PRUNE_EVERY:
            return
        self._pruned = now
        try:
            pruned = self.store.prune_sent(now - self.sent_log.keep)
        except StoreError as exc:
            logger.warning("the sent log could not be pruned: the store failed: %s", exc)
            return
        if pruned:
            logger.info("pruned %d sent log record(s) older than the SENT_LOG KEEP", pruned)

    def held_by_pause(self) -> bool:
        """Whether delivery is paused (:meth:`Store.paused`); says so when that changes."""
        paused = self.store.paused()
        if paused != self._paused:
            if paused:
                logger.warning("delivery is paused: nothing is sent until `mailqueue resume`")
            elif self._paused is not None:
                logger.warning("delivery resumed")
            self._paused = paused
        return paused

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
        return FlushRun(
            self,
            stop=stop or threading.Event(),
            start_over=start_over or threading.Event(),
            limit=limit,
            time_limit=time_limit,
        ).execute()

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
        start_over = start_over or threading.Event()
        while not stop.is_set():
            current = FlushRun(self, stop=stop, start_over=start_over)
            wait = interval
            try:
                current.execute()
            except ConfigurationError:
                raise
            except Exception as exc:
                failures += 1
                wait = min(interval * 2 ** min(failures - 1, 30), max(max_backoff, interval))
                _report_failure(exc, failures, wait)
            else:
                _report_recovery(failures)
                failures = 0
            result = current.result
            total.add(result)
            if on_result is not None and (result.sent or result.deferred or result.buried):
                on_result(result)
            if failures or Capability.WAKE not in self.store.capabilities:
                _sleep(wait, stop, start_over)
            else:
                self._wait_for_mail(wait, stop, start_over)
        total.elapsed = time.monotonic() - start
        return total


#: How often a service waiting for its next run looks whether SIGHUP came.
START_OVER_CHECK = 0.05


def _sleep(seconds: float, stop: threading.Event, start_over: threading.Event) -> None:
    """Wait ``seconds`` between runs; a stop ends the wait, and so does a start
    over (SIGHUP), so that a service backing off from a failing store tries
    again at once when the operator says the store is fixed."""
    deadline = time.monotonic() + seconds
    while not start_over.is_set():
        left = deadline - time.monotonic()
        if left <= 0 or stop.wait(min(left, START_OVER_CHECK)):
            return


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


def _report_recovery(failures: int) -> None:
    if failures:
        logger.warning(
            "the store answers again, after %d failed tr%s",
            failures,
            "y" if failures == 1 else "ies",
        )
