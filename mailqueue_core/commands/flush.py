"""The ``flush`` subcommand: deliver, once (cron) or as a service (``--loop``).

Exit status: 0 when the run completed, whatever each message's outcome, and
after a clean stop (SIGTERM, SIGINT); 1 when the configuration is wrong (a
store that ``Store.verify`` finds unfit included), when the store cannot be
reached or failed in a single run, or when mail went out straight from the
fallback store. A service outlives store failures: it logs them and tries
again (see :meth:`~mailqueue_core.flusher.Flusher.run`).

Two store failures are told apart, since they mean different things for the
mail: a store that cannot be reached when the run starts (``Store.verify``
fails: nothing was claimed, nothing sent) and one lost in the middle of a run
(the message in hand may be sent again when its lease runs out).
"""

from __future__ import annotations

import argparse
import time
from typing import TextIO

from mailqueue_core.commands.arguments import parse_duration, positive_int
from mailqueue_core.commands.interrupts import Interrupts
from mailqueue_core.commands.output import Progress, is_tty, plain, say
from mailqueue_core.commands.processes import run_workers
from mailqueue_core.commands.worker import ListenerFactory, NotReached, flush_one, open_store
from mailqueue_core.config import Config
from mailqueue_core.errors import StoreError, StoreUnavailable
from mailqueue_core.flusher import FlushListener, Listeners
from mailqueue_core.plugins import make_store

__all__ = ["add_arguments", "flush", "from_the_fallback"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--limit",
        type=positive_int,
        metavar="N",
        help="stop after N messages (default: when nothing due is left)",
    )
    parser.add_argument(
        "--time-limit",
        type=parse_duration,
        metavar="S",
        help="stop after S seconds: 300, 5m (default: when nothing due is left)",
    )
    parser.add_argument(
        "--loop", action="store_true", help="run as a service, until SIGTERM or SIGINT"
    )
    parser.add_argument(
        "--interval",
        type=parse_duration,
        default="5",
        metavar="S",
        help="with --loop: seconds between two runs",
    )
    parser.add_argument(
        "--workers",
        type=positive_int,
        default=1,
        metavar="N",
        help="worker processes, each with its own connections (POSIX only)",
    )
    parser.add_argument(
        "--quiet", action="store_true", help="no summary line; problems still go to stderr"
    )


def flush(
    options: argparse.Namespace,
    conf: Config,
    stdout: TextIO,
    stderr: TextIO,
    listener: ListenerFactory | None,
) -> int:
    interrupts = Interrupts()
    status = 0
    progress = None
    if not (options.quiet or options.loop) and options.workers == 1 and is_tty(stderr):
        progress = Progress(plain(stderr))
        listener = _with_progress(progress, listener)
    with interrupts.handled():
        if conf.fallback_store is not None:
            conf, status = from_the_fallback(conf, stderr)
        try:
            if options.workers > 1:
                result, failed = run_workers(options, conf, interrupts, listener, stdout, stderr)
                status = status or failed
            else:
                result = flush_one(options, conf, interrupts, listener, stdout)
        except NotReached:
            raise  # nothing was claimed: "the store cannot be reached"
        except StoreError as exc:
            say(stderr, f"mailqueue: the store failed during flush: {exc}")
            return 1
    if progress is not None:
        progress.done()
    if result.buried:
        say(stderr, f"mailqueue: {result.buried} message(s) buried; see 'mailqueue dead'")
    if not options.quiet:
        say(stdout, result.summary())
    return status


def from_the_fallback(conf: Config, stderr: TextIO) -> tuple[Config, int]:
    """Move the fallback's mail into the store; when the store is down, the
    configuration that delivers straight from the fallback, and exit status 1."""
    try:
        _drain_fallback(conf, stderr)
    except StoreUnavailable as exc:
        say(
            stderr,
            f"mailqueue: the store cannot be reached ({exc}); delivering straight "
            "from the fallback store",
        )
        return Config(**{**conf.__dict__, "store": conf.fallback_store}), 1
    return conf, 0


def _with_progress(progress: Progress, inner: ListenerFactory | None) -> ListenerFactory:
    def make() -> FlushListener:
        return Listeners(progress, *([inner()] if inner else []))

    return make


def _drain_fallback(conf: Config, stderr: TextIO) -> int:
    """Move fallback mail into the main store; returns how many moved."""
    fallback = make_store(conf.fallback_store, namespace=conf.namespace, setting="FALLBACK_STORE")
    main = open_store(conf)
    moved = 0
    # Every message in the fallback, whatever its due time (which it keeps).
    everything = time.time() + 100 * 365 * 86400
    try:
        main.stats(time.time())  # raises StoreUnavailable before anything is claimed
        while claims := fallback.fetch_due(everything, conf.batch_size, conf.lease):
            for claim in claims:
                if claim.record.damage is not None:
                    reason = f"damaged record: {claim.record.damage}"
                    fallback.bury(claim, reason, time.time())
                    say(stderr, f"mailqueue: buried {claim.id} in the fallback store: {reason}")
            claims = [claim for claim in claims if claim.record.damage is None]
            try:
                main.enqueue([claim.record for claim in claims])
            except StoreUnavailable:
                for claim in claims:
                    fallback.release(claim)
                raise
            for claim in claims:
                fallback.ack(claim)
            moved += len(claims)
    finally:
        fallback.close()
        main.close()
    if moved:
        say(plain(stderr), f"moved {moved} message(s) from the fallback store into the store")
    return moved
