"""``status``, ``dead``, ``retry`` and ``purge``: look at the queue and repair it.

``status --check`` exits 1 when a threshold is crossed (by default: any dead,
lost or stuck message, or a ready message older than an hour, or mail waiting
in the fallback store) and 2 when the store cannot be reached. None of them
creates a queue: where there is none, the store says so, naming its location.

``status`` shows when the next scheduled message is due where the store tells
(:attr:`~mailqueue_core.store.Stats.next_due`, optional in the contract), and
says when delivery is paused (:meth:`~mailqueue_core.store.Store.paused`).
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any, TextIO

from mailqueue_core import codec
from mailqueue_core.commands.arguments import parse_duration, positive_int, threshold
from mailqueue_core.commands.output import say
from mailqueue_core.config import Config
from mailqueue_core.errors import CodecError, StoreUnavailable
from mailqueue_core.plugins import make_store
from mailqueue_core.store import DeadLetter, Stats, Store

__all__ = [
    "add_dead_arguments",
    "add_purge_arguments",
    "add_retry_arguments",
    "add_status_arguments",
    "dead",
    "purge",
    "retry",
    "status",
]


def add_status_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument(
        "--check",
        action="store_true",
        help="a monitoring check: exit 1 when a threshold below is crossed",
    )
    parser.add_argument(
        "--max-age",
        type=parse_duration,
        default="3600",
        metavar="AGE",
        help="with --check: the oldest ready message may be this old (3600, 90m, 2h)",
    )
    parser.add_argument(
        "--max-dead",
        type=threshold,
        default=0,
        metavar="N",
        help="with --check: this many dead letters pass",
    )
    parser.add_argument(
        "--max-stuck",
        type=threshold,
        default=0,
        metavar="N",
        help="with --check: this many stuck messages (held past their lease) pass",
    )


def add_dead_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print a JSON list of objects")
    parser.add_argument(
        "--limit", type=positive_int, default=100, metavar="N", help="list at most N"
    )


def add_retry_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "ids", nargs="*", metavar="ID", help="queue ids of dead letters, as 'dead' lists them"
    )
    parser.add_argument("--all", action="store_true", help="every dead letter")


def add_purge_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--older-than",
        type=parse_duration,
        required=True,
        metavar="AGE",
        help="buried more than AGE ago: seconds, or 90m, 12h, 7d (required)",
    )


def _existing(conf: Config, key: str = "STORE") -> Store:
    """The store (or the fallback store), opening an existing queue only: these
    commands never create one."""
    spec = conf.store if key == "STORE" else conf.fallback_store
    store = make_store(spec, namespace=conf.namespace, setting=f"MAILQUEUE['{key}']")
    existing = store.without_creating()
    if existing is not store:
        store.close()
    return existing


# -- status ----------------------------------------------------------------------------


def status(
    options: argparse.Namespace, conf: Config, stdout: TextIO, stderr: TextIO, _: Any
) -> int:
    store = _existing(conf)
    now = time.time()
    try:
        stats = store.stats(now)
        paused = store.paused()
    finally:
        store.close()
    data = stats.as_dict()
    data["paused"] = paused
    data["staging"] = None if conf.staging is None else conf.staging.describe()
    fallback = _fallback_stats(conf, stderr, now)
    if fallback is not None:
        data["fallback"] = fallback.as_dict()
    if options.json:
        say(stdout, json.dumps(data, sort_keys=True))
    else:
        if paused:
            say(stdout, "delivery is PAUSED: flushers send nothing until 'resume'")
        if conf.staging is not None:
            say(stdout, conf.staging.describe())
        _print_stats(stats, now, stdout)
        if fallback is not None:
            say(stdout, "fallback store:")
            _print_stats(fallback, now, stdout, indent="  ")
    if not options.check:
        return 0
    problems = _problems(options, stats, fallback)
    if paused:
        # A pause forgotten is mail held for ever: monitoring hears of it.
        problems.insert(0, "delivery is paused ('resume' sends again)")
    for problem in problems:
        say(stderr, f"mailqueue: {problem}")
    return 1 if problems else 0


def _problems(options: argparse.Namespace, stats: Stats, fallback: Stats | None) -> list[str]:
    problems = []
    if fallback is not None and (fallback.ready or fallback.scheduled):
        problems.append(
            f"{fallback.ready + fallback.scheduled} message(s) wait in the fallback store: "
            "was the store down? 'flush' moves them back"
        )
    if stats.dead > options.max_dead:
        problems.append(f"{stats.dead} dead letter(s) (more than {options.max_dead})")
    if stats.lost:
        problems.append(f"{stats.lost} message(s) lost by the store; see 'mailqueue dead'")
    if stats.stuck > options.max_stuck:
        problems.append(
            f"{stats.stuck} message(s) stuck: held past their lease (more than "
            f"{options.max_stuck}); a flusher died or hung with them, and no flusher "
            "has claimed them since: is one running?"
        )
    if stats.oldest_ready_age is not None and stats.oldest_ready_age > options.max_age:
        problems.append(
            f"the oldest ready message is {stats.oldest_ready_age:.0f}s old "
            f"(more than {options.max_age:.0f}s): is the flusher running?"
        )
    return problems


def _next_due(stats: Stats, now: float) -> str:
    if not stats.scheduled:
        return "-"
    if stats.next_due is None:
        return "? (this store does not tell)"
    return f"in {max(0.0, stats.next_due - now):.0f}s"


def _print_stats(stats: Stats, now: float, stdout: TextIO, indent: str = "") -> None:
    age = stats.oldest_ready_age
    rows = [
        ("ready", stats.ready),
        ("scheduled", stats.scheduled),
        ("next due", _next_due(stats, now)),
        ("in flight", stats.in_flight),
        ("stuck", stats.stuck),
        ("dead", stats.dead),
        ("lost", stats.lost),
        ("oldest ready", "-" if age is None else f"{age:.0f}s"),
    ]
    say(stdout, *(f"{indent}{name:<13}{value}" for name, value in rows))


def _fallback_stats(conf: Config, stderr: TextIO, now: float) -> Stats | None:
    if conf.fallback_store is None:
        return None
    fallback = _existing(conf, "FALLBACK_STORE")
    try:
        return fallback.stats(now)
    except StoreUnavailable as exc:
        say(stderr, f"mailqueue: the fallback store cannot be reached: {exc}")
        return None
    finally:
        fallback.close()


# -- dead, retry, purge ---------------------------------------------------------------


def dead(options: argparse.Namespace, conf: Config, stdout: TextIO, stderr: TextIO, _: Any) -> int:
    store = _existing(conf)
    try:
        letters = store.dead_letters(limit=options.limit)
    finally:
        store.close()
    now = time.time()
    rows = [_dead_row(letter, now) for letter in letters]
    if options.json:
        say(stdout, json.dumps(rows))  # JSON escapes control characters itself
        return 0
    if not rows:
        say(stdout, "no dead letters")
    for row in rows:
        mark = " [LOST]" if row["lost"] else ""
        say(
            stdout,
            f"{row['id']}{mark}  to {', '.join(row['recipients']) or '?'}  "
            f"subject {row['subject']!r}  age {row['age']:.0f}s  attempts {row['attempts']}",
            f"    {row['error']}",
        )
    return 0


def _dead_row(letter: DeadLetter, now: float) -> dict[str, Any]:
    record = letter.record
    recipients: list[str] = []
    subject = ""
    if not letter.lost:
        try:
            message = codec.decode(record)
            recipients, subject = message.recipients, message.subject
        except CodecError:
            subject = "(undecodable record)"
    return {
        "id": record.id,
        "recipients": recipients,
        "subject": subject,
        "age": round(now - record.created, 1),
        "buried": letter.buried,
        "attempts": record.attempts,
        "error": letter.reason,
        "lost": letter.lost,
    }


def retry(
    options: argparse.Namespace, conf: Config, stdout: TextIO, stderr: TextIO, _: Any
) -> int:
    if options.all == bool(options.ids):
        say(stderr, "mailqueue retry: give either --all or message ids")
        return 1
    store = _existing(conf)
    try:
        count = store.revive(None if options.all else options.ids, time.time())
    finally:
        store.close()
    say(stdout, f"revived {count} message(s)")
    return 0


def purge(
    options: argparse.Namespace, conf: Config, stdout: TextIO, stderr: TextIO, _: Any
) -> int:
    store = _existing(conf)
    try:
        count = store.purge(time.time() - options.older_than)
    finally:
        store.close()
    say(stdout, f"purged {count} dead letter(s)")
    return 0
