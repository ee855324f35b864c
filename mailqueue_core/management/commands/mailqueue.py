"""``manage.py mailqueue flush|status|dead|retry|purge`` (see mailqueue_core.commands)."""

from __future__ import annotations

import argparse
import logging
from collections.abc import Callable
from typing import Any

import django
from django.core.management.base import BaseCommand, CommandParser, OutputWrapper

from mailqueue_core import __version__
from mailqueue_core.commands import add_subcommands, run
from mailqueue_core.django_settings import get_config
from mailqueue_core.signals import SignalListener


def _common(parser: argparse.ArgumentParser) -> None:
    # Django's common options, accepted after the subcommand too
    # (``manage.py mailqueue flush -v 2``).
    parser.add_argument(
        "-v",
        "--verbosity",
        type=int,
        choices=[0, 1, 2, 3],
        default=argparse.SUPPRESS,
        help="0 errors only, 1 warnings, 2 each message sent, deferred or buried, "
        "3 debug (default: 1)",
    )
    parser.add_argument(
        "--settings",
        default=argparse.SUPPRESS,
        metavar="MODULE",
        help="the settings module, e.g. mysite.settings (default: DJANGO_SETTINGS_MODULE)",
    )
    parser.add_argument(
        "--pythonpath",
        default=argparse.SUPPRESS,
        metavar="DIR",
        help="a directory to add to the Python path, e.g. /srv/site (default: none)",
    )
    parser.add_argument(
        "--traceback",
        action="store_true",
        default=argparse.SUPPRESS,
        help="show the traceback of an error Django reports",
    )
    parser.add_argument(
        "--no-color", action="store_true", default=argparse.SUPPRESS, help="no colours"
    )
    parser.add_argument(
        "--force-color",
        action="store_true",
        default=argparse.SUPPRESS,
        help="colours even when the output is not a terminal",
    )


class Command(BaseCommand):
    help = (
        "Deliver queued mail (flush) and look after the queue (status, list, show, send-now, "
        "delete, pause, resume, dead, retry, purge). "
        "'manage.py mailqueue SUBCOMMAND --help' says more about each."
    )

    def get_version(self) -> str:
        return f"mailqueue {__version__} (Django {django.get_version()})"

    def add_arguments(self, parser: CommandParser) -> None:
        add_subcommands(parser, _common)

    def handle(self, *args: Any, **options: Any) -> None:
        verbosity = options.get("verbosity", 1)
        level = {0: logging.ERROR, 1: logging.WARNING, 2: logging.INFO, 3: logging.DEBUG}
        logger = logging.getLogger("mailqueue")
        previous = logger.level
        logger.setLevel(level[verbosity])
        if not logger.handlers and not logging.getLogger().handlers:
            logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        try:
            code = run(
                argparse.Namespace(**options),
                get_config,
                stdout=_Plain(self.stdout),  # type: ignore[arg-type]
                stderr=_Plain(self.stderr),  # type: ignore[arg-type]
                listener=SignalListener,
            )
        finally:
            logger.setLevel(previous)  # called in-process, leave the site's logging alone
        if code:
            # The reason was already written to stderr; only the status is left.
            raise SystemExit(code)


def _unstyled(text: str) -> str:
    return text


class _Plain:
    """A Django OutputWrapper that writes exactly what print() gives it.

    Styled as Django styles the stream (stderr: as an error, on a terminal);
    :attr:`plain` writes the same stream unstyled, for what is not an error.
    """

    def __init__(self, wrapper: OutputWrapper, style: Callable[[str], str] | None = None) -> None:
        self.wrapper = wrapper
        self.style = style

    @property
    def plain(self) -> _Plain:
        return _Plain(self.wrapper, _unstyled)

    def write(self, text: str) -> None:
        self.wrapper.write(text, style_func=self.style, ending="")

    def flush(self) -> None:
        self.wrapper.flush()

    def isatty(self) -> bool:
        return self.wrapper.isatty()
