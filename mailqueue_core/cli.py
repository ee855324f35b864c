"""The standalone ``mailqueue`` command: a flusher where the site's code is not.

Configured by ``--store`` and ``--transport`` URLs, or by ``--settings MODULE``
to read ``MAILQUEUE`` from a Django settings module (the URLs win over it).
The settings module is imported as ``manage.py`` imports it: the current
directory is put on the Python path first, and ``--pythonpath`` adds others; a
module that cannot be imported is one line saying so. Without a settings module
Django's defaults are configured here, since messages are rendered with
Django's mail classes, and ``flush`` needs ``--transport``: Django's default
``EMAIL_HOST`` (localhost:25) is rarely the relay meant.

The global options work before or after the subcommand (``mailqueue --settings
mysite.settings status`` and ``mailqueue status --settings mysite.settings``).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from collections.abc import Sequence

from mailqueue_core import __version__
from mailqueue_core.commands import HelpFormatter, add_subcommands, run
from mailqueue_core.config import Config
from mailqueue_core.errors import ConfigurationError

__all__ = ["main", "parser"]

logger = logging.getLogger("mailqueue.cli")

_LEVELS = {0: logging.ERROR, 1: logging.WARNING, 2: logging.INFO, 3: logging.DEBUG}

DESCRIPTION = """\
Deliver queued mail and look after the queue, on a machine that need not hold
the site's code. Name the queue with --store (and --transport for flush), or
read MAILQUEUE from the site's settings with --settings.

examples:
  mailqueue flush --store sqlite:////var/spool/mailqueue/queue.db \\
                  --transport smtp://relay.internal:587?starttls=true
  mailqueue status --check --settings mysite.settings
  mailqueue SUBCOMMAND --help
"""


def _global_options(parser: argparse.ArgumentParser, *, after: bool) -> None:
    """The options every subcommand takes, before it (``after=False``, with the
    defaults) or after it (the defaults are left to the first)."""

    def default(value: object) -> object:
        return argparse.SUPPRESS if after else value

    group = parser.add_argument_group("global options (before or after the subcommand)")
    group.add_argument(
        "--store",
        default=default(None),
        metavar="URL",
        help="the queue's store, e.g. sqlite:////var/spool/mailqueue/queue.db "
        "(default: MAILQUEUE['STORE'] of --settings)",
    )
    group.add_argument(
        "--transport",
        default=default(None),
        metavar="URL",
        help="how flush delivers, e.g. smtp://relay:587?starttls=true; flush needs it "
        "without --settings (default: MAILQUEUE['TRANSPORT'] of --settings)",
    )
    group.add_argument(
        "--namespace",
        default=default(None),
        metavar="NAME",
        help="the queue's namespace (default: 'default', or MAILQUEUE['NAMESPACE'] of --settings)",
    )
    group.add_argument(
        "--settings",
        default=default(None),
        metavar="MODULE",
        help="a Django settings module to read MAILQUEUE from, e.g. mysite.settings, "
        "found in the current directory or --pythonpath; the site's signal receivers "
        "then hear flush too (default: none; DJANGO_SETTINGS_MODULE is not read)",
    )
    group.add_argument(
        "--pythonpath",
        default=default(None),
        metavar="DIR",
        help="a directory to add to the Python path before --settings is imported, "
        "e.g. /srv/site (default: only the current directory, as manage.py adds its own)",
    )
    group.add_argument(
        "-v",
        "--verbosity",
        type=int,
        choices=[0, 1, 2, 3],
        default=default(1),
        help="0 errors only, 1 warnings, 2 each message sent, deferred or buried, 3 debug "
        "(default: 1)",
    )


def parser() -> argparse.ArgumentParser:
    """The standalone command's argument parser."""
    main_parser = argparse.ArgumentParser(
        prog="mailqueue", description=DESCRIPTION, formatter_class=HelpFormatter
    )
    main_parser.add_argument("--version", action="version", version=f"mailqueue {__version__}")
    _global_options(main_parser, after=False)
    add_subcommands(main_parser, lambda sub: _global_options(sub, after=True))
    return main_parser


def _extend_path(options: argparse.Namespace) -> None:
    """Find the site as manage.py does: its directory (here, the current one) is on
    the path when a settings module is to be imported, and --pythonpath before it."""
    for directory in (os.getcwd() if options.settings else None, options.pythonpath):
        if directory and directory not in sys.path:
            sys.path.insert(0, directory)


def _import_settings(options: argparse.Namespace) -> None:
    """Import the settings module; one line when it fails."""
    module = options.settings
    try:
        importlib.import_module(module)
    except Exception as exc:
        logger.debug("importing the settings module failed", exc_info=True)
        missing = exc.name if isinstance(exc, ImportError) else None
        if missing == module.partition(".")[0]:
            places = "the current directory" + (
                f" and {options.pythonpath}" if options.pythonpath else ""
            )
            fix = (
                "run mailqueue in the directory that holds manage.py, or give --pythonpath "
                f"DIR (looked in {places} and the Python path)"
            )
        elif missing and f"{module}.".startswith(f"{missing}."):
            fix = f"{module.partition('.')[0]} was found, {missing} in it was not: check the name"
        else:  # the module itself failed (an import in it, a missing environment variable)
            raise ConfigurationError(
                f"the settings module {module!r} failed: {type(exc).__name__}: {exc} "
                "(-v 3 shows the traceback)"
            ) from None
        raise ConfigurationError(
            f"cannot import the settings module {module!r} ({exc}): {fix}"
        ) from None


def _config(options: argparse.Namespace) -> Config:
    import django
    from django.conf import settings

    overrides = {
        key: value
        for key, value in (
            ("STORE", options.store),
            ("TRANSPORT", options.transport),
            ("NAMESPACE", options.namespace),
        )
        if value
    }
    if options.settings:
        from mailqueue_core.django_settings import get_config

        _import_settings(options)
        os.environ["DJANGO_SETTINGS_MODULE"] = options.settings
        try:
            django.setup()
        except Exception as exc:
            logger.debug("Django's set-up failed", exc_info=True)
            raise ConfigurationError(
                f"Django's set-up with {options.settings!r} failed: {type(exc).__name__}: "
                f"{exc} (-v 3 shows the traceback)"
            ) from None
        return get_config(overrides)
    if not settings.configured:
        settings.configure()
    if "STORE" not in overrides:
        raise ConfigurationError("give --store URL, or --settings with a MAILQUEUE setting")
    if options.subcommand == "flush" and "TRANSPORT" not in overrides:
        raise ConfigurationError(
            "flush needs --transport URL without --settings, e.g. "
            "smtp://relay.internal:587?starttls=true (smtp://localhost:25 for this "
            "machine's own mail server)"
        )
    return Config.from_settings(overrides)


def main(argv: Sequence[str] | None = None) -> int:
    options = parser().parse_args(argv)
    _extend_path(options)
    logging.basicConfig(
        level=_LEVELS[options.verbosity],
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    listener = None
    if options.settings:
        from mailqueue_core.signals import SignalListener

        listener = SignalListener  # the site's receivers hear the standalone flusher too
    return run(options, lambda: _config(options), listener=listener)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
