"""The subcommands' arguments: their types (durations, counts) and how their help shows."""

from __future__ import annotations

import argparse

from mailqueue_core.text import duration

__all__ = ["HelpFormatter", "parse_duration", "positive_int", "threshold"]


def parse_duration(text: str) -> float:
    """``3600``, ``90m``, ``12h``, ``7d`` -> seconds."""
    try:
        return duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _whole(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None


def positive_int(text: str) -> int:
    value = _whole(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def threshold(text: str) -> int:
    """A count that ``status --check`` tolerates: 0 or more."""
    value = _whole(text)
    if value < 0:
        raise argparse.ArgumentTypeError("must be 0 or more")
    return value


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Descriptions as written (paragraphs and examples keep their lines), and
    each option's default after its help, when it has one worth saying."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help
        if (
            text is None
            or "%(default)" in text
            or "(default" in text
            or not action.option_strings
            or any(action.default is nothing for nothing in (None, False, argparse.SUPPRESS))
        ):
            return text
        return f"{text} (default: %(default)s)"
