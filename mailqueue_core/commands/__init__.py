"""The subcommands shared by ``manage.py mailqueue`` and the standalone ``mailqueue``.

``flush`` delivers (:mod:`.flush`, its workers in :mod:`.worker` and
:mod:`.processes`, the signals it answers in :mod:`.interrupts`); ``status``
counts, ``dead`` lists dead letters, ``retry`` revives them and ``purge``
deletes old ones (:mod:`.inspect`). Everything printed goes through
:mod:`.output`, which escapes control characters. Exit status: 0 when the run
completed (whatever each message's outcome), 1 when the store or the
configuration failed; ``status --check`` exits 1 when a threshold is crossed
and 2 when the store cannot be reached (or holds no queue).

Only ``flush`` creates a queue where there is none (as the site does when it
first sends mail); the others open an existing queue only
(:meth:`~mailqueue_core.store.Store.without_creating`), so that a mistyped
location is an error naming it, never an empty queue that looks healthy.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Callable
from typing import TextIO

from mailqueue_core.commands import flush as _flush
from mailqueue_core.commands import inspect as _inspect
from mailqueue_core.commands.arguments import HelpFormatter, parse_duration
from mailqueue_core.commands.output import say
from mailqueue_core.commands.worker import ListenerFactory
from mailqueue_core.commands.worker import limiter as _limiter  # noqa: F401 - its old home
from mailqueue_core.config import Config
from mailqueue_core.errors import ConfigurationError, StoreUnavailable

__all__ = [
    "SUBCOMMANDS",
    "HelpFormatter",
    "Subcommand",
    "add_subcommands",
    "parse_duration",
    "run",
]

Handler = Callable[[argparse.Namespace, Config, TextIO, TextIO, ListenerFactory | None], int]


@dataclasses.dataclass(frozen=True)
class Subcommand:
    name: str
    summary: str
    """One line, in the list of subcommands."""
    description: str
    """What ``SUBCOMMAND --help`` says above the options."""
    add_arguments: Callable[[argparse.ArgumentParser], None]
    handler: Handler


SUBCOMMANDS = (
    Subcommand(
        "flush",
        "deliver the messages that are due",
        "Deliver the messages that are due, once (from cron) or as a service (--loop).\n"
        "Prints one summary line (sent, deferred, buried) unless --quiet; problems\n"
        "(buried mail, a store that cannot be reached) always go to stderr. Creates the\n"
        "queue where there is none yet.\n\n"
        "Exit status: 0 when the run completed, whatever happened to each message, and\n"
        "after a clean stop (SIGTERM, SIGINT); 1 when the configuration is wrong or the\n"
        "store cannot be reached or failed.",
        _flush.add_arguments,
        _flush.flush,
    ),
    Subcommand(
        "status",
        "count ready, scheduled, in-flight, stuck and dead messages",
        "Count the queue: ready, scheduled (and when the next one is due), in flight,\n"
        "stuck, dead and lost messages, and the age of the oldest ready one. Creates\n"
        "nothing.\n\n"
        "Exit status: 0; with --check, 1 when a threshold is crossed (each problem is a\n"
        "line on stderr); 2 when the store cannot be reached or holds no queue.",
        _inspect.add_status_arguments,
        _inspect.status,
    ),
    Subcommand(
        "dead",
        "list dead letters",
        "List the dead letters, oldest burial first: id, recipients, subject, age,\n"
        "attempts, and why each was given up. Messages the store lost are listed too,\n"
        "marked [LOST].",
        _inspect.add_dead_arguments,
        _inspect.dead,
    ),
    Subcommand(
        "retry",
        "send dead letters again",
        "Move dead letters back to the queue, due now, with their attempts reset and a\n"
        "full MAX_AGE ahead; the next flush sends them. Fix the cause first: a message\n"
        "refused with a 5xx is refused again. (A deferred message waits for its retry\n"
        "time; nothing sends it earlier yet.)",
        _inspect.add_retry_arguments,
        _inspect.retry,
    ),
    Subcommand(
        "purge",
        "delete old dead letters",
        "Delete the dead letters buried more than AGE ago. Nothing else deletes them.",
        _inspect.add_purge_arguments,
        _inspect.purge,
    ),
)
_HANDLERS = {sub.name: sub.handler for sub in SUBCOMMANDS}


def add_subcommands(
    parser: argparse.ArgumentParser, common: Callable[[argparse.ArgumentParser], None]
) -> None:
    """Add the subcommands; ``common`` adds the options every subcommand takes."""
    sub = parser.add_subparsers(dest="subcommand", metavar="SUBCOMMAND", title="subcommands")
    sub.required = True
    for command in SUBCOMMANDS:
        subparser = sub.add_parser(
            command.name,
            help=command.summary,
            description=command.description,
            formatter_class=HelpFormatter,
        )
        command.add_arguments(subparser)
        common(subparser)


def run(
    options: argparse.Namespace,
    config: Callable[[], Config],
    *,
    stdout: TextIO | None = None,
    stderr: TextIO | None = None,
    listener: ListenerFactory | None = None,
) -> int:
    """Run one subcommand; returns the exit status."""
    stdout = stdout or sys.stdout
    stderr = stderr or sys.stderr
    try:
        conf = config()
        handler = _HANDLERS[options.subcommand]
        return handler(options, conf, stdout, stderr, listener)
    except ConfigurationError as exc:
        say(stderr, f"mailqueue: configuration error: {exc}")
        return 1
    except StoreUnavailable as exc:
        say(stderr, f"mailqueue: the store cannot be reached: {exc}")
        return 2 if options.subcommand == "status" else 1
