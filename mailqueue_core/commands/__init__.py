"""The subcommands shared by ``manage.py mailqueue`` and the standalone ``mailqueue``.

``flush`` delivers (:mod:`.flush`, its workers in :mod:`.worker` and
:mod:`.processes`, the signals it answers in :mod:`.interrupts`); ``status``
counts, ``dead`` lists dead letters, ``retry`` revives them and ``purge``
deletes old ones (:mod:`.inspect`). Everything printed goes through
:mod:`.output`, which escapes control characters. Exit status: 0 when the run
completed (whatever each message's outcome), 1 when the store or the
configuration failed; ``status --check`` exits 1 when a threshold is crossed
and 2 when the store cannot be reached.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import TextIO

from mailqueue_core.commands import flush as _flush
from mailqueue_core.commands import inspect as _inspect
from mailqueue_core.commands.arguments import parse_duration
from mailqueue_core.commands.output import say
from mailqueue_core.commands.worker import ListenerFactory
from mailqueue_core.commands.worker import limiter as _limiter  # noqa: F401 - its old home
from mailqueue_core.config import Config
from mailqueue_core.errors import ConfigurationError, StoreUnavailable

__all__ = ["add_subcommands", "parse_duration", "run"]

Handler = Callable[[argparse.Namespace, Config, TextIO, TextIO, ListenerFactory | None], int]

_HANDLERS: dict[str, Handler] = {
    "flush": _flush.flush,
    "status": _inspect.status,
    "dead": _inspect.dead,
    "retry": _inspect.retry,
    "purge": _inspect.purge,
}


def add_subcommands(
    parser: argparse.ArgumentParser, common: Callable[[argparse.ArgumentParser], None]
) -> None:
    """Add the subcommands; ``common`` adds the options every subcommand takes."""
    sub = parser.add_subparsers(dest="subcommand", metavar="SUBCOMMAND")
    sub.required = True
    flush = sub.add_parser("flush", help="deliver due messages")
    _flush.add_arguments(flush)
    status = sub.add_parser("status", help="count queued, in-flight, stuck and dead messages")
    dead = sub.add_parser("dead", help="list dead letters")
    retry = sub.add_parser("retry", help="revive dead letters")
    purge = sub.add_parser("purge", help="delete old dead letters")
    _inspect.add_arguments(status, dead, retry, purge)
    for subparser in (flush, status, dead, retry, purge):
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
