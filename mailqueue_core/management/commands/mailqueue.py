"""``manage.py mailqueue flush|status|dead|retry|purge`` (see mailqueue_core.commands)."""

from __future__ import annotations

import argparse
import logging
from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from mailqueue_core.commands import add_subcommands, run
from mailqueue_core.django_settings import get_config
from mailqueue_core.signals import SignalListener


def _common(parser: argparse.ArgumentParser) -> None:
    # Django's common options, accepted after the subcommand too
    # (``manage.py mailqueue flush -v 2``).
    parser.add_argument(
        "-v", "--verbosity", type=int, choices=[0, 1, 2, 3], default=argparse.SUPPRESS
    )
    parser.add_argument("--settings", default=argparse.SUPPRESS)
    parser.add_argument("--pythonpath", default=argparse.SUPPRESS)
    parser.add_argument("--traceback", action="store_true", default=argparse.SUPPRESS)
    parser.add_argument("--no-color", action="store_true", default=argparse.SUPPRESS)
    parser.add_argument("--force-color", action="store_true", default=argparse.SUPPRESS)


class Command(BaseCommand):
    help = "Deliver queued mail and inspect the queue."

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


class _Plain:
    """A Django OutputWrapper that writes exactly what print() gives it."""

    def __init__(self, wrapper: Any) -> None:
        self.wrapper = wrapper

    def write(self, text: str) -> None:
        self.wrapper.write(text, ending="")

    def flush(self) -> None:
        self.wrapper.flush()

    def isatty(self) -> bool:
        return self.wrapper.isatty()
