"""One flusher worker as the ``flush`` command runs it: built from the settings,
then one flush, or a service (``--loop``) until it is told to stop."""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import TextIO

from mailqueue_core.commands.interrupts import Interrupts
from mailqueue_core.commands.output import say
from mailqueue_core.config import Config
from mailqueue_core.errors import StoreUnavailable
from mailqueue_core.flusher import Flusher, FlushListener, FlushResult
from mailqueue_core.plugins import make_routes, make_store
from mailqueue_core.ratelimit import LocalLimits, RateLimiter
from mailqueue_core.store import Capability, Store
from mailqueue_core.text import get_logger

__all__ = ["NotReached", "build_flusher", "flush_one", "limiter", "open_store", "reach"]

logger = get_logger("mailqueue.commands")

ListenerFactory = Callable[[], FlushListener]


class NotReached(StoreUnavailable):
    """The store could not be reached when the run started: nothing was claimed or sent."""


def reach(verify: Callable[[], None]) -> None:
    """Run a store check (``Store.verify``) before anything is claimed; a store that
    cannot be reached then raises :class:`NotReached`."""
    try:
        verify()
    except StoreUnavailable as exc:
        raise NotReached(str(exc)) from exc


def open_store(conf: Config) -> Store:
    return make_store(conf.store, namespace=conf.namespace, setting="MAILQUEUE['STORE']")


def limiter(conf: Config, store: Store) -> RateLimiter | None:
    if conf.rate_limit is None:
        return None
    if Capability.RATE_LIMIT in store.capabilities:
        return RateLimiter(conf.rate_limit, store, time.time)
    logger.warning(
        "the %s store cannot share MAILQUEUE['RATE_LIMIT'] between flushers: each flusher "
        "process enforces it on its own, so N processes may send N times the rate",
        type(store).__name__,
    )
    return RateLimiter(conf.rate_limit, LocalLimits(), time.time)


def build_flusher(conf: Config, store: Store, listener: ListenerFactory | None) -> Flusher:
    return Flusher(
        store,
        make_routes(conf.transport, conf.transports),
        policy=conf.policy,
        batch_size=conf.batch_size,
        lease=conf.lease,
        listener=listener() if listener else None,
        limiter=limiter(conf, store),
        staging=conf.staging,
        sent_log=conf.sent_log,
    )


def flush_one(
    options: argparse.Namespace,
    conf: Config,
    interrupts: Interrupts,
    listener: ListenerFactory | None,
    stdout: TextIO,
) -> FlushResult:
    """Run one worker; the store is checked (``Store.verify``) when it starts: a single
    run whose store cannot be reached then raises :class:`NotReached`."""
    store = open_store(conf)
    try:
        flusher = build_flusher(conf, store, listener)
        if options.loop:

            def report(result: FlushResult) -> None:
                if not options.quiet:
                    say(stdout, result.summary(), flush=True)

            return flusher.run(
                interrupts.stop,
                interval=options.interval,
                on_result=report,
                start_over=interrupts.start_over,
            )
        reach(flusher.verify)
        return flusher.flush(
            limit=options.limit,
            time_limit=options.time_limit,
            stop=interrupts.stop,
            start_over=interrupts.start_over,
        )
    finally:
        store.close()
