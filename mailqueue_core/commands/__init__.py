"""The subcommands shared by ``manage.py mailqueue`` and the standalone ``mailqueue``.

``flush`` delivers (:mod:`.flush`, its workers in :mod:`.worker` and
:mod:`.processes`, the signals it answers in :mod:`.interrupts`); ``status``
counts, ``dead`` lists dead letters, ``retry`` revives them and ``purge``
deletes old ones (:mod:`.inspect`); ``list``, ``show``, ``send-now``, ``delete``,
``pause`` and ``resume`` are the console's verbs (:mod:`.console`). Everything printed goes through
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

from mailqueue_core.commands import console as _console
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
        "refused with a 5xx is refused again. A deferred message is sent earlier with\n"
        "'send-now'.",
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
    Subcommand(
        "list",
        "list the messages in one state, a page at a time",
        "List the messages in one state (ready, scheduled, in-flight, stuck, dead), oldest\n"
        "first: id, when it is due (or its lease ends, or it was buried), age, recipients,\n"
        "subject, attempts, last error. When there is more, the last line is the command\n"
        "for the next page (--cursor). --search keeps the messages with TEXT in a\n"
        "recipient, the subject, the Message-ID or the id; it reads at most --budget\n"
        "messages per call, so on a deep queue it is a bounded scan that goes on with\n"
        "--cursor.\n\n"
        "Exit status: 1 when the store cannot list its messages or the cursor is not one\n"
        "it gave.",
        _console.add_list_arguments,
        _console.list_messages,
    ),
    Subcommand(
        "show",
        "show one message: envelope, headers, bodies, attachments",
        "Show one queued message or dead letter: its state and times, envelope, headers,\n"
        "text and HTML bodies (the HTML as its source), and its attachments (name, type,\n"
        "size; never their content).\n\n"
        "Exit status: 1 when there is no message with that id.",
        _console.add_show_arguments,
        _console.show,
    ),
    Subcommand(
        "send-now",
        "make scheduled messages due now",
        "Make scheduled messages (a retry's wait, a send time) due now, keeping their\n"
        "attempts; the next flush sends them. A message held by a flusher is left alone;\n"
        "a dead letter is sent again with 'retry'.\n\n"
        "Exit status: 1 when a message named was left as it was (unknown, dead, held by\n"
        "a flusher); one already due is fine.",
        _console.add_send_now_arguments,
        _console.send_now,
    ),
    Subcommand(
        "delete",
        "delete queued messages or dead letters",
        "Delete queued messages or dead letters for good. A message in flight (a flusher\n"
        "holds it and may be sending it) is never deleted: it is named on stderr.\n\n"
        "Exit status: 1 when a message named was not deleted (unknown, in flight).",
        _console.add_delete_arguments,
        _console.delete,
    ),
    Subcommand(
        "pause",
        "hold delivery: flushers send nothing until resume",
        "Pause delivery for this queue (its namespace): every flusher, on every machine,\n"
        "holds delivery until 'resume'. The site goes on queueing mail; 'status' says\n"
        "delivery is PAUSED.",
        _console.add_pause_arguments,
        _console.pause,
    ),
    Subcommand(
        "resume",
        "let flushers deliver again after pause",
        "Resume delivery after 'pause': the next flush delivers what is due.",
        _console.add_pause_arguments,
        _console.resume,
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
