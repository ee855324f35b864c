"""The types of the subcommands' arguments: durations and counts."""

from __future__ import annotations

import argparse
import re

__all__ = ["parse_duration", "positive_int", "threshold"]

_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> float:
    """``3600``, ``90m``, ``12h``, ``7d`` -> seconds."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*", text)
    if not match:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a duration (use seconds, or 90m, 12h, 7d)"
        )
    return float(match.group(1)) * _UNITS[match.group(2)]


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
