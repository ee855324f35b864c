"""The subcommands shared by ``manage.py mailqueue`` and the standalone ``mailqueue``.

``flush`` delivers, ``status`` counts, ``dead`` lists dead letters, ``retry``
revives them and ``purge`` deletes old ones. Exit status: 0 when the run
completed (whatever each message's outcome), 1 when the store or the
configuration failed; ``status --check`` exits 1 when a threshold is crossed
and 2 when the store cannot be reached.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import signal
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TextIO

from mailqueue_core import codec
from mailqueue_core.config import Config
from mailqueue_core.errors import CodecError, ConfigurationError, StoreUnavailable
from mailqueue_core.flusher import Flusher, FlushListener, FlushResult, Listeners
from mailqueue_core.plugins import make_routes, make_store
from mailqueue_core.ratelimit import LocalLimits, RateLimiter
from mailqueue_core.store import Stats, Store

__all__ = ["add_subcommands", "parse_duration", "run"]

logger = logging.getLogger("mailqueue.commands")

_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> float:
    """``3600``, ``90m``, ``12h``, ``7d`` -> seconds."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*", text)
    if not match:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a duration (use seconds, or 90m, 12h, 7d)"
        )
    return float(match.group(1)) * _UNITS[match.group(2)]


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def add_subcommands(
    parser: argparse.ArgumentParser, common: Callable[[argparse.ArgumentParser], None]
) -> None:
    """Add the subcommands; ``common`` adds the options every subcommand takes."""
    sub = parser.add_subparsers(dest="subcommand", metavar="SUBCOMMAND")
    sub.required = True

    flush = sub.add_parser("flush", help="deliver due messages")
    flush.add_argument("--limit", type=_positive_int, help="stop after N messages")
    flush.add_argument("--time-limit", type=parse_duration, help="stop after S seconds")
    flush.add_argument("--loop", action="store_true", help="run as a service until SIGTERM")
    flush.add_argument("--interval", type=parse_duration, default=5.0, help="with --loop")
    flush.add_argument("--workers", type=_positive_int, default=1, help="worker processes")
    flush.add_argument(
        "--quiet", action="store_true", help="no summary; problems still go to stderr"
    )

    status = sub.add_parser("status", help="count queued, in-flight and dead messages")
    status.add_argument("--json", action="store_true")
    status.add_argument("--check", action="store_true", help="exit 1 when a threshold is crossed")
    status.add_argument("--max-age", type=parse_duration, default=3600.0)
    status.add_argument("--max-dead", type=int, default=0)

    dead = sub.add_parser("dead", help="list dead letters")
    dead.add_argument("--json", action="store_true")
    dead.add_argument("--limit", type=_positive_int, default=100)

    retry = sub.add_parser("retry", help="revive dead letters")
    retry.add_argument("ids", nargs="*", metavar="ID")
    retry.add_argument("--all", action="store_true")

    purge = sub.add_parser("purge", help="delete old dead letters")
    purge.add_argument("--older-than", type=parse_duration, required=True, metavar="AGE")

    for subparser in (flush, status, dead, retry, purge):
        common(subparser)


def run(
    options: argparse.Namespace,
    config: Callable[[], Config],
    *,
    stdout: TextIO | None = None,
    stderr: TextIO | None = None,
    listener: Callable[[], FlushListener] | None = None,
) -> int:
    """Run one subcommand; returns the exit status."""
    stdout = stdout or sys.stdout
    stderr = stderr or sys.stderr
    try:
        conf = config()
        handler = _HANDLERS[options.subcommand]
        return handler(options, conf, stdout, stderr, listener)
    except ConfigurationError as exc:
        print(f"mailqueue: configuration error: {exc}", file=stderr)
        return 1
    except StoreUnavailable as exc:
        print(f"mailqueue: the store cannot be reached: {exc}", file=stderr)
        return 2 if options.subcommand == "status" else 1


def _store(conf: Config) -> Store:
    return make_store(conf.store, namespace=conf.namespace, setting="MAILQUEUE['STORE']")


# -- flush ---------------------------------------------------------------------------


@contextmanager
def _stop_on_signals(stop: threading.Event) -> Iterator[None]:
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {}
    for signum in (signal.SIGTERM, signal.SIGINT):
        previous[signum] = signal.signal(signum, lambda *_: stop.set())
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


class _Progress(FlushListener):
    """A running count on a terminal, for a long interactive flush."""

    def __init__(self, out: TextIO, every: float = 0.5) -> None:
        self.out = out
        self.every = every
        self.counts = {"sent": 0, "deferred": 0, "buried": 0}
        self.shown = 0.0

    def _tick(self, outcome: str) -> None:
        self.counts[outcome] += 1
        now = time.monotonic()
        if now - self.shown >= self.every:
            self.shown = now
            c = self.counts
            self.out.write(f"\r{c['sent']} sent, {c['deferred']} deferred, {c['buried']} buried")
            self.out.flush()

    def sent(self, message_id: str, message: Any, delivery: Any) -> None:
        self._tick("sent")

    def deferred(self, message_id: str, message: Any, error: str, due: float) -> None:
        self._tick("deferred")

    def buried(self, message_id: str, message: Any, reason: str) -> None:
        self._tick("buried")

    def done(self) -> None:
        if self.shown:
            self.out.write("\r\x1b[K")  # clear the line; the summary follows
            self.out.flush()


def _limiter(conf: Config, store: Store) -> RateLimiter | None:
    if conf.rate_limit is None:
        return None
    if "rate_limit" in store.capabilities:
        return RateLimiter(conf.rate_limit, store, time.time)
    logger.warning(
        "the %s store cannot share MAILQUEUE['RATE_LIMIT'] between flushers: each flusher "
        "process enforces it on its own, so N processes may send N times the rate",
        type(store).__name__,
    )
    return RateLimiter(conf.rate_limit, LocalLimits(), time.time)


def _flusher(conf: Config, store: Store, listener: Callable[[], FlushListener] | None) -> Flusher:
    return Flusher(
        store,
        make_routes(conf.transport, conf.transports),
        policy=conf.policy,
        batch_size=conf.batch_size,
        lease=conf.lease,
        listener=listener() if listener else None,
        limiter=_limiter(conf, store),
    )


def _flush_one(
    options: argparse.Namespace,
    conf: Config,
    stop: threading.Event,
    listener: Callable[[], FlushListener] | None,
    stdout: TextIO,
) -> FlushResult:
    store = _store(conf)
    try:
        flusher = _flusher(conf, store, listener)
        if options.loop:

            def report(result: FlushResult) -> None:
                if not options.quiet:
                    print(result.summary(), file=stdout, flush=True)

            return flusher.run(stop, interval=options.interval, on_result=report)
        return flusher.flush(limit=options.limit, time_limit=options.time_limit, stop=stop)
    finally:
        store.close()


def _drain_fallback(conf: Config, stderr: TextIO) -> int:
    """Move fallback mail into the main store; returns how many moved."""
    fallback = make_store(conf.fallback_store, namespace=conf.namespace, setting="FALLBACK_STORE")
    main = _store(conf)
    moved = 0
    # Every message in the fallback, whatever its due time (which it keeps).
    everything = time.time() + 100 * 365 * 86400
    try:
        main.stats(time.time())  # raises StoreUnavailable before anything is claimed
        while claims := fallback.fetch_due(everything, conf.batch_size, conf.lease):
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
        print(f"moved {moved} message(s) from the fallback store into the store", file=stderr)
    return moved


def _flush(
    options: argparse.Namespace,
    conf: Config,
    stdout: TextIO,
    stderr: TextIO,
    listener: Callable[[], FlushListener] | None,
) -> int:
    stop = threading.Event()
    status = 0
    progress = None
    if not (options.quiet or options.loop) and options.workers == 1 and _is_tty(stderr):
        progress = _Progress(stderr)
        inner = listener
        listener = lambda: Listeners(progress, *([inner()] if inner else []))  # noqa: E731
    with _stop_on_signals(stop):
        if conf.fallback_store is not None:
            try:
                _drain_fallback(conf, stderr)
            except StoreUnavailable as exc:
                print(
                    f"mailqueue: the store cannot be reached ({exc}); delivering straight "
                    "from the fallback store",
                    file=stderr,
                )
                conf = Config(**{**conf.__dict__, "store": conf.fallback_store})
                status = 1
        if options.workers > 1:
            result, failed = _flush_workers(options, conf, stop, listener, stdout, stderr)
            status = status or failed
        else:
            try:
                result = _flush_one(options, conf, stop, listener, stdout)
            except StoreUnavailable as exc:
                print(f"mailqueue: the store failed during flush: {exc}", file=stderr)
                return 1
    if progress is not None:
        progress.done()
    if result.buried:
        print(f"mailqueue: {result.buried} message(s) buried; see 'mailqueue dead'", file=stderr)
    if not options.quiet:
        print(result.summary(), file=stdout)
    return status


def _is_tty(stream: Any) -> bool:
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())


def _flush_workers(
    options: argparse.Namespace,
    conf: Config,
    stop: threading.Event,
    listener: Callable[[], FlushListener] | None,
    stdout: TextIO,
    stderr: TextIO,
) -> tuple[FlushResult, int]:
    """Fork ``--workers`` processes, each one flusher with its own connections."""
    children: dict[int, int] = {}
    for _ in range(options.workers):
        read_end, write_end = os.pipe()
        with warnings.catch_warnings():
            # Python 3.12 warns about fork() beside other threads. The child
            # only builds its own store and transport and never takes a lock
            # another thread may hold (logging re-creates its locks at fork).
            warnings.simplefilter("ignore", DeprecationWarning)
            pid = os.fork()
        if pid == 0:  # pragma: no cover - runs in the child; measured by the drills
            os.close(read_end)
            code = 0
            try:
                signal.signal(signal.SIGTERM, lambda *_: stop.set())
                result = _flush_one(options, conf, stop, listener, stdout)
                os.write(write_end, json.dumps(result.__dict__).encode())
            except StoreUnavailable as exc:
                print(f"mailqueue: the store failed during flush: {exc}", file=stderr)
                code = 1
            except BaseException:
                logger.exception("flusher worker failed")
                code = 1
            finally:
                os.close(write_end)
                os._exit(code)
        os.close(write_end)
        children[pid] = read_end
    total = FlushResult()
    failed = 0
    start = time.monotonic()
    for pid, read_end in children.items():
        chunks = []
        while chunk := _read_retrying(read_end, stop, children):
            chunks.append(chunk)
        os.close(read_end)
        _, wait_status = os.waitpid(pid, 0)
        if os.waitstatus_to_exitcode(wait_status) != 0 or not chunks:
            failed = 1
            continue
        part = json.loads(b"".join(chunks))
        total.sent += part["sent"]
        total.deferred += part["deferred"]
        total.buried += part["buried"]
    total.elapsed = time.monotonic() - start
    return total, failed


def _read_retrying(fd: int, stop: threading.Event, children: dict[int, int]) -> bytes:
    """Read from a worker's pipe, passing a stop request on to every worker."""
    while True:
        try:
            return os.read(fd, 65536)
        except InterruptedError:  # pragma: no cover - PEP 475 retries for us
            continue
        finally:
            if stop.is_set():
                for pid in children:
                    try:
                        os.kill(pid, signal.SIGTERM)
                    except ProcessLookupError:
                        pass


# -- inspection ------------------------------------------------------------------------


def _status(
    options: argparse.Namespace, conf: Config, stdout: TextIO, stderr: TextIO, _: Any
) -> int:
    store = _store(conf)
    try:
        stats = store.stats(time.time())
    finally:
        store.close()
    data = stats.as_dict()
    fallback = _fallback_stats(conf, stderr)
    if fallback is not None:
        data["fallback"] = fallback.as_dict()
    if options.json:
        print(json.dumps(data, sort_keys=True), file=stdout)
    else:
        _print_stats(stats, stdout)
        if fallback is not None:
            print("fallback store:", file=stdout)
            _print_stats(fallback, stdout, indent="  ")
    if not options.check:
        return 0
    problems = []
    if fallback is not None and (fallback.ready or fallback.scheduled):
        problems.append(
            f"{fallback.ready + fallback.scheduled} message(s) wait in the fallback store: "
            "was the store down? 'flush' moves them back"
        )
    if stats.dead > options.max_dead:
        problems.append(f"{stats.dead} dead letter(s) (more than {options.max_dead})")
    if stats.lost:
        problems.append(f"{stats.lost} message(s) lost by the store")
    if stats.oldest_ready_age is not None and stats.oldest_ready_age > options.max_age:
        problems.append(
            f"the oldest ready message is {stats.oldest_ready_age:.0f}s old "
            f"(more than {options.max_age:.0f}s): is the flusher running?"
        )
    for problem in problems:
        print(f"mailqueue: {problem}", file=stderr)
    return 1 if problems else 0


def _print_stats(stats: Stats, stdout: TextIO, indent: str = "") -> None:
    age = stats.oldest_ready_age
    rows = [
        ("ready", stats.ready),
        ("scheduled", stats.scheduled),
        ("in flight", stats.in_flight),
        ("dead", stats.dead),
        ("lost", stats.lost),
        ("oldest ready", "-" if age is None else f"{age:.0f}s"),
    ]
    for name, value in rows:
        print(f"{indent}{name:<13}{value}", file=stdout)


def _fallback_stats(conf: Config, stderr: TextIO) -> Stats | None:
    if conf.fallback_store is None:
        return None
    fallback = make_store(conf.fallback_store, namespace=conf.namespace, setting="FALLBACK_STORE")
    try:
        return fallback.stats(time.time())
    except StoreUnavailable as exc:
        print(f"mailqueue: the fallback store cannot be reached: {exc}", file=stderr)
        return None
    finally:
        fallback.close()


def _dead(
    options: argparse.Namespace, conf: Config, stdout: TextIO, stderr: TextIO, _: Any
) -> int:
    store = _store(conf)
    try:
        letters = store.dead_letters(limit=options.limit)
    finally:
        store.close()
    now = time.time()
    rows: list[dict[str, Any]] = []
    for letter in letters:
        record = letter.record
        recipients: list[str] = []
        subject = ""
        if not letter.lost:
            try:
                message = codec.decode(record)
                recipients, subject = message.recipients, message.subject
            except CodecError:
                subject = "(undecodable record)"
        rows.append(
            {
                "id": record.id,
                "recipients": recipients,
                "subject": subject,
                "age": round(now - record.created, 1),
                "buried": letter.buried,
                "attempts": record.attempts,
                "error": letter.reason,
                "lost": letter.lost,
            }
        )
    if options.json:
        print(json.dumps(rows), file=stdout)
        return 0
    if not rows:
        print("no dead letters", file=stdout)
    for row in rows:
        mark = " [LOST]" if row["lost"] else ""
        print(
            f"{row['id']}{mark}  to {', '.join(row['recipients']) or '?'}  "
            f"subject {row['subject']!r}  age {row['age']:.0f}s  attempts {row['attempts']}\n"
            f"    {row['error']}",
            file=stdout,
        )
    return 0


def _retry(
    options: argparse.Namespace, conf: Config, stdout: TextIO, stderr: TextIO, _: Any
) -> int:
    if options.all == bool(options.ids):
        print("mailqueue retry: give either --all or message ids", file=stderr)
        return 1
    store = _store(conf)
    try:
        count = store.revive(None if options.all else options.ids, time.time())
    finally:
        store.close()
    print(f"revived {count} message(s)", file=stdout)
    return 0


def _purge(
    options: argparse.Namespace, conf: Config, stdout: TextIO, stderr: TextIO, _: Any
) -> int:
    store = _store(conf)
    try:
        count = store.purge(time.time() - options.older_than)
    finally:
        store.close()
    print(f"purged {count} dead letter(s)", file=stdout)
    return 0


_HANDLERS = {"flush": _flush, "status": _status, "dead": _dead, "retry": _retry, "purge": _purge}
