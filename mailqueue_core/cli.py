"""The standalone ``mailqueue`` command: a flusher where the site's code is not.

Configured by ``--store`` and ``--transport`` URLs, or by ``--settings MODULE``
to read ``MAILQUEUE`` from a Django settings module. Without a settings module
Django's defaults are configured here, since messages are rendered with
Django's mail classes.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence

from mailqueue_core.commands import add_subcommands, run
from mailqueue_core.config import Config

__all__ = ["main"]


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--store", help="store URL, e.g. sqlite:////var/spool/mailqueue.db")
    parser.add_argument("--transport", help="transport URL, e.g. smtp://relay:587?starttls=true")
    parser.add_argument("--namespace", help="queue namespace (default: 'default')")
    parser.add_argument("--settings", help="a Django settings module to read MAILQUEUE from")
    parser.add_argument(
        "-v", "--verbosity", type=int, choices=[0, 1, 2, 3], default=1, help="log detail"
    )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mailqueue", description=__doc__.split("\n")[0])
    add_subcommands(parser, _common)
    return parser


def _config(options: argparse.Namespace) -> Config:
    import django
    from django.conf import settings

    if options.settings:
        os.environ["DJANGO_SETTINGS_MODULE"] = options.settings
        django.setup()
        raw = dict(getattr(settings, "MAILQUEUE", None) or {})
    else:
        if not settings.configured:
            settings.configure()
        raw = {}
    if options.store:
        raw["STORE"] = options.store
    if options.transport:
        raw["TRANSPORT"] = options.transport
    if options.namespace:
        raw["NAMESPACE"] = options.namespace
    if not raw.get("STORE"):
        from mailqueue_core.errors import ConfigurationError

        raise ConfigurationError("give --store URL, or --settings with a MAILQUEUE setting")
    return Config.from_settings(raw)


def main(argv: Sequence[str] | None = None) -> int:
    options = _parser().parse_args(argv)
    level = {0: logging.ERROR, 1: logging.WARNING, 2: logging.INFO, 3: logging.DEBUG}
    logging.basicConfig(
        level=level[options.verbosity], format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    listener = None
    if options.settings:
        from mailqueue_core.signals import SignalListener

        listener = SignalListener  # the site's receivers hear the standalone flusher too
    return run(options, lambda: _config(options), listener=listener)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
